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
@click.option("--secure/--no-secure", default=None,
              help="Run the broker with SASL/SCRAM authentication and ACLs, one principal per job role (also "
                   "RENDEZVOUS_SECURE=1; credentials under run/credentials), or without  [default: as it was last "
                   "started]")
@click.option("--taskmanagers", type=click.IntRange(1, 16), default=None,
              help="Flink TaskManagers to run on this machine  [default: as many as run, 1 on a fresh start]")
@click.option("--partitions", type=click.IntRange(1, 1024), default=None,
              help="partitions of each data topic (existing ones with fewer are grown)  [default: 1]")
@click.option("--gateway", "start_gateway", is_flag=True, default=None,
              help="also start the gateway (the Open Inference Protocol endpoint, port RENDEZVOUS_GATEWAY_PORT, "
                   "default 8000; also RENDEZVOUS_START_GATEWAY=1)")
def up(secure: bool | None, taskmanagers, partitions, start_gateway) -> None:
    """Start the embedded Kafka broker and Flink session cluster (what runs is left running; a changed
    --taskmanagers starts or stops TaskManagers)."""
    import os

    if secure is not None:  # the supervisor started by `up` inherits the environment
        os.environ["RENDEZVOUS_SECURE"] = "1" if secure else "0"
    overrides = {k: v for k, v in (("taskmanagers", taskmanagers), ("topic_partitions", partitions),
                                   ("start_gateway", start_gateway)) if v}
    try:
        comps = runtime.up(RuntimeSettings(**overrides), progress=lambda m: click.echo(f"  {m}"))
    except ControlError as e:
        _fail(e)
    _print_status(comps)
    _print_metrics_endpoints()


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="HTTP port  [default: RENDEZVOUS_GATEWAY_PORT, 8000]")
@click.option("--host", default=None, help="address to listen on  [default: the runtime's, loopback]")
@click.option("--name", default=None, help="the V2 model name of the rendezvous served  [default: rendezvous]")
@click.option("--topics-suffix", default=None,
              help="serve the rendezvous whose topics are named with this suffix (e.g. `requests-SUFFIX`)")
@click.option("--margin-ms", type=float, default=None, help="wait this long past a call's budget  [default: 100]")
@click.option("--access-log", is_flag=True, help="log every HTTP request")
def serve(port, host, name, topics_suffix, margin_ms, access_log) -> None:
    """Run the gateway in the foreground: the whole system as one Open Inference Protocol (KServe V2 REST)
    model per rendezvous: POST /v2/models/NAME/infer (README, "The gateway"). Several rendezvous:
    RENDEZVOUS_GATEWAY_RENDEZVOUS='{"NAME": {"requests": ..., "answers": ..., "schedules": ...}}'."""
    from gateway.server import serve as run
    from gateway.settings import Endpoint, GatewaySettings
    from schemas.topics import TopicNames

    fields: dict = {}
    if name or topics_suffix:
        topics = TopicNames.suffixed(topics_suffix) if topics_suffix else TopicNames()
        fields["rendezvous"] = {name or "rendezvous": Endpoint.of(topics)}
    if margin_ms is not None:
        fields["margin_ms"] = margin_ms
    run(GatewaySettings(**fields), host=host, port=port, access_log=access_log)


@main.command()
def down() -> None:
    """Stop the processes `up` started."""
    runtime.down(progress=lambda m: click.echo(f"  {m}"))


@main.command()
def status() -> None:
    """Show each component of the embedded runtime and its address."""
    comps = runtime.status()
    _print_status(comps)
    _print_metrics_endpoints()
    if not all(c.running for c in comps):
        sys.exit(3)


def _print_status(comps) -> None:
    for c in comps:
        mark = click.style("up  ", fg="green") if c.running else click.style("down", fg="red")
        pid = f"pid {c.pid}" if c.pid else ""
        click.echo(f"{mark} {c.name:<18} {c.address:<28} {pid:<11} {c.detail}")


def _print_metrics_endpoints() -> None:
    """The Prometheus endpoints under the status table: one line per Flink process."""
    for e in runtime.metrics_endpoints():
        where = e.url or "none (no free port in RENDEZVOUS_PROMETHEUS_PORTS? see its log)"
        click.echo(f"     {'metrics':<18} {where:<28} {'pid ' + str(e.pid):<11} Prometheus, {e.role}")


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


@job.command("rescale")
@click.argument("job_id")
@click.argument("parallelism", type=click.IntRange(1, jobs_lib.MAX_PARALLELISM))
def job_rescale(job_id, parallelism) -> None:
    """Run JOB_ID at PARALLELISM: stop it with a savepoint and start it again from there; prints the new id."""
    from control.ops import scaling

    try:
        click.echo(scaling.rescale(job_id, parallelism, progress=lambda m: click.echo(f"  {m}", err=True)))
    except ControlError as e:
        _fail(e)


@job.command("upgrade")
@click.argument("job_id")
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A checkout of the project with the new code (its schemas/, jobs/, model_udfs/) [default: this one].")
def job_upgrade(job_id, code) -> None:
    """Run JOB_ID's new code with its state: check that the new code reads the job's state (refused, the job left
    running, if not), stop it with a savepoint, start the new code from there; prints the new job id."""
    from control.ops import upgrade

    try:
        click.echo(upgrade.upgrade(job_id, code, progress=lambda m: click.echo(f"  {m}", err=True)).job_id)
    except ControlError as e:
        _fail(e)


