"""Per-entity feature logic: a plain class, testable without a JVM.

The Flink function stores `EntityState` in typed keyed state and calls `update`. Training uses the
same class over synthetic data, so features at training and at serving time are computed by the
same code (no training/serving skew).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
