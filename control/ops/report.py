"""The live meta-analytics as an operator reads them: the rows of the metrics topic (the metrics job,
jobs/metrics, writes one `schemas.records.Metrics` per kind, event-time window and model), the schedule
changes and lifecycle events that explain a change in them, and each model's figures in its latest window
(`rendezvous models`). `tools/report.py` renders them as an HTML report (`rendezvous report`).

`load` reads the topics; everything below it is pure (rows in, figures out), so the tests feed it rows.
Nothing here computes a metric from scores or answers: the metrics job does, once, for everyone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from schemas.records import (
    LifecycleEvent,
    Metrics,
    ModelEntry,
    Schedule,
    now_ms,
    split_key,
)

ROW_ORDER = ("development", "preproduction", "production", "postproduction", "retired")
STALE_WINDOWS = 3
"""`rendezvous models` warns when the latest window ended more than this many window lengths ago (at least
STALE_MIN_MS): a window is written when the watermark passes its end, so a stopped job stops the rows."""
STALE_MIN_MS = 60_000
ALARMS = ("guard_breached", "rollback", "quality_alert")
"""Lifecycle events marked as alarms on the plots (the others as plain lifecycle events)."""


@dataclass(frozen=True)
class Marker:
    """A moment to mark on the plots over time: a schedule change or a lifecycle event."""

    at_ms: int
    category: Literal["schedule", "lifecycle", "alarm"]
    label: str
    """short, e.g. `schedule v3 'roll'` or `stage_changed fraud-champion@1.1.0 -> production`"""


@dataclass(frozen=True)
class ReportData:
    """What a report (or `rendezvous models`) shows: the metrics rows, the markers, the roles."""

    rows: tuple[Metrics, ...]
    markers: tuple[Marker, ...] = ()
    champion: str | None = None
    """`id@version` of the active schedule's first stage's first choice (what a roll replaces)"""
    canary: str | None = None
    stages: dict[str, str] = field(default_factory=dict)
    """the registry's stage of each `id@version`"""
    topic: str = "metrics"
    since_ms: int | None = None
    generated_at_ms: int = 0
    unreadable: int = 0
    """values in the metrics topic that were not metrics rows"""
    lineage: tuple[str, ...] = ()
    """`rendezvous lineage`'s lines (jobs, topics, model dependencies, undeclared consumers), when it could be read"""
    lineage_dot: str | None = None
    lineage_graph: object | None = None
    """the `control.ops.lineage.Lineage` itself, for the drawing"""


# ------------------------------------------------------------------------------------------------ reading
def load(plane, since_ms: int | None, now: int | None = None, with_lineage: bool = False) -> ReportData:
    """The report's data from `plane`'s topics (registry.Plane): metrics rows of windows ending at or after
    `since_ms` (None: all), the schedule changes and lifecycle events since then, the registry's stages,
    the champion and the canary; `with_lineage`: the running jobs' lineage too (`control.ops.lineage`)."""
    from control import kafka_io
    from control.ops import registry, schedules
    from jobs.rendezvous.schedule import BUILTIN_SCHEDULE

    # a row is written after its window ends: its Kafka timestamp is at or after window_end_ms
    rows, bad = parse_rows(kafka_io.read_since(plane.bootstrap, plane.topics.metrics, since_ms))
    rows = [r for r in rows if since_ms is None or r.window_end_ms >= since_ms]
    events = parse_events(kafka_io.read_since(plane.bootstrap, plane.topics.lifecycle, since_ms))
    history = schedules.history(plane.bootstrap, plane.topics.schedules)
    known = registry.entries(plane)
    keys = models_of(rows) | set(known)
    stages = {k: e.stage for k, e in known.items()}
    active = history[-1] if history else BUILTIN_SCHEDULE
    lineage_lines, lineage_dot, lineage_graph = (), None, None
    if with_lineage:  # the graph needs the cluster's REST API too; the report does without it
        try:
            from control.ops import lineage

            graph = lineage.read(plane.s)
            lineage_lines, lineage_dot, lineage_graph = tuple(graph.lines()), graph.dot(), graph
        except Exception as e:  # noqa: BLE001 - shown in the report instead
            lineage_lines = (f"lineage not available: {e}",)
    return ReportData(rows=tuple(rows), markers=tuple(markers_of(events, history, since_ms)),
                      champion=champion_of(active, keys, stages), canary=canary_of(known.values()),
                      stages=stages, topic=plane.topics.metrics, since_ms=since_ms,
                      generated_at_ms=now if now is not None else now_ms(), unreadable=bad,
                      lineage=lineage_lines, lineage_dot=lineage_dot, lineage_graph=lineage_graph)


