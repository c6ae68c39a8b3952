"""When a micro-batch closes: after `max_records` records or `max_wait_ms` after its first record,
whichever comes first. A pure state machine (no Flink): the job's function keeps `OpenBatch` in keyed
state (versioned tuple) and the records in list state, and maps `Decision`s onto processing-time timers.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH_STATE_VERSION = 1
BATCH_STATE_READS = (BATCH_STATE_VERSION,)
"""Every encoding `OpenBatch.from_state` reads (declared for upgrades: `QualitySettings.state_encodings`)."""
BATCHES_UID = "quality-batches"
"""The uid of the operator that keeps the open batch (jobs/quality/pipeline.py)."""


@dataclass(frozen=True)
class OpenBatch:
    """The batch being collected: when its first record came, how many so far, its timer."""

    start_ms: int
    count: int
    timer_ms: int

    def to_state(self) -> tuple:
        return (BATCH_STATE_VERSION, self.start_ms, self.count, self.timer_ms)

    @classmethod
    def from_state(cls, t: tuple | None) -> "OpenBatch | None":
        if t is None:
            return None
        if t[0] not in BATCH_STATE_READS:
            raise ValueError(f"unknown batch state version {t[0]} (this code reads {BATCH_STATE_VERSION}); "
                             f"deploy the version of the quality job that wrote the savepoint, or start without it")
        return cls(*t[1:])


@dataclass(frozen=True)
class Decision:
    batch: OpenBatch | None
    """The open batch after this event (None: no batch open; its records are to be cleared)."""
    close: bool = False
    """Validate the records collected so far (this one included) and start afresh."""
    register_timer: int | None = None
    delete_timer: int | None = None


class BatchPolicy:
    def __init__(self, max_records: int, max_wait_ms: int):
        if max_records < 1 or max_wait_ms < 1:
            raise ValueError("max_records and max_wait_ms must be positive")
        self.max_records = max_records
        self.max_wait_ms = max_wait_ms

    def on_record(self, batch: OpenBatch | None, now_ms: int) -> Decision:
        """A record was added to the batch's records."""
        if batch is None:
            batch = OpenBatch(start_ms=now_ms, count=1, timer_ms=now_ms + self.max_wait_ms)
            if batch.count >= self.max_records:
                return Decision(None, close=True)
            return Decision(batch, register_timer=batch.timer_ms)
        batch = OpenBatch(batch.start_ms, batch.count + 1, batch.timer_ms)
        if batch.count >= self.max_records:
            return Decision(None, close=True, delete_timer=batch.timer_ms)
        return Decision(batch)

    def on_timer(self, batch: OpenBatch | None, timestamp_ms: int) -> Decision:
        """A processing-time timer fired. Only the open batch's own timer closes it (a stale one, e.g. of a
        batch closed by count whose timer could not be deleted in time, does nothing)."""
        if batch is not None and batch.timer_ms == timestamp_ms:
            return Decision(None, close=True)
        return Decision(batch)
