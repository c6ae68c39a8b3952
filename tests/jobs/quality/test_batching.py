"""When micro-batches close: count or time, whichever first; stale timers; the state codec (no JVM)."""

import random

import pytest

from jobs.quality.batching import BATCH_STATE_VERSION, BatchPolicy, OpenBatch


def test_a_batch_closes_at_max_records_and_deletes_its_timer():
    p = BatchPolicy(max_records=3, max_wait_ms=1000)
    d = p.on_record(None, 100)
    assert d.batch == OpenBatch(100, 1, 1100) and d.register_timer == 1100 and not d.close
    d = p.on_record(d.batch, 150)
    assert d.batch.count == 2 and d.register_timer is None and not d.close
    d = p.on_record(d.batch, 160)
    assert d.close and d.batch is None and d.delete_timer == 1100


def test_a_batch_closes_at_its_timer_and_ignores_stale_ones():
    p = BatchPolicy(max_records=1000, max_wait_ms=500)
    b = p.on_record(None, 0).batch
    assert p.on_timer(b, 400).batch == b and not p.on_timer(b, 400).close  # not its timer
    assert not p.on_timer(None, 500).close  # the batch was already closed by count
    assert p.on_timer(b, 500).close


def test_one_record_batches():
    d = BatchPolicy(max_records=1, max_wait_ms=10).on_record(None, 5)
    assert d.close and d.register_timer is None


def test_every_record_lands_in_exactly_one_batch_under_random_interleavings():
    rng = random.Random(3)
    for _ in range(200):
        p = BatchPolicy(max_records=rng.randint(1, 20), max_wait_ms=rng.randint(1, 50))
        batch, timers, now, in_batch, sizes, sent = None, set(), 0, 0, [], 0
        for _ in range(rng.randint(1, 300)):
            now += rng.randint(0, 10)
            due = sorted(t for t in timers if t <= now)
            if due and rng.random() < 0.5:
                timers.discard(due[0])
                d = p.on_timer(batch, due[0])
            else:
                sent += 1
                in_batch += 1
                d = p.on_record(batch, now)
            if d.delete_timer is not None:
                timers.discard(d.delete_timer)
            if d.register_timer is not None:
                timers.add(d.register_timer)
            if d.close:
                sizes.append(in_batch)
                in_batch = 0
            batch = d.batch
            assert batch is None or batch.count == in_batch
            assert in_batch <= p.max_records
        assert sum(sizes) + in_batch == sent
        assert all(0 < s <= p.max_records for s in sizes)


def test_state_codec_is_versioned():
    b = OpenBatch(1, 2, 3)
    assert b.to_state()[0] == BATCH_STATE_VERSION
    assert OpenBatch.from_state(b.to_state()) == b and OpenBatch.from_state(None) is None
    with pytest.raises(ValueError, match="version"):
        OpenBatch.from_state((99, 1, 2, 3))
