"""The rendezvous job on the real stack, with scores written by the test (exact control of timing)."""

import json
import time
import uuid

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs, schedules
from schemas.records import Answer, LateScore
from schemas.topics import TopicSpec

pytestmark = pytest.mark.e2e

# Deadlines count from the request's time: long enough that a test's scores, sent right after its request,
# reach the job before the first one on a loaded machine (a 400 ms one did not, once in a CI run).
FIRST, SECOND = 1500, 2500
SCHEDULE = {"name": "test", "stages": [{"deadline_ms": FIRST, "models": ["fast", "slow"]},
                                       {"deadline_ms": SECOND, "models": ["fallback"]}],
            "default_output": {"decision": "default"}}


@pytest.fixture(scope="module")
def rv(stack):
    u = uuid.uuid4().hex[:8]
    t = {k: f"rv-{k}-{u}" for k in ("aug", "scores", "sched", "answers", "late", "invalid", "lifecycle")}
    ensure_topics(stack.bootstrap_servers, [TopicSpec(v, compacted=(k == "sched")) for k, v in t.items()])
    sched = schedules.publish(stack.bootstrap_servers, SCHEDULE, topic=t["sched"], lifecycle_topic=t["lifecycle"])
    assert sched.version == 1
    jid = deploy.deploy_rendezvous(
        stack, job_name=f"rendezvous-test-{u}", augmented_topic=t["aug"], scores_topic=t["scores"],
        schedules_topic=t["sched"], answers_topic=t["answers"], late_topic=t["late"], invalid_topic=t["invalid"],
        group_id=f"rv-{u}", start="earliest", answered_retention_ms=20000, orphan_timeout_ms=3000)
    t["job"] = jid
    t["bootstrap"] = stack.bootstrap_servers
    # warm up: the first record through a fresh Python worker is slow
    kafka_io.produce(stack.bootstrap_servers, t["aug"], [aug("warmup")])
    answers_for(t, ["warmup"])
    yield t
    jobs.cancel(jid, stack)


def aug(rid):
    now = int(time.time() * 1000)
    return {"request": {"request_id": rid, "entity_id": "e", "event_time_ms": now, "amount": 1.0,
                        "merchant_category": "grocery", "country": "DE", "payload": {}},
            "features": {"entity_count": 0, "window_count": 1, "window_sum": 1.0, "window_ms": 1000,
                         "ms_since_prev": None, "amount_mean": 0.0, "amount_std": 0.0, "amount_zscore": 0.0},
            "feature_version": "features-v1", "entity_seq": 1, "augmented_at_ms": now}


def score(rid, model, error=None, latency=3):
    now = int(time.time() * 1000)
    return {"request_id": rid, "model_id": model, "model_version": "1.0", "output": None if error else
            {"model": model}, "error": error, "request_time_ms": now, "received_at_ms": now - latency,
            "started_at_ms": now - latency, "finished_at_ms": now}


def send(t, rid, scores=()):
    """The request `rid`, then `scores` (score() args), from one producer: no connection set up in between."""
    p = kafka_io.producer(t["bootstrap"])
    try:
        p.send(t["aug"], json.dumps(aug(rid)).encode()).get(timeout=30)
        for f in [p.send(t["scores"], json.dumps(score(rid, *args)).encode()) for args in scores]:
            f.get(timeout=30)
    finally:
        p.close()


def answers_for(t, rids, timeout=60, settle=0.0):
    """The answers of these request ids (waiting for all of them, then `settle` s for extra ones)."""
    want = set(rids)
    vals = kafka_io.consume(t["bootstrap"], t["answers"], timeout=timeout,
                            until=lambda vs: want <= {Answer.parse(v).request_id for v in vs})
    if settle:
        time.sleep(settle)
        vals = kafka_io.consume(t["bootstrap"], t["answers"], timeout=timeout,
                                until=lambda vs: len(vs) >= len(vals))
    got = [Answer.parse(v) for v in vals]
    return [a for a in got if a.request_id in want]


def one(t, rid, **kw):
    got = answers_for(t, [rid], **kw)
    assert len(got) == 1, f"expected exactly one answer for {rid}, got {got}"
    return got[0]


def test_preferred_model_answers_before_the_deadline(rv):
    send(rv, "pref", [("fast",), ("slow",)])
    a = one(rv, "pref")
    assert (a.model_id, a.stage, a.trigger, a.schedule_version) == ("fast", 0, "preferred", 1)
    assert a.answered_at_ms - a.request_time_ms < FIRST  # early, not at the deadline
    assert a.deadline_at_ms is None
    assert a.timings["fast@1.0"].latency_ms == 3


def test_second_model_at_the_deadline_when_the_preferred_is_slow(rv):
    send(rv, "slowpref", [("slow",)])
    a = one(rv, "slowpref")
    assert (a.model_id, a.stage, a.trigger) == ("slow", 0, "deadline")
    assert a.deadline_at_ms == a.request_time_ms + FIRST
    assert a.answered_at_ms >= a.deadline_at_ms


def test_next_stage_when_the_first_stage_has_nothing(rv):
    send(rv, "stage2", [("fallback",), ("fast", "boom")])
    a = one(rv, "stage2")
    assert (a.model_id, a.stage) == ("fallback", 1)
    assert a.answered_at_ms - a.request_time_ms >= FIRST  # stage 0 had to pass first
    assert a.timings["fast@1.0"].error == "boom"


