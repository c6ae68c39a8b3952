"""`make bench`: capacity and latency of the whole system, measured in one run on this machine.

For each model set (`demo`: the demo's real models - in-process champion, challenger on MLServer, a
slow model; `synthetic`: constant runners), the system (external state + 3 model jobs + rendezvous)
is deployed once on fresh topics, then:

1. capacity: a backlog of --backlog requests is written as fast as the client can, and drained; timed
   from Kafka record timestamps (first request written -> last answer written). The schedule counts
   deadlines from arrival at the rendezvous here, so the models' answers still count under a backlog.
2. latency at each --rates offered rate for --duration s: client-observed latency (answer received -
   request sent), deadline overshoot, answers by trigger, default share, unanswered, duplicates.
3. CPU per request of each process (psutil) during each latency run.

With `--paths kafka gateway`, each latency run is made once per path, alternating, on the same deployment:
requests written to the requests topic (`kafka`, the default), and each request one Open Inference Protocol
call to a gateway started for the set (`gateway`), so client-observed latency includes the HTTP hop and the
gateway; the set's `paths` hold each path's figures, `rates` the first path's. `--no-capacity` skips the
capacity runs and the baseline.

The baseline is a bare PyFlink Kafka->Kafka pass-through (jobs.smoke) with the same job configuration,
draining the same number of records timed the same way. Every figure is the median of --runs runs.
Writes run/bench/latest.json and prints the README's table (`python -m bench.table` regenerates it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from bench import cpu
from control import runtime
from control.kafka_io import ensure_topics, librdkafka_config
from control.ops import deploy, jobs, schedules
from control.runtime import gateway as gateway_rt
from control.runtime import mlserver
from control.settings import RuntimeSettings
from schemas.model_card import ModelCard
from schemas.topics import TopicSpec
from tools import demo, load
from training.synthetic import TransactionGenerator

SYNTHETIC_SCHEDULE = {"name": "bench", "stages": [{"deadline_ms": 30, "models": ["bench-fast"]},
                                                  {"deadline_ms": 80, "models": ["bench-second", "bench-slow"]}],
                      "default_output": {"fraud_probability": 0.0}}
SYNTHETIC = [
    # the preferred model: fast, but never answers 10% of requests (those hit the 30 ms deadline)
    ModelCard(model_id="bench-fast", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 1, "silent_rate": 0.1, "output": {"fraud_probability": 0.1}}, timeout_ms=500),
    ModelCard(model_id="bench-second", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 5, "output": {"fraud_probability": 0.2}}, timeout_ms=500),
    # always too slow: its scores arrive after the answer (late scores)
    ModelCard(model_id="bench-slow", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 150, "output": {"fraud_probability": 0.3}}, timeout_ms=500),
]


BROKER_TIME = {"message.timestamp.type": "LogAppendTime"}
"""Timestamps of the drained topics: when the broker appended the record. Flink's Kafka sink otherwise
writes each record with its input's timestamp (it propagates: an answer would carry its request's time,
and a drain would look as fast as the backlog was written)."""


def med(values):
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def drain(s: RuntimeSettings, src: str, dst: str, n: int, prefix: str | None, log, timeout: float = 600) -> dict:
    """Write n requests (or, with prefix None, n plain records) to src; wait for their n outputs on dst."""
    if prefix is None:
        return drain_records(s, src, [json.dumps({"id": i, "value": i}) for i in range(n)], dst, n,
                             lambda v: v.get("id"), log, timeout)
    gen = TransactionGenerator(seed=5, prefix=prefix)
    records = [json.dumps(gen.next(int(time.time() * 1000)).request) for _ in range(n)]
    return drain_records(s, src, records, dst, n, lambda v: v.get("request_id"), log, timeout)


def drain_records(s: RuntimeSettings, src: str, records: list[str], dst: str, n: int, key_of, log,
                  timeout: float = 600) -> dict:
    """Write records to src as fast as the client can; wait for n distinct outputs (by key_of(value)) on
    dst; rate = n / (last output appended - first input appended), both by the broker's clock."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    c = Consumer(librdkafka_config(s.bootstrap_servers, **{"group.id": f"bench-drain-{uuid.uuid4().hex[:8]}",
                                                           "enable.auto.commit": False}))
    meta = c.list_topics(dst, timeout=30).topics[dst]
    c.assign([TopicPartition(dst, p, c.get_watermark_offsets(TopicPartition(dst, p), timeout=30)[1])
              for p in sorted(meta.partitions)])
    written: list[int] = []
    errors: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            written.append(msg.timestamp()[1])

    prod = Producer(librdkafka_config(s.bootstrap_servers, **{"linger.ms": 5, "acks": 1}))
    for r in records:
        while True:
            try:
                prod.produce(src, r.encode(), on_delivery=delivered)
                break
            except BufferError:  # the client's queue is full: let it send
                prod.poll(0.01)
        prod.poll(0)
    prod.flush(60)
    if errors or len(written) < len(records):
        raise RuntimeError(f"{len(records) - len(written)} of {len(records)} records not written to {src}: "
                           f"{errors[:1]}")
    first_ts = min(written)
    seen, last_ts, defaults = set(), 0, 0
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < n and time.monotonic() < deadline:
            for r in c.consume(num_messages=1000, timeout=0.2):
                if r.error():
                    continue
                try:
                    v = json.loads(r.value())
                    key = key_of(v)
                except (TypeError, ValueError, AttributeError):
                    continue
                if key is None or key in seen:
                    continue
                seen.add(key)
                last_ts = max(last_ts, r.timestamp()[1])
                defaults += int(bool(v.get("is_default")))
    finally:
        c.close()
    span = (last_ts - first_ts) / 1000.0
    rate = len(seen) / span if span > 0 and len(seen) == n else None
    log(f"   drained {len(seen)}/{n} in {span:.2f} s: {rate or 0:.0f}/s")
    return {"per_s": rate, "drained": len(seen), "default_share": defaults / len(seen) if seen else None}


