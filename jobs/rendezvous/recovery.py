"""After a restore, which requests were already answered: the answer contract's recovery scan.

The answers sink is at-least-once: after a restore from a checkpoint, the rendezvous replays the
input since that checkpoint, and a request answered after the checkpoint would be decided again. The
second decision can differ from the first (overdue processing-time timers fire at once, so a deadline
passes where the preferred model had answered in time). So before it processes anything, the
rendezvous reads the answers it wrote after the checkpoint back from the answers topic and does not
answer those requests again: every request keeps the one answer it was given.

Where the checkpoint was is found without Flink's help: its Kafka source commits its offsets to the
job's consumer group when a checkpoint completes, so the records just before the committed offsets
were written before the checkpoint was taken (the latest of them bounds it). Every answer written after the
checkpoint has a Kafka timestamp at or after that record's (the answers topic stamps records with the broker's append
time, `schemas.topics`), minus `margin_ms` for topics that keep producer timestamps. A group with no committed
offsets is a first start (nothing to recover), unless the job was started from a savepoint whose time the control
plane gave (`RendezvousSettings.recover_from_ms`): a job stopped before any checkpoint of it completed commits none.

Limits (README, "The answer contract"): restoring a savepoint older than the group's last commit starts
the scan too late; the client maps only the security settings `jobs.common.security.client_config` knows
(`${file:...}` references resolved as the job's Java clients resolve them); a failed scan is
logged and counted (`recovery_failed`), and the job answers on.
"""

from __future__ import annotations

import json
import time

from jobs.common.security import client_config
from jobs.common.settings import KafkaSettings


def _consumer(kafka: KafkaSettings, group_id: str | None):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group_id, enable_auto_commit=False,
                         client_id=f"{group_id or 'rendezvous'}-recovery", **client_config(kafka.properties))


def _partitions(kafka: KafkaSettings, topics: list[str]) -> list:
    """Every partition of `topics` (a missing topic has none), asking the broker about these topics only."""
    from jobs.common.topics import topic_partitions

    return topic_partitions({"bootstrap_servers": kafka.bootstrap_servers, **client_config(kafka.properties)}, topics,
                            client_id="rendezvous-recovery")


def checkpoint_time(kafka: KafkaSettings, group_id: str, topics: list[str], timeout_s: float = 30.0) -> int | None:
    """A time (epoch ms, Kafka timestamps) at or before the last checkpoint whose offsets `group_id`
    committed; None when the group committed nothing (a first start)."""
    tps = _partitions(kafka, topics)
    c = _consumer(kafka, group_id)
    try:
        committed = {tp: c.committed(tp) for tp in tps}
        before = {tp: off - 1 for tp, off in committed.items() if off}
        if not any(off is not None for off in committed.values()):
            return None
        if not before:  # committed at offset 0 everywhere: the checkpoint came before any input
            return 0
    finally:
        c.close()
    reader = _consumer(kafka, None)
    try:
        reader.assign(list(before))
        for tp, off in before.items():
            reader.seek(tp, off)
        stamps: dict = {}
        deadline = time.monotonic() + timeout_s
        while len(stamps) < len(before):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the last checkpointed records of {sorted(set(topics))}")
            for tp, recs in reader.poll(timeout_ms=200).items():
                for r in recs:  # the record there, or the next one if it is gone (retention, control records)
                    if r.offset >= before[tp] and tp not in stamps:
                        stamps[tp] = r.timestamp
                        reader.pause(tp)
        # every record consumed before the checkpoint was written before it: the latest of them bounds it
        return max(stamps.values())
    finally:
        reader.close()


def answered_since(kafka: KafkaSettings, answers_topic: str, since_ms: int, timeout_s: float = 60.0) -> dict[str, int]:
    """request id -> answered_at_ms of every answer in `answers_topic` stamped at or after `since_ms`
    (up to the topic's end as of now)."""
    tps = _partitions(kafka, [answers_topic])
    if not tps:
        return {}
    c = _consumer(kafka, None)
    try:
        c.assign(tps)
        ends = c.end_offsets(tps)
        starts = c.offsets_for_times({tp: max(0, since_ms) for tp in tps})
        for tp in tps:
            c.seek(tp, starts[tp].offset if starts.get(tp) is not None else ends[tp])
        out: dict[str, int] = {}
        deadline = time.monotonic() + timeout_s
        while any(c.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {answers_topic} back to its end within {timeout_s:.0f} s")
            for tp, recs in c.poll(timeout_ms=200, max_records=5000).items():
                for r in recs:
                    if r.offset >= ends[tp]:
                        continue
                    try:
                        a = json.loads(r.value)
                        out.setdefault(a["request_id"], int(a["answered_at_ms"]))
                    except Exception:  # noqa: BLE001 - not an answer: not ours to recover
                        continue
        return out
    finally:
        c.close()


def answered_after_checkpoint(kafka: KafkaSettings, group_id: str, input_topics: list[str], answers_topic: str,
                              margin_ms: int, savepoint_ms: int | None = None) -> dict[str, int]:
    """The requests this rendezvous answered after the checkpoint it restores from (empty on a first start).
    After a failure that is what the job wrote between its last checkpoint and the failure (a checkpoint
    interval's worth of answers), however long the outage lasted.

    `savepoint_ms`: when the savepoint the job was started from was asked for (`RendezvousSettings.recover_from_ms`),
    the bound used when the group committed nothing: a job stopped with a savepoint before any checkpoint of its
    had completed left no committed offsets (seen), though its timers had answered after the savepoint's barrier."""
    t = checkpoint_time(kafka, group_id, input_topics)
    if t is None:
        t = savepoint_ms
    if t is None:
        return {}
    return answered_since(kafka, answers_topic, t - margin_ms)
