"""Data-quality suite derived from the Request record, on micro-batches (no JVM)."""

import json

import pytest

from tools.quality import expectations_for, validate_records

GOOD = {"request_id": "r1", "entity_id": "card-1", "event_time_ms": 1_700_000_000_000, "amount": 12.5,
        "merchant_category": "grocery", "country": "DE", "payload": {}}


def test_suite_is_derived_from_the_record_constraints():
    names = {(type(e).__name__, e.column) for e in expectations_for()}
    assert ("ExpectColumnValuesToBeBetween", "amount") in names
    assert ("ExpectColumnValueLengthsToBeBetween", "country") in names
    assert ("ExpectColumnValuesToNotBeNull", "request_id") in names
    assert ("ExpectColumnValuesToBeUnique", "request_id") in names
    amount = next(e for e in expectations_for() if type(e).__name__ == "ExpectColumnValuesToBeBetween"
                  and e.column == "amount")
    assert (amount.min_value, amount.max_value) == (0.0, 1_000_000.0)


def test_a_clean_batch_passes():
    batch = [json.dumps({**GOOD, "request_id": f"r{i}"}) for i in range(20)]
    report = validate_records(batch)
    assert report.success, report.summary()
    assert report.records == 20


def test_a_bad_batch_fails_with_examples():
    batch = [json.dumps({**GOOD, "request_id": f"r{i}"}) for i in range(10)]
    batch += [json.dumps({**GOOD, "request_id": "r1"}),                      # duplicate id
              json.dumps({**GOOD, "request_id": "x1", "amount": -4.0}),      # out of range
              json.dumps({**GOOD, "request_id": "x2", "country": "DEU"}),    # wrong length
              "not json"]
    report = validate_records(batch)
    assert not report.success
    failed = {(r.expectation, r.column): r for r in report.results if not r.success}
    assert failed[("expect_column_values_to_be_unique", "request_id")].examples[:2] == ["r1", "r1"]
    assert failed[("expect_column_values_to_be_between", "amount")].examples == [-4.0]
    assert failed[("expect_column_value_lengths_to_be_between", "country")].examples == ["DEU"]
    assert report.not_objects == 1
    assert "FAIL" in report.summary()


@pytest.mark.e2e
def test_quality_check_reads_the_last_records_of_a_topic(stack, unique):
    from control import kafka_io
    from control.kafka_io import ensure_topics
    from schemas.topics import TopicSpec
    from tools import quality

    topic = f"quality-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(topic)])
    kafka_io.produce(stack.bootstrap_servers, topic,
                     [{**GOOD, "request_id": f"q{i}"} for i in range(30)] + [{**GOOD, "request_id": "q0"}])
    assert not quality.check_topic(stack.bootstrap_servers, topic, last=100).success  # q0 twice
    assert quality.check_topic(stack.bootstrap_servers, topic, last=5).success  # the last 5 are clean
