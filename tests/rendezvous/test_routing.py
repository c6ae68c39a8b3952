"""The rendezvous's single output is routed to topics by record type (no JVM)."""

from jobs.common.records import Answer, LateScore, Score
from jobs.rendezvous.pipeline import RouteByRecord, envelope, invalid_record

ROUTE = RouteByRecord("answers", "late", "quarantine")
SCORE = Score(request_id="r", model_id="m", model_version="1", output={"p": 0.1}, request_time_ms=1,
              received_at_ms=2, started_at_ms=3, finished_at_ms=4)


def test_each_record_type_goes_to_its_topic():
    answer = Answer(request_id="r", model_id=None, model_version=None, output={}, stage=None, trigger="default",
                    is_default=True, schedule_version=0, request_time_ms=0, received_at_ms=0, answered_at_ms=1)
    late = LateScore(score=SCORE, reason="after_answer", answered_at_ms=1, observed_at_ms=2)
    assert ROUTE(answer.to_json()) == "answers"
    assert ROUTE(late.to_json()) == "late"
    assert ROUTE(invalid_record("garbage")) == "quarantine"


def test_envelope_tells_requests_scores_and_garbage_apart():
    assert envelope(SCORE.to_json()).kind == "score"
    assert envelope(SCORE.to_json()).request_id == "r"
    req = '{"request": {"request_id": "q1", "event_time_ms": 5}, "features": {}}'
    e = envelope(req)
    assert (e.kind, e.request_id, e.request_time_ms) == ("request", "q1", 5)
    for bad in ("nope", "[]", '{"model_id": "m"}', '{"request": "x"}'):
        assert envelope(bad).kind == "invalid"
