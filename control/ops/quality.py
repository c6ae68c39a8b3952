"""The quality gate from the control plane: the `quality` topic's results (latest, followed as they come).

The quality job (`jobs.quality`) writes one `QualityResult` per micro-batch; these read them back for
`rendezvous quality show|watch|docs`. Records that are not QualityResults are skipped (counted)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from pydantic import ValidationError

from control import kafka_io
from schemas.records import QualityResult
from schemas.topics import QUALITY


@dataclass
class Results:
    results: list[QualityResult] = field(default_factory=list)
    unreadable: int = 0

    @property
    def latest(self) -> QualityResult | None:
        return self.results[-1] if self.results else None


def parse(values: list[bytes | str | None]) -> Results:
    """QualityResults in batch order (by batch end), one per batch: a batch reported twice after a restore
    (at-least-once) is kept once, by (source_topic, batch_start_ms)."""
    out = Results()
    by_batch: dict[tuple[str, int], QualityResult] = {}
    for v in values:
        try:
            r = QualityResult.parse(v or b"")
        except ValidationError:
            out.unreadable += 1
            continue
        by_batch[(r.source_topic, r.batch_start_ms)] = r
    out.results = sorted(by_batch.values(), key=lambda r: (r.batch_end_ms, r.batch_start_ms))
    return out


def latest(bootstrap: str, topic: str = QUALITY, last: int = 20, timeout: float = 15.0) -> Results:
    """The last `last` results of every partition of the quality topic."""
    return parse(kafka_io.last(bootstrap, topic, last, timeout))


def follow(bootstrap: str, topic: str = QUALITY, duration_s: float | None = None,
           stop: Callable[[], bool] | None = None, from_beginning: bool = False) -> Iterator[QualityResult]:
    """Results as they arrive (from now on, or from the beginning), until `duration_s` or `stop()`."""
    parts = kafka_io.topic_partitions(bootstrap, [topic])
    if not parts:
        raise RuntimeError(f"topic {topic} does not exist (deploy the quality job first: "
                           f"`rendezvous deploy quality`)")
    c = kafka_io.consumer(bootstrap, enable_auto_commit=False, group_id=None)
    try:
        c.assign(parts)
        (c.seek_to_beginning if from_beginning else c.seek_to_end)(*parts)
        deadline = time.monotonic() + duration_s if duration_s else None
        while not (stop and stop()) and (deadline is None or time.monotonic() < deadline):
            for recs in c.poll(timeout_ms=200).values():
                yield from parse([r.value for r in recs]).results
    finally:
        c.close()
