"""`python -m bench.stages`: each job of the pipeline alone, draining a pre-written backlog.

Where the whole-system benchmark (`python -m bench`) says how fast the pipeline is, this says which job
limits it: each job is started alone on fresh topics (LogAppendTime), a backlog of N requests' worth of
its input is written first, and its rate is N / (last output appended - first input appended).

- passthrough: the bare PyFlink Kafka->Kafka job (process mode), the baseline
- external_state: requests -> requests.augmented (thread mode)
- model: one model job with a 1 ms constant runner (process mode)
- rendezvous: for each request its augmented record and three scores (thread mode); the answer goes out
  on the preferred model's score, the other two are late scores

Each job runs alone: on two cores the whole pipeline's capacity is below the slowest of these.
"""

from __future__ import annotations

import argparse
import json
import statistics
import uuid

from bench.__main__ import BROKER_TIME, drain_records
from bench.model_job import TRIVIAL, augmented
from bench.table import stages_markdown
from control import runtime
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs, schedules
from control.settings import RuntimeSettings
from schemas.records import Score
from schemas.topics import TopicSpec
from training.synthetic import TransactionGenerator

STAGES = ("passthrough", "external_state", "model", "rendezvous")
MODELS = ("stage-a", "stage-b", "stage-c")


def requests(n: int, prefix: str) -> list[str]:
    gen = TransactionGenerator(seed=3, prefix=prefix)
    return [json.dumps(gen.next(1_700_000_000_000 + i).request) for i in range(n)]


def rendezvous_input(n: int, prefix: str) -> list[str]:
    out = []
    for aug in augmented(n, prefix=prefix):
        req = json.loads(aug)["request"]
        out.append(aug)
        for i, m in enumerate(MODELS):
            out.append(Score(request_id=req["request_id"], model_id=m, model_version="1",
                             output={"fraud_probability": 0.1 * i}, request_time_ms=req["event_time_ms"],
                             received_at_ms=0, started_at_ms=0, finished_at_ms=1).to_json())
    return out


def one(s: RuntimeSettings, stage: str, n: int, log) -> float | None:
    u = uuid.uuid4().hex[:8]
    t = {k: f"bench-stage-{k}-{u}" for k in ("in", "out", "scores", "late", "quarantine", "schedules")}
    ensure_topics(s.bootstrap_servers, [TopicSpec(v, compacted=(k == "schedules"),
                                                  config=BROKER_TIME if k in ("in", "out") else {})
                                        for k, v in t.items()])
    prefix = f"stage-{u}"
    name = f"bench: stage {stage} {u}"
    if stage == "passthrough":
        records, key = requests(n, prefix), "request_id"
        jid = deploy.deploy_passthrough(s, source_topic=t["in"], sink_topic=t["out"], group_id=u, job_name=name,
                                        start="latest")
    elif stage == "external_state":
        records, key = requests(n, prefix), None
        jid = deploy.deploy_external_state(s, job_name=name, start="latest", source_topic=t["in"],
                                           sink_topic=t["out"], quarantine_topic=t["quarantine"], group_id=u)
    elif stage == "model":
        records, key = augmented(n, prefix=prefix), None
        jid = deploy.deploy_model(TRIVIAL, s, job_name=name, start="latest", source_topic=t["in"],
                                  sink_topic=t["out"], group_id=u)
    else:
        records, key = rendezvous_input(n, prefix), "request_id"
        schedules.publish(s.bootstrap_servers, {"name": "stages", "deadline_from": "arrival",
                                                "stages": [{"deadline_ms": 5000, "models": list(MODELS)}],
                                                "default_output": {"fraud_probability": 0.0}},
                          topic=t["schedules"], lifecycle_topic=None)
        jid = deploy.deploy_rendezvous(s, job_name=name, start="latest", augmented_topic=t["in"],
                                       scores_topic=t["in"], schedules_topic=t["schedules"], answers_topic=t["out"],
                                       late_topic=t["late"], invalid_topic=t["quarantine"], group_id=u)
    try:
        jobs.wait_running(jid, s, timeout=180)
        return drain_records(s, t["in"], records, t["out"], n, lambda v: _id(v, key), log)["per_s"]
    finally:
        jobs.cancel(jid, s)


def _id(v: dict, key: str | None):
    return v.get(key) if key else (v.get("request_id") or (v.get("request") or {}).get("request_id"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=30_000, help="requests per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--also-jvm-args", default=None, metavar="OPTIONS",
                   help="also run the thread-mode jobs with these JVM options for their own TaskManagers, runs "
                        "alternating with the settings' (RENDEZVOUS_PINNED_TASKMANAGER_JVM_ARGS); "
                        "`--also-jvm-args=` for the JVM's defaults")
    a = p.parse_args(argv)
    s = RuntimeSettings()
    runtime.up(s, progress=lambda m: print(f"   {m}"))
    variants = list(dict.fromkeys([s.pinned_taskmanager_jvm_args]
                                  + ([a.also_jvm_args] if a.also_jvm_args is not None else [])))
    result = {}
    for stage in a.stages:
        rates: dict[str, list] = {v: [] for v in variants}
        for i in range(a.runs):
            for v in variants:
                print(f"== {stage}: backlog of {a.n} requests, run {i + 1}/{a.runs}"
                      + (f", JVM options {v or '(default)'}" if len(variants) > 1 else ""))
                rates[v].append(one(s.model_copy(update={"pinned_taskmanager_jvm_args": v}), stage, a.n, print))
        for v, got in rates.items():
            ok = [r for r in got if r]
            key = stage if len(variants) == 1 else f"{stage}, JVM options {v or '(default)'}"
            result[key] = round(statistics.median(ok)) if ok else None
    record = {"n": a.n, "runs": a.runs, "requests_per_s": result}
    print("")
    print(stages_markdown(record))
    out = s.run_dir / "bench" / "stages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"written to {out.relative_to(s.home)}")


if __name__ == "__main__":
    main()
