"""Parallelism on the real stack: the whole pipeline at parallelism 2 on two TaskManagers gives the answers that the
pure computation gives (each entity's features in its requests' order, the preferred model's prediction on them),
and a running job is rescaled through a savepoint with its keyed state."""

import json
import math
import time

import joblib
import pytest

from control import kafka_io, runtime
from control.ops import deploy, jobs, scaling, schedules
from control.runtime import pinned
from control.runtime.flink import flink_rest, wanted_taskmanagers
from jobs.external_state.features import EntityState, FeatureComputer
from schemas.features import feature_vector
from schemas.model_card import ModelCard
from schemas.records import Answer, Request
from schemas.topics import TopicNames
from training.synthetic import TransactionGenerator

pytestmark = pytest.mark.e2e

SCHEDULE = {"name": "par", "stages": [{"deadline_ms": 20_000, "models": ["fraud-champion@1.0.0", "canary@1"]}],
            "default_output": {"fraud_probability": 0.0}}
CANARY = ModelCard(model_id="canary", version="1", runner="model_udfs.python_runners:RuleRunner", timeout_ms=5000)


@pytest.fixture(scope="module")
def two_taskmanagers(stack):
    """Two TaskManagers for this module's tests; back to as many as before afterwards (the other tests' faults
    assume one), also when starting the second one failed."""
    before = wanted_taskmanagers(stack)
    try:
        runtime.set_taskmanagers(2, stack, progress=None)
        yield stack
    finally:
        runtime.set_taskmanagers(before, stack, progress=None)


