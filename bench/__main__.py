"""`make bench`: the rendezvous system against a bare PyFlink pass-through, measured in one run.

1. Baseline: a bare PyFlink pass-through job (jobs.smoke) drains N pre-written records from one Kafka
   topic to another; records/s is its capacity on this machine now.
2. The system: external state + three model jobs (fast, second, slow) + rendezvous, fed at --rate for
   --duration by the load generator; answers/s, answer latency, deadline overshoot and the
   rendezvous's overhead over the winning model, read from the answers.
Each figure is the median of --runs runs. Prints the figures and ratios; writes run/bench/latest.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from control import runtime
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs, schedules
from control.settings import RuntimeSettings
from schemas.model_card import ModelCard
from schemas.topics import TopicSpec
from tools import load

SCHEDULE = {"name": "bench", "stages": [{"deadline_ms": 30, "models": ["bench-fast"]},
                                        {"deadline_ms": 80, "models": ["bench-second", "bench-slow"]}],
            "default_output": {"fraud_probability": 0.0}}
MODELS = [
    # the preferred model: fast, but never answers 10% of requests (those hit the 30 ms deadline)
    ModelCard(model_id="bench-fast", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 1, "silent_rate": 0.1, "output": {"fraud_probability": 0.1}}, timeout_ms=500),
    ModelCard(model_id="bench-second", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 5, "output": {"fraud_probability": 0.2}}, timeout_ms=500),
    # always too slow: its scores arrive after the answer (late scores)
    ModelCard(model_id="bench-slow", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 150, "output": {"fraud_probability": 0.3}}, timeout_ms=500),
]


def med(values):
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def baseline(s: RuntimeSettings, n: int, log) -> float:
    """The bare PyFlink pass-through's records/s, draining n pre-written records."""
    from bench.model_job import one_run

    rate = one_run(s, None, [json.dumps({"id": i, "value": i}) for i in range(n)])
    log(f"   baseline: {n} records at {rate:.0f} records/s")
    return rate


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=float, default=1000.0, help="offered requests/s")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline-records", type=int, default=20_000)
    a = p.parse_args(argv)
    log = print
    s = RuntimeSettings()
    runtime.up(s, progress=lambda m: log(f"   {m}"))

    log(f"== baseline: bare PyFlink pass-through, {a.runs} runs")
    base = [baseline(s, a.baseline_records, log) for _ in range(a.runs)]

    log("== system: external state + 3 model jobs + rendezvous")
    u = uuid.uuid4().hex[:8]
    t = {k: f"bench-{k}-{u}" for k in ("requests", "augmented", "scores", "late", "quarantine", "schedules",
                                        "answers")}
    ensure_topics(s.bootstrap_servers, [TopicSpec(v, compacted=(k == "schedules")) for k, v in t.items()])
    schedules.publish(s.bootstrap_servers, SCHEDULE, topic=t["schedules"], lifecycle_topic=None)
    ids = [deploy.deploy_external_state(s, job_name=f"bench: external-state {u}", wait=False, start="latest",
                                        source_topic=t["requests"], sink_topic=t["augmented"],
                                        quarantine_topic=t["quarantine"], group_id=f"bench-es-{u}")]
    for card in MODELS:
        ids.append(deploy.deploy_model(card, s, job_name=f"bench: model {card.key} {u}", wait=False, start="latest",
                                       source_topic=t["augmented"], sink_topic=t["scores"],
                                       group_id=f"bench-{card.model_id}-{u}"))
    ids.append(deploy.deploy_rendezvous(s, job_name=f"bench: rendezvous {u}", wait=False, start="latest",
                                        augmented_topic=t["augmented"], scores_topic=t["scores"],
                                        schedules_topic=t["schedules"], answers_topic=t["answers"],
                                        late_topic=t["late"], invalid_topic=t["quarantine"],
                                        group_id=f"bench-rv-{u}"))
    try:
        for jid in ids:
            jobs.wait_running(jid, s, timeout=180)
        log("   warming up")
        load.run_load(s.bootstrap_servers, 50, 3, requests_topic=t["requests"], answers_topic=t["answers"],
                      drain_s=60, progress=None)
        reports = []
        for i in range(a.runs):
            log(f"== run {i + 1}/{a.runs}: {a.rate:.0f} requests/s for {a.duration:.0f} s")
            r = load.run_load(s.bootstrap_servers, a.rate, a.duration, requests_topic=t["requests"],
                              answers_topic=t["answers"], drain_s=30,
                              progress=lambda m: log(m) if "draining" not in m else None)
            log(r.summary())
            reports.append(r)
            time.sleep(2)
    finally:
        for jid in ids:
            try:
                jobs.cancel(jid, s)
            except Exception:  # noqa: BLE001
                pass

    result = {
        "rate": a.rate,
        "duration_s": a.duration,
        "runs": a.runs,
        "answers_per_s": med([r.answers_per_s for r in reports]),
        "unanswered": med([r.unanswered for r in reports]),
        "duplicate_answers": med([r.duplicate_answers for r in reports]),
        "latency_p50_ms": med([r.latency_p50_ms for r in reports]),
        "latency_p99_ms": med([r.latency_p99_ms for r in reports]),
        "overshoot_p50_ms": med([r.overshoot_p50_ms for r in reports]),
        "overshoot_p99_ms": med([r.overshoot_p99_ms for r in reports]),
        "overhead_p50_ms": med([r.overhead_p50_ms for r in reports]),
        "overhead_p99_ms": med([r.overhead_p99_ms for r in reports]),
        "baseline_per_s": med(base),
        "baseline_runs_per_s": [round(b, 1) for b in base],
    }
    result["ratio_vs_baseline"] = (round(result["answers_per_s"] / result["baseline_per_s"], 4)
                                   if result["answers_per_s"] and result["baseline_per_s"] else None)
    result["answered_fraction"] = med([r.answered / r.sent if r.sent else None for r in reports])
    result["runs_detail"] = [r.as_dict() for r in reports]
    out = s.run_dir / "bench" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log("")
    log("== results (medians of %d runs)" % a.runs)
    for k in ("rate", "answers_per_s", "unanswered", "latency_p50_ms", "latency_p99_ms", "overshoot_p50_ms",
              "overshoot_p99_ms", "overhead_p50_ms", "overhead_p99_ms", "baseline_per_s", "ratio_vs_baseline",
              "answered_fraction"):
        log(f"   {k:<20} {result[k]}")
    log(f"   answers/s vs offered rate: {result['answers_per_s'] / a.rate:.3f}" if result["answers_per_s"] else "")
    log(f"written to {out.relative_to(s.home)}")


if __name__ == "__main__":
    main()
