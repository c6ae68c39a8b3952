"""The rendezvous rules as plain Python: events on a request's mailbox in, `Effects` out.

The Flink function (pipeline.py) keeps a `Mailbox` (mailbox.py) in keyed state, turns records and
timers into calls of `Rendezvous.on_request / on_score / on_timer`, and carries out the returned
`Effects`: emit the answer, emit late scores, register timers, clear the state. The schedules come
from the `ScheduleStore` (schedule.py).

Rules (docs/architecture.md, "The rendezvous"):
- A schedule is an ordered list of stages; each has a deadline (ms after the request reached the
  rendezvous) and the models it accepts, most preferred first; after the last stage comes the default.
- Models are deployments, `id@version`: the mailbox keeps the first score of each, so two versions of
  one model score side by side. A stage entry `id@version` takes that deployment's score; a bare `id`
  the first usable score of any version (published schedules name versions; a bare id remains only in
  the built-in schedule and for models the registry does not know).
- A stage may split its first choice between models by weight, or explore (a small random fraction):
  both by a hash of the request id, so the same request always gets the same arm (`stage_order`).
- The answer goes out the moment the current stage's most preferred model has answered; or when every
  model of the stage has answered (nothing better can come); or at the stage's deadline with the best
  answer available; else the next stage is considered. Error scores never win.
- Exactly one answer per request id; a request with a return address (`reply_to`, a gateway's reply topic)
  has it sent there too (`Effects.reply_to`). Scores after the answer are late scores (analytics only). Scores
  before their request are held (bounded) until the request comes or the orphan timeout passes.
  A duplicate request does not produce a second answer. State is kept `answered_retention_ms` after
  the answer (to recognise late scores and duplicates), then cleared.
- During a hand-over between two versions of the rendezvous (jobs/common/transition.py), a request owned by the
  other version gets a foreign mailbox (`on_foreign_request`, `hand_over`): nothing goes out of it, no answer,
  no late score; its scores are dropped; it is kept `answered_retention_ms` (duplicates), then cleared. A version
  taking over may instead answer such a request as a shadow (`on_shadow_request`): by the same rules, its one answer
  marked `Effects.shadow` (for the shadow topic, never the answers or a return address), no late score.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from jobs.common.transition import SHADOW_MAX_AGE_MS
from jobs.rendezvous.mailbox import HeldScore, Mailbox
from schemas.records import (
    MODEL_KEY_SEP,
    Answer,
    LateScore,
    ModelTiming,
    Schedule,
    Score,
    Stage,
    split_key,
)


def bucket(request_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the request id (and salt): the same on every run and machine."""
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8,
                             person=salt.encode()[:16]).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def stage_order(stage: Stage, request_id: str) -> tuple[list[str], bool]:
    """The stage's models for this request, most preferred first, and whether exploration chose the first.

    Split: the arms take consecutive ranges of [0, 100) in the split's order, so an arm listed first keeps
    every request it had when its weight grows (a roll's 10 % are among its 50 %)."""
    models = stage.models
    first: str | None = None
    explored = False
    if stage.explore and bucket(request_id, "explore") < stage.explore:
        first = models[int(bucket(request_id, "explore-pick") * len(models))]
        explored = True
    elif stage.split:
        u = bucket(request_id, "split") * 100
        acc = 0
        for m, w in stage.split.items():
            acc += w
            if u < acc:
                first = m
                break
    if first is None or first == models[0]:
        return models, explored
    return [first] + [m for m in models if m != first], explored


def find_score(scores: dict[str, HeldScore], entry: str) -> tuple[str, HeldScore] | None:
    """The held score a stage entry takes: `id@version` exactly; a bare `id`, a usable score of any version,
    else an error score of one (a bare id stands for one deployment of the model: with several versions
    running, schedules name them, as published schedules do)."""
    h = scores.get(entry)
    if h is not None or MODEL_KEY_SEP in entry:
        return (entry, h) if h is not None else None
    prefix = entry + MODEL_KEY_SEP
    found = None
    for k, h in scores.items():
        if k.startswith(prefix):
            if h.ok:
                return k, h
            found = found or (k, h)
    return found


