"""Transition tokens without a JVM: who owns which record (jobs/common/transition.py), and the rendezvous rules of a
hand-over (jobs/rendezvous/core.py): two versions fed the same input, each request answered by exactly one."""

from __future__ import annotations

import random

import pytest

from jobs.common.transition import Ownership, parse_token, registry_record, token_json
from jobs.rendezvous.core import Rendezvous, RendezvousConfig
from jobs.rendezvous.mailbox import (
    HANDED_OVER_STATE_VERSION,
    Mailbox,
    from_state,
    to_state,
)
from jobs.rendezvous.testing import SCHED, make_score
from schemas.records import TokenPosition, Transitions

T = "requests"


def tok(partition: int, owner: str, previous: str = "rendezvous") -> str:
    return token_json("u1", T, partition, owner, previous, 1)


def test_a_token_is_recognised_and_nothing_else_is():
    info = parse_token(tok(3, "rendezvous#2"))
    assert info is not None and (info.partition, info.owner, info.previous) == (3, "rendezvous#2", "rendezvous")
    for other in (None, "", '{"request": {}}', '{"transition": "not an object"}', '{ "transition": {}}', "x"):
        assert parse_token(other) is None


def test_records_belong_to_the_owner_of_the_last_token_before_them_in_their_partition():
    old, new = Ownership("rendezvous", first=True), Ownership("rendezvous#2", first=False)
    for o in (old, new):
        o.token(T, 0, 10, parse_token(tok(0, "rendezvous#2")))
    assert old.owns(T, 0, 9) and not new.owns(T, 0, 9)
    assert not old.owns(T, 0, 11) and new.owns(T, 0, 11)
    assert old.owns(T, 1, 11) and not new.owns(T, 1, 11)  # partition 1's token has not come yet
    for o in (old, new):  # a rollback: a later token hands partition 0 back
        o.token(T, 0, 20, parse_token(tok(0, "rendezvous", "rendezvous#2")))
    assert [old.owns(T, 0, x) for x in (9, 15, 25)] == [True, False, True]
    assert [new.owns(T, 0, x) for x in (9, 15, 25)] == [False, True, False]
    assert old.owners() == {f"{T}:0": "rendezvous"}


def test_a_version_restored_past_a_token_learns_it_from_the_registry():
    reg = registry_record(None, T, [TokenPosition(upgrade_id="u1", partition=0, offset=10, owner="rendezvous#2",
                                                  written_at_ms=1)])
    reg = registry_record(reg, T, [TokenPosition(upgrade_id="u2", partition=0, offset=20, owner="rendezvous#3",
                                                 written_at_ms=2)])
    assert Transitions.parse(reg.to_json()) == reg and [t.owner for t in reg.tokens] == ["rendezvous#2", "rendezvous#3"]
    restored = Ownership("rendezvous#2", first=False, known={T: reg.tokens})
    assert [restored.owns(T, 0, x) for x in (5, 15, 25)] == [False, True, False]
    restored.token(T, 0, 10, parse_token(tok(0, "rendezvous#2")))  # re-read after the restore: no change
    assert [restored.owns(T, 0, x) for x in (5, 15, 25)] == [False, True, False]


def test_a_foreign_mailbox_is_written_as_version_4_and_read_back():
    mb = Mailbox(request_id="r", first_seen_ms=1, request_time_ms=2, received_at_ms=3, expires_at_ms=9, foreign=True)
    st = to_state(mb)
    assert st[0] == HANDED_OVER_STATE_VERSION and from_state("r", st) == mb
    assert to_state(Mailbox(request_id="r", first_seen_ms=1))[0] == 2  # others are written as before


def test_a_foreign_request_gets_no_answer_its_scores_are_dropped_silently_and_it_is_cleared_after_retention():
    core = Rendezvous(RendezvousConfig(answered_retention_ms=1_000))
    mb = Mailbox(request_id="r", first_seen_ms=0)
    held = core.on_score(mb, make_score("r", "A", at=5), None, 5)  # a score before its request: held
    assert held.timers and mb.scores
    eff = core.on_foreign_request(mb, 1, 10)
    assert eff.answer is None and not eff.late and eff.timers == [1_010] and eff.handed_over == 1
    assert mb.foreign and not mb.scores
    eff = core.on_score(mb, make_score("r", "B", at=20), SCHED, 20)
    assert (eff.answer, eff.late, eff.changed, eff.handed_over) == (None, [], False, 1)
    assert core.on_request(mb, 1, SCHED, 30).duplicate_request  # a duplicate of it is no second answer either
    assert core.on_foreign_request(mb, 1, 30).duplicate_request
    assert not core.on_timer(mb, SCHED, 500).clear and core.on_timer(mb, SCHED, 1_010).clear


def test_a_restored_mailbox_handed_over_goes_silent():
    core = Rendezvous()
    mb = Mailbox(request_id="r", first_seen_ms=0)
    core.on_request(mb, 0, SCHED, 0)  # open, waiting for A until 100 ms
    eff = core.hand_over(mb, 50)
    assert mb.foreign and eff.answer is None and eff.timers
    assert core.on_score(mb, make_score("r", "A", at=60), SCHED, 60).answer is None
    assert core.on_timer(mb, SCHED, 100).answer is None


def test_a_version_taking_over_warms_up_on_the_records_before_its_first_token_only():
    old, new = Ownership("rendezvous", first=True), Ownership("rendezvous#2", first=False)
    assert not old.warming(T, 0, 5) and new.warming(T, 0, 5)  # no token yet: the new version may shadow
    for o in (old, new):
        o.token(T, 0, 10, parse_token(tok(0, "rendezvous#2")))
        o.token(T, 0, 20, parse_token(tok(0, "rendezvous", "rendezvous#2")))  # and back (a rollback)
    assert [new.warming(T, 0, x) for x in (9, 15, 25)] == [True, False, False]  # retiring after 20: no shadow
    assert not any(old.warming(T, 0, x) for x in (9, 15, 25))
    assert new.warming(T, 1, 30)  # partition 1's token has not come yet


