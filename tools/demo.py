"""The demo behind `make demo`: a fraud-scoring system with a champion, a challenger on a model
server, and a deliberately slow model, behind a rendezvous whose schedule changes mid-run."""

from __future__ import annotations

import json
import time
from pathlib import Path

from control import runtime
from control.ops import deploy, jobs, schedules
from control.settings import RuntimeSettings
from schemas.model_card import ModelCard
from tools import load

DEMO_PREFIX = "demo: "

SCHEDULE_V1 = {
    "name": "champion-first",
    "stages": [{"deadline_ms": 250, "models": ["fraud-champion"]},
               {"deadline_ms": 600, "models": ["fraud-champion", "fraud-challenger", "fraud-slow"]}],
    "default_output": {"fraud_probability": 0.0, "decision": "review"},
}
SCHEDULE_V2 = {
    "name": "challenger-promoted",
    "stages": [{"deadline_ms": 250, "models": ["fraud-challenger"]},
               {"deadline_ms": 600, "models": ["fraud-challenger", "fraud-champion", "fraud-slow"]}],
    "default_output": {"fraud_probability": 0.0, "decision": "review"},
}


SHED_AFTER_MS = max(st["deadline_ms"] for sched in (SCHEDULE_V1, SCHEDULE_V2) for st in sched["stages"])
"""Model jobs do not score requests older than the schedules' last deadline (load shedding under overload)."""


def demo_cards(s: RuntimeSettings, mlserver_url: str) -> list[ModelCard]:
    models = s.home / "artifacts" / "models"
    champion = ModelCard.load(models / "fraud-champion" / "1.0.0" / "card.json")
    challenger_local = ModelCard.load(models / "fraud-challenger" / "2.0.0" / "card.json")
    challenger = ModelCard(
        model_id="fraud-challenger", version=challenger_local.version, runner="model_udfs.remote:KServeV2Runner",
        params={"url": mlserver_url, "model_name": "fraud-challenger", "model_version": challenger_local.version,
                "output_tensor": "predict_proba", "output_index": 1, "output_name": "fraud_probability"},
        timeout_ms=500, capacity=100, description="the challenger, served by MLServer (Open Inference Protocol)")
    slow = ModelCard(model_id="fraud-slow", version="0.1.0", runner="model_udfs.python_runners:ConstantRunner",
                     params={"delay_ms": 700, "jitter_ms": 300, "output": {"fraud_probability": 0.5}},
                     timeout_ms=1500, description="a deliberately slow model: always misses the deadlines")
    return [champion, challenger, slow]


def ensure_models(s: RuntimeSettings, progress) -> None:
    if not (s.home / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json").exists():
        from training.train import train_all

        train_all(s.home / "artifacts" / "models", progress=progress)


def run(progress=print, rate: float = 100.0, duration_s: float = 60.0, report_path: Path | None = None) \
        -> load.LoadReport:
    """The demo; its report goes to `report_path` (default run/demo/latest.json)."""
    from control.runtime import mlserver

    s = RuntimeSettings()
    t_start = time.monotonic()
    progress("== 1/6 starting the embedded runtime (Kafka + Flink)")
    runtime.up(s, progress=lambda m: progress(f"   {m}"))
    ensure_models(s, progress)

    progress("== 2/6 clearing a previous demo run")
    deploy.stop_jobs_named(DEMO_PREFIX, s, progress=lambda m: progress(f"   {m}"))
    mlserver.stop_recorded(s.mlserver_http_port, s)

    progress("== 3/6 serving the challenger on MLServer")
    srv = mlserver.start(s.home / "artifacts" / "models" / "fraud-challenger" / "2.0.0", s,
                         progress=lambda m: progress(f"   {m}"))
    progress(f"   MLServer at {srv.url}")

    progress("== 4/6 deploying jobs: external state, three models, rendezvous (submitted with `flink run`)")
    ids = {}
    ids["external-state"] = deploy.deploy_external_state(s, job_name=DEMO_PREFIX + "external-state", start="latest",
                                                         wait=False)
    for card in demo_cards(s, srv.url):
        ids[card.key] = deploy.deploy_model(card, s, job_name=f"{DEMO_PREFIX}model {card.key}", start="latest",
                                            wait=False, skip_older_than_ms=SHED_AFTER_MS)
    ids["rendezvous"] = deploy.deploy_rendezvous(s, job_name=DEMO_PREFIX + "rendezvous", start="latest", wait=False)
    for name, jid in ids.items():
        jobs.wait_running(jid, s, timeout=180)
        progress(f"   running: {name:<28} {jid}")

    progress("== 5/6 publishing schedule v-next: champion first, then champion/challenger/slow, then default")
    v1 = schedules.publish(s.bootstrap_servers, SCHEDULE_V1)
    progress(f"   schedule v{v1.version} '{v1.name}' active")
    last_deadline = max(st["deadline_ms"] for st in SCHEDULE_V1["stages"])
    progress(f"   warming up at {rate:.0f} requests/s until answers are on time (fresh JVMs compile the new jobs, "
             "fresh Python workers load their models)")
    ready, windows = load.warm_up(s.bootstrap_servers, rate, on_time_ms=last_deadline,
                                  progress=lambda m: progress(f" {m}"))
    if not ready:
        progress(f"   not on time after {len(windows)} warm-up windows: the machine may be busy "
                 "(`rendezvous status`, `top`); measuring anyway")

    progress(f"== 6/6 load: {rate:.0f} requests/s for {duration_s:.0f} s; the challenger is promoted half-way")
    state = {"switched": False}

    def on_tick(elapsed: float) -> None:
        if not state["switched"] and elapsed >= duration_s / 2:
            state["switched"] = True
            v2 = schedules.publish(s.bootstrap_servers, SCHEDULE_V2)
            progress(f"  >> published schedule v{v2.version} '{v2.name}' (no job restarted)")

    report = load.run_load(s.bootstrap_servers, rate=rate, duration_s=duration_s, progress=progress, on_tick=on_tick)
    out = report_path or s.run_dir / "demo" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.as_dict(), indent=2))
    progress("")
    progress("== summary")
    progress(report.summary())
    progress(f"(after {len(windows)} warm-up windows of 5 s at the same rate"
             f"{'' if ready else ', never on time'}; a fresh runtime needs them)")
    progress("")
    progress(f"Demo took {time.monotonic() - t_start:.0f} s; report in {out}.")
    progress("The jobs keep running: `.venv/bin/rendezvous job list`; Flink UI: "
             f"http://{s.flink_address}; stop everything with `.venv/bin/rendezvous down`.")
    return report