def _exit_on_signals() -> None:
    """SIGTERM and SIGHUP end this process as Ctrl-C does, through its `finally` blocks (by default they end it at
    once: a hand-over would leave its new version running quiescent, or its JIT compilers at the lowest priority)."""
    import signal

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


@main.command("upgrade")
@click.argument("kind", type=click.Choice(["external-state", "rendezvous"]))
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A checkout of the project with the new code [default: this one; with --rollback: the code the "
                   "running version took over from].")
@click.option("--rollback", is_flag=True, help="Hand back to the code the running version took over from.")
@click.option("--job", "job_id", default=None, help="The job to hand over [default: the running job of that kind].")
@click.option("--wait-for-jit", "wait_for_jit", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Seconds the new version may stay at its lower priority, once it keeps up, until its JVMs' JIT "
                   "compilers are quiet (README, \"Latency through a hand-over\"); 0: no wait.")
@click.option("--hold-jit", "hold_jit", type=click.FloatRange(0), default=None,
              help="Keep the new version's optimizing JIT compilers at the lowest CPU priority through the transition, "
                   "then at most this many seconds after the old version stopped until they are quiet; 0: not held "
                   "[default: control.ops.handover.HOLD_COMPILERS_S].")
@click.option("--shadow", "shadow_s", type=click.FloatRange(0), default=None,
              help="The new version writes what it would for the live requests into a shadow topic until its "
                   "tokens (the rendezvous: <answers>-shadow; the external state: <augmented>-shadow), and this many "
                   "seconds more once it keeps up, so that its output path is warm when it takes over; 0: no shadow "
                   "[default: control.ops.handover.SHADOW_S].")
def upgrade_cmd(kind, code, rollback, job_id, wait_for_jit, hold_jit, shadow_s) -> None:
    """Hand the running external state or rendezvous over to a new version without stopping the flow: snapshot
    token (a savepoint, the job running on), the new version restored from it and caught up, transition tokens in
    every partition of the input, the old version stopped once it has finished its share. Prints the new job id."""
    from control.ops import handover

    say = lambda m: click.echo(f"  {m}", err=True)  # noqa: E731
    _exit_on_signals()  # a kill or a closed terminal ends it as Ctrl-C does: through its `finally` blocks
    try:
        jid = job_id or handover.running_job(kind, RuntimeSettings())
        hold = handover.HOLD_COMPILERS_S if hold_jit is None else hold_jit
        shadow = handover.SHADOW_S if shadow_s is None else shadow_s
        click.echo(handover.hand_over(jid, code, progress=say, rollback=rollback,
                                      compilers_quiet_timeout_s=wait_for_jit, hold_compilers_s=hold,
                                      shadow_s=shadow).job_id)
    except ControlError as e:
        _fail(e)


@main.command()
@click.option("--rate", default=100.0, show_default=True, help="requests/s")
@click.option("--duration", default=60.0, show_default=True, help="seconds of load")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write the JSON report  [default: run/demo/latest.json]")
@click.option("--scenario", type=click.Choice(["lifecycle", "cascade"]), default="lifecycle", show_default=True,
              help="lifecycle: the model life cycle and a soft roll; cascade: the seed's hidden data coupling "
                   "(model B cascaded after A; an 'improved' A' makes the cascade worse; README, \"Cascades, "
                   "lineage and attribution\"; --rate 40 suits it, --duration is its first phase)")
def demo(rate, duration, report_path, scenario) -> None:
    """Run the end-to-end demo on the embedded runtime."""
    from tools import demo as demo_lib

    if scenario == "cascade":
        from tools import cascade

        try:
            cascade.run_demo(progress=click.echo, rate=min(rate, 100.0), phase_s=duration)
        except ControlError as e:
            _fail(e)
        return
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
    """Validate FILE (YAML or JSON) and publish it as the next schedule version.

    A bare model id in FILE becomes the version the registry has in production; a registered model
    outside production and postproduction is refused."""
    from control.ops import registry, schedules

    try:
        sched = schedules.publish_file(RuntimeSettings().bootstrap_servers, file,
                                       resolve=registry.resolver(registry.Plane()))
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
@click.option("--labels/--no-labels", default=True, show_default=True,
              help="publish each transaction's outcome to the labels topic, --label-delay after it")
@click.option("--label-delay", default=5.0, show_default=True, help="seconds from a request to its label")
@click.option("--gateway", default=None, metavar="URL",
              help="send each request as an infer call to this gateway (e.g. http://127.0.0.1:8000) instead of to "
                   "the requests topic: client-observed latency then includes the HTTP hop")
@click.option("--model", default="rendezvous", show_default=True, help="--gateway: the rendezvous's model name")
@click.option("--budget-ms", type=float, default=None, help="--gateway: each call's budget  [default: the gateway's]")
def load_cmd(rate, duration, fraud_fraction, drain, json_out, labels, label_delay, gateway, model, budget_ms) -> None:
    """Send synthetic transactions and report from the answers topic."""
    import json as _json

    from tools import load

    s = RuntimeSettings()
    report = load.run_load(s.bootstrap_servers, rate, duration, fraud_fraction=fraud_fraction, drain_s=drain,
                           progress=click.echo, labels_topic="labels" if labels else None, label_delay_s=label_delay,
                           gateway=gateway, model=model, budget_ms=budget_ms)
    click.echo(report.summary())
    if json_out:
        with open(json_out, "w") as f:
            _json.dump(report.as_dict(), f, indent=2)


