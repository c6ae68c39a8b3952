"""The external state's keyed-state encoding (no JVM)."""

import pytest

from jobs.external_state.features import (
    ENTITY_STATE_VERSION,
    EntityState,
    FeatureComputer,
    StateVersionError,
)
from schemas.records import Request


def req(t, amount):
    return Request(request_id=f"r{t}", entity_id="card-1", event_time_ms=t, amount=amount,
                   merchant_category="grocery", country="DE")


def test_round_trip_gives_the_same_features_as_never_storing():
    """Storing and reloading the state between requests changes no feature (as the Flink job does)."""
    fc = FeatureComputer(window_ms=10_000)
    kept, stored = EntityState(), None
    for t, a in [(1_000, 10.0), (3_000, 20.0), (2_000, 5.0), (12_500, 40.0), (30_000, 1.5)]:
        expected = fc.update(kept, req(t, a))
        st = EntityState.from_state(stored) if stored is not None else EntityState()
        assert fc.update(st, req(t, a)) == expected
        stored = st.to_state()
        assert isinstance(stored, tuple) and stored[0] == ENTITY_STATE_VERSION
    assert EntityState.from_state(stored) == kept


def test_an_unknown_encoding_fails_loudly():
    with pytest.raises(StateVersionError, match="encoding 99"):
        EntityState.from_state((99, 1, 2.0, 3.0, 4, ()))
    with pytest.raises(StateVersionError):
        EntityState.from_state(b"not a tuple")


def test_version_0_rows_are_read():
    class Row:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    st = EntityState.from_rows(Row(count=2, mean=15.0, m2=50.0, last_event_ms=3_000),
                               [Row(ts=3_000, amount=20.0), Row(ts=1_000, amount=10.0)])
    assert st == EntityState(count=2, mean=15.0, m2=50.0, last_event_ms=3_000,
                             window=[(1_000, 10.0), (3_000, 20.0)])
