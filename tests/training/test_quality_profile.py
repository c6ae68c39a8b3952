"""The expectation suite derived from the training data's profile: deterministic, passes on the demo's
normal traffic (many batches, many seeds), fails when amounts are x10 (no JVM)."""

import inspect
import json

import numpy as np
import pytest

from jobs.quality.validate import BatchValidator
from training import quality_profile as qp
from training.synthetic import TransactionGenerator


@pytest.fixture(scope="module")
def suite():
    return qp.requests_suite()


@pytest.fixture(scope="module")
def validator(suite):
    v = BatchValidator(suite, "requests")
    v.open()
    return v


def by_key(suite):
    return {(e["type"], e["kwargs"].get("column")): e for e in suite["expectations"]}


def load_batch(seed: int, n: int, fraud_fraction: float = 0.02, now_ms: int = 1_800_000_000_000, scale=1.0):
    """What tools.load sends (TransactionGenerator, event time = now), amounts scaled by `scale`."""
    gen = TransactionGenerator(seed=seed, fraud_fraction=fraud_fraction, prefix=f"load-{seed}")
    out = []
    for _ in range(n):
        r = gen.next(now_ms).request
        r["amount"] = round(r["amount"] * scale, 2)
        out.append(r)
    return out


def test_derived_from_the_training_data_and_deterministic(suite):
    from training.train import build_dataset, train_all

    # the data training uses
    assert inspect.signature(train_all).parameters["n"].default == qp.TRAINING_ROWS
    assert inspect.signature(build_dataset).parameters["seed"].default == qp.TRAINING_SEED
    again = qp.requests_suite()
    assert json.dumps(again, sort_keys=True) == json.dumps(suite, sort_keys=True)
    assert suite["meta"]["version"] == again["meta"]["version"] and len(suite["meta"]["version"]) == 12
    assert qp.requests_suite(tolerance=0.5)["meta"]["version"] != suite["meta"]["version"]
    e = by_key(suite)
    for col in qp.COLUMNS:
        assert e[("expect_column_values_to_not_be_null", col)]["kwargs"]["mostly"] == 0.99  # no nulls in training
    assert ("expect_column_values_to_be_unique", "request_id") in e
    assert e[("expect_column_values_to_be_in_set", "country")]["kwargs"]["value_set"] == \
        ["BR", "CN", "DE", "FR", "GB", "NG", "RU", "US"]
    assert "grocery" in e[("expect_column_values_to_be_in_set", "merchant_category")]["kwargs"]["value_set"]
    assert e[("expect_column_most_common_value_to_be_in_set", "country")]["kwargs"]["value_set"] == ["DE"]
    q = e[("expect_column_quantile_values_to_be_between", "amount")]["kwargs"]["quantile_ranges"]
    assert q["quantiles"] == list(qp.AMOUNT_QUANTILES)
    median_lo, median_hi = q["value_ranges"][2]
    assert median_lo < 33 < median_hi  # the lognormal's median, e**3.5
    assert ("expect_column_values_to_be_between", "event_age_ms") in e


def test_bounds_are_the_resampled_range_widened_by_the_tolerance():
    rows = [{"request_id": str(i), "entity_id": "e", "event_time_ms": 0, "amount": float(i % 100),
             "merchant_category": "m", "country": "DE"} for i in range(1000)]
    p = qp.profile(rows, reference_rows=50, resamples=100, seed=1)
    s = qp.suite_from_profile(p, tolerance=0.1)
    lo, hi = p["amount"]["batch_mean_range"]
    mean = by_key(s)[("expect_column_mean_to_be_between", "amount")]["kwargs"]
    assert mean["min_value"] == pytest.approx(lo * 0.9, abs=0.01) and mean["max_value"] == pytest.approx(hi * 1.1, abs=0.01)
    assert qp.profile(rows, reference_rows=50, resamples=100, seed=1) == p


def _numeric_ok(suite, amounts: np.ndarray) -> bool:
    """The distribution expectations, evaluated as pandas/GE do (linear quantiles), fast."""
    e = by_key(suite)
    q = e[("expect_column_quantile_values_to_be_between", "amount")]["kwargs"]["quantile_ranges"]
    m = e[("expect_column_mean_to_be_between", "amount")]["kwargs"]
    values = np.quantile(amounts, q["quantiles"])
    return all(lo <= v <= hi for v, (lo, hi) in zip(values, q["value_ranges"])) \
        and m["min_value"] <= amounts.mean() <= m["max_value"]


@pytest.mark.parametrize("n", [100, 1000])
def test_normal_traffic_passes_in_thousands_of_batches(suite, n):
    # the smallest batch the distribution checks run on (min_rows) and the default batch size; the load
    # generator's 2 % fraud and none at all
    assert suite["meta"]["min_rows"] == 100
    batches = 3000 if n == 100 else 600
    failures = [(seed, ff) for ff in (0.0, 0.02) for seed in range(batches // 2)
                if not _numeric_ok(suite, np.array([r["amount"] for r in load_batch(seed, n, ff)]))]
    assert failures == []


def test_x10_amounts_fail_the_distribution_in_every_batch(suite):
    for seed in range(300):
        amounts = np.array([r["amount"] for r in load_batch(seed, 100, scale=10)])
        assert not _numeric_ok(suite, amounts), seed


def test_normal_batches_pass_great_expectations_across_seeds(validator):
    now = 1_800_000_000_000
    for seed in range(40):
        batch = [json.dumps(r) for r in load_batch(1000 + seed, 1000, now_ms=now - 500)]
        r = validator.validate(batch, now - 10_000, now, now_ms=now)
        assert r.success, (seed, [(o.label, o.observed_value) for o in r.failed])
        assert r.records == 1000 and not r.skipped and len(r.passed) == len(validator.suite_json["expectations"])


def test_x10_amounts_fail_great_expectations_naming_the_amount(validator):
    now = 1_800_000_000_000
    for seed in range(10):
        batch = [json.dumps(r) for r in load_batch(2000 + seed, 1000, now_ms=now, scale=10)]
        r = validator.validate(batch, now - 10_000, now, now_ms=now)
        assert not r.success
        failed = {o.label for o in r.failed}
        assert "expect_column_quantile_values_to_be_between(amount)" in failed
        assert "expect_column_mean_to_be_between(amount)" in failed
        assert {o.column for o in r.failed} == {"amount"}
