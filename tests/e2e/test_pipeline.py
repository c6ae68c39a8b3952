"""The whole data plane on the real stack: requests -> external state -> four model jobs (fast, slow,
failing, silent) -> rendezvous -> answers. Every request is accounted for: exactly one answer per valid
request, a quarantine record per bad one."""

import json
import time
from collections import Counter

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy, schedules
from schemas.model_card import ModelCard
from schemas.records import Answer, LateScore, QuarantineRecord
from schemas.topics import TopicSpec
from training.synthetic import TransactionGenerator

pytestmark = pytest.mark.e2e

SCHEDULE = {"name": "mix", "stages": [{"deadline_ms": 1000, "models": ["fast", "silent"]},
                                      {"deadline_ms": 5000, "models": ["failing", "slow"]}],
            "default_output": {"fraud_probability": 0.0, "decision": "review"}}
MODELS = [
    ModelCard(model_id="fast", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 2, "fail_rate": 0.3, "seed": 3, "output": {"fraud_probability": 0.1}},
              timeout_ms=1500),
    ModelCard(model_id="slow", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"delay_ms": 200, "output": {"fraud_probability": 0.2}}, timeout_ms=3000),
    ModelCard(model_id="failing", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"fail_rate": 1.0, "output": {"fraud_probability": 0.9}}, timeout_ms=1500),
    # never answers in time: its job turns each call into a timeout error score after 1.5 s
    ModelCard(model_id="silent", version="1", runner="model_udfs.python_runners:ConstantRunner",
              params={"silent_rate": 1.0}, timeout_ms=1500),
]


def test_every_request_is_answered_exactly_once_with_a_mix_of_models(stack, unique, job_cleanup):
    t = {k: f"pl-{k}-{unique}" for k in ("requests", "augmented", "quarantine", "scores", "schedules", "answers",
                                          "late")}
    ensure_topics(stack.bootstrap_servers, [TopicSpec(v, compacted=(k == "schedules")) for k, v in t.items()])
    schedules.publish(stack.bootstrap_servers, SCHEDULE, topic=t["schedules"], lifecycle_topic=None)
    job_cleanup.append(deploy.deploy_external_state(
        stack, job_name=f"pl-es-{unique}", start="earliest", source_topic=t["requests"],
        sink_topic=t["augmented"], quarantine_topic=t["quarantine"], group_id=f"pl-es-{unique}", wait=False))
    job_cleanup.extend(deploy.side_by_side([lambda card=card: deploy.deploy_model(
        card, stack, job_name=f"pl-{card.model_id}-{unique}", start="earliest", source_topic=t["augmented"],
        sink_topic=t["scores"], group_id=f"pl-{card.model_id}-{unique}", wait=False) for card in MODELS], stack))
    job_cleanup.append(deploy.deploy_rendezvous(
        stack, job_name=f"pl-rv-{unique}", start="earliest", augmented_topic=t["augmented"],
        scores_topic=t["scores"], schedules_topic=t["schedules"], answers_topic=t["answers"],
        late_topic=t["late"], invalid_topic=t["quarantine"], group_id=f"pl-rv-{unique}", wait=False))
    from control.ops import jobs

    for jid in job_cleanup:
        jobs.wait_running(jid, stack, timeout=180)

    gen = TransactionGenerator(seed=21, prefix=f"pl-{unique}")
    # warm up: the first records through freshly started Python workers take seconds
    warm = [gen.next(int(time.time() * 1000)).request for _ in range(5)]
    kafka_io.produce(stack.bootstrap_servers, t["requests"], warm)
    warm_ids = {r["request_id"] for r in warm}
    kafka_io.consume(stack.bootstrap_servers, t["answers"], timeout=180,
                     until=lambda vs: {Answer.parse(v).request_id for v in vs} >= warm_ids)

    good = [gen.next(int(time.time() * 1000) + i).request for i in range(150)]
    bad = ["{broken", json.dumps({**good[0], "request_id": "neg", "amount": -3})]
    # a duplicate request id must not produce a second answer
    sent = good + bad + [good[5]]
    for i in range(0, len(sent), 10):  # about 40 requests/s: timing, not throughput, is under test here
        now = int(time.time() * 1000)  # deadlines count from the request's own timestamp: stamp it when sent
        batch = [{**r, "event_time_ms": now} if isinstance(r, dict) else r for r in sent[i:i + 10]]
        kafka_io.produce(stack.bootstrap_servers, t["requests"], batch)
        time.sleep(0.25)

    ids = {r["request_id"] for r in good}
    answers = [a for a in (Answer.parse(v) for v in kafka_io.consume(
        stack.bootstrap_servers, t["answers"], timeout=240, idle_timeout=4,
        until=lambda vs: {Answer.parse(v).request_id for v in vs} >= ids | warm_ids)) if a.request_id in ids]
    quarantined = [QuarantineRecord.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, t["quarantine"],
                                                                       count=len(bad), timeout=60)]

    per_id = Counter(a.request_id for a in answers)
    assert set(per_id) == ids
    assert max(per_id.values()) == 1, [k for k, v in per_id.items() if v > 1]
    assert sorted(q.raw for q in quarantined) == sorted(bad)
    assert len(per_id) + len(quarantined) == len(set(r["request_id"] for r in good)) + len(bad)

    by_model = Counter(a.model_id for a in answers)
    defaults = [a for a in answers if a.model_id is None]
    assert not defaults, [(a.answered_at_ms - a.request_time_ms, a.timings) for a in defaults[:3]]
    assert set(by_model) <= {"fast", "slow"}  # error scores and silence never win
    assert by_model["fast"] > 0 and by_model["slow"] > 0
    for a in answers:
        if a.model_id == "fast":
            assert (a.stage, a.trigger) == (0, "preferred")
            assert a.answered_at_ms - a.request_time_ms < 1000
        else:  # fast failed and silent never answers: stage 0 passes its deadline, stage 1 answers with slow
            assert a.stage == 1 and a.answered_at_ms - a.request_time_ms >= 1000
            assert a.trigger == "all_answered"  # failing errored and slow answered: nothing better can come
            assert a.output == {"fraud_probability": 0.2}
        assert a.schedule_version == 1

    # scores after the answer (slow, failing, and silent's timeouts) went to the late topic, never as answers
    late = [LateScore.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, t["late"], timeout=30,
                                                          idle_timeout=3)]
    assert late and all(x.reason in ("after_answer", "orphan_expired") for x in late)
    assert {x.score.model_id for x in late} >= {"slow", "failing"}
