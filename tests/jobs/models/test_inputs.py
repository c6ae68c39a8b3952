"""The cascade's join (jobs.models.inputs), without a JVM: every order of a request and its inputs gives one
record for the model, timeouts say what was missing, state is always cleared, the encoding is versioned."""

from __future__ import annotations

import itertools
import json

import pytest

from jobs.models.inputs import (
    INPUTS_STATE_VERSION,
    InputsJoin,
    Pending,
    request_id_of_request,
    request_id_of_score,
)
from schemas.model_card import ModelCard


def aug(rid: str = "r1") -> str:
    return json.dumps({"request": {"request_id": rid, "event_time_ms": 1}, "features": {"f": 1}})


def score(model: str, version: str, rid: str = "r1", output=None, error=None) -> str:
    return json.dumps({"request_id": rid, "model_id": model, "model_version": version,
                       "output": output if error is None else None, "error": error})


def drive(join: InputsJoin, events: list[tuple[str, str]], now: int = 0):
    """Feeds events (kind, raw) to one key; returns (emitted, final pending, timers)."""
    p, emitted, timers = None, [], []
    for kind, raw in events:
        step = join.on_request(p, raw, now) if kind == "request" else join.on_score(p, raw, now)
        p = Pending.from_state(step.pending.to_state()) if step.pending else None  # through the encoding
        emitted += [step.emit] if step.emit else []
        timers += [step.timer_ms] if step.timer_ms else []
    return emitted, p, timers


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_order_emits_the_request_once_with_all_inputs(order):
    join = InputsJoin(["a", "b@2"], timeout_ms=100)
    events = [("request", aug()), ("score", score("a", "7", output={"p": 0.9})),
              ("score", score("b", "2", output={"p": 0.1}))]
    emitted, p, timers = drive(join, [events[i] for i in order])
    assert p is None and len(timers) == 1 and timers[0] == 100  # the first event starts the clock
    (out,) = emitted
    got = json.loads(out)
    assert got["request"]["request_id"] == "r1" and got["features"] == {"f": 1}
    assert got["inputs"] == {"a": {"model": "a@7", "output": {"p": 0.9}, "error": None},
                             "b@2": {"model": "b@2", "output": {"p": 0.1}, "error": None}}


def test_versions_and_other_models_are_matched_as_declared():
    join = InputsJoin(["a", "b@2"], timeout_ms=100)
    assert join.input_of("a", "1") == "a" and join.input_of("a", "2") == "a"
    assert join.input_of("b", "2") == "b@2" and join.input_of("b", "1") is None
    assert join.input_of("c", "1") is None
    assert join.wanted(score("b", "2")) and not join.wanted(score("b", "3")) and not join.wanted("not json")
    # the first version's score fills an input; another version's, later, is not taken
    emitted, p, _ = drive(join, [("score", score("a", "1", output={"p": 1})),
                                 ("score", score("a", "2", output={"p": 0})),
                                 ("request", aug()), ("score", score("b", "2", error="boom"))])
    (out,) = emitted
    assert json.loads(out)["inputs"]["a"]["model"] == "a@1"
    assert json.loads(out)["inputs"]["b@2"] == {"model": "b@2", "output": None, "error": "boom"}


def test_timeout_names_the_missing_inputs_and_clears_state():
    join = InputsJoin(["a", "b"], timeout_ms=100)
    _, p, _ = drive(join, [("request", aug()), ("score", score("a", "1", output={"p": 1}))], now=5)
    assert join.on_timer(p, 50).emit is None and join.on_timer(p, 50).pending == p  # an older timer
    step = join.on_timer(p, 105)
    assert step.pending is None and step.timed_out == ["b"]
    out = json.loads(step.emit)
    assert out["inputs_missing"] == ["b"] and set(out["inputs"]) == {"a"}


def test_orphan_inputs_expire_and_are_counted():
    join = InputsJoin(["a"], timeout_ms=100)
    _, p, _ = drive(join, [("request", aug()), ("score", score("a", "1", output={}))])
    assert p is None  # emitted and cleared
    late = join.on_score(None, score("a", "2", output={}), 10)  # e.g. the second version's score, after
    assert late.pending is not None and late.timer_ms == 110 and late.emit is None
    step = join.on_timer(late.pending, 110)
    assert step.pending is None and step.orphans == 1 and step.emit is None


def test_a_duplicate_request_is_counted_not_scored_twice_and_unreadable_input_passes():
    join = InputsJoin(["a"], timeout_ms=100)
    first = join.on_request(None, aug(), 0)
    dup = join.on_request(first.pending, aug(), 1)
    assert dup.duplicates == 1 and dup.emit is None and dup.pending == first.pending
    bad = join.on_request(None, "{not json", 0)
    assert bad.emit == "{not json" and bad.pending is None  # the UDF's error score says why
    assert request_id_of_request("{not json") == "" and request_id_of_score(score("a", "1")) == "r1"


def test_state_encoding_is_versioned():
    p = Pending(request=aug(), inputs={"a": {"model": "a@1", "output": {}, "error": None}}, deadline_ms=9)
    raw = p.to_state()
    assert json.loads(raw)["v"] == INPUTS_STATE_VERSION and Pending.from_state(raw) == p
    with pytest.raises(ValueError, match="encoding 99"):
        Pending.from_state(json.dumps({"v": 99}))


def test_card_inputs_are_validated():
    card = ModelCard(model_id="b", version="1", runner="x:Y", inputs=["a", "c@2"])
    assert card.inputs == ["a", "c@2"] and card.inputs_timeout_ms == 5000
    for bad, msg in ((["b"], "itself"), (["a", "a@2"], "twice"), (["a@"], "bare"), (["a b"], "bare")):
        with pytest.raises(ValueError, match=msg):
            ModelCard(model_id="b", version="1", runner="x:Y", inputs=bad)
