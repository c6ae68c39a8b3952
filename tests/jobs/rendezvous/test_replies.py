"""Return addresses in the rendezvous (no JVM): the copy of an answer for a request's reply topic, which topics
qualify, the mailbox encoding that keeps the address, and the envelope that carries it."""

import pickle

import pytest

from jobs.rendezvous.mailbox import (
    MAILBOX_STATE_VERSION,
    REPLY_STATE_VERSION,
    Mailbox,
    StateVersionError,
    from_state,
    to_state,
)
from jobs.rendezvous.pipeline import Routes, envelope
from jobs.rendezvous.replies import LOOKUPS_PER_REFRESH, MISSING_REMEMBERED, ReplyTopics
from jobs.rendezvous.testing import SCHED, Sim
from schemas.records import Answer, Request

ANSWER = Answer(request_id="r", model_id=None, model_version=None, output={}, stage=None, trigger="default",
                is_default=True, schedule_version=0, request_time_ms=0, received_at_ms=0, answered_at_ms=1)


# ---------------------------------------------------------------------------------------------- rules
def test_the_answer_goes_to_the_return_address_once_and_the_address_is_then_forgotten():
    sim = Sim(SCHED)
    sim.request("r", at=1_000, reply_to="answers.gw-1")
    sim.request("r", at=1_010, reply_to="answers.gw-2")  # a duplicate: neither a second answer nor a reply
    sim.score("r", "A", at=1_020)
    sim.request("plain", at=1_000)
    sim.score("plain", "A", at=1_030)
    sim.run()
    assert sim.replies == {"r": ["answers.gw-1"]}  # Sim checks: only with the answer, where the request asked
    assert sim.the_answer("r").trigger == "preferred" and sim.the_answer("plain")


def test_a_default_answer_at_the_deadline_goes_to_the_return_address_too():
    sim = Sim(SCHED)
    sim.request("r", at=1_000, reply_to="answers.gw-1")
    sim.run()
    assert sim.the_answer("r").is_default and sim.replies["r"] == ["answers.gw-1"]


@pytest.mark.parametrize("seed", range(40))
def test_replies_keep_every_invariant_in_random_interleavings(seed):
    import random

    rng = random.Random(seed)
    sim = Sim(SCHED)
    for i in range(8):
        rid = f"r{i}"
        t = rng.randrange(0, 400)
        sim.request(rid, at=1_000 + t, reply_to=f"answers.gw-{i % 3}" if rng.random() < 0.7 else None)
        for m in rng.sample("ABCDE", rng.randrange(0, 5)):
            sim.score(rid, m, at=1_000 + rng.randrange(0, 500), ok=rng.random() < 0.8)
    sim.run()
    for i in range(8):
        sim.the_answer(f"r{i}")
        assert len(sim.replies.get(f"r{i}", [])) <= 1


# ---------------------------------------------------------------------------------------------- which topics
def lookup(topics, calls):
    def exists(topic):
        calls.append(topic)
        return topic in topics
    return exists


def test_only_existing_topics_under_the_answers_prefix_are_written_to():
    calls = []
    r = ReplyTopics("answers", lookup({"answers", "answers.gw-1", "schedules", "scores"}, calls), refresh_ms=5_000)
    assert r.allowed("answers.gw-1", now_ms=0)
    for bad in ("schedules", "answers", "answers.", "scores", "answersX.gw", None, ""):
        assert not r.allowed(bad, now_ms=1), bad
    assert calls == ["answers.gw-1"]  # names outside the prefix never cost a lookup
    assert r.allowed("answers.gw-1", now_ms=2) and calls == ["answers.gw-1"]  # found once: no lookup again


def test_a_missing_reply_topic_is_looked_up_again_at_most_every_refresh_interval():
    topics = {"answers.gw-1"}
    calls = []
    r = ReplyTopics("answers", lookup(topics, calls), refresh_ms=5_000)
    assert not r.allowed("answers.gw-2", now_ms=0)
    assert not r.allowed("answers.gw-2", now_ms=4_999) and len(calls) == 1
    topics.add("answers.gw-2")  # the gateway made its topic
    assert r.allowed("answers.gw-2", now_ms=5_000) and len(calls) == 2
    assert r.allowed("answers.gw-2", now_ms=5_001) and len(calls) == 2  # known: no lookup


