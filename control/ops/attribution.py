"""Change attribution (the seed's "watch upstream changes when a downstream figure moves"): when a model's live
figure shifts, name the upstream lifecycle events of the same span.

`attribute` is pure: over the `metrics` rows (accuracy: recall; model: score mean; answers: answer share)
and the lifecycle events, with each model's upstream models (the cards' `inputs`, transitively), it finds
every window whose figure differs from the mean of up to `baseline_windows` windows before it by at least the
figure's threshold, and for each lifecycle event within one window length of it that concerns the model or
one of its upstream models (a new version, a stopped job, a stage change, a roll, a rescale), or any schedule
change for the answer share, yields a `Metrics` row of kind `attribution`. `run_once` reads the topics, takes
the dependencies from the running model jobs' cards (`control.ops.lineage`) and writes the new rows to the
metrics topic (`rendezvous attribution`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from schemas.records import LifecycleEvent, Metrics, model_key, split_key

MODEL_EVENTS = {"model_registered", "stage_changed", "job_submitted", "job_stopped", "upgrade", "roll_started",
                "roll_step", "rollback", "roll_completed", "job_rescaled"}
"""Lifecycle events that concern one model (they carry its id and version)."""
SCHEDULE_EVENTS = {"schedule_published", "roll_started", "roll_step", "rollback", "roll_completed"}
"""Events that change which model answers: upstream of every answer share."""


@dataclass(frozen=True)
class Thresholds:
    recall: float = 0.08
    score_mean: float = 0.1
    share: float = 0.15
    min_count: int = 20
    """A window counting fewer (labelled positives, scores, answers) has no figure."""
    baseline_windows: int = 3

    def of(self, figure: str) -> float:
        return getattr(self, figure)


@dataclass(frozen=True)
class Point:
    start_ms: int
    end_ms: int
    value: float
    count: int


def series(rows: Iterable[Metrics], figure: str, min_count: int) -> dict[str, list[Point]]:
    """Per model (`id@version`), the figure's value per window, oldest first."""
    out: dict[str, list[Point]] = defaultdict(list)
    if figure == "share":
        acc: dict[tuple, list] = defaultdict(lambda: [0.0, 0])
        for m in rows:
            if m.kind == "answers" and m.model is not None and m.share is not None:
                a = acc[(m.model, m.window_start_ms, m.window_end_ms)]
                a[0] += m.share
                a[1] = m.total or 0
        for (model, s, e), (share, total) in acc.items():
            if total >= min_count:
                out[model].append(Point(s, e, share, total))
    else:
        for m in rows:
            if m.model is None:
                continue
            if figure == "recall" and m.kind == "accuracy":
                positives = (m.tp or 0) + (m.fn or 0)
                if positives >= min_count:
                    out[m.model].append(Point(m.window_start_ms, m.window_end_ms, (m.tp or 0) / positives,
                                              positives))
            elif figure == "score_mean" and m.kind == "model" and m.score_mean is not None and m.count >= min_count:
                out[m.model].append(Point(m.window_start_ms, m.window_end_ms, m.score_mean, m.count))
    return {k: sorted(v, key=lambda p: p.start_ms) for k, v in out.items()}


def upstream_of(inputs: dict[str, Iterable[str]]) -> dict[str, set[str]]:
    """Each model id's upstream model ids, transitively (inputs: model id -> its cards' inputs, `id[@version]`)."""
    direct = {m: {split_key(i)[0] for i in ins} for m, ins in inputs.items()}
    out: dict[str, set[str]] = {}
    for m in direct:
        seen: set[str] = set()
        todo = list(direct[m])
        while todo:
            u = todo.pop()
            if u not in seen and u != m:
                seen.add(u)
                todo += direct.get(u, ())
        out[m] = seen
    return out


def _event_key(e: LifecycleEvent) -> str | None:
    if e.model_id is None:
        return None
    return model_key(e.model_id, e.model_version) if e.model_version else e.model_id


