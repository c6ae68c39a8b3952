"""Validating one micro-batch: bad input never raises, results are JSON-plain QualityResults (no JVM)."""

import json

import numpy as np
import pytest

from jobs.quality.pipeline import alert_for
from jobs.quality.validate import BatchValidator, plain, rows_of
from schemas.records import LifecycleEvent, QualityResult

NOW = 1_800_000_000_000
GOOD = {"request_id": "r", "entity_id": "card-1", "event_time_ms": NOW - 1000, "amount": 30.0,
        "merchant_category": "grocery", "country": "DE", "payload": {}}
SUITE = {"name": "small-suite", "meta": {"version": "v1", "min_rows": 10}, "expectations": [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount", "mostly": 0.85}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "request_id"}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "event_age_ms", "min_value": -60_000, "max_value": 3_600_000}},
    {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "amount", "min_value": 10, "max_value": 50},
     "meta": {"kind": "distribution", "min_rows": 10}},
]}


@pytest.fixture(scope="module")
def validator():
    v = BatchValidator(SUITE, "requests", max_examples=3)
    v.open()
    return v


def good(i, **kw):
    return json.dumps({**GOOD, "request_id": f"r{i}", **kw})


def test_bad_records_become_null_rows():
    rows, unparseable = rows_of([good(1), "not json", None, b"\xff\xfe", "[1, 2]", "",
                                 json.dumps({**GOOD, "amount": "12", "event_time_ms": True, "country": 7})], NOW)
    assert unparseable == 5 and len(rows) == 7
    assert rows[0]["amount"] == 30.0 and rows[0]["event_age_ms"] == 1000.0
    assert all(v is None for v in rows[1].values())
    assert rows[6]["amount"] is None and rows[6]["event_time_ms"] is None and rows[6]["country"] is None
    assert rows[6]["event_age_ms"] is None


def test_plain_values():
    assert plain({"a": np.float64(1.5), "b": [np.int64(2), float("nan")], "c": np.array([1, 2])}) == \
        {"a": 1.5, "b": [2, None], "c": [1, 2]}
    assert plain("x" * 500) == "x" * 200


def test_a_clean_batch_passes_and_round_trips(validator):
    r = validator.validate([good(i) for i in range(20)], NOW - 5000, NOW, now_ms=NOW)
    assert r.success and r.records == 20 and r.unparseable == 0 and not r.failed and len(r.passed) == 4
    assert (r.suite_name, r.suite_version, r.source_topic) == ("small-suite", "v1", "requests")
    assert r.validation_ms > 0
    assert QualityResult.parse(r.to_json()) == r


def test_a_bad_batch_fails_with_column_observed_value_and_examples(validator):
    batch = [good(i) for i in range(10)] + [good(1), good(1), good(20, event_time_ms=NOW - 86_400_000),
                                            "garbage", None, good(21, amount=1e5)]
    r = validator.validate(batch, NOW - 5000, NOW, now_ms=NOW)
    assert not r.success and r.records == 16 and r.unparseable == 2
    failed = {o.label: o for o in r.failed}
    assert failed["expect_column_values_to_be_unique(request_id)"].examples == ["r1", "r1", "r1"]
    assert failed["expect_column_values_to_be_between(event_age_ms)"].examples == [86_400_000.0]
    mean = failed["expect_column_mean_to_be_between(amount)"]
    assert mean.column == "amount" and mean.observed_value > 50
    assert "expect_column_values_to_not_be_null(amount)" not in failed  # 2 of 16 null: within mostly 0.85
    assert QualityResult.parse(r.to_json()) == r
    alert = alert_for(r)
    assert alert.kind == "quality_alert" and "expect_column_mean_to_be_between(amount)" in alert.detail["failed"]
    assert LifecycleEvent.parse(alert.to_json()) == alert


def test_small_batches_skip_the_distribution_expectations(validator):
    r = validator.validate([good(1, amount=1e5)], NOW, NOW, now_ms=NOW)
    assert r.success and r.skipped == ["expect_column_mean_to_be_between(amount)"]


def test_nothing_parseable_is_a_failing_batch_not_an_exception(validator):
    r = validator.validate(["x"] * 12 + [None], NOW, NOW, now_ms=NOW)
    assert not r.success and r.unparseable == 13
    assert "expect_column_values_to_not_be_null(amount)" in {o.label for o in r.failed}


def test_a_suite_that_cannot_run_is_reported_not_raised():
    v = BatchValidator({"name": "broken", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}}]}, "requests")
    r = v.validate([good(1)], NOW, NOW, now_ms=NOW)
    assert not r.success and (r.error or r.failed)
    QualityResult.parse(r.to_json())


def test_transition_tokens_are_not_records_of_the_batch():
    from jobs.common.transition import token_json

    rows, unparseable = rows_of([good(1), token_json("u", "requests", 0, "external-state#2", "external-state", 1)],
                                1_000)
    assert len(rows) == 1 and unparseable == 0
