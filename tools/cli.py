"""`rendezvous`: the operator's command line. Thin: every command calls a library function."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from control import runtime
from control.errors import ControlError
from control.ops import jobs as jobs_lib
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
    except ControlError as e:
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
    except ControlError as e:
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
    except ControlError as e:
        _fail(e)
    click.echo(f"cancelled {job_id}")


@job.command("stop")
@click.argument("job_id")
def job_stop(job_id) -> None:
    """Stop a job with a savepoint into savepoints/; prints the savepoint path."""
    try:
        path = jobs_lib.stop_with_savepoint(job_id, progress=lambda m: click.echo(f"  {m}", err=True))
    except ControlError as e:
        _fail(e)
    click.echo(path)


@main.command()
@click.option("--rate", default=100.0, show_default=True, help="requests/s")
@click.option("--duration", default=60.0, show_default=True, help="seconds of load")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write the JSON report  [default: run/demo/latest.json]")
def demo(rate, duration, report_path) -> None:
    """Run the end-to-end demo on the embedded runtime."""
    from tools import demo as demo_lib

    try:
        report = demo_lib.run(progress=click.echo, rate=rate, duration_s=duration, report_path=report_path)
    except ControlError as e:
        _fail(e)
    if report.unanswered:
        click.secho(f"{report.unanswered} requests got no answer", fg="red", err=True)
        sys.exit(2)


@main.group()
def schedule() -> None:
    """Publish and show rendezvous schedules (applied at run time, no restart)."""


@schedule.command("set")
@click.argument("file", type=click.Path(dir_okay=False))
def schedule_set(file) -> None:
    """Validate FILE (YAML or JSON) and publish it as the next schedule version."""
    from control.ops import schedules

    try:
        sched = schedules.publish_file(RuntimeSettings().bootstrap_servers, file)
    except ControlError as e:
        _fail(e)
    click.echo(f"published schedule v{sched.version} '{sched.name}'")
    click.echo(sched.model_dump_json(indent=2))


@schedule.command("show")
def schedule_show() -> None:
    """Print the active schedule."""
    from control.ops import schedules

    sched = schedules.active(RuntimeSettings().bootstrap_servers)
    if sched is None:
        click.echo("no schedule published yet; the rendezvous uses its built-in one "
                   "(publish with `rendezvous schedule set FILE`)")
        return
    click.echo(sched.model_dump_json(indent=2))


@main.command("load")
@click.option("--rate", default=100.0, show_default=True, help="requests/s")
@click.option("--duration", default=30.0, show_default=True, help="seconds")
@click.option("--fraud-fraction", default=0.02, show_default=True)
@click.option("--drain", default=10.0, show_default=True, help="seconds to wait for the last answers")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="also write the report as JSON")
def load_cmd(rate, duration, fraud_fraction, drain, json_out) -> None:
    """Send synthetic transactions and report from the answers topic."""
    import json as _json

    from tools import load

    s = RuntimeSettings()
    report = load.run_load(s.bootstrap_servers, rate, duration, fraud_fraction=fraud_fraction, drain_s=drain,
                           progress=click.echo)
    click.echo(report.summary())
    if json_out:
        with open(json_out, "w") as f:
            _json.dump(report.as_dict(), f, indent=2)


@main.group()
def deploy() -> None:
    """Deploy the data plane's jobs."""


def _where_to_start(f):
    """--start and --from-savepoint, shared by the deploy commands."""
    f = click.option("--from-savepoint", "savepoint", default=None,
                     help="restore state and offsets from this savepoint")(f)
    return click.option("--start", type=click.Choice(["committed", "earliest", "latest"]), default="committed",
                        show_default=True, help="where a new job starts reading")(f)


@deploy.command("external-state")
@_where_to_start
def deploy_es(start, savepoint) -> None:
    """The external-state job (requests -> requests.augmented)."""
    from control.ops import deploy as d

    try:
        click.echo(d.deploy_external_state(start=start, savepoint=savepoint))
    except ControlError as e:
        _fail(e)


@deploy.command("model")
@click.argument("card", type=click.Path(exists=True, dir_okay=False))
@_where_to_start
@click.option("--skip-older-than-ms", type=int, default=None,
              help="load shedding: do not score requests older than this on arrival (about the last deadline)")
@click.option("--no-preflight", is_flag=True,
              help="do not prepare the model here first (this machine cannot see the artifact or model server)")
def deploy_model_cmd(card, start, savepoint, skip_older_than_ms, no_preflight) -> None:
    """One model job from its model CARD (json or yaml); refused if the model cannot serve."""
    from control.ops import deploy as d

    try:
        click.echo(d.deploy_model(card, start=start, savepoint=savepoint, preflight=not no_preflight,
                                  skip_older_than_ms=skip_older_than_ms))
    except ControlError as e:
        _fail(e)


@deploy.command("rendezvous")
@_where_to_start
def deploy_rv(start, savepoint) -> None:
    """The rendezvous job (requests.augmented + scores + schedules -> answers)."""
    from control.ops import deploy as d

    try:
        click.echo(d.deploy_rendezvous(start=start, savepoint=savepoint))
    except ControlError as e:
        _fail(e)


@main.command("quality")
@click.option("--topic", default="requests", show_default=True)
@click.option("--last", default=1000, show_default=True, help="records per partition to check")
def quality_cmd(topic, last) -> None:
    """Data-quality checks (Great Expectations) on the last records of an input topic."""
    from tools import quality

    report = quality.check_topic(RuntimeSettings().bootstrap_servers, topic, last)
    click.echo(report.summary())
    if not report.success:
        sys.exit(1)


@main.command("train")
@click.option("--out", default=None, help="default: artifacts/models")
def train_cmd(out) -> None:
    """Train the demo fraud models from synthetic data."""
    from pathlib import Path

    from training.train import train_all

    train_all(Path(out) if out else RuntimeSettings().home / "artifacts" / "models", progress=click.echo)


if __name__ == "__main__":
    main()
