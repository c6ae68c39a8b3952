"""`python -m bench.model_job`: how many requests/s one model job sustains with a trivial model.

Pre-writes N augmented requests to a fresh topic, starts one model job (ConstantRunner, 1 ms, or the
trained champion with --model champion) reading from the earliest offset, and times the scores from
the first to the N-th. Prints the median of --runs runs, next to a bare PyFlink pass-through of the
same records as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from control import kafka_io, runtime
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs
from control.settings import RuntimeSettings
from jobs.external_state.features import EntityState, FeatureComputer
from schemas.model_card import ModelCard
from schemas.records import AugmentedRequest, Request
from schemas.topics import TopicSpec
from training.synthetic import TransactionGenerator

TRIVIAL = ModelCard(model_id="bench-trivial", version="1", runner="model_udfs.python_runners:ConstantRunner",
                    params={"delay_ms": 1, "output": {"fraud_probability": 0.0}}, timeout_ms=500, capacity=100)


def augmented(n: int, prefix: str = "txn") -> list[str]:
    gen, fc, states = TransactionGenerator(seed=4, prefix=prefix), FeatureComputer(), {}
    out = []
    for i in range(n):
        req = Request.model_validate(gen.next(1_700_000_000_000 + i).request)
        st = states.setdefault(req.entity_id, EntityState())
        out.append(AugmentedRequest(request=req, features=fc.update(st, req), entity_seq=st.count + 1,
                                    augmented_at_ms=0).to_json())
    return out


def drain_rate(s: RuntimeSettings, dst: str, n: int) -> float:
    first: list[float] = []

    def until(vals):
        if vals and not first:
            first.append(time.monotonic())
        return len(vals) >= n

    kafka_io.consume(s.bootstrap_servers, dst, until=until, timeout=600)
    return n / (time.monotonic() - first[0])


def one_run(s: RuntimeSettings, card: ModelCard | None, records: list[str]) -> float:
    u = uuid.uuid4().hex[:8]
    src, dst = f"bench-mj-in-{u}", f"bench-mj-out-{u}"
    ensure_topics(s.bootstrap_servers, [TopicSpec(src), TopicSpec(dst)])
    kafka_io.produce(s.bootstrap_servers, src, records)
    if card is None:
        jid = deploy.deploy_passthrough(s, source_topic=src, sink_topic=dst, group_id=u,
                                        job_name=f"bench: passthrough {u}")
    else:
        jid = deploy.deploy_model(card, s, job_name=f"bench: model job {u}", start="earliest", source_topic=src,
                                  sink_topic=dst, group_id=u)
    try:
        return drain_rate(s, dst, len(records))
    finally:
        jobs.cancel(jid, s)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", choices=("trivial", "champion"), default="trivial")
    a = p.parse_args(argv)
    s = RuntimeSettings()
    runtime.up(s, progress=lambda m: print(f"   {m}"))
    card = TRIVIAL if a.model == "trivial" else ModelCard.load(
        s.home / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json")
    records = augmented(a.n)
    base, model = [], []
    for i in range(a.runs):
        base.append(one_run(s, None, records))
        model.append(one_run(s, card, records))
        print(f"run {i + 1}/{a.runs}: pass-through {base[-1]:.0f}/s, model job ({card.key}) {model[-1]:.0f}/s")
    b, m = statistics.median(base), statistics.median(model)
    print(f"median: pass-through {b:.0f} records/s; model job {m:.0f} requests/s; ratio {m / b:.3f}")


if __name__ == "__main__":
    main()
