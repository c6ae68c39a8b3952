"""The mailbox's state encoding round-trips, and refuses encodings it does not know (no JVM)."""

import pickle

import pytest

from jobs.rendezvous.mailbox import (
    MAILBOX_STATE_VERSION,
    HeldScore,
    Mailbox,
    StateVersionError,
    from_state,
    to_state,
)


def full_mailbox() -> Mailbox:
    mb = Mailbox("r1", first_seen_ms=10, request_time_ms=5, received_at_ms=11, schedule_version=3, stage=1,
                 answered_at_ms=None, expires_at_ms=None)
    mb.scores["A"] = HeldScore("1.0", {"p": 0.25, "tags": ["x"]}, None, 12, 13, 14, 5, 11)
    mb.scores["B"] = HeldScore("2.0", None, "boom", 12, 15, 16, 5, 11)
    return mb


def test_round_trip_through_pickled_state():
    for mb in (full_mailbox(), Mailbox("r2", first_seen_ms=1)):
        value = pickle.loads(pickle.dumps(to_state(mb)))  # what PICKLED_BYTE_ARRAY state does
        assert value[0] == MAILBOX_STATE_VERSION
        assert from_state(mb.request_id, value) == mb


def test_answered_tombstone_round_trips():
    mb = Mailbox("r3", first_seen_ms=1, request_time_ms=1, received_at_ms=2, schedule_version=0, stage=0,
                 answered_at_ms=40, expires_at_ms=30_040)
    assert from_state("r3", to_state(mb)) == mb


@pytest.mark.parametrize("value", [(MAILBOX_STATE_VERSION + 1, 0), (), "not a tuple"])
def test_unknown_encodings_fail_loudly(value):
    with pytest.raises(StateVersionError, match="Restore the savepoint"):
        from_state("r", value)
