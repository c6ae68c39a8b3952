"""`rendezvous`: the operator's command line. Thin: every command calls a library function."""

from __future__ import annotations

import sys

import click

from control import jobs as jobs_lib
from control import runtime
from control.settings import RuntimeSettings


def _fail(e: Exception) -> None:
    click.secho(f"error: {e}", fg="red", err=True)
    sys.exit(1)


@click.group()
def main() -> None:
    """Run ML models in production with the rendezvous architecture on Flink and Kafka."""


@main.command()
def up() -> None:
    """Start the embedded Kafka broker and Flink session cluster (a no-op if running)."""
    try:
        comps = runtime.up(progress=lambda m: click.echo(f"  {m}"))
    except runtime.RuntimeError_ as e:
        _fail(e)
    _print_status(comps)


@main.command()
def down() -> None:
    """Stop the processes `up` started."""
    runtime.down(progress=lambda m: click.echo(f"  {m}"))


@main.command()
def status() -> None:
    """Show each component of the embedded runtime and its address."""
    comps = runtime.status()
    _print_status(comps)
    if not all(c.running for c in comps):
        sys.exit(3)


def _print_status(comps) -> None:
    for c in comps:
        mark = click.style("up  ", fg="green") if c.running else click.style("down", fg="red")
        pid = f"pid {c.pid}" if c.pid else ""
        click.echo(f"{mark} {c.name:<18} {c.address:<28} {pid:<11} {c.detail}")


@main.group()
def job() -> None:
    """Submit, list, cancel and stop Flink jobs."""


@job.command("submit", context_settings={"ignore_unknown_options": True})
@click.argument("module")
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--from-savepoint", "savepoint", default=None, help="Restore state from this savepoint.")
@click.option("--allow-non-restored-state", is_flag=True)
def job_submit(module, job_args, savepoint, allow_non_restored_state) -> None:
    """Submit MODULE (e.g. jobs.smoke.main) with `flink run -py`; prints the job id."""
    try:
        jid = jobs_lib.submit(module, job_args, savepoint, allow_non_restored_state)
    except runtime.RuntimeError_ as e:
        _fail(e)
    click.echo(jid)


@job.command("list")
def job_list() -> None:
    """List the cluster's jobs."""
    for j in jobs_lib.list_jobs():
        click.echo(f"{j.job_id}  {j.state:<10} {j.name}")


@job.command("cancel")
@click.argument("job_id")
def job_cancel(job_id) -> None:
    """Cancel a job without a savepoint."""
    try:
        jobs_lib.cancel(job_id)
    except runtime.RuntimeError_ as e:
        _fail(e)
    click.echo(f"cancelled {job_id}")


@job.command("stop")
@click.argument("job_id")
def job_stop(job_id) -> None:
    """Stop a job with a savepoint into savepoints/; prints the savepoint path."""
    try:
        path = jobs_lib.stop_with_savepoint(job_id, progress=lambda m: click.echo(f"  {m}", err=True))
    except runtime.RuntimeError_ as e:
        _fail(e)
    click.echo(path)


@main.command()
def demo() -> None:
    """Run the end-to-end demo on the embedded runtime."""
    from control import demo as demo_lib

    try:
        demo_lib.run(progress=click.echo)
    except runtime.RuntimeError_ as e:
        _fail(e)


if __name__ == "__main__":
    main()
