"""The expectation suite of the input stream, derived from a profile of the training data.

`requests_suite()` profiles the synthetic transactions the demo models are trained on
(`training.synthetic.training_stream(TRAINING_ROWS, seed=TRAINING_SEED)`, as `training.train` does) and
turns the profile into a Great Expectations suite (its JSON form, a plain dict): value range, quantiles
and mean of the amount, the category sets of country and merchant category, the most common country,
null rates, unique request ids, and the plausibility of event times. The quality job
(`jobs.quality`) validates micro-batches of `requests` against it.

Deterministic: the same training data and a fixed seed for the resampling give the same suite (and the
same `meta.version`, a digest of the expectations), so the control plane derives it at deployment
(`control.ops.deploy.deploy_quality`) and ships it inline in the job's settings: no file to go stale
or to copy to a remote cluster. `rendezvous quality suite` prints it.

Tolerances. A quantile (or the mean) of a batch varies from batch to batch: its bounds are the range of
that statistic over `resamples` batches of `reference_rows` records drawn from the training data,
widened by `tolerance` (a fraction) on each side. The job evaluates these distribution expectations only
on batches of at least `reference_rows` records (`meta.min_rows`), where the bounds hold with room to
spare; larger batches vary less. The demo's traffic (`tools.load`, 2 % fraud) differs from the training
data (about 4 % fraud, with bursts) mostly above the 90th percentile: the suite's quantiles stop there.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

TRAINING_ROWS = 20_000
"""Rows of synthetic training data profiled; as `training.train.train_all`'s default `n`."""
TRAINING_SEED = 11
"""Seed of the training data; as `training.train.build_dataset`'s default."""

SUITE_NAME = "requests-profile"
AMOUNT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.9)
COLUMNS = ("request_id", "entity_id", "event_time_ms", "amount", "merchant_category", "country")
"""The Request fields the suite looks at (payload is free-form)."""
DISTRIBUTION = "distribution"
"""meta.kind of the expectations evaluated only on batches of at least meta.min_rows rows."""


def _round_down(x: float, digits: int = 2) -> float:
    import math

    return math.floor(x * 10 ** digits) / 10 ** digits


def _round_up(x: float, digits: int = 2) -> float:
    import math

    return math.ceil(x * 10 ** digits) / 10 ** digits


