"""The rendezvous rules (jobs.rendezvous.core) without a JVM, driven by the package's simulator
(jobs.rendezvous.testing.Sim); the direct tests further down call `Rendezvous` on a `Mailbox` by hand."""

from __future__ import annotations

import copy
import random

import pytest
from pydantic import ValidationError

from jobs.rendezvous.core import Rendezvous, RendezvousConfig
from jobs.rendezvous.mailbox import HeldScore, Mailbox
from jobs.rendezvous.testing import (
    DEFAULT_OUTPUT,
    REQUEST_TIME,
    SCHED,
    E,
    Sim,
    effects_after,
    fx,
    make_schedule,
    make_score,
    output_of,
)
from schemas.records import Answer, LateScore, Schedule, Score, Stage


def ids(timings) -> set[str]:
    """The model ids of an answer's timings (keyed by `id@version`)."""
    return {k.split("@")[0] for k in timings}


def timing(a: Answer, model_id: str):
    (t,) = [t for k, t in a.timings.items() if k.split("@")[0] == model_id]
    return t


# ---------------------------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------------------------
def test_preferred_model_answers_immediately():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "B", at=1_010)
    sim.score("r", "A", at=1_030, output={"fraud_probability": 0.9})
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.model_version, a.output) == ("A", "v1", {"fraud_probability": 0.9})
    assert (a.trigger, a.stage, a.is_default, a.deadline_at_ms) == ("preferred", 0, False, None)
    assert (a.received_at_ms, a.answered_at_ms) == (1_000, 1_030)
    # the stage-0 deadline timer (1_100) is deleted by the early answer: nothing happens until the retention
    assert [e.cancel_timers for n, k, r, e in sim.log if (n, k) == (1_030, "score")] == [[1_100]]
    assert [(n, k, e) for n, k, e in effects_after(sim, "r", 1_030) if n < 31_030] == []
    assert sim.cleared_at("r") == [1_030 + sim.config.answered_retention_ms]
    assert sim.mailboxes == {}


def test_preferred_slow_second_model_answers_at_the_deadline():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "C", at=1_005)
    sim.score("r", "B", at=1_050)  # B beats C (preference, not arrival order)
    late = sim.score("r", "A", at=1_200)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.output, a.trigger, a.stage) == ("B", output_of("B"), "deadline", 0)
    assert a.deadline_at_ms == a.answered_at_ms == 1_000 + 100
    assert ids(a.timings) == {"B", "C"}
    assert sim.late_of("r") == [LateScore(score=late, reason="after_answer", answered_at_ms=1_100,
                                          observed_at_ms=1_200)]


def test_stage_one_preferred_already_there_answers_when_stage_zero_expires():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "E", at=1_020)
    sim.score("r", "D", at=1_050)  # arrived during stage 0: held, counted once stage 1 is considered
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.stage, a.trigger, a.answered_at_ms) == ("D", 1, "preferred", 1_100)
    assert a.deadline_at_ms == 1_100  # stage 0's deadline let stage 1 answer at once


def test_stage_one_preferred_arriving_during_stage_one_answers_immediately():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "E", at=1_020)
    sim.score("r", "D", at=1_180)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.stage, a.trigger, a.deadline_at_ms, a.answered_at_ms) == ("D", 1, "preferred", None, 1_180)


def test_stage_one_second_model_answers_at_stage_one_deadline():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "E", at=1_150)
    d_late = sim.score("r", "D", at=1_400)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.stage, a.trigger) == ("E", 1, "deadline")
    assert a.deadline_at_ms == a.answered_at_ms == 1_300
    assert [ls.score for ls in sim.late_of("r", "after_answer")] == [d_late]


def test_a_stage_accepts_only_its_own_models():
    # A answers after stage 0 expired: stage 1 does not accept A, so the default answers at stage 1's deadline
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_150)
    sim.run()
    a = sim.the_answer("r")
    assert (a.is_default, a.trigger, a.answered_at_ms) == (True, "default", 1_300)
    assert ids(a.timings) == {"A"}  # seen, but not chosen
    # ... unless stage 1 lists A as well
    sim = Sim(make_schedule((100, ["A", "B"]), (300, ["D", "A"])))
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_150)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.stage, a.trigger, a.deadline_at_ms, a.answered_at_ms) == ("A", 1, "deadline", 1_300, 1_300)


def test_nobody_answers_default_at_the_last_deadline():
    sim = Sim()
    sim.request("r", at=1_000, request_time_ms=990)
    sim.run()
    a = sim.the_answer("r")
    assert a.model_id is None and a.model_version is None and a.stage is None
    assert a.is_default and a.trigger == "default" and a.output == SCHED.default_output
    assert a.deadline_at_ms == a.answered_at_ms == 1_000 + 300
    assert (a.schedule_version, a.request_time_ms, a.received_at_ms, a.timings) == (7, 990, 1_000, {})
    # the default output is a copy: changing the answer's dict does not touch the schedule
    a.output["decision"] = "changed"
    assert SCHED.default_output == DEFAULT_OUTPUT