@main.group()
def deploy() -> None:
    """Deploy the data plane's jobs."""


def _where_to_start(f):
    """--start, --from-savepoint and --parallelism, shared by the deploy commands."""
    f = click.option("--parallelism", "-p", type=click.IntRange(1, jobs_lib.MAX_PARALLELISM), default=None,
                     help="parallel subtasks of every operator  [default: 1]; give the topics as many partitions "
                          "(`rendezvous up --partitions N`)")(f)
    f = click.option("--from-savepoint", "savepoint", default=None,
                     help="restore state and offsets from this savepoint")(f)
    return click.option("--start", type=click.Choice(["committed", "earliest", "latest"]), default="committed",
                        show_default=True, help="where a new job starts reading")(f)


@deploy.command("external-state")
@_where_to_start
def deploy_es(start, savepoint, parallelism) -> None:
    """The external-state job (requests -> requests.augmented)."""
    from control.ops import deploy as d

    try:
        click.echo(d.deploy_external_state(start=start, savepoint=savepoint, parallelism=parallelism))
    except ControlError as e:
        _fail(e)


@deploy.command("model")
@click.argument("card", type=click.Path(exists=True, dir_okay=False))
@_where_to_start
@click.option("--skip-older-than-ms", type=int, default=None,
              help="load shedding: do not score requests older than this on arrival (about the last deadline)")
@click.option("--no-preflight", is_flag=True,
              help="do not prepare the model here first (this machine cannot see the artifact or model server)")
@click.option("--sink-topic", default=None, help="where its scores go [default: scores]; a replay "
                                                 "(--start earliest) needs its own, e.g. scores.replay")
def deploy_model_cmd(card, start, savepoint, parallelism, skip_older_than_ms, no_preflight, sink_topic) -> None:
    """One model job from its model CARD (json or yaml); refused if the model cannot serve. A new deployment
    starts at the end of its input (`--start committed` with no committed offsets)."""
    from control.ops import deploy as d

    try:
        click.echo(d.deploy_model(card, start=start, savepoint=savepoint, preflight=not no_preflight, parallelism=parallelism,
                                  skip_older_than_ms=skip_older_than_ms, sink_topic=sink_topic))
    except ControlError as e:
        _fail(e)


@deploy.command("quality")
@_where_to_start
@click.option("--suite", type=click.Path(exists=True, dir_okay=False), default=None,
              help="expectation suite (GE JSON)  [default: derived from the training data]")
@click.option("--source-topic", default=None, help="the topic to validate  [default: requests]")
@click.option("--batch-records", type=int, default=None, help="a batch closes after this many records [1000]")
@click.option("--batch-interval-ms", type=int, default=None, help="... or this long after its first [10000]")
def deploy_quality_cmd(start, savepoint, parallelism, suite, source_topic, batch_records, batch_interval_ms) -> None:
    """The quality job (requests -> micro-batches -> Great Expectations -> quality, alerts -> lifecycle)."""
    from control.ops import deploy as d

    try:
        click.echo(d.deploy_quality(start=start, savepoint=savepoint, parallelism=parallelism, suite=suite, source_topic=source_topic,
                                    batch_records=batch_records, batch_interval_ms=batch_interval_ms))
    except ControlError as e:
        _fail(e)


@deploy.command("rendezvous")
@_where_to_start
@click.option("--recover-from-ms", type=click.IntRange(0), default=None,
              help="with --from-savepoint: when that savepoint was asked for (epoch ms); the recovery scan reads the "
                   "answers back from there if the job's group committed no offsets (README, \"The answer contract\")")
def deploy_rv(start, savepoint, parallelism, recover_from_ms) -> None:
    """The rendezvous job (requests.augmented + scores + schedules -> answers)."""
    from control.ops import deploy as d

    if recover_from_ms is not None and not savepoint:
        _fail(ControlError("--recover-from-ms is the bound of a restore: give the savepoint too (--from-savepoint)"))
    try:
        click.echo(d.deploy_rendezvous(start=start, savepoint=savepoint, parallelism=parallelism,
                                       recover_from_ms=recover_from_ms))
    except ControlError as e:
        _fail(e)


@main.group()
def model() -> None:
    """The model registry: register deployments (id@version), move them through their life-cycle stages."""


def _ago(ms: int) -> str:
    import time as _t

    s = max(0, int(_t.time() - ms / 1000))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@model.command("register")
@click.argument("card", type=click.Path(exists=True, dir_okay=False))
@click.option("--canary", is_flag=True, help="a reference model: never promoted, never retired")
def model_register(card, canary) -> None:
    """Register the deployment of model CARD (json or yaml) in stage development."""
    from control.ops import registry
    from schemas.model_card import ModelCard

    try:
        e = registry.register(registry.Plane(), ModelCard.load(card), canary=canary)
    except (ControlError, ValueError) as e:
        _fail(e)
    click.echo(f"{e.key} registered ({e.stage}{', canary' if e.canary else ''}); next: "
               f"`rendezvous model stage {e.key} preproduction` deploys it beside the others")