def profile(records: Iterable[dict], reference_rows: int = 100, resamples: int = 400, seed: int = 0) -> dict:
    """The profile of request records: per column the null rate; for the amount its range, mean and
    quantiles with the range each takes over `resamples` batches of `reference_rows` records; the sets of
    categories; the most common country; whether request ids are unique."""
    import numpy as np

    rows = list(records)
    if not rows:
        raise ValueError("cannot profile an empty data set")
    n = len(rows)
    nulls = {c: sum(1 for r in rows if r.get(c) is None) / n for c in COLUMNS}
    amounts = np.asarray([r["amount"] for r in rows if isinstance(r.get("amount"), (int, float))], dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.choice(amounts, size=(resamples, reference_rows), replace=True)
    q = np.quantile(draws, AMOUNT_QUANTILES, axis=1)  # shape (quantiles, resamples); linear, as pandas
    means = draws.mean(axis=1)
    countries = [r["country"] for r in rows if r.get("country") is not None]
    ids = [r.get("request_id") for r in rows]
    return {
        "rows": n,
        "null_rate": nulls,
        "amount": {
            "min": float(amounts.min()), "max": float(amounts.max()), "mean": float(amounts.mean()),
            "quantiles": {str(p): float(v) for p, v in zip(AMOUNT_QUANTILES, np.quantile(amounts, AMOUNT_QUANTILES))},
            "batch_quantile_ranges": [[float(lo), float(hi)] for lo, hi in zip(q.min(axis=1), q.max(axis=1))],
            "batch_mean_range": [float(means.min()), float(means.max())],
        },
        "reference_rows": reference_rows,
        "resamples": resamples,
        "country": sorted(set(countries)),
        "country_mode": max(sorted(set(countries)), key=countries.count),
        "merchant_category": sorted({r["merchant_category"] for r in rows if r.get("merchant_category") is not None}),
        "request_id_unique": len(set(ids)) == len(ids),
    }


def suite_from_profile(p: dict, tolerance: float = 0.25, null_tolerance: float = 0.01,
                       category_mostly: float = 0.99, range_mostly: float = 0.99,
                       max_event_age_ms: int = 3_600_000, max_event_future_ms: int = 60_000,
                       name: str = SUITE_NAME) -> dict:
    """A Great Expectations suite (JSON form) from a profile (`profile`). Event-time plausibility is not
    from the training data (historical times) but from `max_event_age_ms` / `max_event_future_ms`: the job
    adds a column `event_age_ms` (validation time - event_time_ms) to every batch."""
    a = p["amount"]
    min_rows = p["reference_rows"]
    dist = {"kind": DISTRIBUTION, "min_rows": min_rows}

    def e(type_: str, meta: dict | None = None, **kwargs) -> dict:
        return {"type": type_, "kwargs": kwargs, "meta": meta or {}}

    expectations = [e("expect_column_values_to_not_be_null", column=c,
                      mostly=round(max(0.0, 1.0 - p["null_rate"][c] - null_tolerance), 4)) for c in COLUMNS]
    if p["request_id_unique"]:
        # a client's retry repeats a request id now and then (the rendezvous answers it once): only a burst of
        # repeats (more than 1 % of a batch) is a quality problem
        expectations.append(e("expect_column_values_to_be_unique", column="request_id", mostly=0.99))
    expectations += [
        e("expect_column_values_to_be_between", column="amount", min_value=0.0,
          max_value=_round_up(a["max"] * (1 + tolerance)), mostly=range_mostly),
        e("expect_column_quantile_values_to_be_between", dist, column="amount",
          quantile_ranges={"quantiles": list(AMOUNT_QUANTILES),
                           "value_ranges": [[_round_down(lo * (1 - tolerance)), _round_up(hi * (1 + tolerance))]
                                            for lo, hi in a["batch_quantile_ranges"]]}),
        e("expect_column_mean_to_be_between", dist, column="amount",
          min_value=_round_down(a["batch_mean_range"][0] * (1 - tolerance)),
          max_value=_round_up(a["batch_mean_range"][1] * (1 + tolerance))),
        e("expect_column_values_to_be_in_set", column="country", value_set=p["country"], mostly=category_mostly),
        e("expect_column_values_to_be_in_set", column="merchant_category", value_set=p["merchant_category"],
          mostly=category_mostly),
        e("expect_column_most_common_value_to_be_in_set", dist, column="country", value_set=[p["country_mode"]]),
        e("expect_column_values_to_be_between", column="event_age_ms", min_value=-max_event_future_ms,
          max_value=max_event_age_ms, mostly=range_mostly),
    ]
    digest = hashlib.sha256(json.dumps(expectations, sort_keys=True).encode()).hexdigest()[:12]
    return {"name": name, "expectations": expectations,
            "meta": {"version": digest, "min_rows": min_rows, "profile_rows": p["rows"],
                     "tolerance": tolerance, "derived_from": p.get("source", "")}}


def training_records(n: int = TRAINING_ROWS, seed: int = TRAINING_SEED) -> list[dict]:
    from training.synthetic import training_stream

    return [t.request for t in training_stream(n, seed=seed)]


def requests_suite(**options: Any) -> dict:
    """The suite of the demo's `requests`, from the training data's profile (deterministic)."""
    p = profile(training_records())
    p["source"] = f"training.synthetic.training_stream({TRAINING_ROWS}, seed={TRAINING_SEED})"
    return suite_from_profile(p, **options)