def test_error_scores_never_win():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_010, ok=False, error="timeout")
    sim.score("r", "C", at=1_020)
    sim.run()
    a = sim.the_answer("r")
    # A errored, B never answered: C waits for the deadline (B could still come and would be preferred)
    assert (a.model_id, a.trigger, a.answered_at_ms) == ("C", "deadline", 1_100)
    assert timing(a, "A").error == "timeout" and timing(a, "C").error is None


def test_preferred_errors_other_ok_and_stage_complete_answers_at_once():
    sim = Sim(make_schedule((100, ["A", "B"]), (300, ["D"])))
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_010, ok=False)
    sim.score("r", "B", at=1_030)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.trigger, a.stage, a.answered_at_ms, a.deadline_at_ms) == ("B", "all_answered", 0, 1_030,
                                                                                     None)


def test_whole_stage_errors_moves_on_without_waiting():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "D", at=1_005)
    sim.score("r", "A", at=1_010, ok=False)
    sim.score("r", "B", at=1_020, ok=False)
    sim.score("r", "C", at=1_030, ok=False)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.stage, a.trigger, a.answered_at_ms) == ("D", 1, "preferred", 1_030)

    sim = Sim()
    sim.request("r", at=1_000)
    for i, m in enumerate("ABC"):
        sim.score("r", m, at=1_010 + i, ok=False)
    sim.score("r", "E", at=1_050)
    sim.run()
    a = sim.the_answer("r")
    # stage 1 was entered at 1_012 (not 1_100): E waits only for stage 1's deadline (D might still come)
    assert (a.model_id, a.stage, a.trigger, a.answered_at_ms, a.deadline_at_ms) == ("E", 1, "deadline", 1_300, 1_300)
    # stage 0's timer at 1_100 finds stage 1 under way: no answer (it only re-registers stage 1's deadline,
    # which Flink keeps once per key and timestamp)
    assert [(e.answer, e.timers) for n, k, r, e in sim.log if n == 1_100] == [(None, [1_300])]


def test_every_model_errors_default_at_once():
    sim = Sim()
    sim.request("r", at=1_000)
    for i, m in enumerate("ABCDE"):
        sim.score("r", m, at=1_010 + i, ok=False)
    sim.run()
    a = sim.the_answer("r")
    assert (a.is_default, a.trigger, a.answered_at_ms, a.deadline_at_ms) == (True, "default", 1_014, None)
    assert a.output == DEFAULT_OUTPUT and all(t.error for t in a.timings.values()) and len(a.timings) == 5


def test_default_right_after_a_passed_deadline_reports_that_deadline():
    # stage 1's only model errored early; when stage 0's deadline passes, nothing is left: the default goes out
    # at once, and deadline_at_ms names the deadline whose passing triggered it
    sim = Sim(make_schedule((100, ["A"]), (300, ["B"])))
    sim.request("r", at=1_000)
    sim.score("r", "B", at=1_050, ok=False)
    sim.run()
    a = sim.the_answer("r")
    assert (a.is_default, a.trigger, a.answered_at_ms, a.deadline_at_ms) == (True, "default", 1_100, 1_100)


def test_all_answered_before_the_deadline_answers_at_once_with_the_best():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "C", at=1_010)
    sim.score("r", "A", at=1_020, ok=False)
    sim.score("r", "B", at=1_030)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.trigger, a.stage, a.answered_at_ms, a.deadline_at_ms) == ("B", "all_answered", 0, 1_030,
                                                                                     None)


# ----------------------------------------------------------------------------------- exactly one answer
def test_scores_before_the_request_are_held_then_answer_on_arrival():
    sim = Sim()
    sim.score("r", "A", at=900)
    sim.request("r", at=1_000)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.trigger, a.answered_at_ms) == ("A", "preferred", 1_000)
    assert timing(a, "A").arrived_after_ms == -100
    assert not sim.late  # the request came in time: no orphans

    sim = Sim()
    for i, m in enumerate("CBA"):
        sim.score("r", m, at=900 + i, ok=(m != "A"))
    sim.request("r", at=1_000)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.trigger, a.answered_at_ms) == ("B", "all_answered", 1_000)

    sim = Sim()
    sim.score("r", "B", at=950)
    sim.request("r", at=1_000)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.trigger, a.answered_at_ms) == ("B", "deadline", 1_100)


