"""The rendezvous's input envelope (one parse per record) and its typed (topic, key, payload) output (no JVM)."""

from jobs.rendezvous.pipeline import Routes, envelope, score_of
from schemas.records import Answer, LateScore, QuarantineRecord, Score

ROUTES = Routes("answers", "late", "quarantine")
SCORE = Score(request_id="r", model_id="m", model_version="1", output={"p": 0.1}, request_time_ms=1,
              received_at_ms=2, started_at_ms=3, finished_at_ms=4)


def test_each_record_type_goes_to_its_topic():
    answer = Answer(request_id="r", model_id=None, model_version=None, output={}, stage=None, trigger="default",
                    is_default=True, schedule_version=0, request_time_ms=0, received_at_ms=0, answered_at_ms=1)
    late = LateScore(score=SCORE, reason="after_answer", answered_at_ms=1, observed_at_ms=2)
    assert tuple(ROUTES.answer(answer)) == ("answers", "r", answer.to_json())  # keyed by request id
    assert tuple(ROUTES.late_score(late)) == ("late", "r", late.to_json())
    topic, key, payload = ROUTES.quarantine("garbage")
    assert (topic, key) == ("quarantine", None) and QuarantineRecord.parse(payload).raw == "garbage"


def test_envelope_carries_a_validated_score_whole():
    e = envelope(SCORE.to_json())
    assert (e.kind, e.request_id, e.request_time_ms) == ("score", "r", 1)
    assert score_of(e) == SCORE
    failed = SCORE.model_copy(update={"output": None, "error": "boom"})
    assert score_of(envelope(failed.to_json())) == failed


def test_envelope_tells_requests_scores_and_garbage_apart():
    req = '{"request": {"request_id": "q1", "event_time_ms": 5}, "features": {}}'
    e = envelope(req)
    assert (e.kind, e.request_id, e.request_time_ms) == ("request", "q1", 5)
    bad_score = SCORE.to_json().replace('"error":null', '"error":"x"')  # output and error: invalid
    for bad in ("nope", "[]", '{"model_id": "m"}', '{"request": "x"}', bad_score,
                '{"request": {"request_id": "", "event_time_ms": 5}}',
                '{"request": {"request_id": "a", "event_time_ms": "5"}}'):
        e = envelope(bad)
        assert e.kind == "invalid" and e.raw == bad


def test_a_null_record_is_quarantined_not_a_crash():
    from schemas.records import QuarantineRecord

    e = envelope(None)
    assert e.kind == "invalid" and e.raw is None
    q = QuarantineRecord.parse(Routes("a", "l", "q").quarantine(e.raw)[2])
    assert q.reasons[0].code == "null_value" and q.raw == "" and q.stage == "rendezvous"


def test_the_recovery_scan_maps_the_jobs_kafka_security_settings():
    from jobs.common.security import client_config

    cfg = client_config({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                         "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                                             'username="svc" password="s3cret";',
                         "ssl.ca.location": "/etc/ca.pem", "linger.ms": "5"})
    assert cfg == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
                   "sasl_plain_password": "s3cret", "ssl_cafile": "/etc/ca.pem"}


def test_a_version_taking_over_marks_the_requests_before_its_token_for_its_shadow_and_routes_their_answers_apart():
    from jobs.common.transition import token_json
    from jobs.rendezvous.pipeline import Envelopes
    from jobs.rendezvous.settings import RendezvousSettings

    def request(i: int) -> str:
        return '{"request": {"request_id": "q%d", "event_time_ms": 5}, "features": {}}' % i

    def run(settings: RendezvousSettings, rows) -> list:
        env = Envelopes(settings)
        env.open(None)
        return [(e.mine, e.shadow) for row in rows for e in env.flat_map(row)]

    new = RendezvousSettings(owner="rendezvous#2", takes_over=True, transitions_topic="", shadow_topic="answers-shadow")
    t = new.augmented_topic
    token = token_json("u1", t, 0, "rendezvous#2", "rendezvous", 1)
    rows = [(t, 0, 1, request(1)), (t, 0, 2, token), (t, 0, 3, request(3))]
    assert run(new, rows) == [(False, True), (True, False)]  # the token goes no further
    assert run(new.model_copy(update={"shadow_topic": None}), rows) == [(False, False), (True, False)]
    old = RendezvousSettings(transitions_topic="", shadow_topic="answers-shadow")  # the version that was first
    assert run(old, rows) == [(True, False), (False, False)]  # past its token: retiring, never a shadow
    shadow = Routes("answers", "late", "quarantine", "answers-shadow")
    answer = Answer(request_id="r", model_id=None, model_version=None, output={}, stage=None, trigger="default",
                    is_default=True, schedule_version=0, request_time_ms=0, received_at_ms=0, answered_at_ms=1)
    assert tuple(shadow.shadow_answer(answer)) == ("answers-shadow", "r", answer.to_json())