def baseline(s: RuntimeSettings, n: int, log) -> float | None:
    u = uuid.uuid4().hex[:8]
    src, dst = f"bench-base-in-{u}", f"bench-base-out-{u}"
    ensure_topics(s.bootstrap_servers, [TopicSpec(src, config=BROKER_TIME), TopicSpec(dst, config=BROKER_TIME)])
    jid = deploy.deploy_passthrough(s, source_topic=src, sink_topic=dst, group_id=u, start="latest",
                                    job_name=f"bench: passthrough {u}")
    try:
        time.sleep(2)  # the source has its partitions (start=latest: what is written from now on)
        return drain(s, src, dst, n, None, log)["per_s"]
    finally:
        jobs.cancel(jid, s)


def model_set(name: str, s: RuntimeSettings) -> tuple[list[ModelCard], dict, dict]:
    """(cards, schedule for latency runs, schedule for capacity runs)."""
    if name == "synthetic":
        sched = SYNTHETIC_SCHEDULE
        return SYNTHETIC, sched, {**sched, "deadline_from": "arrival"}
    srv_url = f"http://{s.host}:{s.mlserver_http_port}"
    return demo.demo_cards(s, srv_url), demo.SCHEDULE_V1, {**demo.SCHEDULE_V1, "deadline_from": "arrival"}