def test_duplicate_scores_from_one_model_are_dropped():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_010, ok=False, error="boom")
    second = sim.score("r", "A", at=1_020)  # a retry that succeeded: the first score per model counts
    sim.score("r", "B", at=1_030, version="v2")
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.model_version, a.trigger, a.answered_at_ms) == ("B", "v2", "deadline", 1_100)
    assert timing(a, "A").error == "boom"
    assert sim.dropped == [(1_020, second)]
    assert [e.dropped_scores for n, k, _, e in sim.log if n == 1_020] == [1]


def test_duplicate_requests_do_not_answer_twice():
    sim = Sim()
    sim.request("r", at=1_000, request_time_ms=111)
    sim.request("r", at=1_050, request_time_ms=222)  # before the answer
    sim.score("r", "B", at=1_060)
    sim.request("r", at=1_200, request_time_ms=333)  # after the answer
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.answered_at_ms, a.received_at_ms, a.request_time_ms) == ("B", 1_100, 1_000, 111)
    assert sim.duplicates == [(1_050, "r"), (1_200, "r")]


def test_scores_after_the_answer_are_late():
    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_010)
    again = sim.score("r", "A", at=1_020)  # even a duplicate of the winner is only late now
    b = sim.score("r", "B", at=5_000, ok=False)
    sim.run()
    assert sim.the_answer("r").answered_at_ms == 1_010
    assert sim.late_of("r") == [
        LateScore(score=again, reason="after_answer", answered_at_ms=1_010, observed_at_ms=1_020),
        LateScore(score=b, reason="after_answer", answered_at_ms=1_010, observed_at_ms=5_000)]
    assert not sim.dropped


def test_timers_after_the_answer_have_no_effect():
    sim = Sim()
    sim.request("r", at=1_000)
    for i, m in enumerate("ABCDE"):
        sim.score("r", m, at=1_010 + i, ok=False)  # passes through both stages: timers at 1_100 and 1_300
    sim.run()
    sim.the_answer("r")
    timer_effects = [(n, fx(e)) for n, k, r, e in sim.log if k == "timer"]
    retention_at = 1_014 + sim.config.answered_retention_ms
    assert timer_effects == [(1_100, E()), (1_300, E()), (retention_at, E(clear=True))]


# ----------------------------------------------------------------------------------- orphans, retention, bounds
def test_orphaned_scores_expire_as_late_scores():
    cfg = RendezvousConfig(orphan_timeout_ms=5_000)
    sim = Sim(config=cfg)
    a = sim.score("r", "A", at=100)
    b = sim.score("r", "B", at=3_000, ok=False)  # does not extend the orphan clock
    sim.run()
    assert sim.answers == {}
    assert sim.late_of("r") == [LateScore(score=a, reason="orphan_expired", observed_at_ms=5_100),
                                LateScore(score=b, reason="orphan_expired", observed_at_ms=5_100)]
    assert sim.cleared_at("r") == [5_100] and sim.mailboxes == {}
    # a request that comes after the expiry starts afresh (and answers by the schedule, here the default)
    sim.request("r", at=6_000)
    sim.run()
    ans = sim.the_answer("r")
    assert ans.is_default and ans.timings == {}


def test_request_before_the_orphan_timeout_rescues_held_scores():
    cfg = RendezvousConfig(orphan_timeout_ms=5_000, answered_retention_ms=1_000)
    sim = Sim(config=cfg)
    sim.score("r", "B", at=100)
    sim.request("r", at=4_000)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.answered_at_ms, timing(a, "B").arrived_after_ms) == ("B", 4_100, -3_900)
    assert sim.late_of("r") == []
    assert sim.cleared_at("r") == [5_100]  # by retention, not by the orphan timer (which fired on a cleared key)

    # the orphan timer fires while the request is still waiting for its deadline: nothing is given up
    sim = Sim(config=RendezvousConfig(orphan_timeout_ms=5_000))
    sim.score("r", "C", at=100)
    sim.request("r", at=5_050)
    sim.run()
    assert [(e.answer, e.late, e.clear) for n, k, r, e in sim.log if n == 5_100] == [(None, [], False)]
    a = sim.the_answer("r")
    assert (a.model_id, a.answered_at_ms) == ("C", 5_150)
    assert sim.late_of("r") == []


def test_answered_mailbox_is_cleared_after_the_retention():
    cfg = RendezvousConfig(answered_retention_ms=2_000)
    rv = Rendezvous(cfg)
    mb = Mailbox("r", first_seen_ms=1_000)
    eff = rv.on_request(mb, REQUEST_TIME, SCHED, 1_000)
    assert eff.timers == [1_100]
    eff = rv.on_score(mb, make_score("r", "A", at=1_040), SCHED, 1_040)
    assert eff.answer is not None and eff.timers == [3_040] and mb.expires_at_ms == 3_040
    assert fx(rv.on_timer(mb, SCHED, 1_100)) == E()
    assert fx(rv.on_timer(mb, SCHED, 3_039)) == E()
    assert fx(rv.on_timer(mb, SCHED, 3_040)) == E(clear=True)

    sim = Sim(config=cfg)
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_040)
    sim.score("r", "B", at=2_000)  # within the retention: late after the answer
    sim.run(until=3_039)
    assert "r" in sim.mailboxes
    sim.run(until=3_040)
    assert sim.cleared_at("r") == [3_040] and "r" not in sim.mailboxes
    assert [ls.reason for ls in sim.late_of("r")] == ["after_answer"]