def test_another_gateways_topic_is_found_right_after_a_missing_one():
    calls = []
    r = ReplyTopics("answers", lookup({"answers.gw-b"}, calls), refresh_ms=5_000)
    assert not r.allowed("answers.gw-a", now_ms=0)
    assert r.allowed("answers.gw-b", now_ms=1)  # its own lookup, not the last one's answer
    assert calls == ["answers.gw-a", "answers.gw-b"]


def test_ever_new_addresses_cost_a_bounded_number_of_lookups():
    calls = []
    r = ReplyTopics("answers", lookup({"answers.real"}, calls), refresh_ms=5_000)
    for i in range(100):
        assert not r.allowed(f"answers.bogus-{i}", now_ms=i)
    assert len(calls) == LOOKUPS_PER_REFRESH
    assert not r.allowed("answers.real", now_ms=100)  # the limit holds for every name in that window
    assert r.allowed("answers.real", now_ms=5_000) and len(calls) == LOOKUPS_PER_REFRESH + 1


def test_names_found_missing_are_remembered_up_to_a_bound():
    r = ReplyTopics("answers", lookup(set(), []), refresh_ms=1)
    for i in range(MISSING_REMEMBERED + 5):
        r.allowed(f"answers.gone-{i}", now_ms=i)
    assert len(r.missing) == MISSING_REMEMBERED and "answers.gone-0" not in r.missing


def test_a_failed_lookup_means_no_reply_not_a_failure_and_no_lookup_until_the_interval_passed():
    calls = []

    def broken(topic):
        calls.append(topic)
        raise TimeoutError("broker away")

    r = ReplyTopics("answers", broken, refresh_ms=5_000)
    assert not r.allowed("answers.gw-1", now_ms=0) and r.failed_lookups == 1
    assert not r.allowed("answers.gw-2", now_ms=10) and calls == ["answers.gw-1"]
    assert not r.allowed("answers.gw-2", now_ms=5_000) and calls == ["answers.gw-1", "answers.gw-2"]


# ---------------------------------------------------------------------------------------------- state, envelope
def test_a_mailbox_with_a_return_address_round_trips_as_version_3():
    mb = Mailbox("r1", first_seen_ms=10, request_time_ms=5, received_at_ms=11, schedule_version=3,
                 reply_to="answers.gw-1")
    value = pickle.loads(pickle.dumps(to_state(mb)))
    assert value[0] == REPLY_STATE_VERSION and from_state("r1", value) == mb


def test_a_mailbox_without_one_is_written_exactly_as_before():
    mb = Mailbox("r1", first_seen_ms=10, request_time_ms=5, received_at_ms=11, schedule_version=3)
    value = to_state(mb)
    assert value[0] == MAILBOX_STATE_VERSION == 2 and len(value) == 9  # what the previous release reads


@pytest.mark.parametrize("value", [(REPLY_STATE_VERSION, 1, 2), (2, 1), (REPLY_STATE_VERSION,) + (0,) * 10])
def test_a_malformed_encoding_fails_loudly(value):
    with pytest.raises(StateVersionError, match="Restore the savepoint"):
        from_state("r", value)


def test_the_envelope_carries_the_return_address_and_routes_send_the_copy_there():
    req = Request(request_id="q1", entity_id="e", event_time_ms=5, amount=1.0, merchant_category="m", country="DE",
                  reply_to="answers.gw-1")
    e = envelope('{"request": ' + req.to_json() + ', "features": {}}')
    assert (e.kind, e.request_id, e.reply_to) == ("request", "q1", "answers.gw-1")
    assert envelope('{"request": {"request_id": "q2", "event_time_ms": 5}}').reply_to is None
    assert tuple(Routes("answers", "late", "q").reply("answers.gw-1", ANSWER)) == ("answers.gw-1", "r",
                                                                                    ANSWER.to_json())


def test_a_return_address_is_a_topic_name():
    base = dict(request_id="q1", entity_id="e", event_time_ms=5, amount=1.0, merchant_category="m", country="DE")
    for bad in ("", "a b", "x/y", "t" * 250):
        with pytest.raises(ValueError):
            Request(**base, reply_to=bad)
