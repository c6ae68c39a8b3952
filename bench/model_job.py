"""`python -m bench.model_job`: how many requests/s one model job sustains, at one or more parallelisms.

Pre-writes N augmented requests to a fresh topic (as many partitions as the highest parallelism asked
for, so every run reads the same records from the same layout), starts one model job reading from the
earliest offset, and times the drain from the broker's append times of its first and last score
(`LogAppendTime` on the output topic): capacity, not latency. Models: a trivial one (ConstantRunner, 1 ms
asleep), a CPU-bound one (`--model cpu`: ConstantRunner burning `--cpu-ms` of CPU per request, holding its
Python worker's interpreter) or the trained champion. A bare PyFlink pass-through of the same records at
each parallelism is the baseline. Prints the median of --runs runs per parallelism and writes the runs to
run/bench/model_job.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from control import kafka_io, runtime
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs
from control.runtime.flink import live_taskmanagers
from control.settings import RuntimeSettings
from jobs.external_state.features import EntityState, FeatureComputer
from schemas.model_card import ModelCard
from schemas.records import AugmentedRequest, Request
from schemas.topics import TopicSpec
from training.synthetic import TransactionGenerator

TRIVIAL = ModelCard(model_id="bench-trivial", version="1", runner="model_udfs.python_runners:ConstantRunner",
                    params={"delay_ms": 1, "output": {"fraud_probability": 0.0}}, timeout_ms=500, capacity=100)
BROKER_TIME = {"message.timestamp.type": "LogAppendTime"}


def cpu_bound(cpu_ms: float) -> ModelCard:
    return ModelCard(model_id="bench-cpu", version="1", runner="model_udfs.python_runners:ConstantRunner",
                     params={"cpu_ms": cpu_ms, "output": {"fraud_probability": 0.0}}, timeout_ms=60_000, capacity=100)


def augmented(n: int, prefix: str = "txn") -> list[str]:
    gen, fc, states = TransactionGenerator(seed=4, prefix=prefix), FeatureComputer(), {}
    out = []
    for i in range(n):
        req = Request.model_validate(gen.next(1_700_000_000_000 + i).request)
        st = states.setdefault(req.entity_id, EntityState())
        out.append(AugmentedRequest(request=req, features=fc.update(st, req), entity_seq=st.count + 1,
                                    augmented_at_ms=0).to_json())
    return out


def drain_rate(s: RuntimeSettings, topic: str, n: int, timeout_s: float = 600.0) -> float:
    """Records/s between the broker append times of the first and the n-th record of `topic`."""
    deadline = time.monotonic() + 30
    while not (tps := kafka_io.topic_partitions(s.bootstrap_servers, [topic])):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no partitions")
        time.sleep(0.2)
    c = kafka_io.consumer(s.bootstrap_servers, enable_auto_commit=False, group_id=None)
    try:
        c.assign(tps)
        c.seek_to_beginning(*tps)
        stamps: list[int] = []
        deadline = time.monotonic() + timeout_s
        while len(stamps) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(stamps)} of {n} records in {topic} after {timeout_s:.0f} s")
            for recs in c.poll(timeout_ms=500).values():
                stamps += [r.timestamp for r in recs]
        return (n - 1) / max(0.001, (max(stamps) - min(stamps)) / 1000.0)
    finally:
        c.close()


def one_run(s: RuntimeSettings, card: ModelCard | None, records: list[str], parallelism: int,
            partitions: int) -> float:
    u = uuid.uuid4().hex[:8]
    src, dst = f"bench-mj-in-{u}", f"bench-mj-out-{u}"
    ensure_topics(s.bootstrap_servers, [TopicSpec(src), TopicSpec(dst, config=BROKER_TIME)], partitions=partitions)
    kafka_io.produce(s.bootstrap_servers, src, records)
    if card is None:
        jid = deploy.deploy_passthrough(s, source_topic=src, sink_topic=dst, group_id=u, parallelism=parallelism,
                                        job_name=f"bench: passthrough {u}")
    else:
        jid = deploy.deploy_model(card, s, job_name=f"bench: model job {u}", start="earliest", source_topic=src,
                                  sink_topic=dst, group_id=u, parallelism=parallelism)
    try:
        return drain_rate(s, dst, len(records))
    finally:
        jobs.cancel(jid, s)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", choices=("trivial", "cpu", "champion"), default="trivial")
    p.add_argument("--cpu-ms", type=float, default=2.0, help="CPU per request of --model cpu")
    p.add_argument("--parallelism", default="1", help="comma-separated, e.g. 1,2")
    p.add_argument("--taskmanagers", type=int, default=None,
                   help="run on this many TaskManagers (started for the benchmark, stopped after)")
    p.add_argument("--no-baseline", action="store_true", help="skip the pass-through runs")
    a = p.parse_args(argv)
    pars = [int(x) for x in a.parallelism.split(",")]
    s = RuntimeSettings()
    runtime.up(s, progress=lambda m: print(f"   {m}"))
    before = len(live_taskmanagers(s))
    if a.taskmanagers:
        runtime.set_taskmanagers(a.taskmanagers, s, progress=lambda m: print(f"   {m}"))
    card = {"trivial": TRIVIAL, "cpu": cpu_bound(a.cpu_ms)}.get(a.model) or ModelCard.load(
        s.home / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json")
    records = augmented(a.n)
    results: dict[int, dict[str, list[float]]] = {}
    try:
        for i in range(a.runs):
            for par in pars:  # interleaved: a slow minute of this shared machine hits every parallelism alike
                r = results.setdefault(par, {"passthrough": [], "model": []})
                if not a.no_baseline:
                    r["passthrough"].append(one_run(s, None, records, par, max(pars)))
                r["model"].append(one_run(s, card, records, par, max(pars)))
                base = f"pass-through {r['passthrough'][-1]:.0f}/s, " if r["passthrough"] else ""
                print(f"run {i + 1}/{a.runs}, parallelism {par}: {base}model job ({card.key}) {r['model'][-1]:.0f}/s")
    finally:
        if a.taskmanagers and a.taskmanagers != before:
            runtime.set_taskmanagers(max(1, before), s, progress=lambda m: print(f"   {m}"))
    tms = a.taskmanagers or before
    print(f"medians ({a.n} requests, {card.key}, {tms} TaskManager(s), input topic with {max(pars)} partitions):")
    for par in pars:
        m = statistics.median(results[par]["model"])
        base = results[par]["passthrough"]
        extra = f"; pass-through {statistics.median(base):.0f} records/s" if base else ""
        ratio = f" ({m / statistics.median(results[pars[0]]['model']):.2f}x parallelism {pars[0]})" \
            if par != pars[0] else ""
        print(f"  parallelism {par}: model job {m:.0f} requests/s{ratio}{extra}")
    out = s.run_dir / "bench" / "model_job.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": card.key, "cpu_ms": a.cpu_ms if a.model == "cpu" else None, "n": a.n,
                               "taskmanagers": tms, "partitions": max(pars),
                               "runs": {str(k): v for k, v in results.items()}}, indent=1))
    print(f"runs written to {out}")


if __name__ == "__main__":
    main()
