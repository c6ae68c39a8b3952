"""Model identity `id@version`, traffic splits and exploration in the rendezvous rules (no JVM)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.rendezvous.core import bucket, stage_order
from jobs.rendezvous.mailbox import HeldScore, Mailbox, from_state, to_state
from jobs.rendezvous.testing import DEFAULT_OUTPUT, Sim
from schemas.records import Schedule, Stage


def sched(*stages: Stage, version: int = 3) -> Schedule:
    return Schedule(version=version, stages=list(stages), default_output=DEFAULT_OUTPUT, deadline_from="arrival")


def test_two_versions_of_one_model_are_held_side_by_side():
    sim = Sim(sched(Stage(deadline_ms=100, models=["m@2", "m@1"])))
    sim.request("r", at=1_000)
    sim.score("r", "m", at=1_005, version="1")
    sim.score("r", "m", at=1_010, version="2", output={"fraud_probability": 0.2})
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.model_version, a.model, a.trigger) == ("m", "2", "m@2", "preferred")
    assert set(a.timings) == {"m@1", "m@2"} and not sim.dropped


def test_the_same_version_twice_is_a_duplicate():
    sim = Sim(sched(Stage(deadline_ms=100, models=["m@1"])))
    sim.score("r", "m", at=990, version="1")
    sim.score("r", "m", at=995, version="1")
    sim.request("r", at=1_000)
    sim.run()
    assert len(sim.dropped) == 1 and sim.the_answer("r").model == "m@1"


def test_a_bare_id_takes_any_version_and_prefers_a_usable_score():
    sim = Sim(sched(Stage(deadline_ms=100, models=["m", "other"])))
    sim.request("r", at=1_000)
    sim.score("r", "m", at=1_005, version="1", ok=False)
    sim.score("r", "m", at=1_008, version="2")
    sim.run()
    a = sim.the_answer("r")
    assert (a.model, a.trigger) == ("m@2", "preferred")


def test_an_unscheduled_version_is_seen_but_never_chosen():
    sim = Sim(sched(Stage(deadline_ms=100, models=["m@1"])))
    sim.request("r", at=1_000)
    sim.score("r", "m", at=1_002, version="2")  # preproduction: scores recorded, never chosen
    sim.score("r", "m", at=1_050, version="1")
    sim.run()
    a = sim.the_answer("r")
    assert a.model == "m@1" and a.answered_at_ms == 1_050 and set(a.timings) == {"m@1", "m@2"}


@pytest.mark.parametrize("weight", [0, 10, 50, 90, 100])
def test_a_split_gives_each_arm_its_share_and_the_same_request_the_same_arm(weight):
    stage = Stage(deadline_ms=100, models=["old@1", "new@2"], split={"new@2": weight, "old@1": 100 - weight})
    ids = [f"req-{i}" for i in range(20_000)]
    firsts = [stage_order(stage, rid)[0][0] for rid in ids]
    share = firsts.count("new@2") / len(ids)
    assert abs(share - weight / 100) < 0.015
    assert firsts == [stage_order(stage, rid)[0][0] for rid in ids]  # deterministic


def test_a_growing_weight_keeps_the_requests_it_had():
    def arm(w: int, rid: str) -> str:
        stage = Stage(deadline_ms=100, models=["old@1", "new@2"], split={"new@2": w, "old@1": 100 - w})
        return stage_order(stage, rid)[0][0]

    ids = [f"r{i}" for i in range(5_000)]
    at10 = {rid for rid in ids if arm(10, rid) == "new@2"}
    at50 = {rid for rid in ids if arm(50, rid) == "new@2"}
    assert at10 and at10 <= at50


def test_the_other_arm_stays_as_fallback_within_the_stage():
    stage = Stage(deadline_ms=100, models=["old@1", "new@2", "canary@1"], split={"new@2": 50, "old@1": 50})
    orders = {tuple(stage_order(stage, f"x{i}")[0]) for i in range(200)}
    assert orders == {("old@1", "new@2", "canary@1"), ("new@2", "old@1", "canary@1")}


def test_split_answers_follow_the_arm():
    s = sched(Stage(deadline_ms=100, models=["old@1", "new@2"], split={"new@2": 30, "old@1": 70}))
    sim = Sim(s)
    rids = [f"q{i}" for i in range(400)]
    for i, rid in enumerate(rids):
        t = 1_000 + 10 * i
        sim.request(rid, at=t)
        sim.score(rid, "old", at=t + 3, version="1")
        sim.score(rid, "new", at=t + 4, version="2")
    sim.run()
    by = [sim.the_answer(rid).model for rid in rids]
    expected = [stage_order(s.stages[0], rid)[0][0] for rid in rids]
    assert by == expected and 0.2 < by.count("new@2") / len(by) < 0.4


def test_exploration_picks_a_random_model_of_the_stage_for_a_small_fraction():
    stage = Stage(deadline_ms=100, models=["a@1", "b@1", "c@1"], explore=0.1)
    results = [stage_order(stage, f"e{i}") for i in range(20_000)]
    explored = [order for order, ex in results if ex]
    assert abs(len(explored) / len(results) - 0.1) < 0.01
    assert {o[0] for o in explored} == {"a@1", "b@1", "c@1"}
    assert all(o[0] == "a@1" for o, ex in results if not ex)


def test_an_explored_answer_says_so():
    s = sched(Stage(deadline_ms=100, models=["a@1", "b@1"], explore=0.5))
    sim = Sim(s)
    for i in range(100):
        sim.request(f"x{i}", at=1_000 + i)
        sim.score(f"x{i}", "a", at=1_010 + i, version="1")
        sim.score(f"x{i}", "b", at=1_010 + i, version="1")
    sim.run()
    answers = [sim.the_answer(f"x{i}") for i in range(100)]
    assert any(a.explored for a in answers) and any(not a.explored for a in answers)
    assert all(a.model == "a@1" for a in answers if not a.explored)
    assert any(a.model == "b@1" for a in answers if a.explored)


def test_bucket_is_stable_and_uniform():
    assert bucket("abc", "split") == bucket("abc", "split") != bucket("abc", "explore")
    values = [bucket(f"id{i}", "split") for i in range(10_000)]
    assert 0 <= min(values) and max(values) < 1 and abs(sum(values) / len(values) - 0.5) < 0.02


@pytest.mark.parametrize("split,match", [({"x@1": 100}, "does not accept"), ({"a@1": 60, "b@1": 30}, "sum to 100"),
                                         ({"a@1": 110, "b@1": -10}, "sum to 100")])
def test_bad_splits_are_refused(split, match):
    with pytest.raises(ValidationError, match=match):
        Stage(deadline_ms=10, models=["a@1", "b@1"], split=split)


def test_a_stage_cannot_name_a_model_twice():
    with pytest.raises(ValidationError, match="twice"):
        Stage(deadline_ms=10, models=["a@1", "a@1"])


def test_version_1_mailbox_state_is_read_with_id_at_version_keys():
    mb = Mailbox("r1", first_seen_ms=10, request_time_ms=5, received_at_ms=11, schedule_version=3)
    mb.scores["A"] = HeldScore("1.0", {"p": 0.25}, None, 12, 13, 14, 5, 11)
    v1 = (1,) + to_state(mb)[1:]  # what the version-1 encoding wrote: scores keyed by model id
    read = from_state("r1", v1)
    assert set(read.scores) == {"A@1.0"} and read.scores["A@1.0"] == mb.scores["A"]
    assert to_state(read)[0] == 2