# ------------------------------------------------------------------------------------------------ rows
def row_identity(m: Metrics) -> tuple:
    return (m.kind, m.window_start_ms, m.window_end_ms, m.model, m.versus, m.stage, m.trigger, m.figure)


def parse_rows(values: Iterable[bytes | str | None]) -> tuple[list[Metrics], int]:
    """The metrics rows in window order, each (kind, window, model, ...) once: the last copy, as a restored
    job may write a window again (at-least-once sink); and how many values were not metrics rows."""
    by_id: dict[tuple, Metrics] = {}
    bad = 0
    for v in values:
        try:
            m = Metrics.parse(v)
        except Exception:  # noqa: BLE001 - not a metrics row: counted, not shown
            bad += 1
            continue
        by_id.pop(row_identity(m), None)
        by_id[row_identity(m)] = m
    return sorted(by_id.values(), key=lambda m: (m.window_end_ms, m.window_start_ms)), bad


def parse_events(values: Iterable[bytes | str | None]) -> list[LifecycleEvent]:
    out = []
    for v in values:
        try:
            out.append(LifecycleEvent.parse(v))
        except Exception:  # noqa: BLE001 - not ours: ignored
            continue
    return out


def of_kind(rows: Iterable[Metrics], kind: str) -> list[Metrics]:
    return [r for r in rows if r.kind == kind]


def models_of(rows: Iterable[Metrics]) -> set[str]:
    """Every deployment the rows speak of (the default answer's None is not one)."""
    return {x for r in rows for x in (r.model, r.versus) if x}


def span(rows: Iterable[Metrics]) -> tuple[int, int] | None:
    """(first window start, last window end) of the rows; None without rows."""
    rows = list(rows)
    if not rows:
        return None
    return min(r.window_start_ms for r in rows), max(r.window_end_ms for r in rows)


def window_ms(rows: Iterable[Metrics]) -> int | None:
    """The most common window length of the rows."""
    counts: dict[int, int] = defaultdict(int)
    for r in rows:
        counts[r.window_end_ms - r.window_start_ms] += 1
    return max(counts, key=lambda k: (counts[k], k)) if counts else None


def series(rows: Iterable[Metrics], name: Callable[[Metrics], str | None],
           value: Callable[[Metrics], float | None]) -> dict[str, list[tuple[int, float]]]:
    """{name: [(window_end_ms, value), ...] in time order} of the rows whose name and value are not None."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r.window_end_ms):
        n, v = name(r), value(r)
        if n is not None and v is not None:
            out[n].append((r.window_end_ms, float(v)))
    return dict(sorted(out.items()))


def answer_group(r: Metrics) -> str:
    """An answers row's stage and trigger as one label: `stage 0 preferred`, `default`."""
    if r.stage is None or r.trigger == "default":
        return "default"
    return f"stage {r.stage} {r.trigger}"


def answer_model(r: Metrics) -> str:
    return r.model or "default answer"


