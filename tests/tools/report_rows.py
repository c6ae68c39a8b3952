"""Synthetic but realistic metrics rows, schedules and lifecycle events (what jobs/metrics and the control
plane write during a roll), shared by the report's unit and e2e tests."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import LifecycleEvent, Metrics, RollInfo, Schedule, Stage

CHAMPION = "fraud-champion@1.0.0"
CHALLENGER = "fraud-champion@1.1.0"
CANARY = "fraud-rules@1"
MODELS = (CHAMPION, CHALLENGER, CANARY)
WINDOW_MS = 10_000
WINDOWS = 30
ROLL_AT = (10, 20)  # windows whose start sees the schedules giving the challenger 10 %, then 50 %


@dataclass(frozen=True)
class Scenario:
    rows: list[Metrics]
    schedules: list[Schedule]
    events: list[LifecycleEvent]
    t0: int

    def window(self, i: int) -> tuple[int, int]:
        return self.t0 + i * WINDOW_MS, self.t0 + (i + 1) * WINDOW_MS


def _model_rows(i: int, start: int, end: int) -> list[Metrics]:
    out = []
    for k, (lat, score, err) in {CHAMPION: (6.0, 0.08, 0.002), CHALLENGER: (9.0, 0.07, 0.004),
                                 CANARY: (0.5, 0.10, 0.0)}.items():
        n = 1500 + 7 * i
        errors = round(n * err)
        out.append(Metrics(kind="model", window_start_ms=start, window_end_ms=end, model=k, count=n,
                           errors=errors, timeouts=errors // 2, error_rate=errors / n, latency_p50_ms=lat + i % 3,
                           latency_p99_ms=4 * lat + i % 5, latency_max_ms=10 * lat, score_mean=score + 0.01,
                           score_p10=score / 4, score_p50=score, score_p90=score * 3 + 0.01 * (i % 4),
                           positives=n // 50, threshold=0.5, output_field="fraud_probability"))
    return out


def _pair_rows(i: int, start: int, end: int) -> list[Metrics]:
    rate = {frozenset((CHAMPION, CHALLENGER)): 0.004, frozenset((CHAMPION, CANARY)): 0.03,
            frozenset((CHALLENGER, CANARY)): 0.035}
    out = []
    for a in MODELS:
        for b in MODELS:
            if a != b:
                r = rate[frozenset((a, b))] + 0.001 * (i % 3)
                out.append(Metrics(kind="pair", window_start_ms=start, window_end_ms=end, model=a, versus=b,
                                   count=1500, disagreements=round(1500 * r), disagreement_rate=round(1500 * r) / 1500,
                                   score_abs_diff_mean=0.02, threshold=0.5))
    return out


def _accuracy_rows(i: int, start: int, end: int) -> list[Metrics]:
    if i == 0:  # labels come 5 s after the requests: none known in the first window
        return [Metrics(kind="accuracy", window_start_ms=start, window_end_ms=end, model=k, count=0) for k in MODELS]
    out = []
    for k, (tp, fp, fn) in {CHAMPION: (24, 6, 6), CHALLENGER: (25, 5, 5), CANARY: (18, 20, 12)}.items():
        tn = 1500 - tp - fp - fn
        out.append(Metrics(kind="accuracy", window_start_ms=start, window_end_ms=end, model=k, count=1500, tp=tp,
                           fp=fp, fn=fn, tn=tn, precision=tp / (tp + fp), recall=tp / (tp + fn), threshold=0.5))
    return out


def _answers_rows(i: int, start: int, end: int) -> list[Metrics]:
    total = 1500
    share_new = 0.0 if i < ROLL_AT[0] else 0.1 if i < ROLL_AT[1] else 0.5
    new = round(total * share_new)
    parts = [(CHAMPION, 0, "preferred", total - new - 30), (CHALLENGER, 0, "preferred", new),
             (CHAMPION, 1, "deadline", 25), (None, None, "default", 5)]
    return [Metrics(kind="answers", window_start_ms=start, window_end_ms=end, model=m, stage=st, trigger=tr,
                    count=c, total=total, share=c / total, defaults=c if m is None else 0)
            for m, st, tr, c in parts if c > 0]


def _budget_rows(i: int, start: int, end: int) -> list[Metrics]:
    return [Metrics(kind="budget", window_start_ms=start, window_end_ms=end, model=k, count=1000,
                    external_state_ms=3.0, queue_ms=2.0 + i % 2, model_ms=lat, transit_ms=4.0, wait_ms=1.0,
                    total_p50_ms=10 + lat, total_p99_ms=40 + 4 * lat)
            for k, lat in ((CHAMPION, 6.0), (CHALLENGER, 9.0)) if k == CHAMPION or i >= ROLL_AT[0]]


def scenario(t0: int) -> Scenario:
    """WINDOWS windows of WINDOW_MS from `t0`: three models (champion, challenger rolled in at 10 % then
    50 %, the canary), every kind of row, three schedules (the first before the windows) and the roll's
    lifecycle events (one quality alert)."""
    rows: list[Metrics] = []
    for i in range(WINDOWS):
        s, e = t0 + i * WINDOW_MS, t0 + (i + 1) * WINDOW_MS
        rows += _model_rows(i, s, e) + _pair_rows(i, s, e) + _accuracy_rows(i, s, e) + _answers_rows(i, s, e) \
            + _budget_rows(i, s, e)
    base = [Stage(deadline_ms=50, models=[CHAMPION]), Stage(deadline_ms=200, models=[CHAMPION, CANARY])]

    def rolled(w: int) -> list[Stage]:
        return [Stage(deadline_ms=50, models=[CHAMPION, CHALLENGER], split={CHAMPION: 100 - w, CHALLENGER: w}),
                base[1]]

    scheds = [Schedule(version=1, name="champion", stages=base, default_output={"fraud_probability": 0.0},
                       created_at_ms=t0 - 60_000)]
    for v, (w, at) in enumerate(zip((10, 50), ROLL_AT), start=2):
        scheds.append(Schedule(version=v, name="roll", stages=rolled(w), default_output={"fraud_probability": 0.0},
                               created_at_ms=t0 + at * WINDOW_MS + 500,
                               roll=RollInfo(model=CHALLENGER, replaces=CHAMPION, weight=w, base_version=1)))
    mid, ver = CHALLENGER.split("@")
    ev = [LifecycleEvent(kind="stage_changed", model_id=mid, model_version=ver, from_stage="development",
                         to_stage="preproduction", at_ms=t0 + 3 * WINDOW_MS),
          LifecycleEvent(kind="roll_started", model_id=mid, model_version=ver, at_ms=t0 + ROLL_AT[0] * WINDOW_MS,
                         detail={"replaces": CHAMPION}),
          LifecycleEvent(kind="guard_passed", model_id=mid, model_version=ver, at_ms=t0 + 19 * WINDOW_MS,
                         detail={"weight": 10}),
          LifecycleEvent(kind="quality_alert", at_ms=t0 + 25 * WINDOW_MS + 2_000,
                         detail={"source_topic": "requests", "failed": ["expect_column_mean_to_be_between(amount)"]})]
    ev += [LifecycleEvent(kind="schedule_published", schedule_version=s.version, at_ms=s.created_at_ms,
                          detail={"name": s.name}) for s in scheds]
    return Scenario(rows, scheds, ev, t0)
