"""The rendezvous's recovery scan (jobs/rendezvous/recovery.py) against the real broker: where it starts reading
the answers back, with and without offsets committed by the job's consumer group."""

from __future__ import annotations

import json
import time

import pytest

from control import kafka_io
from control.ops import deploy
from jobs.rendezvous.recovery import answered_after_checkpoint
from jobs.rendezvous.settings import RendezvousSettings
from schemas.records import now_ms
from schemas.topics import TopicNames

pytestmark = pytest.mark.e2e


def answer(rid: str) -> dict:
    return {"request_id": rid, "answered_at_ms": now_ms()}


def stamp(s, topic: str, rid: str) -> int:
    """The broker's time of `rid`'s answer (the answers topic stamps append time)."""
    return next(r.timestamp for r in kafka_io.records_to_end(s.bootstrap_servers, topic)
                if json.loads(r.value)["request_id"] == rid)


def after(ms: int) -> int:
    """The first millisecond of this machine's clock later than `ms` (the broker runs on the same clock)."""
    while now_ms() <= ms:
        time.sleep(0.001)
    return now_ms()


def test_the_scan_starts_at_the_savepoint_when_the_group_committed_nothing_and_else_at_the_checkpoint(stack, unique):
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    s = stack
    kafka = deploy.kafka_settings(RendezvousSettings, s)
    t = TopicNames.suffixed(f"scan-{unique}")
    kafka_io.ensure_topics(s.bootstrap_servers, t.specs())
    group, inputs = f"scan-{unique}", [t.augmented, t.scores]
    kafka_io.produce(s.bootstrap_servers, t.augmented, [{"request": "first"}, {"request": "second"}])
    kafka_io.produce(s.bootstrap_servers, t.answers, [answer("before")])
    savepoint_ms = after(stamp(s, t.answers, "before"))  # the savepoint asked for after "before" was answered
    kafka_io.produce(s.bootstrap_servers, t.answers, [answer("after")])

    # nothing committed: a first start recovers nothing; a start from a savepoint reads back from the savepoint on
    assert answered_after_checkpoint(kafka, group, inputs, t.answers, margin_ms=0) == {}
    assert set(answered_after_checkpoint(kafka, group, inputs, t.answers, margin_ms=0,
                                         savepoint_ms=savepoint_ms)) == {"after"}

    # the group committed offsets (a checkpoint of the job): they bound the checkpoint, the savepoint time is unused
    c = kafka_io.consumer(s.bootstrap_servers, group_id=group, enable_auto_commit=False)
    try:
        c.commit({TopicPartition(t.augmented, 0): OffsetAndMetadata(1, "", -1)})  # "first" read before it
    finally:
        c.close()
    assert set(answered_after_checkpoint(kafka, group, inputs, t.answers, margin_ms=0,
                                         savepoint_ms=savepoint_ms)) == {"before", "after"}
