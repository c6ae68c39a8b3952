"""Live figures of each model deployment from the scores topic: a sliding window over the last
`window_s` seconds (by when each score was made, its `finished_at_ms`: a score's Kafka timestamp is its request's
time, so a job running behind would show nothing in a short window), kept up to date by polling.

Used by `rendezvous model list` (score rate, error rate) and by the roll's guards (error rate, latency
p99, score volume, disagreement with the canary). Reads with its own consumer (no group): watching
changes nothing.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field

from control import kafka_io
from schemas.records import model_key


@dataclass
class ScoreSample:
    at_ms: int  # when it was scored (the score's finished_at_ms)
    key: str  # id@version
    request_id: str
    ok: bool
    latency_ms: int
    value: float | None  # the compared output field, when numeric


@dataclass
class ModelStats:
    key: str
    scores: int = 0
    errors: int = 0
    latencies: list[int] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.scores if self.scores else 0.0

    @property
    def p99_ms(self) -> float | None:
        if not self.latencies:
            return None
        v = sorted(self.latencies)
        return float(v[min(len(v) - 1, int(0.99 * len(v)))])


def sample_of(raw: bytes | str, output_field: str) -> ScoreSample | None:
    """One score record as a sample; None for a record that is not a score."""
    try:
        s = json.loads(raw)
        out = s.get("output") or {}
        v = out.get(output_field) if isinstance(out, dict) else None
        ok = s.get("error") is None and s.get("output") is not None
        finished = int(s["finished_at_ms"])
        return ScoreSample(finished, model_key(s["model_id"], s["model_version"]), str(s["request_id"]), ok,
                           finished - int(s["started_at_ms"]),
                           float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
    except Exception:  # noqa: BLE001 - not a score: not counted
        return None


def stats_of(samples, since_ms: int | None = None) -> dict[str, ModelStats]:
    out: dict[str, ModelStats] = {}
    for x in samples:
        if since_ms is not None and x.at_ms < since_ms:
            continue
        st = out.setdefault(x.key, ModelStats(x.key))
        st.scores += 1
        if x.ok:
            st.latencies.append(x.latency_ms)
        else:
            st.errors += 1
    return out


def disagreement(samples, a: str, b: str, threshold: float, since_ms: int | None = None) -> tuple[int, float]:
    """(requests both scored, share of them where `a` and `b` fall on different sides of `threshold`)."""
    va: dict[str, float] = {}
    vb: dict[str, float] = {}
    for x in samples:
        if (since_ms is not None and x.at_ms < since_ms) or x.value is None:
            continue
        if x.key == a:
            va[x.request_id] = x.value
        elif x.key == b:
            vb[x.request_id] = x.value
    both = va.keys() & vb.keys()
    if not both:
        return 0, 0.0
    differ = sum(1 for r in both if (va[r] >= threshold) != (vb[r] >= threshold))
    return len(both), differ / len(both)


class ScoreWindow:
    """The scores of the last `window_s` seconds; `poll()` reads what arrived since the last call."""

    def __init__(self, bootstrap: str, topic: str, window_s: float = 30.0, output_field: str = "fraud_probability",
                 start_ms: int | None = None):
        self.window_ms = int(window_s * 1000)
        self.output_field = output_field
        self.samples: deque[ScoreSample] = deque()
        self._tps = kafka_io.topic_partitions(bootstrap, [topic])
        if not self._tps:
            raise ValueError(f"topic {topic!r} does not exist")
        self._c = kafka_io.consumer(bootstrap, enable_auto_commit=False, group_id=None)
        self._c.assign(self._tps)
        since = start_ms if start_ms is not None else int(time.time() * 1000) - self.window_ms
        found = self._c.offsets_for_times({tp: since for tp in self._tps})
        ends = self._c.end_offsets(self._tps)
        for tp in self._tps:
            o = found.get(tp)
            self._c.seek(tp, o.offset if o is not None else ends[tp])

    def poll(self, max_s: float = 5.0) -> int:
        """Read what is there now (up to the end offsets as of this call); returns how many samples came."""
        ends = self._c.end_offsets(self._tps)
        n = 0
        deadline = time.monotonic() + max_s
        while any(self._c.position(tp) < ends[tp] for tp in self._tps) and time.monotonic() < deadline:
            for recs in self._c.poll(timeout_ms=200).values():
                for r in recs:
                    x = sample_of(r.value, self.output_field)
                    if x is not None:
                        self.samples.append(x)
                        n += 1
        cutoff = int(time.time() * 1000) - self.window_ms
        if self.samples and min(x.at_ms for x in self.samples) < cutoff:  # scored times interleave across jobs
            self.samples = deque(x for x in self.samples if x.at_ms >= cutoff)
        return n

    def stats(self, since_ms: int | None = None) -> dict[str, ModelStats]:
        return stats_of(self.samples, since_ms)

    def disagreement(self, a: str, b: str, threshold: float, since_ms: int | None = None) -> tuple[int, float]:
        return disagreement(self.samples, a, b, threshold, since_ms)

    def close(self) -> None:
        self._c.close()

    def __enter__(self) -> "ScoreWindow":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