def test_more_distinct_models_than_the_bound_are_dropped():
    sim = Sim(config=RendezvousConfig(max_scores_per_request=3))
    scores = [sim.score("r", m, at=900 + i) for i, m in enumerate(["x1", "x2", "x3", "A", "B"])]
    sim.request("r", at=1_000)
    sim.run()
    a = sim.the_answer("r")
    assert ids(a.timings) == {"x1", "x2", "x3"}
    assert [s for _, s in sim.dropped] == scores[3:]
    assert a.is_default  # A and B never got in

    # the bound also applies once the request is there
    sim = Sim(config=RendezvousConfig(max_scores_per_request=2))
    sim.request("r", at=1_000)
    sim.score("r", "C", at=1_010)
    sim.score("r", "B", at=1_020)
    sim.score("r", "A", at=1_030)
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, ids(a.timings), len(sim.dropped)) == ("B", {"B", "C"}, 1)


def test_answer_fields():
    sim = Sim()
    sim.score("r", "shadow", at=960, latency=30, version="s-3")  # not in the schedule: timed, never chosen
    sim.score("r", "C", at=980, latency=11, version="c-1")
    sim.request("r", at=1_000, request_time_ms=777)
    sim.score("r", "A", at=1_020, ok=False, error="model crashed", latency=4, version="a-9")
    sim.score("r", "B", at=1_045, latency=25, version="b-2")
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.model_version, a.trigger, a.stage) == ("B", "b-2", "all_answered", 0)
    assert (a.schedule_version, a.request_time_ms, a.received_at_ms, a.answered_at_ms) == (7, 777, 1_000, 1_045)
    assert a.deadline_at_ms is None and not a.is_default
    assert ids(a.timings) == {"shadow", "C", "A", "B"}
    expect = {"shadow": ("s-3", 30, -40, None), "C": ("c-1", 11, -20, None), "A": ("a-9", 4, 20, "model crashed"),
              "B": ("b-2", 25, 45, None)}
    for m, (version, latency, after, error) in expect.items():
        t = timing(a, m)
        assert (t.model_version, t.latency_ms, t.arrived_after_ms, t.error) == (version, latency, after, error), m
    # latency is the model's own (finished - started); finished is on the model job's clock
    assert timing(a, "B").finished_at_ms == 1_044 and not sim.late
    # the answer survives the wire
    assert Answer.parse(a.to_json()) == a


def test_schedule_version_is_the_one_given_with_the_request():
    other = make_schedule((50, ["B"]), version=12, default={"x": 1})
    sim = Sim()
    sim.request("r1", at=1_000, schedule=other)
    sim.request("r2", at=1_000)
    sim.run()
    a1, a2 = sim.the_answer("r1"), sim.the_answer("r2")
    assert (a1.schedule_version, a1.answered_at_ms, a1.output) == (12, 1_050, {"x": 1})
    assert (a2.schedule_version, a2.answered_at_ms) == (7, 1_300)


# ----------------------------------------------------------------------------------- late timers
def test_late_timer_skips_expired_stages_and_reports_the_deadline_that_applied():
    # processing-time timers can fire late: the 1_100 timer fires at 1_350, past stage 1's deadline too
    sim = Sim(timer_delay=lambda t: 250 if t == 1_100 else 0)
    sim.request("r", at=1_000)
    sim.score("r", "E", at=1_050)  # held during stage 0; nothing else comes to trigger an evaluation
    sim.run()
    a = sim.the_answer("r")
    assert (a.model_id, a.stage, a.trigger, a.deadline_at_ms, a.answered_at_ms) == ("E", 1, "deadline", 1_300, 1_350)

    sim = Sim(timer_delay=lambda t: 500)
    sim.request("r", at=1_000)
    sim.run()
    a = sim.the_answer("r")
    assert (a.is_default, a.deadline_at_ms, a.answered_at_ms) == (True, 1_300, 1_600)


