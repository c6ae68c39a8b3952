"""The demo behind `make demo`: a fraud-scoring system run through its life cycle. The champion
(fraud-champion@1.0.0), a challenger on a model server and a deliberately slow model are in
production behind a rendezvous; a canary (hand-written rules) and the champion's next version
(fraud-champion@1.1.0) score every request in preproduction. While load runs, the new version is
soft-rolled in (10 -> 50 -> 100 %, guarded by live error rate, latency and disagreement with the
canary), and the old champion stays as the fallback in postproduction."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from control import runtime
from control.errors import ControlError
from control.ops import deploy, jobs, registry, rollout, schedules
from control.ops import metrics as metrics_ops
from control.ops.registry import Plane
from control.settings import RuntimeSettings
from jobs.sql.metrics import MetricsConfig
from schemas.model_card import ModelCard
from tools import load

DEMO_PREFIX = "demo: "
METRICS_WINDOW_S = 10

SCHEDULE = {
    "name": "champion-first",
    "stages": [{"deadline_ms": 250, "models": ["fraud-champion"]},
               {"deadline_ms": 600, "models": ["fraud-champion", "fraud-challenger", "fraud-slow"]}],
    "default_output": {"fraud_probability": 0.0, "decision": "review"},
}
"""Bare ids: publishing makes them the versions in production (fraud-champion -> 1.0.0)."""

SHED_AFTER_MS = max(st["deadline_ms"] for st in SCHEDULE["stages"])
"""Model jobs do not score requests older than the schedule's last deadline (load shedding under overload)."""

ROLL_STEPS = [10, 50, 100]


def demo_cards(s: RuntimeSettings, mlserver_url: str) -> dict[str, ModelCard]:
    """The demo's deployments by role: champion, next (the champion's new version), challenger, slow, canary."""
    models = s.home / "artifacts" / "models"
    champion = ModelCard.load(models / "fraud-champion" / "1.0.0" / "card.json")
    nxt = ModelCard.load(models / "fraud-champion" / "1.1.0" / "card.json")
    challenger_local = ModelCard.load(models / "fraud-challenger" / "2.0.0" / "card.json")
    challenger = ModelCard(
        model_id="fraud-challenger", version=challenger_local.version, runner="model_udfs.remote:KServeV2Runner",
        params={"url": mlserver_url, "model_name": "fraud-challenger", "model_version": challenger_local.version,
                "output_tensor": "predict_proba", "output_index": 1, "output_name": "fraud_probability"},
        timeout_ms=500, capacity=100, description="the challenger, served by MLServer (Open Inference Protocol)")
    slow = ModelCard(model_id="fraud-slow", version="0.1.0", runner="model_udfs.python_runners:ConstantRunner",
                     params={"delay_ms": 700, "jitter_ms": 300, "output": {"fraud_probability": 0.5}},
                     timeout_ms=1500, description="a deliberately slow model: always misses the deadlines")
    canary = ModelCard(model_id="fraud-canary", version="1.0.0", runner="model_udfs.python_runners:RuleRunner",
                       feature_version=None, description="hand-written fraud rules: the canary, never promoted, "
                       "never retired; a roll guard watches how often a new model disagrees with it")
    return {"champion": champion, "next": nxt, "challenger": challenger, "slow": slow, "canary": canary}


def ensure_models(s: RuntimeSettings, progress) -> None:
    models = s.home / "artifacts" / "models"
    if not all((models / m / v / "card.json").exists()
               for m, v in (("fraud-champion", "1.0.0"), ("fraud-champion", "1.1.0"), ("fraud-challenger", "2.0.0"))):
        from training.train import train_all

        train_all(models, progress=progress)


