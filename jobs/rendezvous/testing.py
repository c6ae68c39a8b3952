"""A testing kit for the rendezvous rules: a simulator of the Flink function, without a JVM.

`Sim` keeps one `Mailbox` per request id, a processing-time timer queue (deduplicated per key and
timestamp, like Flink's timer service), drives requests, scores and timers in time order, carries out
the returned `Effects`, and checks the invariants every step must keep (exactly one answer, timers
never in the past, an untouched mailbox when `changed` is False, ...). Scenarios read like this:

    sim = Sim()
    sim.request("r", at=1_000)
    sim.score("r", "A", at=1_030)
    sim.run()
    assert sim.the_answer("r").trigger == "preferred"
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from jobs.rendezvous.core import (
    Effects,
    Mailbox,
    Rendezvous,
    RendezvousConfig,
)
from schemas.records import Answer, LateScore, Schedule, Score, Stage

DEFAULT_OUTPUT = {"fraud_probability": 0.0, "decision": "review"}


def make_schedule(*stages: tuple[int, list[str]], version: int = 7, default: dict | None = None,
                  deadline_from: str = "arrival") -> Schedule:
    return Schedule(version=version, name="test", stages=[Stage(deadline_ms=d, models=list(m)) for d, m in stages],
                    default_output=dict(DEFAULT_OUTPUT if default is None else default), deadline_from=deadline_from)


# stage 0: A (preferred), B, C until 100 ms after the request; stage 1: D (preferred), E until 300 ms; then default
SCHED = make_schedule((100, ["A", "B", "C"]), (300, ["D", "E"]))
REQUEST_TIME = 500  # event time of the requests (caller's clock)


def output_of(model: str, seq: int = 0) -> dict[str, Any]:
    return {"fraud_probability": 0.5, "model": model, "seq": seq}


def make_score(rid: str, model: str, *, at: int, ok: bool = True, output: dict | None = None, error: str | None = None,
               version: str = "v1", latency: int = 7, request_time_ms: int = REQUEST_TIME) -> Score:
    """A score that arrives at the rendezvous at `at`: the model finished 1 ms earlier after `latency` ms."""
    if ok and error is None:
        output = output if output is not None else output_of(model)
    else:
        output, error = None, error or f"{model} failed"
    finished = at - 1
    started = finished - latency
    return Score(request_id=rid, model_id=model, model_version=version, output=output, error=error,
                 request_time_ms=request_time_ms, received_at_ms=started - 2, started_at_ms=started,
                 finished_at_ms=finished)


IGNORED = {"changed"}  # a write-back hint for the pipeline; checked separately (Sim._step: False => untouched)


def fx(eff: Effects) -> dict[str, Any]:
    """The effects the caller carries out, for comparing."""
    return {f.name: getattr(eff, f.name) for f in dataclasses.fields(eff) if f.name not in IGNORED}


def E(**kw) -> dict[str, Any]:
    return fx(Effects(**kw))


# ---------------------------------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Answered:
    """An answer with what the harness knew when it went out."""

    answer: Answer
    schedule: Schedule
    accepted: dict[str, tuple[int, Score]]  # model id@version -> (arrival, first score) held by the mailbox at the answer
    request_arrivals: list[int]


class Sim:
    def __init__(self, schedule: Schedule = SCHED, config: RendezvousConfig | None = None,
                 timer_delay: Callable[[int], int] = lambda t: 0, tiebreak: Callable[[], float] | None = None):
        self.schedule = schedule
        self.config = config or RendezvousConfig()
        self.core = Rendezvous(self.config)
        self.timer_delay = timer_delay
        self.tiebreak = tiebreak or (lambda: 0.0)  # ties: insertion order unless randomised
        self.queue: list[tuple] = []
        self._seq = itertools.count()
        self.now: int | None = None
        self.mailboxes: dict[str, Mailbox] = {}
        self.pending_timers: set[tuple[str, int]] = set()
        self.request_schedule: dict[str, Schedule] = {}  # the schedule the request was given (pipeline: by version)
        # what happened
        self.answers: dict[str, list[Answered]] = defaultdict(list)
        self.late: list[tuple[str, LateScore]] = []
        self.log: list[tuple[int, str, str, Effects]] = []  # (now, event kind, request id, effects)
        self.cleared: list[tuple[int, str, Mailbox]] = []
        self.orphan_clears: list[tuple[int, str, int]] = []  # (now, request id, first score's arrival)
        self.duplicates: list[tuple[int, str]] = []
        self.dropped: list[tuple[int, Score]] = []
        self.accepted: dict[str, dict[str, tuple[int, Score]]] = defaultdict(dict)  # held by the current mailbox
        self.request_arrivals: dict[str, list[int]] = defaultdict(list)  # of the current mailbox
        self.score_events = 0
        self.reply_address: dict[str, str | None] = {}  # the return address each request came with
        self.replies: dict[str, list[str]] = defaultdict(list)  # request id -> where copies of its answer went

    # ------------------------------------------------------------------ scripting
    def _push(self, at: int, kind: str, rid: str, payload: Any) -> None:
        heapq.heappush(self.queue, (at, self.tiebreak(), next(self._seq), kind, rid, payload))

    def request(self, rid: str, at: int, schedule: Schedule | None = None,
                request_time_ms: int = REQUEST_TIME, reply_to: str | None = None) -> None:
        self._push(at, "request", rid, (schedule or self.schedule, request_time_ms, reply_to))

    def score(self, rid: str, model: str, at: int, **kw) -> Score:
        s = make_score(rid, model, at=at, **kw)
        self._push(at, "score", rid, s)
        return s

    def run(self, until: int | None = None, max_steps: int = 100_000) -> "Sim":
        steps = 0
        while self.queue and (until is None or self.queue[0][0] <= until):
            steps += 1
            assert steps <= max_steps, "runaway: timers keep re-registering themselves"
            self._step()
        return self

    # ------------------------------------------------------------------ results
    def the_answer(self, rid: str) -> Answer:
        got = self.answers.get(rid, [])
        assert len(got) == 1, f"{rid}: expected exactly one answer, got {len(got)}"
        return got[0].answer

    def late_of(self, rid: str, reason: str | None = None) -> list[LateScore]:
        return [ls for r, ls in self.late if r == rid and (reason is None or ls.reason == reason)]

    def cleared_at(self, rid: str) -> list[int]:
        return [t for t, r, _ in self.cleared if r == rid]

    # ------------------------------------------------------------------ the "Flink function"
    def _mailbox(self, rid: str, now: int) -> Mailbox:
        mb = self.mailboxes.get(rid)
        if mb is None:
            mb = self.mailboxes[rid] = Mailbox(request_id=rid, first_seen_ms=now)
        return mb

    def _step(self) -> None:
        at, _, _, kind, rid, payload = heapq.heappop(self.queue)
        assert self.now is None or at >= self.now, "events must be driven in time order"
        self.now = at
        if kind == "timer":
            if (rid, payload) not in self.pending_timers:  # deleted (an early answer) or already fired
                return
            self.pending_timers.discard((rid, payload))
            mb = self.mailboxes.get(rid)
            if mb is None:  # the pipeline ignores timers of a cleared key
                return
            before = copy.deepcopy(mb)
            eff = self.core.on_timer(mb, self.request_schedule.get(rid) if mb.has_request else None, at)
        elif kind == "request":
            schedule, request_time_ms, reply_to = payload
            mb = self._mailbox(rid, at)
            had_request = mb.has_request
            before = copy.deepcopy(mb)
            eff = self.core.on_request(mb, request_time_ms, schedule, at, reply_to=reply_to)
            assert eff.duplicate_request == had_request
            if had_request:
                assert fx(eff) == E(duplicate_request=True)
                self.duplicates.append((at, rid))
            else:
                assert mb.received_at_ms == at and mb.request_time_ms == request_time_ms
                assert mb.schedule_version == schedule.version
                self.request_schedule[rid] = schedule
                self.request_arrivals[rid].append(at)
                self.reply_address[rid] = reply_to
        else:
            score: Score = payload
            self.score_events += 1
            mb = self._mailbox(rid, at)
            was_answered = mb.answered
            before = copy.deepcopy(mb)
            eff = self.core.on_score(mb, score, self.request_schedule.get(rid) if mb.has_request else None, at)
            if was_answered:
                assert eff.late == [LateScore(score=score, reason="after_answer", answered_at_ms=mb.answered_at_ms,
                                              observed_at_ms=at)]
                assert eff.answer is None and not eff.timers and not eff.dropped_scores
            elif eff.dropped_scores:
                assert eff.dropped_scores == 1 and not eff.late and eff.answer is None and not eff.timers
                self.dropped.append((at, score))
            else:
                assert not eff.late
                self.accepted[rid][score.key] = (at, score)
        self._apply(kind, rid, mb, eff, before)

    def _apply(self, kind: str, rid: str, mb: Mailbox, eff: Effects, before: Mailbox) -> None:
        now = self.now
        self.log.append((now, kind, rid, eff))
        if not getattr(eff, "changed", True):
            assert mb == before, "Effects.changed is False but the mailbox was modified"
            assert eff.answer is None and not eff.timers and not eff.clear
        assert not (eff.clear and eff.answer is not None)
        for t in eff.cancel_timers:
            assert eff.answer is not None and t > now, "only an early answer deletes a deadline timer"
            self.pending_timers.discard((rid, t))
        for t in eff.timers:
            assert t >= now, f"timer registered in the past: {t} < {now}"
            if (rid, t) not in self.pending_timers:  # Flink keeps one timer per key and timestamp
                self.pending_timers.add((rid, t))
                self._push(t + self.timer_delay(t), "timer", rid, t)
        assert eff.reply_to is None or eff.answer is not None, "a reply goes out only with an answer"
        if eff.answer is not None:
            a = eff.answer
            assert a.request_id == rid and a.answered_at_ms == now and mb.answered_at_ms == now
            assert mb.scores == {}, "an answered mailbox keeps only the tombstone"
            assert mb.reply_to is None, "an answered mailbox forgets the return address"
            assert eff.reply_to == self.reply_address.get(rid), "the reply goes where the request asked"
            if eff.reply_to is not None:
                self.replies[rid].append(eff.reply_to)
            self.answers[rid].append(Answered(a, self.request_schedule[rid], dict(self.accepted[rid]),
                                              list(self.request_arrivals[rid])))
            self.accepted[rid] = {}
        for ls in eff.late:
            self.late.append((rid, ls))
        if eff.clear:
            if mb.has_request:
                assert mb.answered, "a mailbox with a request is never cleared before it answered"
                assert not eff.late
            else:  # orphans: every held score goes out as a late score
                self.orphan_clears.append((now, rid, min(t for t, _ in self.accepted[rid].values())))
                assert sorted(ls.score.key for ls in eff.late) == sorted(self.accepted[rid])
                for ls in eff.late:
                    assert ls.reason == "orphan_expired" and ls.observed_at_ms == now and ls.answered_at_ms is None
                    assert ls.score == self.accepted[rid][ls.score.key][1]
            del self.mailboxes[rid]
            self.cleared.append((now, rid, mb))
            self.accepted.pop(rid, None)
            self.request_arrivals.pop(rid, None)
            self.request_schedule.pop(rid, None)


def effects_after(sim: Sim, rid: str, t: int) -> list[tuple[int, str, Effects]]:
    return [(now, kind, fx(eff)) for now, kind, r, eff in sim.log if r == rid and now > t]