# ---------------------------------------------------------------------------------------------------------------
# direct tests
# ---------------------------------------------------------------------------------------------------------------
def test_on_request_registers_the_first_deadline_and_records_the_request():
    rv = Rendezvous()
    mb = Mailbox("r", first_seen_ms=2_000)
    eff = rv.on_request(mb, 1_990, SCHED, 2_000)
    assert fx(eff) == E(timers=[2_100])
    assert (mb.request_time_ms, mb.received_at_ms, mb.schedule_version, mb.stage) == (1_990, 2_000, 7, 0)
    assert mb.has_request and not mb.answered and mb.expires_at_ms is None


def test_on_request_twice_is_a_duplicate_and_changes_nothing():
    rv = Rendezvous()
    mb = Mailbox("r", first_seen_ms=2_000)
    rv.on_request(mb, 1_990, SCHED, 2_000)
    snapshot = (mb.request_time_ms, mb.received_at_ms, mb.schedule_version, mb.stage, dict(mb.scores))
    other = make_schedule((10, ["Z"]), version=99)
    assert fx(rv.on_request(mb, 5, other, 2_050)) == E(duplicate_request=True)
    assert (mb.request_time_ms, mb.received_at_ms, mb.schedule_version, mb.stage, dict(mb.scores)) == snapshot


def test_on_score_before_request_starts_the_orphan_clock_once():
    rv = Rendezvous(RendezvousConfig(orphan_timeout_ms=1_000))
    mb = Mailbox("r", first_seen_ms=10)
    assert fx(rv.on_score(mb, make_score("r", "A", at=10), None, 10)) == E(timers=[1_010])
    assert fx(rv.on_score(mb, make_score("r", "B", at=20), None, 20)) == E()
    assert fx(rv.on_score(mb, make_score("r", "B", at=30), None, 30)) == E(dropped_scores=1)
    assert set(mb.scores) == {"A@v1", "B@v1"} and mb.expires_at_ms == 1_010
    assert mb.scores["A@v1"].arrived_at_ms == 10 and mb.scores["A@v1"].ok and mb.scores["B@v1"].ok
    assert fx(rv.on_timer(mb, None, 1_009)) == E()
    eff = rv.on_timer(mb, None, 1_010)
    assert eff.clear and [ls.reason for ls in eff.late] == ["orphan_expired"] * 2


def test_request_cancels_the_orphan_clock():
    rv = Rendezvous(RendezvousConfig(orphan_timeout_ms=1_000))
    mb = Mailbox("r", first_seen_ms=10)
    rv.on_score(mb, make_score("r", "C", at=10), None, 10)
    eff = rv.on_request(mb, REQUEST_TIME, SCHED, 500)
    assert mb.expires_at_ms is None and fx(eff) == E(timers=[600])
    eff = rv.on_timer(mb, SCHED, 600)
    assert eff.answer is not None and (eff.answer.model_id, eff.answer.trigger) == ("C", "deadline")
    assert fx(rv.on_timer(mb, SCHED, 1_010)) == E()  # the orphan timer: no orphans, no clear


def test_orphan_timer_after_request_evaluates_like_any_timer():
    rv = Rendezvous(RendezvousConfig(orphan_timeout_ms=1_000))
    mb = Mailbox("r", first_seen_ms=10)
    rv.on_score(mb, make_score("r", "C", at=10), None, 10)
    rv.on_request(mb, REQUEST_TIME, SCHED, 950)
    eff = rv.on_timer(mb, SCHED, 1_010)  # the orphan timer; stage 0's deadline is 1_050
    assert fx(eff) == E(timers=[1_050])
    eff = rv.on_timer(mb, SCHED, 1_050)
    assert eff.answer is not None and eff.answer.model_id == "C" and timing(eff.answer, "C").arrived_after_ms == -940


def test_changed_is_false_only_when_the_mailbox_is_untouched():
    rv = Rendezvous(RendezvousConfig(max_scores_per_request=2))
    mb = Mailbox("r", first_seen_ms=0)
    assert rv.on_score(mb, make_score("r", "B", at=1), None, 1).changed  # held: the pipeline must write it
    assert rv.on_request(mb, REQUEST_TIME, SCHED, 10).changed
    snapshot = copy.deepcopy(mb)
    assert not rv.on_request(mb, REQUEST_TIME, SCHED, 20).changed  # duplicate request
    assert not rv.on_score(mb, make_score("r", "B", at=30), SCHED, 30).changed  # duplicate score
    assert mb == snapshot
    assert rv.on_score(mb, make_score("r", "x", at=40), SCHED, 40).changed
    snapshot = copy.deepcopy(mb)
    assert not rv.on_score(mb, make_score("r", "y", at=50), SCHED, 50).changed  # over the bound
    assert mb == snapshot
    assert rv.on_score(mb, make_score("r", "A", at=60), SCHED, 60).changed is False  # over the bound too
    eff = rv.on_timer(mb, SCHED, 110)
    assert eff.changed and eff.answer is not None and eff.answer.model_id == "B"
    snapshot = copy.deepcopy(mb)
    eff = rv.on_score(mb, make_score("r", "A", at=120), SCHED, 120)  # late: analytics only
    assert not eff.changed and len(eff.late) == 1 and mb == snapshot


