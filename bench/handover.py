"""`make bench-handover`: what a user's clients see while `rendezvous upgrade` hands the rendezvous and then the
external state over to a new version (control/ops/handover.py), compared with the minute before, in one run on one deployment.

The synthetic model set (bench/__main__.py: constant runners, stages of 30 and 80 ms) is deployed on fresh topics with
--partitions partitions; a steady --rate requests/s is offered for the whole run (confluent-kafka, as `make bench`);
client latency is answer received - request sent, per request. After --warm-up s and --before s, each job in --jobs is
handed over to the same code (the protocol's cost, not a new version's), with --before s of load between hand-overs
and --after s at the end. For each hand-over: the --before s before it started (baseline), the whole hand-over (new
version started quiescent -> old version stopped), and its transition (tokens written -> old version stopped, +-1 s):
answers, p50/p99/max, defaults; and over the whole run: unanswered, duplicates, conflicting answers.

Writes run/bench/handover.json and prints the README's table (`python -m bench.handover --table` prints it again).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path

from bench.__main__ import SYNTHETIC, SYNTHETIC_SCHEDULE
from control import kafka_io, runtime
from control.ops import deploy, handover, jobs, schedules
from control.settings import RuntimeSettings
from schemas.records import LifecycleEvent
from schemas.topics import TopicNames
from tools.load import AnswerCollector, percentile
from training.synthetic import TransactionGenerator


class Sender(threading.Thread):
    """`rate` requests/s on the requests topic until stopped; when each was sent (wall clock ms)."""

    def __init__(self, s: RuntimeSettings, topic: str, prefix: str, rate: float):
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.topic, self.rate = topic, rate
        self.gen = TransactionGenerator(seed=int(time.time()), prefix=prefix)
        self.p = Producer(kafka_io.librdkafka_config(s.bootstrap_servers, "client", **{"linger.ms": 1}))
        self.sent_ms: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        t0, i = time.monotonic(), 0
        while not self.halt.is_set():
            now = time.time() * 1000
            req = self.gen.next(int(now)).request
            self.p.produce(self.topic, json.dumps(req).encode(), key=req["entity_id"].encode())
            self.p.poll(0)
            self.sent_ms[req["request_id"]] = now
            i += 1
            self.halt.wait(max(0.0, t0 + i / self.rate - time.monotonic()))
        self.p.flush(30)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def window(sent_ms: dict, received_ms: dict, answers: dict, a: float, b: float) -> dict:
    ids = [r for r, t in sent_ms.items() if a <= t <= b]
    lat = [received_ms[r] - sent_ms[r] for r in ids if r in received_ms]
    return {"sent": len(ids), "answered": len(lat), "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
            "max_ms": round(max(lat), 1) if lat else None,
            "defaults": sum(1 for r in ids if answers.get(r, {}).get("is_default"))}


def run(a) -> dict:
    s = RuntimeSettings()
    runtime.up(s, progress=print)
    u = uuid.uuid4().hex[:8]
    t = TopicNames.suffixed(f"bench-ho-{u}")
    kafka_io.ensure_topics(s.bootstrap_servers, t.specs(), partitions=a.partitions)
    schedules.publish(s.bootstrap_servers, SYNTHETIC_SCHEDULE, topic=t.schedules, lifecycle_topic=None)
    common = {"start": "latest", "wait": False}
    ids = {"external-state": deploy.deploy_external_state(
        s, job_name=f"bench-ho: external-state {u}", source_topic=t.requests, sink_topic=t.augmented,
        quarantine_topic=t.quarantine, group_id=f"bench-ho-es-{u}", transitions_topic=t.transitions, **common)}
    models = [deploy.deploy_model(c, s, job_name=f"bench-ho: model {c.key} {u}", source_topic=t.augmented,
                                  sink_topic=t.scores, group_id=f"bench-ho-{c.model_id}-{u}",
                                  lifecycle_topic=t.lifecycle, **common) for c in SYNTHETIC]
    ids["rendezvous"] = deploy.deploy_rendezvous(
        s, job_name=f"bench-ho: rendezvous {u}", augmented_topic=t.augmented, scores_topic=t.scores,
        schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late, invalid_topic=t.quarantine,
        group_id=f"bench-ho-rv-{u}", transitions_topic=t.transitions, **common)
    started = list(ids.values()) + models
    for jid in started:
        jobs.wait_running(jid, s, timeout=300)
    prefix = f"bench-ho-{u}"
    collector = AnswerCollector(s.bootstrap_servers, t.answers, prefix)
    collector.start()
    sender = Sender(s, t.requests, prefix, a.rate)
    sender.start()
    out: dict = {"rate": a.rate, "partitions": a.partitions, "before_s": a.before, "starting_nice": a.starting_nice,
                 "handovers": []}
    try:
        print(f"warming up {a.warm_up:.0f} s, then {a.before:.0f} s of baseline at {a.rate:.0f} requests/s")
        time.sleep(a.warm_up + a.before)
        for kind in a.jobs:
            t0 = time.time() * 1000
            ho = handover.hand_over(ids[kind], None, s, progress=lambda m, k=kind: print(f"  [{k}] {m}"),
                                    lifecycle_topic=t.lifecycle, starting_nice=a.starting_nice)
            ids[kind] = ho.job_id
            started.append(ho.job_id)
            t1 = time.time() * 1000
            out["handovers"].append({"job": kind, "upgrade_id": ho.upgrade_id, "started_ms": t0, "completed_ms": t1,
                                     "timings_s": {k: round(v, 2) for k, v in ho.timings_s.items()}})
            print(f"{kind} handed over in {(t1 - t0) / 1000:.1f} s; {a.before if kind != a.jobs[-1] else a.after:.0f} "
                  "s of load")
            time.sleep(a.before if kind != a.jobs[-1] else a.after)
    finally:
        sender.stop()
        time.sleep(a.drain)
        collector.stop()
        for jid in started:
            try:
                if jobs.job_state(jid, s) == "RUNNING":
                    jobs.cancel(jid, s)
            except Exception:  # noqa: BLE001 - cleanup
                pass
    events = [LifecycleEvent.parse(v) for _, v in kafka_io.read_to_end(s.bootstrap_servers, t.lifecycle)]
    at = {(e.detail.get("upgrade_id"), e.detail.get("step")): e.at_ms for e in events if e.kind == "upgrade"}
    sent, rcv, ans = sender.sent_ms, collector.received_ms, collector.answers
    for h in out["handovers"]:
        h["before"] = window(sent, rcv, ans, h["started_ms"] - a.before * 1000, h["started_ms"])
        h["during"] = window(sent, rcv, ans, h["started_ms"], h["completed_ms"])
        h["transition"] = window(sent, rcv, ans, at[h["upgrade_id"], "transition"] - 1000, h["completed_ms"] + 1000)
    out.update(sent=len(sent), answered=sum(1 for r in sent if r in rcv), duplicates=collector.duplicates,
               conflicting=collector.conflicting)
    return out


def table(r: dict) -> str:
    lines = [f"Offered {r['rate']:.0f} requests/s on {r['partitions']} partitions; the new version started at nice "
             f"{r.get('starting_nice', 0)}; {r['sent']} sent, {r['answered']} answered, {r['duplicates']} duplicate "
             f"and {r['conflicting']} conflicting answers.", "",
             "| hand-over | window | answers | p50 ms | p99 ms | max ms | defaults |", "|---|---|---|---|---|---|---|"]
    for h in r["handovers"]:
        for w, label in (("before", f"{r['before_s']:.0f} s before"), ("during", "whole hand-over"),
                         ("transition", "transition")):
            x = h[w]
            lines.append(f"| {h['job']} | {label} | {x['answered']}/{x['sent']} | {x['p50_ms']} | {x['p99_ms']} | "
                         f"{x['max_ms']} | {x['defaults']} |")
    lines.append("")
    lines += [f"- {h['job']}: " + ", ".join(f"{k} {v} s" for k, v in h["timings_s"].items()) for h in r["handovers"]]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100.0, help="offered requests/s")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--warm-up", type=float, default=20.0)
    p.add_argument("--before", type=float, default=60.0, help="seconds of load before each hand-over (the baseline)")
    p.add_argument("--after", type=float, default=20.0)
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for the last answers")
    p.add_argument("--jobs", nargs="+", default=["rendezvous", "external-state"],
                   choices=["rendezvous", "external-state"])
    p.add_argument("--starting-nice", type=int, default=handover.STARTING_NICE,
                   help="CPU priority the new version starts at (0: the same as the version serving)")
    p.add_argument("--out", type=Path, default=None, help="[default: run/bench/handover.json]")
    p.add_argument("--table", action="store_true", help="print the table of the last run's JSON and exit")
    a = p.parse_args(argv)
    path = a.out or RuntimeSettings().run_dir / "bench" / "handover.json"
    if not a.table:
        r = run(a)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r, indent=1))
        print(f"wrote {path}")
    print(table(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
