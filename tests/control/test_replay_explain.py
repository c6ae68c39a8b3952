"""The pure parts of replay (the comparison, the --fail-if gate) and explain (the story's text), no JVM."""

import pytest

from control.ops import explain, replay
from schemas.records import (
    Answer,
    AugmentedRequest,
    Features,
    Label,
    ModelTiming,
    Request,
    Schedule,
    Score,
    Stage,
)

T0 = 1_764_000_000_000


def score(rid: str, model: str, p: float | None, latency: int = 5, error: str | None = None) -> Score:
    mid, _, ver = model.partition("@")
    return Score(request_id=rid, model_id=mid, model_version=ver, output=None if error else {"fraud_probability": p},
                 error=error, request_time_ms=T0, received_at_ms=T0 + 1, started_at_ms=T0 + 2,
                 finished_at_ms=T0 + 2 + latency)


def test_compare_counts_agreement_disagreements_labels_and_latency():
    cand = [score("a", "new@1", 0.9, 4), score("b", "new@1", 0.2, 6), score("c", "new@1", 0.7, 8),
            score("d", "new@1", None, 100, error="timeout after 100 ms"), score("a", "new@1", 0.1, 1)]  # dup: first wins
    rec = [score("a", "old@1", 0.8), score("b", "old@1", 0.6), score("c", "old@1", 0.65), score("e", "old@1", 0.9)]
    r = replay.ReplayReport(model="new@1", against="old@1", since_ms=None, until_ms=None, threshold=0.5,
                            output_field="fraud_probability", requests=4)
    replay.compare(r, cand, rec, labels={"a": True, "b": True, "c": False})
    assert (r.scored, r.errors, r.compared) == (4, 1, 3)
    assert r.disagreement == pytest.approx(1 / 3) and r.agreement == pytest.approx(2 / 3)
    assert [d["request_id"] for d in r.disagreements] == ["b"] and r.disagreements[0]["label"] is True
    assert r.mean_abs_diff == pytest.approx((0.1 + 0.4 + 0.05) / 3) and r.max_abs_diff == pytest.approx(0.4)
    assert (r.labelled, r.precision, r.recall) == (3, 0.5, 0.5)  # a: tp, c: fp, b: fn
    assert (r.against_precision, r.against_recall) == (pytest.approx(2 / 3), 1.0)
    assert r.auc == 0.5 and r.against_auc == 0.5  # a positive above the negative, the other below, for both
    assert (r.p50_ms, r.max_ms) == (7.0, 100.0)


def test_fail_if_conditions_are_read_strictly_and_a_missing_figure_fails():
    r = replay.ReplayReport(model="m@1", against=None, since_ms=None, until_ms=None, threshold=0.5,
                            output_field="p", agreement=0.97, p99_ms=40.0)
    assert replay.failed_conditions(r, ["agreement<0.95", "p99_ms>50"]) == []
    assert replay.failed_conditions(r, ["agreement < 0.98", "p99_ms>=40"]) == ["agreement < 0.98 (agreement = 0.97)",
                                                                              "p99_ms>=40 (p99_ms = 40.0)"]
    assert replay.failed_conditions(r, ["recall<0.8"]) == ["recall<0.8 (recall = n/a)"]
    for bad in ("agreement", "agreement=0.9", "speed<3", "agreement<abc"):
        with pytest.raises(replay.ReplayError, match="FIGURE<NUMBER"):
            replay.parse_condition(bad)


def test_explain_renders_the_story_and_why_the_answer_won():
    req = Request(request_id="r1", entity_id="card-7", event_time_ms=T0, amount=12.5, merchant_category="grocery",
                  country="DE")
    feats = Features(entity_count=3, window_count=2, window_sum=20.0, window_ms=60_000, amount_mean=9.0,
                     amount_std=1.0, amount_zscore=3.5)
    aug = AugmentedRequest(request=req, features=feats, entity_seq=4, augmented_at_ms=T0 + 3)
    sched = Schedule(version=4, name="champion-first", stages=[Stage(deadline_ms=20, models=["champ@1"]),
                                                               Stage(deadline_ms=50, models=["champ@1", "chal@2"])],
                     default_output={"fraud_probability": 0.0})
    ans = Answer(request_id="r1", model_id="chal", model_version="2", model="chal@2",
                 output={"fraud_probability": 0.3}, stage=1, trigger="deadline", is_default=False, schedule_version=4,
                 request_time_ms=T0, received_at_ms=T0 + 5, deadline_at_ms=T0 + 50, answered_at_ms=T0 + 50,
                 timings={"chal@2": ModelTiming(model_version="2", latency_ms=9, finished_at_ms=T0 + 20,
                                                arrived_after_ms=16)})
    st = explain.Story("r1", "live topics", aug, [score("r1", "chal@2", 0.3, 9), score("r1", "champ@1", None, 80,
                                                                                       error="timeout after 80 ms")],
                       [ans], sched, [Label(request_id="r1", outcome="legit", positive=False, event_time_ms=T0,
                                            known_at_ms=T0 + 5000)])
    text = explain.render(st)
    assert "request r1  (from the live topics)" in text and "entity card-7" in text
    assert "features features-v1, entity's request #4, augmented 3 ms after the request" in text
    assert "why: stage 1's deadline passed" in text and "chal@2 was its most preferred usable score" in text
    assert "schedule v4 'champion-first'" in text and "stage 1 50 ms: champ@1, chal@2" in text
    assert "<- chosen" in text and "error: timeout after 80 ms" in text and "label: legit" in text
    assert st.as_dict()["why"] == explain.why(st)
    assert "not found" in explain.render(explain.Story("x", "archive (/a)"))