@model.command("stage")
@click.argument("key")
@click.argument("stage", type=click.Choice(["preproduction", "production", "postproduction", "retired"]))
@click.option("--force", is_flag=True, help="even when the active schedule names it, or it is the canary")
def model_stage(key, stage, force) -> None:
    """Move KEY (id@version) to STAGE: preproduction deploys its job (scores recorded, never chosen),
    retired stops it with a savepoint (refused while the active schedule names it)."""
    from control.ops import registry

    try:
        e = registry.set_stage(registry.Plane(), key, stage, force=force, progress=lambda m: click.echo(f"  {m}"))
    except ControlError as e:
        _fail(e)
    click.echo(f"{e.key} is in {e.stage}" + (f"; job {e.job_id}" if e.job_id and stage != "retired" else "")
               + (f"; savepoint {e.savepoint}" if stage == "retired" and e.savepoint else ""))


@model.command("list")
@click.option("--window", default=30.0, show_default=True, help="seconds of live scores for the rates")
def model_list(window) -> None:
    """Every registered deployment: stage, job, since when, live score rate and error rate (from the scores
    topic; the metrics job's fuller figures: `rendezvous models`)."""
    from control.ops import registry
    from control.ops.live import ScoreWindow

    plane = registry.Plane()
    known = registry.entries(plane)
    if not known:
        click.echo("no model registered yet (`rendezvous model register CARD`)")
        return
    try:
        with ScoreWindow(plane.bootstrap, plane.topics.scores, window) as w:
            w.poll()
            stats = w.stats()
    except ValueError:
        stats = {}
    click.echo(f"{'model':<28} {'stage':<15} {'job':<34} {'since':>8} {'scores/s':>9} {'errors':>7} {'p99':>8}")
    for key, e in sorted(known.items(), key=lambda kv: (registry.STAGES.index(kv[1].stage), kv[0])):
        st = stats.get(key)
        job = "-"
        if e.job_id:
            job = f"{e.job_id[:8]} {'running' if registry.job_alive(plane, e) else 'stopped'}"
        rate = f"{st.scores / window:.1f}" if st else "0.0"
        err = f"{st.error_rate:.1%}" if st else "-"
        p99 = f"{st.p99_ms:.0f} ms" if st and st.p99_ms is not None else "-"
        name = key + (" (canary)" if e.canary else "")
        click.echo(f"{name:<28} {e.stage:<15} {job:<34} {_ago(e.stage_since_ms):>8} {rate:>9} {err:>7} {p99:>8}")


@model.command("show")
@click.argument("key")
def model_show(key) -> None:
    """KEY's registry record and its life-cycle events."""
    import json as _json

    from control import kafka_io
    from control.ops import registry

    plane = registry.Plane()
    try:
        e = registry.get(plane, key)
    except ControlError as err:
        _fail(err)
    click.echo(e.model_dump_json(indent=2))
    click.echo("life cycle:")
    for _, raw in kafka_io.read_to_end(plane.bootstrap, plane.topics.lifecycle):
        try:
            ev = _json.loads(raw)
        except (TypeError, ValueError):
            continue
        if ev.get("model_id") == e.model_id and ev.get("model_version") in (e.version, None):
            moved = f" {ev.get('from_stage')} -> {ev.get('to_stage')}" if ev.get("to_stage") else ""
            click.echo(f"  {_ago(ev['at_ms']):>8} ago  {ev['kind']}{moved}  {_json.dumps(ev.get('detail') or {})}")


def _plane(topics_suffix: str | None):
    from control.ops.registry import Plane
    from schemas.topics import TopicNames

    return Plane(topics=TopicNames.suffixed(topics_suffix)) if topics_suffix else Plane()


_report_suffix = click.option("--topics-suffix", default=None,
                              help="Read the topic set named with this suffix (e.g. `metrics-SUFFIX`, as tests use).")


@main.group("metrics")
def metrics_group() -> None:
    """The live meta-analytics job (per model and window: scores, errors, latency, score distribution,
    agreement between models, precision/recall as labels arrive, answers by stage and trigger, the latency
    budget; written to the `metrics` topic; README, "Live metrics"), and the Flink processes' Prometheus
    endpoints (`metrics endpoints`)."""


@metrics_group.command("start")
@click.option("--window", "window_s", default=60, type=click.IntRange(1), show_default=True,
              help="seconds per tumbling event-time window")
@click.option("--threshold", default=0.5, type=float, show_default=True,
              help="decision threshold: a score at or above it flags (agreement, precision/recall)")
@click.option("--output-field", default="fraud_probability", show_default=True, help="the output field read as the score")
@click.option("--join-within", "join_within_s", default=30, type=click.IntRange(1), show_default=True,
              help="seconds two scores of one request (or an answer and its request) may be apart to be matched")
@click.option("--label-horizon", "label_horizon_s", default=120, type=click.IntRange(1), show_default=True,
              help="seconds after its score a label still counts in precision/recall")
@click.option("--lateness", "lateness_s", default=15, type=click.IntRange(1), show_default=True,
              help="seconds a record may come after later-stamped ones and still count (the watermark's lag)")
