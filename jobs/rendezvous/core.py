"""The rendezvous rules as plain Python: events on a request's mailbox in, `Effects` out.

The Flink function (pipeline.py) keeps a `Mailbox` (mailbox.py) in keyed state, turns records and
timers into calls of `Rendezvous.on_request / on_score / on_timer`, and carries out the returned
`Effects`: emit the answer, emit late scores, register timers, clear the state. The schedules come
from the `ScheduleStore` (schedule.py).

Rules (docs/architecture.md, "The rendezvous"):
- A schedule is an ordered list of stages; each has a deadline (ms after the request reached the
  rendezvous) and the models it accepts, most preferred first; after the last stage comes the default.
- The answer goes out the moment the current stage's most preferred model has answered; or when every
  model of the stage has answered (nothing better can come); or at the stage's deadline with the best
  answer available; else the next stage is considered. Error scores never win.
- Exactly one answer per request id. Scores after the answer are late scores (analytics only). Scores
  before their request are held (bounded) until the request comes or the orphan timeout passes.
  A duplicate request does not produce a second answer. State is kept `answered_retention_ms` after
  the answer (to recognise late scores and duplicates), then cleared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.rendezvous.mailbox import HeldScore, Mailbox
from schemas.records import Answer, LateScore, ModelTiming, Schedule, Score, Stage


@dataclass
class Effects:
    answer: Answer | None = None
    late: list[LateScore] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)
    cancel_timers: list[int] = field(default_factory=list)  # deadline timers made useless by an early answer
    clear: bool = False
    changed: bool = True  # False when the mailbox is untouched (nothing to write back)
    duplicate_request: bool = False
    dropped_scores: int = 0  # duplicates of a model's score for this request, or over the bound


@dataclass(frozen=True)
class RendezvousConfig:
    orphan_timeout_ms: int = 60_000
    """How long scores wait for their request before they are given up (emitted as late scores)."""
    answered_retention_ms: int = 30_000
    """How long an answered mailbox is kept to recognise late scores and duplicate requests."""
    max_scores_per_request: int = 64
    """Bound on held scores per request id (protects state from a flood of bogus model ids)."""


class Rendezvous:
    def __init__(self, config: RendezvousConfig | None = None):
        self.config = config or RendezvousConfig()

    # ----------------------------------------------------------------------------------- events
    def on_request(self, mb: Mailbox, request_time_ms: int, schedule: Schedule, now: int) -> Effects:
        if mb.has_request:
            return Effects(duplicate_request=True, changed=False)
        mb.request_time_ms = request_time_ms
        mb.received_at_ms = now
        mb.expires_at_ms = None  # the request came: held scores are no longer orphans
        mb.schedule_version = schedule.version
        mb.stage = 0
        eff = Effects()
        self._evaluate(mb, schedule, now, eff)
        return eff

    def on_score(self, mb: Mailbox, score: Score, schedule: Schedule | None, now: int) -> Effects:
        eff = Effects()
        if mb.answered:
            eff.late.append(LateScore(score=score, reason="after_answer", answered_at_ms=mb.answered_at_ms,
                                      observed_at_ms=now))
            eff.changed = False
            return eff
        if score.model_id in mb.scores or len(mb.scores) >= self.config.max_scores_per_request:
            eff.dropped_scores = 1
            eff.changed = False
            return eff
        mb.scores[score.model_id] = HeldScore.of(score, now)
        if not mb.has_request:
            if mb.expires_at_ms is None:  # first sign of this request id: start the orphan clock
                mb.expires_at_ms = now + self.config.orphan_timeout_ms
                eff.timers.append(mb.expires_at_ms)
            return eff
        if schedule is not None:
            self._evaluate(mb, schedule, now, eff)
        return eff

    def on_timer(self, mb: Mailbox, schedule: Schedule | None, now: int) -> Effects:
        eff = Effects()
        if mb.expires_at_ms is not None and now >= mb.expires_at_ms:
            if not mb.has_request:  # orphaned scores: their request never came
                eff.late += [LateScore(score=h.to_score(mb.request_id, m), reason="orphan_expired",
                                       observed_at_ms=now) for m, h in mb.scores.items()]
            eff.clear = True
            return eff
        if mb.has_request and not mb.answered and schedule is not None:
            self._evaluate(mb, schedule, now, eff)
        return eff

    # ----------------------------------------------------------------------------------- rules
    @staticmethod
    def deadline_base(mb: Mailbox, schedule: Schedule) -> int:
        """What stage deadlines count from: the request's own timestamp, or its arrival here."""
        assert mb.received_at_ms is not None and mb.request_time_ms is not None
        return mb.request_time_ms if schedule.deadline_from == "request" else mb.received_at_ms

    def _evaluate(self, mb: Mailbox, schedule: Schedule, now: int, eff: Effects) -> None:
        assert mb.received_at_ms is not None
        base = self.deadline_base(mb, schedule)
        stages = schedule.stages
        passed: int | None = None  # the deadline passed in this evaluation, if any (for overshoot accounting)
        while mb.stage < len(stages):
            stage = stages[mb.stage]
            deadline = base + stage.deadline_ms
            preferred = mb.scores.get(stage.models[0])
            if preferred is not None and preferred.ok:
                return self._answer(mb, schedule, stage.models[0], "preferred", passed, now, eff)
            best = self._best(mb, stage)
            responded = all(m in mb.scores for m in stage.models)
            if best is not None and responded:
                return self._answer(mb, schedule, best, "all_answered", passed, now, eff)
            if now >= deadline:
                if best is not None:
                    return self._answer(mb, schedule, best, "deadline", deadline, now, eff)
                mb.stage += 1  # nothing usable in this stage: on to the next
                passed = deadline
                continue
            if responded:  # every model of this stage answered with an error: don't wait
                mb.stage += 1
                continue
            eff.timers.append(deadline)
            return
        # past the last stage: the default answer
        last_deadline = base + stages[-1].deadline_ms
        self._answer(mb, schedule, None, "default", last_deadline if now >= last_deadline else passed, now, eff)

    @staticmethod
    def _best(mb: Mailbox, stage: Stage) -> str | None:
        for m in stage.models:
            h = mb.scores.get(m)
            if h is not None and h.ok:
                return m
        return None

    def _answer(self, mb: Mailbox, schedule: Schedule, model_id: str | None, trigger: str,
                deadline_at: int | None, now: int, eff: Effects) -> None:
        assert mb.received_at_ms is not None and mb.request_time_ms is not None
        timings = {
            m: ModelTiming(model_version=h.model_version, latency_ms=h.finished_at_ms - h.started_at_ms,
                           finished_at_ms=h.finished_at_ms, arrived_after_ms=h.arrived_at_ms - mb.received_at_ms,
                           error=h.error)
            for m, h in mb.scores.items()
        }
        chosen = mb.scores[model_id] if model_id is not None else None
        base = self.deadline_base(mb, schedule)
        if trigger in ("preferred", "all_answered") and mb.stage < len(schedule.stages):
            pending = base + schedule.stages[mb.stage].deadline_ms
            if pending > now:  # the stage's deadline timer would fire for nothing: delete it
                eff.cancel_timers.append(pending)
        eff.answer = Answer(
            request_id=mb.request_id,
            model_id=model_id,
            model_version=chosen.model_version if chosen else None,
            output=dict(chosen.output) if chosen and chosen.output is not None else dict(schedule.default_output),
            stage=mb.stage if model_id is not None else None,
            trigger=trigger,  # type: ignore[arg-type]
            is_default=model_id is None,
            schedule_version=schedule.version,
            request_time_ms=mb.request_time_ms,
            received_at_ms=mb.received_at_ms,
            deadline_at_ms=deadline_at,
            answered_at_ms=now,
            budget_spent=mb.received_at_ms >= base + schedule.stages[-1].deadline_ms,
            timings=timings,
        )
        mb.answered_at_ms = now
        mb.scores.clear()  # answered: only the tombstone is needed from now on
        mb.expires_at_ms = now + self.config.answered_retention_ms
        eff.timers.append(mb.expires_at_ms)