def test_default_answer_when_nobody_answers(rv):
    kafka_io.produce(rv["bootstrap"], rv["aug"], [aug("nobody")])
    a = one(rv, "nobody")
    assert a.is_default and a.model_id is None and a.trigger == "default"
    assert a.output == {"decision": "default"}
    assert a.answered_at_ms >= a.request_time_ms + SECOND
    assert a.deadline_at_ms == a.request_time_ms + SECOND


def test_error_scores_never_win(rv):
    send(rv, "errs", [("fast", "timeout"), ("slow",)])
    a = one(rv, "errs")
    assert a.model_id == "slow" and a.trigger == "all_answered"
    assert a.answered_at_ms - a.request_time_ms < FIRST


def test_early_scores_duplicates_and_late_scores(rv):
    # a score before its request is held; the request then answers at once
    kafka_io.produce(rv["bootstrap"], rv["scores"], [score("early", "fast")])
    time.sleep(0.5)
    kafka_io.produce(rv["bootstrap"], rv["aug"], [aug("early"), aug("early")])  # and a duplicate request
    a = one(rv, "early")
    assert a.model_id == "fast" and a.trigger == "preferred"
    assert a.timings["fast@1.0"].arrived_after_ms < 0
    # a score after the answer is a late score, never a second answer
    kafka_io.produce(rv["bootstrap"], rv["scores"], [score("early", "slow")])
    late = [LateScore.parse(v) for v in kafka_io.consume(
        rv["bootstrap"], rv["late"], timeout=30,
        until=lambda vs: any(LateScore.parse(v).score.request_id == "early" for v in vs))]
    mine = [x for x in late if x.score.request_id == "early"]
    assert [(x.score.model_id, x.reason) for x in mine] == [("slow", "after_answer")]
    assert len(answers_for(rv, ["early"], settle=2.0)) == 1


def test_orphaned_scores_expire_as_late_scores(rv):
    kafka_io.produce(rv["bootstrap"], rv["scores"], [score("orphan", "fast")])
    late = kafka_io.consume(rv["bootstrap"], rv["late"], timeout=30,
                            until=lambda vs: any(LateScore.parse(v).score.request_id == "orphan" for v in vs))
    mine = [LateScore.parse(v) for v in late if LateScore.parse(v).score.request_id == "orphan"]
    assert [x.reason for x in mine] == ["orphan_expired"]


def test_schedule_change_applies_to_new_requests_without_restart(rv):
    send(rv, "before-change", [("fast",), ("slow",)])
    assert one(rv, "before-change").model_id == "fast"
    new = schedules.publish(rv["bootstrap"], {"name": "slow-first",
                                              "stages": [{"deadline_ms": FIRST, "models": ["slow"]}],
                                              "default_output": {"decision": "default-2"}},
                            topic=rv["sched"], lifecycle_topic=rv["lifecycle"])
    assert new.version == 2
    assert schedules.active(rv["bootstrap"], rv["sched"]).version == 2
    # the job picks it up at run time: retry a fresh request id until version 2 answers (bounded)
    deadline = time.monotonic() + 30
    while True:
        rid = f"after-change-{uuid.uuid4().hex[:6]}"
        send(rv, rid, [("fast",), ("slow",)])
        a = one(rv, rid)
        if a.schedule_version == 2 or time.monotonic() > deadline:
            break
    assert (a.schedule_version, a.model_id, a.trigger) == (2, "slow", "preferred")
    assert jobs.job_state(rv["job"]) == "RUNNING"
    events = kafka_io.consume_json(rv["bootstrap"], rv["lifecycle"], count=2, timeout=20)
    assert [e["schedule_version"] for e in events] == [1, 2]


def test_a_second_rendezvous_on_the_same_answers_topic_is_refused(rv, stack):
    from control.errors import ControlError

    assert deploy.rendezvous_answering_on(rv["answers"], stack) == [rv["job"]]
    with pytest.raises(ControlError, match=f"already answers on topic '{rv['answers']}'.*{rv['job']}"):
        deploy.deploy_rendezvous(stack, job_name="a second rendezvous", augmented_topic=rv["aug"],
                                 scores_topic=rv["scores"], schedules_topic=rv["sched"], answers_topic=rv["answers"],
                                 late_topic=rv["late"], invalid_topic=rv["invalid"], group_id="rv-second")
    assert deploy.rendezvous_answering_on(f"{rv['answers']}-other", stack) == []


def test_answers_and_late_scores_are_keyed_by_request_id(rv):
    send(rv, "keyed", [("fast",)])
    one(rv, "keyed")
    kafka_io.produce(rv["bootstrap"], rv["scores"], [score("keyed", "fallback")])  # after the answer: late
    late = kafka_io.consume(rv["bootstrap"], rv["late"], timeout=30,
                            until=lambda vs: any(LateScore.parse(v).score.request_id == "keyed" for v in vs))
    assert late
    answers = {json.loads(v)["request_id"]: k for k, v in kafka_io.read_to_end(rv["bootstrap"], rv["answers"])}
    assert answers["keyed"] == b"keyed" and all(k == rid.encode() for rid, k in answers.items())
    lates = [(k, LateScore.parse(v).score.request_id) for k, v in kafka_io.read_to_end(rv["bootstrap"], rv["late"])]
    assert all(k == rid.encode() for k, rid in lates) and (b"keyed", "keyed") in lates