@click.option("--parallelism", type=click.IntRange(1, jobs_lib.MAX_PARALLELISM), default=None)
@_report_suffix
def metrics_start_cmd(window_s, threshold, output_field, join_within_s, label_horizon_s, lateness_s, parallelism,
                      topics_suffix) -> None:
    """Submit the metrics job (a Flink SQL job); prints its id."""
    from control.ops import metrics as metrics_ops
    from jobs.sql.metrics import MetricsConfig

    try:
        cfg = MetricsConfig(window_s=window_s, threshold=threshold, output_field=output_field,
                            join_within_s=join_within_s, label_horizon_s=label_horizon_s, lateness_s=lateness_s)
        click.echo(metrics_ops.start(topics=_topics(topics_suffix), cfg=cfg, parallelism=parallelism))
    except (ControlError, ValueError) as e:
        _fail(e)


@metrics_group.command("stop")
@_report_suffix
def metrics_stop_cmd(topics_suffix) -> None:
    """Cancel the metrics job (a new start resumes from its committed offsets)."""
    from control.ops import metrics as metrics_ops

    _cancelled(metrics_ops.stop(topics=_topics(topics_suffix)), "metrics job")


@metrics_group.command("endpoints")
def metrics_endpoints() -> None:
    """List the Prometheus scrape endpoints of the Flink processes: URL, role, pid (one per line)."""
    found = [e for e in runtime.metrics_endpoints() if e.url]
    for e in found:
        click.echo(f"{e.url}\t{e.role}\t{e.pid}")
    if not found:
        click.secho("no metrics endpoint found: is the runtime up (`rendezvous status`)?", fg="red", err=True)
        sys.exit(3)


@metrics_group.command("attribute")
@_report_suffix
@click.option("--every", type=click.FloatRange(min=1.0), default=None, metavar="SECONDS",
              help="Keep attributing: every SECONDS, write and print the rows not written yet, until interrupted "
                   "(Ctrl-C).")
def metrics_attribute_cmd(topics_suffix, every) -> None:
    """Change attribution: find the windows where a model's recall, score mean or answer share moved, name the
    upstream lifecycle events of the same span (the model's own and its cards' inputs', transitively), write
    them to the metrics topic as `attribution` rows (those not written yet) and print every attribution row."""
    from control.ops import attribution
    from control.ops import metrics as metrics_ops

    topics = _topics(topics_suffix)
    if every:
        import time

        click.echo(f"attributing every {every:g} s; new rows as they are written (Ctrl-C stops)", err=True)
        try:
            while True:
                for m in attribution.run_once(topics=topics):
                    click.echo(attribution.describe(m))
                time.sleep(every)
        except ControlError as e:
            _fail(e)
        except KeyboardInterrupt:
            return
    try:
        new = attribution.run_once(topics=topics)
        rows = [m for m in metrics_ops.read(topics=topics) if m.kind == "attribution"]
    except ControlError as e:
        _fail(e)
    known = {(m.window_start_ms, m.model, m.versus, m.trigger, m.figure) for m in rows}
    rows += [m for m in new if (m.window_start_ms, m.model, m.versus, m.trigger, m.figure) not in known]
    for m in rows:
        click.echo(attribution.describe(m))
    if not rows:
        click.echo("no figure moved with an upstream lifecycle event")


@main.group("archive")
def archive_group() -> None:
    """The decoy: archives every input exactly as the models read it, with every score, answer and label, to
    Parquet partitioned by date and hour (README, "The decoy archive")."""


@archive_group.command("start")
@click.option("--archive", "where", default=None, help="directory or file-system URL  [default: run/archive, "
              "or RENDEZVOUS_ARCHIVE]")
@click.option("--parallelism", type=click.IntRange(1, jobs_lib.MAX_PARALLELISM), default=None)
@_report_suffix
def archive_start_cmd(where, parallelism, topics_suffix) -> None:
    """Submit the decoy job; prints its id."""
    from control.ops import archive as arch

    try:
        click.echo(arch.start(topics=_topics(topics_suffix), archive=where, parallelism=parallelism))
    except ControlError as e:
        _fail(e)


@archive_group.command("stop")
@_report_suffix
def archive_stop_cmd(topics_suffix) -> None:
    """Cancel the decoy (a new start resumes from its committed offsets)."""
    from control.ops import archive as arch

    _cancelled(arch.stop(topics=_topics(topics_suffix)), "decoy")


@main.command("explain")
@click.argument("request_id")
@click.option("--source", type=click.Choice(["auto", "live", "archive"]), default="auto", show_default=True,
              help="auto: the live topics, else the archive")
@click.option("--archive", "where", default=None, help="the archive  [default: run/archive]")
@click.option("--json", "as_json", is_flag=True, help="print the story as JSON")
@_report_suffix
def explain_cmd(request_id, source, where, as_json, topics_suffix) -> None:
    """One request's story: its features, every model's score and latency (late ones too), the answer, the
    schedule version that applied and why the answer won; exit 3 when the request is not found."""
    import json as json_lib

    from control.ops import explain

    try:
        st = explain.story_of(request_id, topics=_topics(topics_suffix), archive=where, source=source)
    except (ControlError, TimeoutError) as e:
        _fail(e)
    click.echo(json_lib.dumps(st.as_dict(), indent=2) if as_json else explain.render(st))
    if not st.found:
        sys.exit(3)