@dataclass
class Effects:
    answer: Answer | None = None
    reply_to: str | None = None  # where a copy of the answer goes too: the request's return address
    late: list[LateScore] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)
    cancel_timers: list[int] = field(default_factory=list)  # deadline timers made useless by an early answer
    clear: bool = False
    changed: bool = True  # False when the mailbox is untouched (nothing to write back)
    duplicate_request: bool = False
    dropped_scores: int = 0  # duplicates of a model's score for this request, or over the bound
    handed_over: int = 0  # a request or score of the other version's, during a hand-over (nothing goes out)
    shadow: bool = False  # the answer is a shadow's: it goes to the shadow topic, never to the answers or a reply


@dataclass(frozen=True)
class RendezvousConfig:
    orphan_timeout_ms: int = 60_000
    """How long scores wait for their request before they are given up (emitted as late scores)."""
    answered_retention_ms: int = 30_000
    """How long an answered mailbox is kept to recognise late scores and duplicate requests."""
    max_scores_per_request: int = 64
    """Bound on held scores per request id (protects state from a flood of bogus model ids)."""
    shadow_max_age_ms: int = SHADOW_MAX_AGE_MS
    """A version warming up shadows only the live requests (jobs/common/transition.py `SHADOW_MAX_AGE_MS`): an older
    one gets a foreign mailbox."""