def _pipeline(s, topics: TopicNames, tag: str, parallelism: int, cleanup: list[str]) -> list[str]:
    kafka_io.ensure_topics(s.bootstrap_servers, topics.specs(), partitions=parallelism)
    schedules.publish(s.bootstrap_servers, SCHEDULE, topic=topics.schedules, lifecycle_topic=None)
    champion = ModelCard.load(s.home / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json")
    ids = [deploy.deploy_external_state(
        s, job_name=f"par-es-{tag}", start="earliest", source_topic=topics.requests, sink_topic=topics.augmented,
        quarantine_topic=topics.quarantine, group_id=f"par-es-{tag}", wait=False, parallelism=parallelism)]
    cleanup += ids
    models = deploy.side_by_side([lambda card=card: deploy.deploy_model(
        card, s, job_name=f"par-{card.model_id}-{tag}", start="earliest", source_topic=topics.augmented,
        sink_topic=topics.scores, group_id=f"par-{card.model_id}-{tag}", wait=False, parallelism=parallelism,
        lifecycle_topic=topics.lifecycle) for card in (champion, CANARY)], s)
    ids += models
    cleanup += models
    ids.append(deploy.deploy_rendezvous(
        s, job_name=f"par-rv-{tag}", start="earliest", augmented_topic=topics.augmented, scores_topic=topics.scores,
        schedules_topic=topics.schedules, answers_topic=topics.answers, late_topic=topics.late,
        invalid_topic=topics.quarantine, group_id=f"par-rv-{tag}", wait=False, parallelism=parallelism))
    cleanup.append(ids[-1])
    return ids


def _answers(s, topic: str, ids: set[str]) -> dict[str, Answer]:
    got = [Answer.parse(v) for v in kafka_io.consume(
        s.bootstrap_servers, topic, timeout=300, until=lambda vs: {Answer.parse(v).request_id for v in vs} >= ids)]
    return {a.request_id: a for a in got if a.request_id in ids}


def _subtasks(s, job_id: str) -> list[dict]:
    out = []
    for v in flink_rest(s, f"/jobs/{job_id}")["vertices"]:
        out += [{**st, "vertex": v["name"]} for st in flink_rest(s, f"/jobs/{job_id}/vertices/{v['id']}")["subtasks"]]
    return out


def test_at_parallelism_2_every_request_gets_the_answer_its_features_and_model_give(two_taskmanagers, unique,
                                                                                      job_cleanup):
    s = two_taskmanagers
    two = TopicNames.suffixed(f"p2-{unique}")
    p2 = _pipeline(s, two, f"p2-{unique}", 2, job_cleanup)
    for jid in p2:
        jobs.wait_running(jid, s, timeout=240)
    assert kafka_io.partition_count(s.bootstrap_servers, two.requests) == 2
    assert kafka_io.partition_count(s.bootstrap_servers, two.schedules) == 1  # control topics keep one

    gen = TransactionGenerator(seed=14, prefix=f"par-{unique}", fraud_fraction=0.1)
    sent: list[dict] = []

    def send(n: int) -> set[str]:
        # keyed by entity (one entity's transactions stay in order: its features are computed from them in order),
        # stamped now (deadlines count from the request's time)
        now = int(time.time() * 1000)
        reqs = [{**gen.next(now).request, "event_time_ms": now + i} for i in range(n)]
        kafka_io.produce(s.bootstrap_servers, two.requests, [json.dumps(r) for r in reqs],
                         key=lambda v: json.loads(v)["entity_id"].encode())
        sent.extend(reqs)
        return {r["request_id"] for r in reqs}

    warm = send(4)  # fresh Python workers take seconds for their first records
    _answers(s, two.answers, warm)
    ids = set()
    for _ in range(10):
        ids |= send(30)
        time.sleep(0.3)
    got = _answers(s, two.answers, ids)

    # the reference: each entity's features from its requests in the order sent (as the one subtask that owns the
    # entity's key computes them), the champion's prediction on them; the champion is the stage's preferred model
    champion = ModelCard.load(s.home / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json")
    model, fc, states, expected = joblib.load(champion.artifact), FeatureComputer(), {}, {}
    for r in sent:
        req = Request.model_validate(r)
        features = fc.update(states.setdefault(req.entity_id, EntityState()), req)
        expected[req.request_id] = float(model.predict_proba([feature_vector(r, features.model_dump())])[0][1])

    assert set(got) == ids
    assert not [r for r in ids if got[r].is_default], "a deadline of 20 s passed: the test's machine is overloaded"
    # the score up to rounding: the model scores the calls in flight as one matrix, and a sum over a batch of another
    # size can differ in its last bits (seen: 1.0643108252746878e-05 vs ...686e-05)
    differ = {r: (got[r].model, got[r].trigger, got[r].stage, got[r].output, expected[r]) for r in ids
              if (got[r].model, got[r].trigger, got[r].stage) != (champion.key, "preferred", 0)
              or not math.isclose(got[r].output["fraud_probability"], expected[r], rel_tol=1e-9)}
    assert not differ, list(differ.items())[:3]
    assert len({round(p, 12) for p in expected.values()}) > 10  # real scores, not one constant: the check can fail

    # parallelism 2 really ran as two subtasks per operator; the model jobs on both shared TaskManagers (where each
    # subtask goes is the scheduler's choice: slots spread by load, not pinned per operator), each subtask of a
    # thread-mode job (external state, rendezvous) on a TaskManager of its own (one interpreter each)
    subtasks = [st for jid in p2 for st in _subtasks(s, jid)]
    for v in {st["vertex"] for st in subtasks}:
        assert len([st for st in subtasks if st["vertex"] == v]) == 2, v
    shared = {st["taskmanager-id"] for jid in p2[1:3] for st in _subtasks(s, jid)}
    assert len(shared) == 2 and not any(map(pinned.is_pinned, shared))
    own = [{st["taskmanager-id"] for st in _subtasks(s, jid)} for jid in (p2[0], p2[-1])]
    assert [len(tms) for tms in own] == [2, 2] and not own[0] & own[1]
    assert all(pinned.is_pinned(tm) for tms in own for tm in tms)
    # and both rendezvous subtasks decided requests: each read more than its copy of the broadcast schedule
    # (the REST API's metrics are refreshed every few seconds: wait for them to show the records)
    def rendezvous_reads() -> list[int]:
        return [st["metrics"]["read-records"] for st in _subtasks(s, p2[-1]) if st["vertex"].startswith("rendezvous")]

    deadline = time.monotonic() + 90
    while not all(n > 10 for n in rendezvous_reads()):
        assert time.monotonic() < deadline, rendezvous_reads()
        time.sleep(1)
    assert len(rendezvous_reads()) == 2


def test_a_rescaled_rendezvous_keeps_its_waiting_requests(two_taskmanagers, unique, job_cleanup):
    """Requests waiting for their preferred model when the rendezvous goes from 1 to 2 subtasks (through a
    savepoint) are answered by that model after the rescale: their mailboxes moved with their key groups."""
    s = two_taskmanagers
    t = TopicNames.suffixed(f"rs-{unique}")
    kafka_io.ensure_topics(s.bootstrap_servers, t.specs(), partitions=2)
    schedules.publish(s.bootstrap_servers, {"name": "rs", "stages": [{"deadline_ms": 600_000, "models": ["m"]}],
                                            "default_output": {"fraud_probability": 0.0}},
                      topic=t.schedules, lifecycle_topic=None)
    jid = deploy.deploy_rendezvous(
        s, job_name=f"rs-rv-{unique}", start="earliest", augmented_topic=t.augmented, scores_topic=t.scores,
        schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late, invalid_topic=t.quarantine,
        group_id=f"rs-rv-{unique}")
    job_cleanup.append(jid)
    from bench.model_job import augmented

    reqs = [json.loads(r) for r in augmented(40, prefix=f"rs-{unique}")]
    now = int(time.time() * 1000)
    for r in reqs:
        r["request"]["event_time_ms"] = now
    kafka_io.produce(s.bootstrap_servers, t.augmented, [json.dumps(r) for r in reqs])
    ids = [r["request"]["request_id"] for r in reqs]
    # every request is in a mailbox (read by the job) before the rescale; none is answered: m has not scored
    jv = next(v for v in flink_rest(s, f"/jobs/{jid}")["vertices"] if v["name"].startswith("rendezvous"))

    def read_all():
        st = flink_rest(s, f"/jobs/{jid}/vertices/{jv['id']}")["subtasks"]
        return sum(x["metrics"]["read-records"] for x in st) >= len(ids) + 1  # and the schedule

    deadline = time.monotonic() + 120
    while not read_all():
        assert time.monotonic() < deadline, "the rendezvous did not read the requests"
        time.sleep(0.5)

    new = scaling.rescale(jid, 2, s)
    job_cleanup.append(new)
    assert jobs.job_parallelism(new, s)[jv["name"]] == 2
    done = int(time.time() * 1000)
    scores = [{"request_id": i, "model_id": "m", "model_version": "1", "output": {"fraud_probability": 0.5},
               "request_time_ms": now, "received_at_ms": done, "started_at_ms": done, "finished_at_ms": done}
              for i in ids]
    kafka_io.produce(s.bootstrap_servers, t.scores, scores)
    got = _answers(s, t.answers, set(ids))
    assert set(got) == set(ids)
    assert all(a.model == "m@1" and not a.is_default and a.trigger != "deadline" for a in got.values()), \
        [a for a in got.values() if a.model != "m@1"][:3]
    rescaled = [e for e in (json.loads(v) for v in kafka_io.consume(s.bootstrap_servers, "lifecycle", timeout=30,
                until=lambda vs: any(json.loads(v).get("job_id") == new for v in vs)))
                if e.get("kind") == "job_rescaled" and e.get("job_id") == new]
    assert rescaled and rescaled[0]["detail"]["from_parallelism"] == 1 and rescaled[0]["detail"]["to_parallelism"] == 2
