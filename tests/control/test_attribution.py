"""Change attribution (control.ops.attribution.attribute, pure): a shifted figure names the upstream lifecycle
events of its span, transitively through the cards' inputs; unrelated or distant events are not named."""

from __future__ import annotations

from control.ops.attribution import Thresholds, attribute, describe, shifts, upstream_of
from schemas.records import LifecycleEvent, Metrics

W = 10_000


def acc(model: str, i: int, tp: int, fn: int) -> Metrics:
    return Metrics(kind="accuracy", window_start_ms=i * W, window_end_ms=(i + 1) * W, model=model, count=tp + fn,
                   tp=tp, fn=fn)


def ev(kind: str, at: int, model: str | None = None, version: str | None = None) -> LifecycleEvent:
    return LifecycleEvent(kind=kind, model_id=model, model_version=version, at_ms=at)


B_TP = [40, 41, 39, 18, 0]  # of 60 labelled frauds per window


def rows():
    return [acc("b@1", i, tp, 60 - tp) for i, tp in enumerate(B_TP)] + \
           [acc("c@1", i, 40, 10) for i in range(5)]  # c's recall does not move


def test_a_recall_drop_names_the_upstream_version_change_and_nothing_else():
    events = [ev("job_submitted", 3 * W + 500, "a", "2"),   # upstream of b: named
              ev("job_submitted", 3 * W + 600, "z", "1"),   # not upstream of b
              ev("job_stopped", 0, "a", "1"),               # upstream, but far before the shift
              ev("schedule_published", 3 * W + 700)]        # a schedule: only for the answer share
    out = attribute(rows(), events, {"b": ["a"], "c": ["b@1"]})
    on_window_3 = [m for m in out if m.window_start_ms == 3 * W]
    assert [(m.model, m.versus, m.trigger, m.figure) for m in on_window_3] == [("b@1", "a@2", "job_submitted",
                                                                                 "recall")]
    m = on_window_3[0]
    assert m.kind == "attribution" and m.before == round(120 / 180, 6) and m.after == 0.3
    assert m.event_at_ms == 3 * W + 500 and m.count == 60
    assert "b@1: recall 0.667 -> 0.300; upstream job_submitted a@2" in describe(m)
    # window 4 still differs from its baseline and a@2's event is within one window of it
    assert {(m.window_start_ms, m.versus) for m in out} == {(3 * W, "a@2"), (4 * W, "a@2")}
    assert not [m for m in out if m.model == "c@1"]
    Metrics.parse(m.to_json())  # a valid record of the metrics topic


def test_upstream_is_transitive_and_stops_at_cycles():
    assert upstream_of({"c": ["b@1", "a"], "b": ["a"], "a": []}) == {"c": {"a", "b"}, "b": {"a"}, "a": set()}
    assert upstream_of({"x": ["y"], "y": ["x"]}) == {"x": {"y"}, "y": {"x"}}


def test_small_windows_and_small_moves_are_not_shifts():
    small = [acc("b@1", i, 1, 1 if i < 3 else 0) for i in range(5)]  # 2 positives < min_count
    assert shifts(small) == []
    steady = [acc("b@1", i, 60 - (i % 2) * 3, (i % 2) * 3) for i in range(6)]  # +-5 points
    assert shifts(steady) == []
    assert shifts(steady, Thresholds(recall=0.01))


def test_an_answer_share_shift_names_a_schedule_change():
    def ans(i, model, share):
        return Metrics(kind="answers", window_start_ms=i * W, window_end_ms=(i + 1) * W, model=model,
                       stage=0, trigger="preferred", count=int(share * 100), total=100, share=share)
    rows = [ans(i, "m@1", 0.9 if i < 3 else 0.5) for i in range(4)]
    out = attribute(rows, [ev("schedule_published", 3 * W + 1)], {})
    assert [(m.model, m.figure, m.trigger, m.versus) for m in out] == [("m@1", "share", "schedule_published", None)]