@dataclass
class Shift:
    model: str
    figure: str
    point: Point
    before: float
    events: list[LifecycleEvent] = field(default_factory=list)


def shifts(rows: list[Metrics], th: Thresholds = Thresholds(), figures=("recall", "score_mean", "share")) \
        -> list[Shift]:
    """Every window whose figure moved from its baseline (the mean of the windows before) by the threshold."""
    out = []
    for figure in figures:
        for model, points in series(rows, figure, th.min_count).items():
            for i, p in enumerate(points):
                base = points[max(0, i - th.baseline_windows):i]
                if not base:
                    continue
                before = sum(b.value for b in base) / len(base)
                if abs(p.value - before) >= th.of(figure):
                    out.append(Shift(model, figure, p, before))
    return out


def attribute(rows: list[Metrics], events: list[LifecycleEvent], inputs: dict[str, Iterable[str]],
              th: Thresholds = Thresholds()) -> list[Metrics]:
    """The attribution rows: for each shifted window, one per upstream lifecycle event within one window
    length of it (before its start to after its end). `inputs`: model id -> the ids it reads (cards)."""
    ups = upstream_of(inputs)
    out = []
    for sh in shifts(rows, th):
        mid, _ = split_key(sh.model)
        concerned = {mid} | ups.get(mid, set())
        span = sh.point.end_ms - sh.point.start_ms
        lo, hi = sh.point.start_ms - span, sh.point.end_ms + span
        for e in events:
            if not lo <= e.at_ms <= hi:
                continue
            if not ((e.kind in MODEL_EVENTS and e.model_id in concerned)
                    or (sh.figure == "share" and e.kind in SCHEDULE_EVENTS)):
                continue
            out.append(Metrics(kind="attribution", window_start_ms=sh.point.start_ms, window_end_ms=sh.point.end_ms,
                               model=sh.model, versus=_event_key(e), trigger=e.kind, count=sh.point.count,
                               figure=sh.figure, before=round(sh.before, 6), after=round(sh.point.value, 6),
                               event_at_ms=e.at_ms))
    return out


def describe(m: Metrics) -> str:
    """One line of an attribution row."""
    from datetime import datetime, timezone

    when = datetime.fromtimestamp(m.window_start_ms / 1000, timezone.utc).strftime("%H:%M:%S")
    at = datetime.fromtimestamp((m.event_at_ms or 0) / 1000, timezone.utc).strftime("%H:%M:%S")
    return (f"{when} {m.model}: {m.figure} {m.before:.3f} -> {m.after:.3f}; upstream {m.trigger} "
            f"{m.versus or '(schedule)'} at {at}")


def run_once(s=None, topics=None, th: Thresholds = Thresholds(), inputs: dict[str, list[str]] | None = None) \
        -> list[Metrics]:
    """Read the metrics and lifecycle topics, write the attribution rows not written yet to the metrics topic;
    returns the new rows. `inputs` default: the running model jobs' cards (`lineage.model_inputs`)."""
    from control import kafka_io
    from control.ops import lineage
    from control.ops.report import parse_events, parse_rows, row_identity
    from control.settings import RuntimeSettings
    from schemas.topics import TopicNames

    s = s or RuntimeSettings()
    topics = topics or TopicNames()
    rows, _ = parse_rows(kafka_io.read_since(s.bootstrap_servers, topics.metrics, None))
    events = parse_events(kafka_io.read_since(s.bootstrap_servers, topics.lifecycle, None))
    if inputs is None:
        inputs = lineage.model_inputs(s)
    have = {row_identity(m) for m in rows if m.kind == "attribution"}
    new = [m for m in attribute([m for m in rows if m.kind != "attribution"], events, inputs, th)
           if row_identity(m) not in have]
    if new:
        kafka_io.produce(s.bootstrap_servers, topics.metrics, [m.to_json() for m in new])
    return new