def _when(text: str | None) -> int | None:
    """Epoch ms of `--since/--until`: epoch ms, or an ISO 8601 time (UTC unless it says otherwise)."""
    if text is None:
        return None
    from datetime import datetime, timezone

    if text.isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither epoch ms nor an ISO 8601 time (e.g. 2026-11-29T14:00)")
    return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000)


@main.command("replay")
@click.argument("card", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--since", default=None, help="archived requests from this time (ISO 8601 UTC, or epoch ms)")
@click.option("--until", default=None, help="... up to this time, excluded")
@click.option("--against", default=None, help="id@version whose recorded scores to compare with  [default: the "
              "model that answered most of those requests]")
@click.option("--threshold", default=0.5, type=float, show_default=True)
@click.option("--output-field", default="fraud_probability", show_default=True)
@click.option("--archive", "where", default=None, help="the archive  [default: run/archive]")
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="where the scores (Parquet) and report.json go  [default: run/replay/<run>]")
@click.option("--fail-if", "fail_if", multiple=True, help="exit 1 when it holds, e.g. 'agreement<0.95', "
              "'p99_ms>50', 'recall<0.8', 'peak_rss_mb>500' (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@_report_suffix
def replay_cmd(card, since, until, against, threshold, output_field, where, out, fail_if, as_json,
               topics_suffix) -> None:
    """Score archived requests with a candidate model card (side topics, never the production scores) and
    compare it with the recorded answers' model: agreement, correlation, disagreements, precision/recall/AUC
    with the labels, latency distribution, the Python worker's peak memory. Exit 1 when a --fail-if holds."""
    import json as json_lib

    from control.ops import replay as rp
    from schemas.model_card import ModelCard

    try:
        report = rp.replay(ModelCard.load(card), topics=_topics(topics_suffix), archive=where,
                           since_ms=_when(since), until_ms=_when(until), against=against, threshold=threshold,
                           output_field=output_field, out_dir=out, fail_if=list(fail_if),
                           progress=None if as_json else click.echo)
    except (ControlError, TimeoutError) as e:
        _fail(e)
    click.echo(json_lib.dumps(report.as_dict(), indent=2) if as_json else rp.render(report))
    if report.failed:
        sys.exit(1)


def _cancelled(ids: list[str], what: str) -> None:
    click.echo("\n".join(f"cancelled {j}" for j in ids) or f"no {what} was running")


def _topics(suffix):
    from schemas.topics import TopicNames

    return TopicNames.suffixed(suffix) if suffix else TopicNames()


@main.command("models")
@click.option("--minutes", default=10.0, type=click.FloatRange(min=0, min_open=True), show_default=True,
              help="how far back to look for metrics windows")
@_report_suffix
def models_cmd(minutes, topics_suffix) -> None:
    """Each model's live figures from the metrics job's latest window: stage, scores/min, error rate,
    latency p50/p99, disagreement with the champion and the canary, precision/recall (latest window with
    labels), share of the answers. Exit 3 when there are no current figures (no metrics job running)."""
    from control.ops import report as rp
    from schemas.records import now_ms
    from tools import report as tr

    now = now_ms()
    try:
        data = rp.load(_plane(topics_suffix), now - int(minutes * 60_000), now)
    except (ControlError, TimeoutError) as e:
        _fail(e)
    lines, current = tr.models_text(data, now)
    for line in lines:
        click.echo(line)
    if not current:
        sys.exit(3)


@main.command("report")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to write the HTML  [default: run/report/report.html]")
@click.option("--since", "since_min", default=60.0, type=click.FloatRange(min=0), show_default=True,
              help="minutes of metrics windows to show (0: everything in the topic)")
@_report_suffix
def report_cmd(out, since_min, topics_suffix) -> None:
    """Write the live meta-analytics as one self-contained HTML file (plots of latency, scores, agreement,
    answers by stage/trigger and by model with schedule changes and lifecycle events marked, precision/recall,
    the latency budget); prints its path."""
    from control.ops import report as rp
    from schemas.records import now_ms
    from tools import report as tr

    now = now_ms()
    try:
        data = rp.load(_plane(topics_suffix), now - int(since_min * 60_000) if since_min else None, now,
                       with_lineage=True)
    except (ControlError, TimeoutError) as e:
        _fail(e)
    path = tr.write(data, out or RuntimeSettings().run_dir / "report" / "report.html")
    click.echo(f"report: {path} ({len(data.rows)} metrics rows, {len(data.markers)} schedule changes and "
               "lifecycle events)")
    if not data.rows:
        click.echo(f"no metrics rows in topic {data.topic}: is the metrics job running? ({tr.HINT})", err=True)


@main.command("roll")
@click.argument("key")
@click.option("--steps", default="10,50,100", show_default=True, help="percent of the replaced model's traffic")
@click.option("--every", "every_s", default=60.0, show_default=True, help="seconds per step")
@click.option("--replace", default=None, help="id@version to take traffic from [default: the first stage's "
                                              "first choice]")
@click.option("--window", "window_s", default=10.0, show_default=True, help="guard window (s)")
@click.option("--max-error-rate", default=0.05, show_default=True)
@click.option("--max-p99-ms", type=float, default=None, help="[default: the replaced model's stage deadline]")
@click.option("--max-p99-ratio", type=click.FloatRange(0), default=1.5, show_default=True,
              help="when the replaced model is over --max-p99-ms too (a busy machine), the new one crosses the latency "
                   "guard only past this many times its p99; 0: the bound alone")
@click.option("--min-scores", type=click.IntRange(1), default=20, show_default=True,
              help="the new model's scores in the window the guards judge from; a step waits for them (30 s at most)")
@click.option("--canary", default=None, help="id@version of the canary [default: the registered canary]")
def roll_cmd(key, steps, every_s, replace, window_s, max_error_rate, max_p99_ms, max_p99_ratio, min_scores,
             canary) -> None:
    """Soft-roll KEY (id@version, in preproduction) into production step by step; guards over live scores
    roll back automatically when crossed."""
    from control.ops import registry, rollout

    plane = registry.Plane()
    try:
        if canary is None:  # the registered canary that is scoring
            canaries = [e.key for e in registry.entries(plane).values()
                        if e.canary and e.stage == "preproduction" and registry.job_alive(plane, e)]
            canary = canaries[0] if canaries else None
        try:
            step_list = [int(x) for x in steps.split(",")]
        except ValueError:
            raise ControlError(f"--steps is a comma-separated list of percentages, e.g. 10,50,100, not {steps!r}")
        guards = rollout.Guards(window_s=window_s, max_error_rate=max_error_rate, max_p99_ms=max_p99_ms,
                                max_p99_ratio=max_p99_ratio, min_scores=min_scores, canary=canary)
        result = rollout.roll(plane, key, step_list, every_s, guards, replace, progress=click.echo)
    except (ControlError, ValueError) as e:
        _fail(e)
    if result.rolled_back:
        click.secho(f"rolled back to schedule v{result.base_version} (now v{result.rollback_version})", fg="red",
                    err=True)
        sys.exit(2)


@main.command("rollback")
@click.option("--to", "to_version", type=int, default=None,
              help="schedule version to restore [default: the one before the roll, else the previous one]")
def rollback_cmd(to_version) -> None:
    """Restore an earlier schedule in one step (published as the next version)."""
    from control.ops import registry, rollout

    try:
        rollout.rollback(registry.Plane(), to_version, progress=click.echo)
    except ControlError as e:
        _fail(e)


@main.group("quality", invoke_without_command=True)
@click.option("--topic", default="requests", show_default=True, help="(on-demand check) the input topic")
@click.option("--last", default=1000, show_default=True, help="(on-demand check) records per partition to check")
@click.pass_context
def quality_cmd(ctx, topic, last) -> None:
    """Data quality (Great Expectations). Without a subcommand: check the last records of an input topic
    now (exit 1 when a check fails). The quality job's results: show, watch, docs; its suite: suite."""
    if ctx.invoked_subcommand is not None:
        return
    from tools import quality

    report = quality.check_topic(RuntimeSettings().bootstrap_servers, topic, last)
    click.echo(report.summary())
    if not report.success:
        sys.exit(1)


def _print_result(r) -> None:
    from datetime import datetime, timezone

    at = datetime.fromtimestamp(r.batch_end_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    mark = click.style("PASS", fg="green") if r.success else click.style("FAIL", fg="red")
    click.echo(f"{mark} {at}  {r.source_topic}: {r.records} records ({r.unparseable} unparseable), suite "
               f"{r.suite_name}@{r.suite_version}, validated in {r.validation_ms:.0f} ms")
    if r.error:
        click.echo(f"     validation error: {r.error}")
    for o in r.failed:
        extra = f", {o.unexpected_count} unexpected, e.g. {o.examples[:3]}" if o.unexpected_count else ""
        click.echo(f"     failed {o.label}: observed {o.observed_value}{extra}")
    if r.skipped:
        click.echo(f"     not evaluated (batch smaller than the suite's min_rows): {', '.join(r.skipped)}")


def _docs_dir(out) -> Path:
    return Path(out) if out else RuntimeSettings().run_dir / "quality" / "data_docs"


def _render_docs(results, out) -> None:
    from tools import data_docs

    docs = data_docs.render(results, _docs_dir(out))
    click.echo(f"Data Docs: {docs.index}" + (f"  (latest batch: {docs.latest})" if docs.latest else ""))


_quality_topic = click.option("--topic", default="quality", show_default=True, help="the quality job's results topic")
_docs_out = click.option("--out", default=None, type=click.Path(file_okay=False),
                         help="Data Docs directory  [default: run/quality/data_docs]")


@quality_cmd.command("show")
@_quality_topic
@click.option("--last", default=5, show_default=True, help="batches to show")
@click.option("--docs/--no-docs", default=False, show_default=True, help="also render Data Docs of them")
@_docs_out
def quality_show(topic, last, docs, out) -> None:
    """The latest batches' results (exit 1 when the latest batch failed, 3 when there is none yet)."""
    from control.ops import quality as q

    try:
        res = q.latest(RuntimeSettings().bootstrap_servers, topic, last)
    except RuntimeError as e:
        _fail(e)
    for r in res.results[-last:]:
        _print_result(r)
    if res.unreadable:
        click.echo(f"({res.unreadable} records in {topic} were not quality results)")
    if res.latest is None:
        click.echo(f"no quality results in {topic} yet (deploy the job: `rendezvous deploy quality`)", err=True)
        sys.exit(3)
    if docs:
        _render_docs(res.results[-last:], out)
    if not res.latest.success:
        sys.exit(1)


@quality_cmd.command("watch")
@_quality_topic
@click.option("--duration", default=None, type=float, help="stop after this many seconds  [default: Ctrl-C]")
@click.option("--docs/--no-docs", default=True, show_default=True, help="re-render Data Docs after each batch")
@click.option("--keep", default=50, show_default=True, help="batches kept in the Data Docs")
@_docs_out
def quality_watch(topic, duration, docs, keep, out) -> None:
    """Print each batch's result as it arrives (exit 1 when the last one seen failed)."""
    from control.ops import quality as q

    s = RuntimeSettings()
    shown = q.latest(s.bootstrap_servers, topic, keep).results if docs else []
    last = None
    try:
        for r in q.follow(s.bootstrap_servers, topic, duration_s=duration):
            _print_result(r)
            last = r
            if docs:
                shown = (shown + [r])[-keep:]
                _render_docs(shown, out)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        _fail(e)
    if last is not None and not last.success:
        sys.exit(1)


@quality_cmd.command("docs")
@_quality_topic
@click.option("--last", default=50, show_default=True, help="batches in the Data Docs")
@_docs_out
def quality_docs(topic, last, out) -> None:
    """Render Great Expectations Data Docs (HTML) of the latest batches; prints where."""
    from control.ops import quality as q

    try:
        res = q.latest(RuntimeSettings().bootstrap_servers, topic, last)
        _render_docs(res.results, out)
    except (RuntimeError, FileExistsError) as e:
        _fail(e)


@quality_cmd.command("suite")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="write it here  [default: print]")
def quality_suite(out) -> None:
    """The expectation suite derived from the training data's profile (GE JSON form)."""
    import json as _json

    from control.ops.deploy import load_suite

    text = _json.dumps(load_suite(), indent=2)
    if out:
        Path(out).write_text(text + "\n")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@main.command("sql")
@click.argument("query", required=False)
@click.option("-f", "--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Submit the file's statements (CREATE TABLE/VIEW, SET, INSERT INTO) as a continuous job.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="How a query's result is printed (json: one object per line).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Print at most this many rows.")
@click.option("--topics-suffix", default=None,
              help="Query the topic set named with this suffix (e.g. `answers-SUFFIX`, as tests use).")
@click.option("--name", "job_name", default=None, help="-f: the job's name  [default: sql-<file name>]")
@click.option("--start", type=click.Choice(["earliest", "latest", "committed"]), default="earliest",
              show_default=True, help="-f: where the job's tables start reading.")
@click.option("--parallelism", type=click.IntRange(1, jobs_lib.MAX_PARALLELISM), default=None,
              help="-f: the job's parallelism.")
def sql_cmd(query, file, fmt, limit, topics_suffix, job_name, start, parallelism) -> None:
    """Query the streams with Flink SQL: `rendezvous sql "SELECT ..."` reads the topics as they are now and
    prints the result; `rendezvous sql -f FILE.sql` submits a continuous INSERT INTO job and prints its id.
    Tables: requests, augmented_requests, scores, late_scores, answers, quarantine, lifecycle, quality,
    schedules, registry (README, "SQL over the streams")."""
    from control.ops import sql as sql_lib
    from schemas.topics import TopicNames

    topics = TopicNames.suffixed(topics_suffix) if topics_suffix else TopicNames()
    if bool(query) == bool(file):
        _fail(ControlError("give either a query (`rendezvous sql \"SELECT ...\"`) or a file (`-f FILE.sql`)"))
    try:
        if file:
            jid = sql_lib.submit(file.read_text(), topics=topics, job_name=job_name or f"sql-{file.stem}",
                                 start=start, parallelism=parallelism)
            click.echo(jid)
        else:
            click.echo(sql_lib.render(sql_lib.query(query, topics=topics, limit=limit), fmt), nl=False)
    except ControlError as e:
        _fail(e)


@main.command("train")
@click.option("--out", default=None, help="default: artifacts/models")
def train_cmd(out) -> None:
    """Train the demo fraud models from synthetic data."""
    from pathlib import Path

    from training.train import train_all

    train_all(Path(out) if out else RuntimeSettings().home / "artifacts" / "models", progress=click.echo)


@main.command("lineage")
@click.option("--dot", "dot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the graph in Graphviz's language to this file")
def lineage_cmd(dot_path) -> None:
    """The graph of streams and jobs: which running job reads and writes which topic, which model depends on
    which (the cards' inputs), checked against the broker's consumer groups: a group with offsets on a model's
    output topic that no running job declares is reported (exit status 4)."""
    from control.ops import lineage

    try:
        graph = lineage.read()
    except ControlError as e:
        _fail(e)
    for line in graph.lines():
        click.echo(line)
    if dot_path:
        dot_path.write_text(graph.dot())
    if graph.findings:
        sys.exit(4)


if __name__ == "__main__":
    main()
