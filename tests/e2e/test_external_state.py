"""The external-state job on the real stack: features, quarantine, accounting, savepoint restore."""

import json

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs
from schemas.records import AugmentedRequest, QuarantineRecord
from schemas.topics import TopicSpec

pytestmark = pytest.mark.e2e
BASE = 1_700_000_000_000


def topics(stack, unique):
    t = {"req": f"req-{unique}", "aug": f"aug-{unique}", "q": f"quar-{unique}"}
    ensure_topics(stack.bootstrap_servers, [TopicSpec(v) for v in t.values()])
    return t


def start(stack, t, unique, job_cleanup, savepoint=None, name="es"):
    # thread mode, as deployed in production: the job gets a TaskManager (and an interpreter) of its own
    jid = deploy.deploy_external_state(stack, savepoint=savepoint,
                                       source_topic=t["req"], sink_topic=t["aug"], quarantine_topic=t["q"],
                                       group_id=f"es-{unique}", window_ms=10_000, job_name=f"{name}-{unique}",
                                       checkpoint_interval_ms=2000)
    job_cleanup.append(jid)
    return jid


def req(rid, entity, t, amount):
    return {"request_id": rid, "entity_id": entity, "event_time_ms": BASE + t, "amount": amount,
            "merchant_category": "grocery", "country": "DE"}


def test_features_and_quarantine_account_for_every_request(stack, unique, job_cleanup):
    t = topics(stack, unique)
    start(stack, t, unique, job_cleanup)
    good = [req("a1", "card-A", 1000, 10.0), req("b1", "card-B", 1500, 100.0), req("a2", "card-A", 3000, 20.0),
            req("a3", "card-A", 6000, 30.0), req("b2", "card-B", 2500, 50.0), req("a4", "card-A", 12500, 40.0)]
    bad = ["{oops", "[]", json.dumps({**good[0], "request_id": "x1", "amount": -5}),
           json.dumps({k: v for k, v in good[0].items() if k != "entity_id"} | {"request_id": "x2"}),
           json.dumps({**good[0], "request_id": "x3", "amount": "ten"})]
    kafka_io.produce(stack.bootstrap_servers, t["req"], good + bad)

    aug = [AugmentedRequest.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, t["aug"], count=len(good),
                                                                timeout=90, idle_timeout=3)]
    quar = [QuarantineRecord.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, t["q"], count=len(bad),
                                                                 timeout=60, idle_timeout=2)]
    # every request accounted for, none twice
    assert len(aug) + len(quar) == len(good) + len(bad)
    assert sorted(a.request.request_id for a in aug) == sorted(g["request_id"] for g in good)
    assert sorted(q.raw for q in quar) == sorted(bad)

    by_id = {a.request.request_id: a.features for a in aug}
    # hand-computed for card-A with a 10 s window (see tests/external_state/test_features.py)
    assert (by_id["a1"].entity_count, by_id["a1"].window_count, by_id["a1"].window_sum) == (0, 1, 10.0)
    assert (by_id["a2"].window_count, by_id["a2"].window_sum, by_id["a2"].ms_since_prev) == (2, 30.0, 2000)
    assert (by_id["a3"].window_count, by_id["a3"].window_sum, by_id["a3"].amount_mean) == (3, 60.0, 15.0)
    assert (by_id["a4"].window_count, by_id["a4"].window_sum, by_id["a4"].ms_since_prev) == (3, 90.0, 6500)
    assert by_id["a4"].amount_std == pytest.approx(10.0)
    # card-B is independent
    assert (by_id["b2"].entity_count, by_id["b2"].window_sum, by_id["b2"].amount_mean) == (1, 150.0, 100.0)

    reasons = {q.raw: {(r.code, r.field) for r in q.reasons} for q in quar}
    assert reasons["{oops"] == {("malformed_json", None)}
    assert reasons["[]"] == {("not_an_object", None)}
    assert reasons[bad[2]] == {("out_of_range", "amount")}
    assert reasons[bad[3]] == {("missing", "entity_id")}
    assert reasons[bad[4]] == {("wrong_type", "amount")}


def test_restart_from_savepoint_keeps_feature_state(stack, unique, job_cleanup):
    t = topics(stack, unique)
    jid = start(stack, t, unique, job_cleanup, name="es-v1")
    kafka_io.produce(stack.bootstrap_servers, t["req"], [req(f"s{i}", "card-S", i * 1000, 10.0) for i in range(3)])
    first = kafka_io.consume_json(stack.bootstrap_servers, t["aug"], count=3, timeout=90)
    assert [a["entity_seq"] for a in first] == [1, 2, 3]

    savepoint = jobs.stop_with_savepoint(jid, stack)
    start(stack, t, unique, job_cleanup, savepoint=savepoint, name="es-v2")
    kafka_io.produce(stack.bootstrap_servers, t["req"], [req("s3", "card-S", 3000, 50.0)])
    out = kafka_io.consume_json(stack.bootstrap_servers, t["aug"], count=4, timeout=90, idle_timeout=2)
    # the restored job continues the count (it does not restart at zero) and reprocesses nothing
    assert len(out) == 4
    last = out[-1]
    assert last["request"]["request_id"] == "s3"
    assert last["entity_seq"] == 4
    assert last["features"]["entity_count"] == 3
    assert last["features"]["window_sum"] == 80.0


def test_poison_records_are_quarantined_bounded_and_stop_nothing(stack, unique, job_cleanup):
    """A null value, a valid request too large to forward, and 600 KB of quotes: each is quarantined with a
    reason in a bounded record; the job (thread mode, as deployed) never restarts and goes on."""
    from schemas.records import MAX_QUARANTINED_RAW_CHARS, MAX_RECORD_BYTES

    t = topics(stack, unique)
    jid = deploy.deploy_external_state(stack, source_topic=t["req"], sink_topic=t["aug"], quarantine_topic=t["q"],
                                       group_id=f"es-{unique}", job_name=f"es-poison-{unique}")
    job_cleanup.append(jid)
    huge = json.dumps({**req("big", "card-P", 1000, 1.0), "payload": {"blob": "x" * MAX_RECORD_BYTES}})
    quotes = '"' * 600_000
    kafka_io.produce(stack.bootstrap_servers, t["req"], [None, huge, quotes, req("ok", "card-P", 2000, 2.0)],
                     key=lambda _: b"card-P")  # a null value needs a key (a tombstone)

    aug = [AugmentedRequest.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, t["aug"], count=1,
                                                                timeout=90, idle_timeout=2)]
    quar = [QuarantineRecord.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, t["q"], count=3,
                                                                 timeout=60, idle_timeout=2)]
    assert [a.request.request_id for a in aug] == ["ok"]
    by_code = {q.reasons[0].code: q for q in quar}
    assert set(by_code) == {"null_value", "too_large", "malformed_json"}
    assert by_code["null_value"].raw == "" and by_code["null_value"].raw_bytes == 0
    assert by_code["too_large"].raw_truncated and by_code["too_large"].raw_bytes == len(huge)
    assert len(by_code["too_large"].raw) == MAX_QUARANTINED_RAW_CHARS
    assert by_code["malformed_json"].raw_truncated and by_code["malformed_json"].raw_bytes == len(quotes)
    assert jobs.job_state(jid, stack) == "RUNNING"
    assert jobs.job_exceptions(jid, stack) == ""  # it never failed