def test_a_shadow_mailbox_is_written_as_version_4_and_an_older_reader_takes_it_for_another_version_s():
    mb = Mailbox(request_id="r", first_seen_ms=1, request_time_ms=2, received_at_ms=3, shadow=True)
    st = to_state(mb)
    assert st[0] == HANDED_OVER_STATE_VERSION and st[10] == "shadow" and from_state("r", st) == mb
    assert bool(st[10])  # what a reader from before shadows checks: it reads a foreign mailbox
    assert not from_state("r", to_state(Mailbox(request_id="r", first_seen_ms=1, foreign=True))).shadow


def test_a_shadow_answers_by_the_same_rules_into_its_own_route_and_reports_no_late_score():
    core = Rendezvous(RendezvousConfig(answered_retention_ms=1_000))
    mb = Mailbox(request_id="r", first_seen_ms=0)
    assert core.on_shadow_request(mb, 0, SCHED, 0).answer is None and mb.shadow
    eff = core.on_score(mb, make_score("r", "A", at=20), SCHED, 20)
    assert eff.answer is not None and eff.answer.model_id == "A" and eff.shadow and eff.reply_to is None
    late = core.on_score(mb, make_score("r", "B", at=30), SCHED, 30)
    assert (late.answer, late.late, late.changed) == (None, [], False)  # the owner reports its own late scores
    assert core.on_shadow_request(mb, 0, SCHED, 40).duplicate_request
    assert not core.on_request(Mailbox(request_id="x", first_seen_ms=0), 0, SCHED, 0).shadow
    old = Mailbox(request_id="o", first_seen_ms=0)  # the catch-up's backlog: handed over, not shadowed
    assert core.on_shadow_request(old, 0, SCHED, 5_001).handed_over == 1 and old.foreign and not old.shadow


@pytest.mark.parametrize("shadow", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_two_versions_fed_the_same_input_answer_every_request_exactly_once(seed, shadow):
    """The old version owns the requests before the token, the new one those after (each decides from the same
    position); scores come before or after their request; every request is answered once, by its owner. With
    `shadow`, the new version answers the old one's requests as a shadow too, and each shadow answer is the old
    version's answer (same model, same trigger)."""
    rnd = random.Random(seed)
    versions = {"old": Rendezvous(), "new": Rendezvous()}
    boxes: dict[str, dict[str, Mailbox]] = {v: {} for v in versions}
    answers: dict[str, list[str]] = {}
    decided: dict[tuple[str, str], tuple] = {}  # (request, real | shadow) -> (model, trigger)
    n, token_at = 60, rnd.randrange(5, 55)

    def record(v: str, rid: str, eff) -> None:
        if eff.answer is None:
            return
        if not eff.shadow:
            answers.setdefault(rid, []).append(v)
        assert (rid, "shadow" if eff.shadow else "real") not in decided
        decided[(rid, "shadow" if eff.shadow else "real")] = (eff.answer.model_id, eff.answer.trigger)

    events = []
    for i in range(n):
        rid = f"r{i}"
        t = i * 10
        events.append((t, "request", rid, "old" if i < token_at else "new"))
        for m in ("A", "B"):
            events.append((t + rnd.randrange(-5, 150), "score", rid, m))
    timers: list[tuple[int, str, str]] = []
    for t, kind, rid, arg in sorted(events):
        due = sorted(x for x in timers if x[0] <= t)
        timers = [x for x in timers if x[0] > t]
        for tt, v, r in due:
            mb = boxes[v].get(r)
            if mb is not None:
                eff = versions[v].on_timer(mb, SCHED if mb.has_request else None, tt)
                record(v, r, eff)
                if eff.clear:
                    del boxes[v][r]
                timers += [(x, v, r) for x in eff.timers]
        for v, core in versions.items():
            mb = boxes[v].setdefault(rid, Mailbox(request_id=rid, first_seen_ms=t))
            if kind == "request" and arg == v:
                eff = core.on_request(mb, t, SCHED, t)
            elif kind == "request":
                eff = core.on_shadow_request(mb, t, SCHED, t) if shadow and v == "new" \
                    else core.on_foreign_request(mb, t, t)
            else:
                eff = core.on_score(mb, make_score(rid, arg, at=t), SCHED if mb.has_request else None, t)
            assert not (eff.late and (mb.foreign or mb.shadow))
            record(v, rid, eff)
            timers += [(x, v, rid) for x in eff.timers]
    for tt, v, r in sorted(timers):
        mb = boxes[v].get(r)
        if mb is not None and not mb.answered:
            eff = versions[v].on_timer(mb, SCHED, tt + 1_000)
            record(v, r, eff)
    assert {r: len(v) for r, v in answers.items()} == {f"r{i}": 1 for i in range(n)}
    assert all(answers[f"r{i}"] == ["old" if i < token_at else "new"] for i in range(n))
    shadows = {r: d for (r, kind), d in decided.items() if kind == "shadow"}
    assert set(shadows) == ({f"r{i}" for i in range(token_at)} if shadow else set())
    assert all(d == decided[(r, "real")] for r, d in shadows.items())


def test_a_cascades_join_passes_a_token_through_unchanged_to_the_model_function_which_drops_it():
    from jobs.models.inputs import InputsJoin

    t = token_json("u", "requests.augmented", 0, "rendezvous#2", "rendezvous", 1)
    step = InputsJoin(["a"], 1_000).on_request(None, t, 0)
    assert step.emit == t and step.pending is None and parse_token(step.emit) is not None