class Rendezvous:
    def __init__(self, config: RendezvousConfig | None = None):
        self.config = config or RendezvousConfig()

    # ----------------------------------------------------------------------------------- events
    def on_request(self, mb: Mailbox, request_time_ms: int, schedule: Schedule, now: int,
                   reply_to: str | None = None) -> Effects:
        """`reply_to`: the request's return address (checked by the caller), kept until the answer goes out."""
        if mb.has_request:
            return Effects(duplicate_request=True, changed=False)
        mb.reply_to = reply_to
        mb.request_time_ms = request_time_ms
        mb.received_at_ms = now
        mb.expires_at_ms = None  # the request came: held scores are no longer orphans
        mb.schedule_version = schedule.version
        mb.stage = 0
        eff = Effects()
        self._evaluate(mb, schedule, now, eff)
        return eff

    def on_foreign_request(self, mb: Mailbox, request_time_ms: int, now: int) -> Effects:
        """A request that another version of the rendezvous owns: its mailbox is the other version's."""
        if mb.has_request:
            return Effects(duplicate_request=True, changed=False)
        mb.request_time_ms = request_time_ms
        mb.received_at_ms = now
        eff = self.hand_over(mb, now)
        eff.handed_over = 1
        return eff

    def on_shadow_request(self, mb: Mailbox, request_time_ms: int, schedule: Schedule, now: int) -> Effects:
        """A request that another version owns, answered by this one as a shadow: by the same rules, into the
        shadow topic only (no return address, no late scores). A version taking over does this before a token names
        it, so that its answer path has run, and been compiled, before it answers for real. A request older than
        `shadow_max_age_ms` is handed over as any other (`on_foreign_request`)."""
        if now - request_time_ms > self.config.shadow_max_age_ms:
            return self.on_foreign_request(mb, request_time_ms, now)
        if mb.has_request:
            return Effects(duplicate_request=True, changed=False)
        mb.shadow = True
        return self.on_request(mb, request_time_ms, schedule, now)

    def hand_over(self, mb: Mailbox, now: int) -> Effects:
        """Make the mailbox another version's (one restored from the version handing over, by the version taking
        over): its scores are dropped, its timers go off for nothing, it is cleared after the retention."""
        mb.foreign, mb.shadow = True, False
        mb.reply_to = None
        mb.scores.clear()
        mb.expires_at_ms = now + self.config.answered_retention_ms
        return Effects(timers=[mb.expires_at_ms])

    def on_score(self, mb: Mailbox, score: Score, schedule: Schedule | None, now: int) -> Effects:
        eff = Effects()
        if mb.foreign:  # the other version's request: its scores are its business
            return Effects(changed=False, handed_over=1)
        if mb.answered:
            if mb.shadow:  # the owner reports its own late scores
                return Effects(changed=False)
            eff.late.append(LateScore(score=score, reason="after_answer", answered_at_ms=mb.answered_at_ms,
                                      observed_at_ms=now))
            eff.changed = False
            return eff
        key = score.key
        if key in mb.scores or len(mb.scores) >= self.config.max_scores_per_request:
            eff.dropped_scores = 1
            eff.changed = False
            return eff
        mb.scores[key] = HeldScore.of(score, now)
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
        if mb.foreign:
            eff.clear = mb.expires_at_ms is not None and now >= mb.expires_at_ms
            eff.changed = False
            return eff
        if mb.expires_at_ms is not None and now >= mb.expires_at_ms:
            if not mb.has_request:  # orphaned scores: their request never came
                eff.late += [LateScore(score=h.to_score(mb.request_id, split_key(k)[0]), reason="orphan_expired",
                                       observed_at_ms=now) for k, h in mb.scores.items()]
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
            order, explored = stage_order(stage, mb.request_id)
            preferred = find_score(mb.scores, order[0])
            if preferred is not None and preferred[1].ok:
                return self._answer(mb, schedule, preferred[0], "preferred", passed, now, eff, explored)
            best = self._best(mb, order)
            responded = all(find_score(mb.scores, m) is not None for m in order)
            if best is not None and responded:
                return self._answer(mb, schedule, best, "all_answered", passed, now, eff, explored)
            if now >= deadline:
                if best is not None:
                    return self._answer(mb, schedule, best, "deadline", deadline, now, eff, explored)
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
    def _best(mb: Mailbox, order: list[str]) -> str | None:
        """The key of the most preferred usable score of the stage's models."""
        for m in order:
            found = find_score(mb.scores, m)
            if found is not None and found[1].ok:
                return found[0]
        return None

    def _answer(self, mb: Mailbox, schedule: Schedule, key: str | None, trigger: str,
                deadline_at: int | None, now: int, eff: Effects, explored: bool = False) -> None:
        assert mb.received_at_ms is not None and mb.request_time_ms is not None
        timings = {
            k: ModelTiming(model_version=h.model_version, latency_ms=h.finished_at_ms - h.started_at_ms,
                           finished_at_ms=h.finished_at_ms, received_at_ms=h.received_at_ms,
                           started_at_ms=h.started_at_ms, arrived_after_ms=h.arrived_at_ms - mb.received_at_ms,
                           error=h.error)
            for k, h in mb.scores.items()
        }
        chosen = mb.scores[key] if key is not None else None
        base = self.deadline_base(mb, schedule)
        if trigger in ("preferred", "all_answered") and mb.stage < len(schedule.stages):
            pending = base + schedule.stages[mb.stage].deadline_ms
            if pending > now:  # the stage's deadline timer would fire for nothing: delete it
                eff.cancel_timers.append(pending)
        eff.answer = Answer(
            request_id=mb.request_id,
            model_id=split_key(key)[0] if key is not None else None,
            model_version=chosen.model_version if chosen else None,
            model=key,
            output=dict(chosen.output) if chosen and chosen.output is not None else dict(schedule.default_output),
            stage=mb.stage if key is not None else None,
            trigger=trigger,  # type: ignore[arg-type]
            is_default=key is None,
            schedule_version=schedule.version,
            request_time_ms=mb.request_time_ms,
            received_at_ms=mb.received_at_ms,
            deadline_at_ms=deadline_at,
            answered_at_ms=now,
            explored=explored,
            budget_spent=mb.received_at_ms >= base + schedule.stages[-1].deadline_ms,
            timings=timings,
        )
        eff.reply_to, mb.reply_to = mb.reply_to, None
        eff.shadow = mb.shadow
        mb.answered_at_ms = now
        mb.scores.clear()  # answered: only the tombstone is needed from now on
        mb.expires_at_ms = now + self.config.answered_retention_ms
        eff.timers.append(mb.expires_at_ms)