def test_held_score_round_trip():
    s = make_score("r", "A", at=100, ok=False, error="bad", version="v9", latency=3)
    h = HeldScore.of(s, now=123)
    assert (h.arrived_at_ms, h.ok, h.error, h.output) == (123, False, "bad", None)
    assert h.to_score("r", "A") == s
    s = make_score("r", "A", at=100)
    assert HeldScore.of(s, 5).to_score("r", "A") == s and HeldScore.of(s, 5).ok


def test_on_score_without_schedule_holds_until_the_timer():
    # the pipeline always passes the request's schedule; without one the score is only held
    rv = Rendezvous()
    mb = Mailbox("r", first_seen_ms=0)
    rv.on_request(mb, REQUEST_TIME, SCHED, 0)
    assert fx(rv.on_score(mb, make_score("r", "A", at=10), None, 10)) == E()
    eff = rv.on_timer(mb, SCHED, 100)
    assert eff.answer is not None and (eff.answer.model_id, eff.answer.trigger) == ("A", "preferred")


# ---------------------------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------------------------
def test_schedule_deadlines_must_increase():
    with pytest.raises(ValidationError, match="deadlines must increase"):
        make_schedule((100, ["A"]), (100, ["B"]))
    with pytest.raises(ValidationError, match="deadlines must increase"):
        make_schedule((100, ["A"]), (300, ["B"]), (200, ["C"]))
    assert [s.deadline_ms for s in make_schedule((1, ["A"]), (2, ["B"])).stages] == [1, 2]


def test_schedule_rejects_empty_stages():
    with pytest.raises(ValidationError):
        Schedule(version=1, stages=[], default_output={})
    with pytest.raises(ValidationError):
        Stage(deadline_ms=100, models=[])
    with pytest.raises(ValidationError):
        Schedule(version=1, stages=[{"deadline_ms": 100, "models": []}], default_output={})
    with pytest.raises(ValidationError):
        Stage(deadline_ms=0, models=["A"])
    with pytest.raises(ValidationError):
        Schedule(version=-1, stages=[Stage(deadline_ms=1, models=["A"])], default_output={})
    with pytest.raises(ValidationError):  # strict: no "100" -> 100
        Stage(deadline_ms="100", models=["A"])


def test_schedule_model_ids_in_order_without_repeats():
    s = make_schedule((100, ["A", "B"]), (300, ["B", "D", "A", "E"]))
    assert s.model_ids() == ["A", "B", "D", "E"]
    assert Schedule.parse(s.to_json()) == s


# ---------------------------------------------------------------------------------------------------------------
# property: random interleavings
# ---------------------------------------------------------------------------------------------------------------
POOL = ["m0", "m1", "m2", "m3", "m4", "m5"]


def random_schedule(rng: random.Random, version: int) -> Schedule:
    n = rng.randint(1, 3)
    deadlines = sorted(rng.sample(range(1, 1_500), n))
    stages = [(d, rng.sample(POOL, rng.randint(1, 3))) for d in deadlines]
    return make_schedule(*stages, version=version, default={"default": version})


def random_world(seed: int, timer_delay_max: int = 0) -> tuple[Sim, set[str]]:
    rng = random.Random(seed)
    config = RendezvousConfig(orphan_timeout_ms=rng.choice([40, 400, 2_000, 60_000]),
                              answered_retention_ms=rng.randint(2_500, 20_000),
                              max_scores_per_request=rng.choice([64, 64, 64, 3]))
    delay = (lambda t: rng.randint(0, timer_delay_max)) if timer_delay_max else (lambda t: 0)
    sim = Sim(config=config, timer_delay=delay, tiebreak=rng.random)
    schedules = [random_schedule(rng, v) for v in range(rng.randint(1, 3))]
    with_request: set[str] = set()
    for i in range(rng.randint(1, 8)):
        rid = f"req-{i}"
        base = rng.randint(3_000, 6_000)
        if rng.random() < 0.85:
            with_request.add(rid)
            sim.request(rid, at=base, schedule=rng.choice(schedules), request_time_ms=base - rng.randint(0, 50))
            for _ in range(rng.choice([0, 0, 1, 2])):  # duplicates within the retention
                sim.request(rid, at=base + rng.randint(0, 2_000), schedule=rng.choice(schedules))
        for m in POOL + ["shadow"]:
            if rng.random() < 0.7:
                n = 1 + (rng.random() < 0.2)  # sometimes the model sends twice (e.g. a retry)
                for k in range(n):
                    ok = rng.random() < 0.7
                    sim.score(rid, m, at=base + rng.randint(-3_000, 2_500), ok=ok,
                              output=output_of(m, seq=k) if ok else None, latency=rng.randint(0, 40))
    return sim, with_request