def live_figures(s: RuntimeSettings, plane: Plane, progress, wait_s: float = 3 * METRICS_WINDOW_S) -> Path:
    """Print the models' figures once the metrics job has closed a window of the load (a window closes when
    the watermark passes its end: the load's last seconds show only while traffic continues), and write the
    HTML report; returns its path."""
    from control.ops import report as rp
    from schemas.records import now_ms
    from tools import report as tr

    since = now_ms() - 5 * 60_000
    deadline = time.monotonic() + wait_s
    data = rp.load(plane, since)
    while not data.rows and time.monotonic() < deadline:
        time.sleep(2)
        data = rp.load(plane, since)
    lines, _ = tr.models_text(data, now_ms())
    for line in lines:
        progress(f"   {line}")
    return tr.write(data, s.run_dir / "report" / "report.html")


def run(progress=print, rate: float = 100.0, duration_s: float = 60.0, report_path: Path | None = None) \
        -> load.LoadReport:
    """The demo; its report goes to `report_path` (default run/demo/latest.json)."""
    from control.runtime import mlserver

    s = RuntimeSettings()
    plane = Plane(s)
    t_start = time.monotonic()
    progress("== 1/7 starting the embedded runtime (Kafka + Flink)")
    runtime.up(s, progress=lambda m: progress(f"   {m}"))
    ensure_models(s, progress)

    progress("== 2/7 clearing a previous demo run (its jobs, and its models from the registry)")
    deploy.stop_jobs_named(DEMO_PREFIX, s, progress=lambda m: progress(f"   {m}"))
    mlserver.stop_recorded(s.mlserver_http_port, s)

    progress("== 3/7 serving the challenger on MLServer")
    srv = mlserver.start(s.home / "artifacts" / "models" / "fraud-challenger" / "2.0.0", s,
                         progress=lambda m: progress(f"   {m}"))
    progress(f"   MLServer at {srv.url}")
    cards = demo_cards(s, srv.url)
    for card in cards.values():
        registry.forget(plane, card.key)

    progress("== 4/7 deploying jobs (`flink run`): external state, rendezvous, and the models by life-cycle stage")
    ids = {}
    ids["external-state"] = deploy.deploy_external_state(s, job_name=DEMO_PREFIX + "external-state", start="latest",
                                                         wait=False)
    ids["rendezvous"] = deploy.deploy_rendezvous(s, job_name=DEMO_PREFIX + "rendezvous", start="latest", wait=False)
    # the live meta-analytics, with windows short enough to see several in one demo, and a short lateness: the
    # model jobs are warm before the load (the warm-up gate), and a window closes only lateness after its end
    # while traffic flows (the demo's traffic stops with its load)
    metrics_ops.stop(s)
    ids["metrics (SQL)"] = metrics_ops.start(s, cfg=MetricsConfig(window_s=METRICS_WINDOW_S, lateness_s=5),
                                             start_from="latest", wait=False)
    plan = [("champion", "production"), ("challenger", "production"), ("slow", "production"),
            ("canary", "preproduction"), ("next", "preproduction")]
    for role, stage in plan:
        card = cards[role]
        registry.register(plane, card, canary=role == "canary")
        # force: the demo starts over, whatever the schedule a previous run left active names
        e = registry.set_stage(plane, card.key, "preproduction", force=True, job_name=f"{DEMO_PREFIX}model {card.key}",
                               wait=False, skip_older_than_ms=SHED_AFTER_MS)
        if stage == "production":
            e = registry.set_stage(plane, card.key, "production", force=True)
        ids[card.key] = e.job_id
    for name, jid in ids.items():
        jobs.wait_running(jid, s, timeout=180)
        progress(f"   running: {name:<28} {jid}")
    for role, stage in plan:
        progress(f"   {cards[role].key:<24} {stage:<14} ({role})")

    progress("== 5/7 publishing the schedule: champion first, then champion/challenger/slow, then the default")
    v1 = schedules.publish(s.bootstrap_servers, SCHEDULE, resolve=registry.resolver(plane))
    progress(f"   schedule v{v1.version} '{v1.name}' active: " +
             " | ".join(f"{st.deadline_ms} ms: {', '.join(st.models)}" for st in v1.stages))
    progress(f"   warming up at {rate:.0f} requests/s until answers are on time (fresh JVMs compile the new jobs, "
             "fresh Python workers load their models)")
    ready, windows = load.warm_up(s.bootstrap_servers, rate, on_time_ms=SHED_AFTER_MS,
                                  progress=lambda m: progress(f" {m}"))
    if not ready:
        progress(f"   not on time after {len(windows)} warm-up windows: the machine may be busy "
                 "(`rendezvous status`, `top`); measuring anyway")

    step_s = max(3.0, duration_s / 5)
    progress(f"== 6/7 load: {rate:.0f} requests/s for {duration_s:.0f} s (on until the roll decides); "
             f"{cards['next'].key} is rolled in ({' -> '.join(f'{w} %' for w in ROLL_STEPS)}, {step_s:.0f} s per "
             "step, guarded)")
    state: dict = {"started": False}
    guards = rollout.Guards(window_s=min(10.0, step_s), canary=cards["canary"].key)

    def roll_in() -> None:
        try:
            state["result"] = rollout.roll(
                plane, cards["next"].key, ROLL_STEPS, step_s, guards,
                replace=cards["champion"].key, progress=lambda m: progress(f"  >> {m.strip()}"))
        except ControlError as e:  # reported, the load goes on
            state["error"] = e
            progress(f"  >> roll not done: {e}")

    roller = threading.Thread(target=roll_in, daemon=True)

    def on_tick(elapsed: float) -> None:
        if not state["started"] and elapsed >= step_s / 2:
            state["started"] = True
            roller.start()

    # the load goes on until the roll has decided (its guards judge each step from live scores), within the time its
    # steps may take: each its own, the guards' wait for evidence, a rollback
    roll_bound = time.monotonic() + duration_s + len(ROLL_STEPS) * (step_s + guards.evidence_wait_s + 10) + 60
    report = load.run_load(s.bootstrap_servers, rate=rate, duration_s=duration_s, progress=progress, on_tick=on_tick,
                           labels_topic="labels", label_delay_s=5.0,
                           keep_going=lambda: roller.is_alive() and time.monotonic() < roll_bound)
    if state["started"]:
        roller.join(timeout=max(0.0, roll_bound - time.monotonic()) + 30)
        if roller.is_alive():
            progress("  >> the roll has not decided in time: see `rendezvous model show "
                     f"{cards['next'].key}`; the active schedule says its step (`rendezvous schedule show`)")
    out = report_path or s.run_dir / "demo" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = state.get("result")
    out.write_text(json.dumps({**report.as_dict(), "roll": None if result is None else {
        "model": result.model, "replaces": result.replaces, "steps": result.steps_done,
        "schedule_versions": result.schedule_versions, "rolled_back": result.rolled_back,
        "breaches": result.breaches}}, indent=2))
    progress("")
    progress("== 7/7 summary")
    progress(report.summary())
    progress(f"(after {len(windows)} warm-up windows of 5 s at the same rate"
             f"{'' if ready else ', never on time'}; a fresh runtime needs them)")
    if result is not None:
        progress(f"roll of {result.model}: " + ("rolled back: " + "; ".join(result.breaches) if result.rolled_back
                 else f"steps {result.steps_done} as schedules {result.schedule_versions}; "
                 f"{result.replaces} is now the fallback in postproduction"))
    progress("")
    progress("the registry now (`rendezvous model list`):")
    for e in sorted(registry.entries(plane).values(), key=lambda e: registry.STAGES.index(e.stage)):
        if e.key in {c.key for c in cards.values()}:
            progress(f"   {e.key:<24} {e.stage:<15}{' (canary)' if e.canary else ''}")
    progress("")
    progress("each model's live figures, from the metrics job (`rendezvous models`):")
    html = live_figures(s, plane, progress)
    progress("")
    progress(f"Demo took {time.monotonic() - t_start:.0f} s; load report in {out}; plots in {html} "
             "(`rendezvous report`).")
    progress("The jobs keep running: `.venv/bin/rendezvous job list`, `.venv/bin/rendezvous model list`; "
             f"Flink UI: http://{s.flink_address}; roll back with `.venv/bin/rendezvous rollback`; stop everything "
             "with `.venv/bin/rendezvous down`.")
    return report
