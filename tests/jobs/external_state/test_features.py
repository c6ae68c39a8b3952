"""Feature logic against a hand-computed sequence (no JVM)."""

import math

import pytest

from jobs.external_state.features import EntityState, FeatureComputer
from schemas.features import feature_vector
from schemas.records import Request


def req(t, amount, rid="r", entity="card-1"):
    return Request(request_id=f"{rid}{t}", entity_id=entity, event_time_ms=t, amount=amount,
                   merchant_category="grocery", country="DE")


def test_hand_computed_sequence():
    fc = FeatureComputer(window_ms=10_000)
    st = EntityState()
    f1 = fc.update(st, req(1_000, 10.0))
    assert (f1.entity_count, f1.window_count, f1.window_sum, f1.ms_since_prev) == (0, 1, 10.0, None)
    assert (f1.amount_mean, f1.amount_std, f1.amount_zscore) == (0.0, 0.0, 0.0)

    f2 = fc.update(st, req(3_000, 20.0))
    assert (f2.entity_count, f2.window_count, f2.window_sum, f2.ms_since_prev) == (1, 2, 30.0, 2_000)
    assert f2.amount_mean == 10.0 and f2.amount_std == 0.0

    f3 = fc.update(st, req(6_000, 30.0))
    assert (f3.entity_count, f3.window_count, f3.window_sum, f3.ms_since_prev) == (2, 3, 60.0, 3_000)
    assert f3.amount_mean == 15.0
    assert f3.amount_std == pytest.approx(math.sqrt(50.0))  # sample std of 10, 20
    assert f3.amount_zscore == pytest.approx(15.0 / math.sqrt(50.0))

    # 12_500: the event at 1_000 and at 2_500 or earlier fall out of the 10 s window (12_500 - 10_000)
    f4 = fc.update(st, req(12_500, 40.0))
    assert (f4.window_count, f4.window_sum, f4.ms_since_prev) == (3, 90.0, 6_500)
    assert f4.amount_mean == 20.0
    assert f4.amount_std == pytest.approx(10.0)
    assert st.count == 4


def test_entities_are_independent_states():
    fc = FeatureComputer(window_ms=1000)
    a, b = EntityState(), EntityState()
    fc.update(a, req(0, 5.0, entity="a"))
    fb = fc.update(b, req(0, 7.0, entity="b"))
    assert fb.entity_count == 0 and fb.window_sum == 7.0


def test_out_of_order_event_counts_but_does_not_move_last_time_back():
    fc = FeatureComputer(window_ms=10_000)
    st = EntityState()
    fc.update(st, req(5_000, 1.0))
    f = fc.update(st, req(4_000, 2.0))
    assert f.ms_since_prev == -1_000
    assert st.last_event_ms == 5_000
    # the 5_000 event lies after t=4_000, so only the request itself is in its window
    assert f.window_count == 1


def test_feature_vector_shape_and_flags():
    v = feature_vector({"amount": 10.0, "country": "US", "merchant_category": "crypto"},
                       {"entity_count": 1, "window_count": 2, "window_sum": 12.0, "ms_since_prev": None,
                        "amount_mean": 2.0, "amount_std": 0.0, "amount_zscore": 0.0})
    assert len(v) == 10 and v[4] == -1.0 and v[8] == 1.0 and v[9] == 1.0


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        FeatureComputer(window_ms=0)