def latest_allowed(received: int, stages: list[Stage], accepted: dict[str, tuple[int, Score]]) -> float:
    """Upper bound on the answer time (timers on time), from the rules alone: a stage is settled at its deadline,
    or as soon as all its models answered; the answer comes when the stage's preferred model answered ok, or by
    the time the stage is settled when it holds an ok score; else the next stage starts when this one settled."""
    bound = float("inf")
    start = received  # when the stage is considered at the latest
    for st in stages:
        deadline = received + st.deadline_ms
        got = {m: accepted[m] for m in st.models if m in accepted}
        full = max([received] + [t for t, _ in got.values()]) if len(got) == len(set(st.models)) else None
        settled = max(start, full) if full is not None and full < deadline else max(start, deadline)
        pref = got.get(st.models[0])
        if pref is not None and pref[1].ok and pref[0] < deadline:
            bound = min(bound, max(start, pref[0]))
        if any(s.ok and t < deadline for t, s in got.values()):
            return min(bound, settled)
        start = settled
    return min(bound, start)


def check_world(sim: Sim, with_request: set[str], on_time: bool) -> None:
    # every request that arrived got exactly one answer, other ids none
    assert set(sim.answers) == with_request
    for rid in with_request:
        assert len(sim.answers[rid]) == 1, rid
    # nothing stays in state, and every score is accounted for exactly once
    assert sim.mailboxes == {}
    held = sum(len(x.accepted) for xs in sim.answers.values() for x in xs)
    orphaned = sum(1 for _, ls in sim.late if ls.reason == "orphan_expired")
    after = sum(1 for _, ls in sim.late if ls.reason == "after_answer")
    assert held + orphaned + after + len(sim.dropped) == sim.score_events
    for now, rid, first in sim.orphan_clears:  # the orphan clock starts with the first score, never extended
        assert now >= first + sim.config.orphan_timeout_ms
        if on_time:
            assert now == first + sim.config.orphan_timeout_ms
    for _, ls in sim.late:
        if ls.reason == "after_answer":
            assert ls.answered_at_ms is not None and ls.observed_at_ms >= ls.answered_at_ms

    for rid, (x,) in sim.answers.items():
        a, sched, accepted = x.answer, x.schedule, x.accepted
        by_id = {k.split("@")[0]: v for k, v in accepted.items()}  # one version per model here
        stages = sched.stages
        r = a.received_at_ms
        assert r == x.request_arrivals[0] and a.answered_at_ms >= r
        assert a.schedule_version == sched.version
        # timings: every model held at the answer (never more than the bound), nothing else
        assert set(a.timings) == set(accepted) and len(accepted) <= sim.config.max_scores_per_request
        for m, (arrived, s) in accepted.items():
            t = a.timings[m]
            assert (t.arrived_after_ms, t.latency_ms, t.error) == (arrived - r, s.finished_at_ms - s.started_at_ms,
                                                                    s.error)
        if a.model_id is None:
            assert a.is_default and a.trigger == "default" and a.stage is None and a.output == sched.default_output
            last = r + stages[-1].deadline_ms
            if a.answered_at_ms >= last:
                assert a.deadline_at_ms == last
            else:  # all errored: at once, or right after an earlier stage's deadline passed
                assert a.deadline_at_ms is None or (a.deadline_at_ms in [r + st.deadline_ms for st in stages[:-1]]
                                                    and a.deadline_at_ms <= a.answered_at_ms)
        else:
            assert not a.is_default and a.trigger != "default"
            arrived, chosen = by_id[a.model_id]
            assert chosen.ok and a.timings[a.model].error is None, "an error score won"
            assert a.output == chosen.output and a.model_version == chosen.model_version
            models = stages[a.stage].models
            assert a.model_id in models
            better = models[:models.index(a.model_id)]
            assert not [m for m in better if m in by_id and by_id[m][1].ok], "a better answer was ignored"
            if a.trigger in ("preferred", "all_answered"):
                if a.trigger == "preferred":
                    assert a.model_id == models[0]
                else:
                    assert all(m in by_id for m in models)
                # the deadline, if any, of an earlier stage that passed in the evaluation that answered
                assert a.deadline_at_ms is None or (
                    a.deadline_at_ms in [r + st.deadline_ms for st in stages[:a.stage]]
                    and a.deadline_at_ms <= a.answered_at_ms)
            else:
                assert a.trigger == "deadline" and a.deadline_at_ms == r + stages[a.stage].deadline_ms
                assert a.answered_at_ms >= a.deadline_at_ms
            if a.stage > 0:  # the previous stage was over: deadline passed, or every model of it errored
                prev = stages[a.stage - 1]
                assert (a.answered_at_ms >= r + prev.deadline_ms
                        or all(m in by_id and not by_id[m][1].ok for m in prev.models))
        if not on_time:
            continue
        last = r + stages[-1].deadline_ms
        assert a.answered_at_ms <= last
        assert a.answered_at_ms <= latest_allowed(r, stages, by_id), "answered later than the rules allow"
        if a.deadline_at_ms is not None:
            assert a.answered_at_ms == a.deadline_at_ms
        # nothing usable was ignored: an ok score of stage i's model held before stage i's deadline
        # means an answer from stage i or earlier, by that deadline
        for i, st in enumerate(stages):
            d = r + st.deadline_ms
            if any(m in by_id and by_id[m][1].ok and by_id[m][0] < d for m in st.models):
                assert a.stage is not None and a.stage <= i and a.answered_at_ms <= d, (rid, i)
        # an answered mailbox is cleared exactly at the end of its retention
        assert a.answered_at_ms + sim.config.answered_retention_ms in sim.cleared_at(rid)


