"""Per-entity feature logic: a plain class, testable without a JVM.

The Flink function stores `EntityState` in keyed state (`to_state` / `from_state`) and calls `update`.
Training uses the same class over synthetic data, so features at training and at serving time are
computed by the same code (no training/serving skew).

State encoding (deliberate and versioned, so savepoints survive upgrades): one plain tuple
`(ENTITY_STATE_VERSION, count, mean, m2, last_event_ms, window)` with `window` a tuple of
`(event_time_ms, amount)` pairs, oldest first, stored as `Types.PICKLED_BYTE_ARRAY()`: one state read
and one write per request. Version 0 is the earlier layout (a typed `ROW<count, mean, m2,
last_event_ms>` value plus a `LIST<ROW<ts, amount>>`), still read by the Flink function
(`EntityState.from_rows`) so an older savepoint restores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from schemas.features import DEFAULT_WINDOW_MS
from schemas.records import Features, Request


@dataclass
class EntityState:
    """Everything kept per entity. Field types map 1:1 onto Flink state types (see pipeline.py)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # Welford's sum of squared deviations
    last_event_ms: int | None = None
    window: list[tuple[int, float]] = field(default_factory=list)  # (event_time_ms, amount), oldest first

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def to_state(self) -> tuple:
        return (ENTITY_STATE_VERSION, self.count, self.mean, self.m2, self.last_event_ms, tuple(self.window))

    @classmethod
    def from_state(cls, value: tuple) -> "EntityState":
        if not isinstance(value, tuple) or not value or value[0] != ENTITY_STATE_VERSION:
            found = value[0] if isinstance(value, tuple) and value else type(value).__name__
            raise StateVersionError(f"entity state has encoding {found!r}; this code reads version "
                                    f"{ENTITY_STATE_VERSION}. Restore the savepoint with the version that wrote it.")
        _, count, mean, m2, last, window = value
        return cls(count=count, mean=mean, m2=m2, last_event_ms=last, window=list(window))

    @classmethod
    def from_rows(cls, stats, window: Iterable) -> "EntityState":
        """Version 0: the typed stats row and window rows of earlier savepoints."""
        return cls(count=int(stats.count), mean=float(stats.mean), m2=float(stats.m2),
                   last_event_ms=int(stats.last_event_ms) if stats.last_event_ms is not None else None,
                   window=sorted((int(e.ts), float(e.amount)) for e in (window or [])))


ENTITY_STATE_VERSION = 1
"""Version of the tuple layout written by `EntityState.to_state`; bump it (and keep reading the old one) on
change."""

ENTITY_STATE_READS = (0, ENTITY_STATE_VERSION)
"""Every encoding of the entity state this code reads: 0 the typed row states (`EntityState.from_rows`), 1 the
tuple (`EntityState.from_state`). Declared for upgrades (`ExternalStateSettings.state_encodings`)."""

FEATURES_UID = "external-state-features"
"""The uid of the operator that keeps the entity state (jobs/external_state/pipeline.py)."""


class StateVersionError(ValueError):
    """State written by a newer (or unknown) encoding than this code reads."""


class FeatureComputer:
    """Computes a request's features from the entity's state, then folds the request into the state."""

    def __init__(self, window_ms: int = DEFAULT_WINDOW_MS):
        if window_ms <= 0:
            raise ValueError("window_ms must be positive")
        self.window_ms = window_ms

    def update(self, state: EntityState, req: Request) -> Features:
        t, amount = req.event_time_ms, req.amount
        # sliding window by event time: keep events in (t - window, t]; out-of-order events that are
        # older than the window's start are counted in the running stats but not in the window
        lo = t - self.window_ms
        state.window = [(ts, a) for ts, a in state.window if ts > lo]
        in_window = [(ts, a) for ts, a in state.window if ts <= t]
        window_count = len(in_window) + 1
        window_sum = sum(a for _, a in in_window) + amount
        ms_since_prev = t - state.last_event_ms if state.last_event_ms is not None else None
        std = state.std
        z = (amount - state.mean) / std if std > 0 else 0.0
        features = Features(
            entity_count=state.count,
            window_count=window_count,
            window_sum=round(window_sum, 6),
            window_ms=self.window_ms,
            ms_since_prev=ms_since_prev,
            amount_mean=state.mean,
            amount_std=std,
            amount_zscore=z,
        )
        # fold the request in
        state.count += 1
        delta = amount - state.mean
        state.mean += delta / state.count
        state.m2 += delta * (amount - state.mean)
        state.last_event_ms = t if state.last_event_ms is None else max(state.last_event_ms, t)
        state.window.append((t, amount))
        state.window.sort(key=lambda e: e[0])
        return features