def measure_set(name: str, s: RuntimeSettings, a, log) -> dict:
    u = uuid.uuid4().hex[:8]
    t = {k: f"bench-{k}-{u}" for k in ("requests", "augmented", "scores", "late", "quarantine", "schedules",
                                        "answers")}
    ensure_topics(s.bootstrap_servers, [TopicSpec(v, compacted=(k == "schedules"),
                                                  config=BROKER_TIME if k in ("requests", "answers") else {})
                                        for k, v in t.items()])
    srv = None
    if name == "demo":
        demo.ensure_models(s, log)
        mlserver.stop_recorded(s.mlserver_http_port, s)
        srv = mlserver.start(s.home / "artifacts" / "models" / "fraud-challenger" / "2.0.0", s)
    cards, latency_schedule, capacity_schedule = model_set(name, s)
    ids = [deploy.deploy_external_state(s, job_name=f"bench: external-state {u}", wait=False, start="latest",
                                        source_topic=t["requests"], sink_topic=t["augmented"],
                                        quarantine_topic=t["quarantine"], group_id=f"bench-es-{u}")]
    for card in cards:
        ids.append(deploy.deploy_model(card, s, job_name=f"bench: model {card.key} {u}", wait=False, start="latest",
                                       source_topic=t["augmented"], sink_topic=t["scores"],
                                       group_id=f"bench-{card.model_id}-{u}"))
    ids.append(deploy.deploy_rendezvous(s, job_name=f"bench: rendezvous {u}", wait=False, start="latest",
                                        augmented_topic=t["augmented"], scores_topic=t["scores"],
                                        schedules_topic=t["schedules"], answers_topic=t["answers"],
                                        late_topic=t["late"], invalid_topic=t["quarantine"],
                                        group_id=f"bench-rv-{u}"))
    out: dict = {"capacity_runs": [], "rates": {}, "paths": {p: {} for p in a.paths}}
    gw = None
    try:
        for jid in ids:
            jobs.wait_running(jid, s, timeout=180)
        if "gateway" in a.paths:
            gw = gateway_rt.start(s, port=free_port(), rendezvous={"bench": {
                "requests": t["requests"], "answers": t["answers"], "schedules": t["schedules"]}},
                progress=lambda m: log(f"   {m}"))
        schedules.publish(s.bootstrap_servers, latency_schedule, topic=t["schedules"], lifecycle_topic=None)
        # as the demo does: fresh jobs are compiled by the JVM and warmed by their Python workers first
        warm_rate = min(a.rates)
        log(f"   warming up at {warm_rate:.0f} requests/s until a window is on time (at most {a.warm_up:.0f} s)")
        ready, windows = load.warm_up(s.bootstrap_servers, warm_rate, latency_schedule["stages"][-1]["deadline_ms"],
                                      requests_topic=t["requests"], answers_topic=t["answers"], max_s=a.warm_up,
                                      progress=lambda m: log(f"   {m}"))
        out["warm_up"] = {"ready": ready, "windows": len(windows)}
        for rate in a.rates:
            by_path: dict[str, tuple[list, list]] = {p: ([], []) for p in a.paths}
            for i in range(a.runs):
                for path in a.paths:  # alternating: both paths see the same system, warmed alike
                    reports, cpus = by_path[path]
                    log(f"== {name}: {rate:.0f} requests/s for {a.duration:.0f} s via {path}, run {i + 1}/{a.runs}")
                    before = cpu.snapshot(s)
                    r = load.run_load(s.bootstrap_servers, rate, a.duration, requests_topic=t["requests"],
                                      answers_topic=t["answers"], drain_s=30, progress=None,
                                      gateway=gw.url if path == "gateway" else None, model="bench",
                                      budget_ms=a.gateway_budget_ms)
                    cpus.append(cpu.per_request_ms(before, cpu.snapshot(s), r.answered))
                    log("   " + r.summary().replace("\n", "\n   "))
                    reports.append(r)
                    time.sleep(2)
            for path, (reports, cpus) in by_path.items():
                out["paths"][path][str(int(rate))] = summarize(reports, cpus, latency_schedule)
        out["rates"] = out["paths"][a.paths[0]]
        if not a.capacity:
            return out
        schedules.publish(s.bootstrap_servers, capacity_schedule, topic=t["schedules"], lifecycle_topic=None)
        time.sleep(1)
        for i in range(a.runs):
            log(f"== {name}: capacity, backlog of {a.backlog} requests, run {i + 1}/{a.runs}")
            out["capacity_runs"].append(drain(s, t["requests"], t["answers"], a.backlog, f"cap{i}-{u}", log))
        out["capacity_per_s"] = med([r["per_s"] for r in out["capacity_runs"]])
    finally:
        if gw is not None:
            gw.stop()
        for jid in ids:
            try:
                jobs.cancel(jid, s)
            except Exception:  # noqa: BLE001
                pass
        if srv is not None:
            srv.stop()
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summarize(reports: list, cpus: list, latency_schedule: dict) -> dict:
    """The medians of one rate's runs (one path)."""
    return {
        "answers_per_s": med([r.answers_per_s for r in reports]),
        "unanswered": med([r.unanswered for r in reports]),
        "duplicates": med([r.duplicate_answers for r in reports]),
        "default_share": med([r.default_share for r in reports]),
        "latency_p50_ms": med([r.client_latency_p50_ms for r in reports]),
        "latency_p99_ms": med([r.client_latency_p99_ms for r in reports]),
        "latency_p50_runs_ms": [r.client_latency_p50_ms for r in reports],
        "latency_p99_runs_ms": [r.client_latency_p99_ms for r in reports],
        "overshoot_p50_ms": med([r.overshoot_p50_ms for r in reports]),
        "overshoot_p99_ms": med([r.overshoot_p99_ms for r in reports]),
        "by_trigger": reports[len(reports) // 2].by_trigger,
        "gateway_status": reports[len(reports) // 2].gateway_status,
        "gateway_mismatches": sum(r.gateway_mismatches for r in reports),
        "cpu_ms_per_request": med([c.get("total") for c in cpus]),
        "cpu_ms_per_request_by_process": sorted(cpus, key=lambda c: c.get("total", 0))[len(cpus) // 2],
        "last_deadline_ms": latency_schedule["stages"][-1]["deadline_ms"],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rates", type=float, nargs="+", default=[500.0, 1000.0], help="offered requests/s")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per latency run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--backlog", type=int, default=10_000, help="requests per capacity run")
    p.add_argument("--warm-up", type=float, default=60.0, help="at most this many seconds of warm-up per set")
    p.add_argument("--sets", nargs="+", default=["demo", "synthetic"], choices=["demo", "synthetic"])
    p.add_argument("--paths", nargs="+", default=["kafka"], choices=["kafka", "gateway"],
                   help="how the load goes in: the requests topic, and/or a gateway (one V2 infer call each)")
    p.add_argument("--gateway-budget-ms", type=float, default=30_000.0,
                   help="the budget of each gateway call: long, so the latency tail is measured, not cut off")
    p.add_argument("--capacity", action=argparse.BooleanOptionalAction, default=True,
                   help="the capacity runs and the pass-through baseline")
    p.add_argument("--out", default=None, help="the JSON result  [default: run/bench/latest.json]")
    a = p.parse_args(argv)
    log = print
    s = RuntimeSettings()
    runtime.up(s, progress=lambda m: log(f"   {m}"))
    base = []
    if a.capacity:
        log(f"== baseline: bare PyFlink pass-through, {a.runs} runs of {a.backlog} records")
        base = [baseline(s, a.backlog, log) for _ in range(a.runs)]
    result = {"at": time.strftime("%Y-%m-%d"), "runs": a.runs, "duration_s": a.duration, "backlog": a.backlog,
              "paths": a.paths, "baseline_capacity_per_s": med(base), "baseline_runs_per_s": base, "sets": {}}
    for name in a.sets:
        result["sets"][name] = measure_set(name, s, a, log)
    first = result["sets"][a.sets[0]]
    result["capacity_per_s"] = first.get("capacity_per_s")
    result["capacity_ratio"] = (round(result["capacity_per_s"] / result["baseline_capacity_per_s"], 4)
                                if result["capacity_per_s"] and result["baseline_capacity_per_s"] else None)
    for st in result["sets"].values():
        st["capacity_ratio"] = (round(st["capacity_per_s"] / result["baseline_capacity_per_s"], 4)
                                if st.get("capacity_per_s") and result["baseline_capacity_per_s"] else None)
    out = Path(a.out) if a.out else s.run_dir / "bench" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    from bench.table import markdown, paths_markdown

    log("")
    log(markdown(result))
    if len(a.paths) > 1:
        log("")
        log(paths_markdown(result))
    log(f"written to {out}")


if __name__ == "__main__":
    main()