@pytest.mark.parametrize("seed", range(300))
def test_random_interleavings_timers_on_time(seed):
    sim, with_request = random_world(seed)
    sim.run()
    check_world(sim, with_request, on_time=True)


@pytest.mark.parametrize("seed", range(1_000, 1_300))
def test_random_interleavings_late_timers(seed):
    sim, with_request = random_world(seed, timer_delay_max=400)
    sim.run()
    check_world(sim, with_request, on_time=False)


def test_random_worlds_exercise_every_path():
    """The random worlds above do reach every trigger and every kind of late score (guards the generator)."""
    triggers, reasons, dup, dropped = set(), set(), 0, 0
    for seed in range(300):
        sim, _ = random_world(seed)
        sim.run()
        triggers |= {x.answer.trigger for xs in sim.answers.values() for x in xs}
        reasons |= {ls.reason for _, ls in sim.late}
        dup += len(sim.duplicates)
        dropped += len(sim.dropped)
    assert triggers == {"preferred", "all_answered", "deadline", "default"}
    assert reasons == {"after_answer", "orphan_expired"}
    assert dup and dropped


# ---------------------------------------------------------------------------------------------------------------
# deadlines from the request's own timestamp (the default)
# ---------------------------------------------------------------------------------------------------------------
REQ_SCHED = make_schedule((100, ["A", "B"]), (300, ["C"]), deadline_from="request")


def test_default_deadlines_count_from_the_request_timestamp():
    assert Schedule(version=1, stages=[Stage(deadline_ms=5, models=["A"])], default_output={}).deadline_from \
        == "request"
    sim = Sim(REQ_SCHED)
    sim.request("r", at=REQUEST_TIME + 40)  # 40 ms spent upstream
    sim.score("r", "B", at=REQUEST_TIME + 70)
    sim.run()
    a = sim.the_answer("r")
    # stage 0 ends 100 ms after the request's own timestamp, not 100 ms after its arrival
    assert (a.model_id, a.trigger, a.answered_at_ms, a.deadline_at_ms) == ("B", "deadline", REQUEST_TIME + 100,
                                                                          REQUEST_TIME + 100)
    assert not a.budget_spent


def test_a_request_whose_budget_is_spent_is_answered_at_once():
    sim = Sim(REQ_SCHED)
    sim.score("r", "C", at=REQUEST_TIME + 350)
    sim.request("r", at=REQUEST_TIME + 400)  # after the last deadline: best score available, at once
    sim.request("q", at=REQUEST_TIME + 400)  # nothing available: the default, at once
    sim.run()
    a, q = sim.the_answer("r"), sim.the_answer("q")
    assert (a.model_id, a.answered_at_ms, a.budget_spent) == ("C", REQUEST_TIME + 400, True)
    assert (q.is_default, q.answered_at_ms, q.budget_spent) == (True, REQUEST_TIME + 400, True)
    assert q.deadline_at_ms == REQUEST_TIME + 300


def test_an_early_answer_deletes_the_pending_deadline_timer():
    rv = Rendezvous()
    mb = Mailbox("r", first_seen_ms=0)
    eff = rv.on_request(mb, 0, REQ_SCHED, 10)
    assert eff.timers == [100]
    eff = rv.on_score(mb, make_score("r", "A", at=20), REQ_SCHED, 20)
    assert eff.answer is not None and eff.cancel_timers == [100]
    mb2 = Mailbox("s", first_seen_ms=0)
    rv.on_request(mb2, 0, REQ_SCHED, 10)
    eff = rv.on_timer(mb2, REQ_SCHED, 100)  # the deadline fired: nothing left to delete
    assert eff.cancel_timers == []
