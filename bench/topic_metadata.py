"""`python -m bench.topic_metadata`: what finding one topic's partitions costs, as the broker's topics grow.

Creates --topics throwaway topics (`bench-meta-<run>-<i>`, 1 partition), then, --calls times each and alternating,
finds the partitions of one topic from a fresh client (as every reader of the project makes one) two ways:

- `every topic`: kafka-python's `KafkaConsumer.partitions_for_topic`, which asks for every topic's metadata when
  the client does not know the topic yet;
- `named topic`: `jobs.common.topics.partitions`, one metadata request naming that topic (what the project uses).

Reports each way's median wall time per call (client creation, the lookup, closing) and the broker's CPU per call
(its process's, over all calls of that way), then deletes the topics. A broker's other topics count too: the line
says how many it held.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from control import kafka_io, runtime
from control.runtime.kafka import KAFKA_PID
from control.runtime.process import read_pid
from control.settings import RuntimeSettings
from jobs.common.topics import partitions
from schemas.topics import TopicSpec

CREATE_BATCH = 200


def every_topic(s: RuntimeSettings, topic: str) -> list[int]:
    c = kafka_io.consumer(s.bootstrap_servers, enable_auto_commit=False, group_id=None)
    try:
        return sorted(c.partitions_for_topic(topic) or ())
    finally:
        c.close()


def named_topic(s: RuntimeSettings, topic: str) -> list[int]:
    return partitions(kafka_io.client_kwargs(s.bootstrap_servers), [topic]).get(topic, [])


WAYS = {"every topic": every_topic, "named topic": named_topic}


def run(a) -> dict:
    s = RuntimeSettings()
    runtime.up(s, progress=print)
    broker = read_pid(s.pid_dir / KAFKA_PID)
    if not broker:
        raise SystemExit("no Kafka broker pid file: is the runtime up (`rendezvous up`)?")
    import psutil

    proc = psutil.Process(broker)
    run_id = uuid.uuid4().hex[:6]
    names = [f"bench-meta-{run_id}-{i}" for i in range(a.topics)]
    try:
        for i in range(0, len(names), CREATE_BATCH):
            kafka_io.ensure_topics(s.bootstrap_servers, [TopicSpec(n) for n in names[i:i + CREATE_BATCH]])
            print(f"created {min(i + CREATE_BATCH, len(names))}/{len(names)} topics")
        adm = kafka_io.admin(s.bootstrap_servers)
        try:
            held = len(adm.list_topics())
        finally:
            adm.close()
        target = names[len(names) // 2]
        walls: dict[str, list[float]] = {w: [] for w in WAYS}
        cpu: dict[str, float] = {w: 0.0 for w in WAYS}
        for i in range(a.calls):
            for way, find in WAYS.items():
                c0 = sum(proc.cpu_times()[:2])
                t0 = time.perf_counter()
                got = find(s, target)
                walls[way].append(time.perf_counter() - t0)
                cpu[way] += sum(proc.cpu_times()[:2]) - c0
                if got != [0]:
                    raise RuntimeError(f"{way}: {target} has partitions {got}, not [0]")
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{a.calls} calls each")
    finally:
        for i in range(0, len(names), CREATE_BATCH):
            kafka_io.delete_topics(s.bootstrap_servers, names[i:i + CREATE_BATCH])
        print(f"deleted the {len(names)} topics")
    return {"topics_held": held, "calls": a.calls,
            "ways": {w: {"median_ms": round(statistics.median(walls[w]) * 1000, 1),
                         "broker_cpu_ms_per_call": round(cpu[w] / a.calls * 1000, 1)} for w in WAYS}}


def lines(r: dict) -> list[str]:
    return [f"{way}: {v['median_ms']:.1f} ms per call (median of {r['calls']}), the broker's CPU "
            f"{v['broker_cpu_ms_per_call']:.1f} ms per call; the broker held {r['topics_held']} topics"
            for way, v in r["ways"].items()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topics", type=int, default=1200, help="throwaway topics created for the run")
    p.add_argument("--calls", type=int, default=20, help="lookups of each way")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    r = run(a)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(r, indent=1))
    print("\n".join(lines(r)))


if __name__ == "__main__":
    main()