def shares(rows: Iterable[Metrics], group: Callable[[Metrics], str]) -> dict[str, list[tuple[int, float]]]:
    """Per group, its share of each window's answers: answers rows (one per model, stage and trigger) summed
    over what `group` does not tell apart. A window's total is the rows' `total` (all its answers)."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[int, int] = {}
    for r in of_kind(rows, "answers"):
        counts[r.window_end_ms][group(r)] += r.count
        totals[r.window_end_ms] = max(totals.get(r.window_end_ms, 0), r.total or 0)
    names = sorted({g for per in counts.values() for g in per})
    out: dict[str, list[tuple[int, float]]] = {g: [] for g in names}
    for t in sorted(counts):
        total = totals[t] or sum(counts[t].values())
        for g in names:  # a group with no answers in a window is 0 there: stacked areas stay honest
            out[g].append((t, counts[t].get(g, 0) / total if total else 0.0))
    return out


def latest(rows: Iterable[Metrics], kind: str, model: str | None = None, versus: str | None = None,
           where: Callable[[Metrics], bool] = lambda r: True) -> Metrics | None:
    """The row of `kind` (of `model`, against `versus` when given) with the latest window."""
    best = None
    for r in rows:
        if r.kind == kind and (model is None or r.model == model) and (versus is None or r.versus == versus) \
                and where(r) and (best is None or r.window_end_ms >= best.window_end_ms):
            best = r
    return best


# ------------------------------------------------------------------------------------------------ roles
def resolve(name: str | None, keys: Iterable[str], stages: dict[str, str]) -> str | None:
    """`name` as an `id@version` of `keys`: itself when it has a version; for a bare id (the built-in
    schedule's), the version in production, else the only version known."""
    if not name or "@" in name:
        return name
    versions = sorted(k for k in keys if split_key(k)[0] == name)
    prod = [k for k in versions if stages.get(k) == "production"]
    if len(prod) == 1:
        return prod[0]
    return versions[0] if len(versions) == 1 else name


def champion_of(active: Schedule, keys: Iterable[str], stages: dict[str, str]) -> str | None:
    """The active schedule's first stage's first choice (what `rendezvous roll` replaces by default)."""
    return resolve(active.stages[0].models[0], keys, stages)


def canary_of(entries: Iterable[ModelEntry]) -> str | None:
    """The registered canary (one scoring, i.e. in preproduction, first; then any not retired)."""
    live = sorted((e for e in entries if e.canary and e.stage != "retired"),
                  key=lambda e: (e.stage != "preproduction", -e.stage_since_ms, e.key))
    return live[0].key if live else None


# ------------------------------------------------------------------------------------------------ markers
def _event_label(e: LifecycleEvent) -> str:
    who = f"{e.model_id}@{e.model_version}" if e.model_id and e.model_version else (e.model_id or "")
    parts = [e.kind, who]
    if e.to_stage:
        parts.append(f"{e.from_stage} -> {e.to_stage}" if e.from_stage else f"-> {e.to_stage}")
    if e.schedule_version is not None:
        parts.append(f"schedule v{e.schedule_version}")
    for k in ("weight", "job", "replaces", "breaches"):
        if k in e.detail:
            v = e.detail[k]
            parts.append(f"{k} {v if isinstance(v, (str, int, float)) else json.dumps(v)[:120]}")
    return " ".join(p for p in parts if p)


def _schedule_label(s: Schedule) -> str:
    label = f"schedule v{s.version} '{s.name}' {s.model_ids()}"
    if s.roll:
        label += f" (roll {s.roll.model} {s.roll.weight}% of {s.roll.replaces})"
    if s.rollback_of is not None:
        label += f" (rollback of v{s.rollback_of})"
    return label


def markers_of(events: Iterable[LifecycleEvent], history: Iterable[Schedule],
               since_ms: int | None = None) -> list[Marker]:
    """Schedule changes (from the schedules topic: when each version was created, what it names) and
    lifecycle events, in time order. A `schedule_published` event of a version the schedules topic still
    has is the same change: marked once."""
    out = [Marker(s.created_at_ms, "schedule", _schedule_label(s)) for s in history if s.created_at_ms > 0]
    have = {s.version for s in history if s.created_at_ms > 0}
    for e in events:
        if e.kind == "schedule_published" and e.schedule_version in have:
            continue
        out.append(Marker(e.at_ms, "alarm" if e.kind in ALARMS else "lifecycle", _event_label(e)))
    return sorted((m for m in out if since_ms is None or m.at_ms >= since_ms), key=lambda m: m.at_ms)


def markers_within(markers: Iterable[Marker], bounds: tuple[int, int] | None) -> list[Marker]:
    if bounds is None:
        return []
    return [m for m in markers if bounds[0] <= m.at_ms <= bounds[1]]


# ------------------------------------------------------------------------------------------------ per model
@dataclass(frozen=True)
class ModelLine:
    """One deployment's figures in its latest window (`rendezvous models`, the report's table)."""

    model: str
    stage: str | None
    role: str
    """`champion`, `canary` or empty"""
    window: tuple[int, int] | None = None
    scores_per_min: float | None = None
    error_rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    vs_champion: float | None = None
    """disagreement rate with the champion (latest `pair` row)"""
    vs_canary: float | None = None
    precision: float | None = None
    recall: float | None = None
    labelled: int | None = None
    """labelled scores the precision and recall are over (latest `accuracy` row with any)"""
    answer_share: float | None = None
    """its share of the answers in the latest window with answers (None: no answers rows)"""


def model_lines(data: ReportData) -> list[ModelLine]:
    """Every deployment the rows or the registry name (retired ones only with rows), champion first, then
    by registry stage, then by name."""
    rows = data.rows
    with_rows = models_of(rows)
    keys = with_rows | {k for k, st in data.stages.items() if st != "retired"}
    last_answers = latest(rows, "answers")
    out = []
    for k in keys:
        m = latest(rows, "model", k)
        acc = latest(rows, "accuracy", k, where=lambda r: r.count > 0)
        vs = {}
        for role, other in (("champion", data.champion), ("canary", data.canary)):
            p = latest(rows, "pair", k, other) if other and other != k else None
            vs[role] = p.disagreement_rate if p else None
        share = None
        if last_answers is not None:
            share = sum(r.share or 0.0 for r in of_kind(rows, "answers")
                        if r.window_end_ms == last_answers.window_end_ms and r.model == k)
        minutes = (m.window_end_ms - m.window_start_ms) / 60_000 if m else 0
        out.append(ModelLine(
            model=k, stage=data.stages.get(k),
            role="champion" if k == data.champion else "canary" if k == data.canary else "",
            window=(m.window_start_ms, m.window_end_ms) if m else None,
            scores_per_min=m.count / minutes if m and minutes > 0 else None,
            error_rate=m.error_rate if m else None, p50_ms=m.latency_p50_ms if m else None,
            p99_ms=m.latency_p99_ms if m else None, vs_champion=vs["champion"], vs_canary=vs["canary"],
            precision=acc.precision if acc else None, recall=acc.recall if acc else None,
            labelled=acc.count if acc else None, answer_share=share))
    order = {s: i for i, s in enumerate(ROW_ORDER)}
    return sorted(out, key=lambda x: (x.role != "champion", order.get(x.stage or "", len(order)),
                                      x.role == "canary", x.model))


def default_share(data: ReportData) -> float | None:
    """The default answer's share of the latest window with answers."""
    last = latest(data.rows, "answers")
    if last is None:
        return None
    return sum(r.share or 0.0 for r in of_kind(data.rows, "answers")
               if r.window_end_ms == last.window_end_ms and r.model is None)


@dataclass(frozen=True)
class Freshness:
    latest_end_ms: int | None
    window_ms: int | None
    stale: bool


def freshness(rows: Iterable[Metrics], now: int) -> Freshness:
    """Whether the metrics rows are current: the latest window ended less than STALE_WINDOWS window lengths
    (at least STALE_MIN_MS) ago."""
    rows = list(rows)
    if not rows:
        return Freshness(None, None, True)
    end, w = max(r.window_end_ms for r in rows), window_ms(rows) or 0
    return Freshness(end, w, now - end > max(STALE_WINDOWS * w, STALE_MIN_MS))
