"""augmented requests + scores (keyed by request id) x schedules (broadcast) -> answers, late scores,
quarantine.

The Flink function only maps keyed state and processing-time timers onto the pure parts: the mailbox
(mailbox.py), the schedule store (schedule.py) and the rules (core.py).
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

from pyflink.common import Row, Time, Types
from pyflink.datastream import DataStream, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.functions import FlatMapFunction, KeyedBroadcastProcessFunction
from pyflink.datastream.state import (
    MapStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)

from jobs.common.transition import Ownership, parse_token, read_registry
from jobs.rendezvous.core import Effects, Rendezvous, RendezvousConfig
from jobs.rendezvous.mailbox import MAILBOX_UID, Mailbox, from_state, to_state

# Imported here, not where it is used: in thread mode a TaskManager's one CPython keeps the `jobs` package
# of the first job that imported it, whose files Flink deletes when that job ends; a submodule imported
# later (the first restored run calls the recovery scan) is then "No module named jobs.rendezvous.recovery".
from jobs.rendezvous.recovery import answered_after_checkpoint
from jobs.rendezvous.replies import ReplyTopics, kafka_topic_lookup
from jobs.rendezvous.schedule import ScheduleStore
from jobs.rendezvous.settings import RendezvousSettings
from schemas.records import Answer, LateScore, QuarantineRecord, Reason, Schedule, Score


# ------------------------------------------------------------------------------------------------- envelope
class Env(NamedTuple):
    """What crosses the keyBy: an augmented request's key and time, or a validated score's fields, or an
    unreadable record. Each input record is parsed once, into this."""

    kind: str  # request | score | invalid
    request_id: str
    request_time_ms: int
    model_id: str | None = None
    model_version: str | None = None
    output_json: str | None = None
    error: str | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    received_at_ms: int | None = None
    raw: str | None = None
    reply_to: str | None = None  # a request's return address, as written (checked by the function)
    mine: bool = True  # a request this version owns (jobs/common/transition.py); else another version's
    shadow: bool = False  # another version's request before any of this version's tokens: answered as a shadow


ENVELOPE = Types.PICKLED_BYTE_ARRAY()
"""`Env` tuples cross the keyBy pickled: one field to convert between Python and the JVM instead of eleven
typed ones (measured alone: see the commit that made it so)."""


def envelope(raw: str) -> Env:
    """Tell augmented requests from scores, validate, and pull out the key. Never raises."""
    try:
        rec = json.loads(raw)
        if isinstance(rec, dict) and isinstance(rec.get("request"), dict):
            r = rec["request"]
            rid, t, reply = r["request_id"], r["event_time_ms"], r.get("reply_to")
            if isinstance(rid, str) and rid and isinstance(t, int) and not isinstance(t, bool):
                return Env("request", rid, t, reply_to=reply if isinstance(reply, str) and reply else None)
        elif isinstance(rec, dict) and "model_id" in rec:
            s = Score.model_validate(rec)
            return Env("score", s.request_id, s.request_time_ms, s.model_id, s.model_version,
                       json.dumps(s.output, separators=(",", ":")) if s.output is not None else None, s.error,
                       s.started_at_ms, s.finished_at_ms, s.received_at_ms)
    except Exception:  # noqa: BLE001 - anything unreadable is quarantined by the rendezvous function
        pass
    return Env("invalid", "", 0, raw=raw)


def score_of(e: Env) -> Score:
    """The Score carried by a score envelope (validated when the envelope was made)."""
    return Score.model_construct(request_id=e.request_id, model_id=e.model_id, model_version=e.model_version,
                                 output=json.loads(e.output_json) if e.output_json is not None else None,
                                 error=e.error, request_time_ms=e.request_time_ms, received_at_ms=e.received_at_ms,
                                 started_at_ms=e.started_at_ms, finished_at_ms=e.finished_at_ms)


class Envelopes(FlatMapFunction):
    """Input records (`jobs.common.kafka.POSITIONED` rows, or plain strings from a test's source) into envelopes.
    Transition tokens in the augmented topic (jobs/common/transition.py) decide which of its requests (and
    unreadable records) this version owns; they go no further. Every version reads every score."""

    def __init__(self, settings: RendezvousSettings):
        self.hand_over = (settings.owner_name, not settings.takes_over, settings.kafka, settings.transitions_topic,
                          settings.handed_over_topic)
        self.shadows = settings.shadow_topic is not None

    def open(self, runtime_context: RuntimeContext):
        owner, first, kafka, registry, topic = self.hand_over
        self.topic = topic
        self.ownership = Ownership(owner, first, read_registry(kafka, registry, [topic]))

    def flat_map(self, value):
        if value is None or isinstance(value, str):
            yield envelope(value)
            return
        topic, partition, offset, raw = value[0], value[1], value[2], value[3]
        if topic != self.topic:
            yield envelope(raw)
            return
        info = parse_token(raw)
        if info is not None:
            self.ownership.token(topic, partition, offset, info)
            return
        e = envelope(raw)
        if not self.ownership.owns(topic, partition, offset):
            e = e._replace(mine=False, shadow=self.shadows and self.ownership.warming(topic, partition, offset))
        yield e


# ------------------------------------------------------------------------------------------------- outputs
class Routes:
    """The rendezvous's one output stream: (topic, key, payload) rows, typed by record
    (`jobs.common.kafka.ROUTED`; side outputs from on_timer break in thread mode, PyFlink 2.3)."""

    def __init__(self, answers: str, late: str, invalid: str, shadow: str | None = None):
        self.answers, self.late, self.invalid, self.shadow = answers, late, invalid, shadow

    def answer(self, a: Answer) -> Row:
        return Row(self.answers, a.request_id, a.to_json())

    def shadow_answer(self, a: Answer) -> Row:
        """A shadow's answer (a version warming up before it takes over): to the shadow topic only."""
        return Row(self.shadow, a.request_id, a.to_json())

    def reply(self, topic: str, a: Answer) -> Row:
        """The copy of an answer for its request's return address (a gateway's reply topic)."""
        return Row(topic, a.request_id, a.to_json())

    def late_score(self, ls: LateScore) -> Row:
        return Row(self.late, ls.score.request_id, ls.to_json())

    def quarantine(self, raw: str) -> Row:
        return Row(self.invalid, None, invalid_record(raw))


def invalid_record(raw: str | None) -> str:
    return QuarantineRecord.of(raw, [Reason(code="null_value" if raw is None else "invalid",
                                            message="neither an augmented request nor a valid score")],
                               source_topic="requests.augmented|scores", stage="rendezvous").to_json()


def attempt_number(ctx: RuntimeContext) -> int:
    """This task's attempt (0: first run, more: a restart after a failure). PyFlink 2.3's thread-mode context
    calls a Java method Flink 2 removed (getAttemptNumber; now getTaskInfo().getAttemptNumber()); when both
    fail, 1 (assume a restart: the recovery scan runs, which is only slower)."""
    try:
        return int(ctx.get_attempt_number())
    except Exception:  # noqa: BLE001
        try:
            return int(ctx._runtime_context.getTaskInfo().getAttemptNumber())  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            return 1


# ------------------------------------------------------------------------------------------------- the function
SCHEDULES_STATE = MapStateDescriptor("schedules", Types.LONG(), Types.STRING())
ACTIVE = -1  # key of the active schedule's version in the broadcast state
VERSIONS = -2  # key of the JSON list of versions kept (iterating broadcast state fails in thread mode)


class RendezvousFunction(KeyedBroadcastProcessFunction):
    def __init__(self, settings: RendezvousSettings):
        self.builtin_json = settings.builtin_schedule.to_json()
        self.config = RendezvousConfig(orphan_timeout_ms=settings.orphan_timeout_ms,
                                       answered_retention_ms=settings.answered_retention_ms)
        self.state_ttl_ms = settings.state_ttl_ms
        self.routes = Routes(settings.answers_topic, settings.late_topic, settings.invalid_topic, settings.shadow_topic)
        self.recovery = (settings.kafka, settings.group_id, [settings.augmented_topic, settings.scores_topic],
                         settings.answers_topic, settings.recovery_margin_ms,
                         settings.recover_from_ms) if settings.recover_answers else None
        self.reply_lookup = (settings.answers_topic, settings.kafka, f"{settings.group_id}-replies",
                             settings.reply_topics_refresh_ms)
        # a first attempt replays nothing already answered unless it resumes the group's offsets or a snapshot
        self.recover_first_attempt = settings.start == "committed" or settings.restored
        self.taken_over_at_ms = settings.taken_over_at_ms

    def open(self, runtime_context: RuntimeContext):
        mailbox = ValueStateDescriptor("mailbox", Types.PICKLED_BYTE_ARRAY())
        mailbox.enable_time_to_live(
            StateTtlConfig.new_builder(Time.milliseconds(self.state_ttl_ms))
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired).build())
        self.mailbox = runtime_context.get_state(mailbox)
        self.core = Rendezvous(self.config)
        answers_topic, kafka, client_id, refresh_ms = self.reply_lookup
        exists, self._close_lister = kafka_topic_lookup(kafka, client_id)
        self.replies = ReplyTopics(answers_topic, exists, refresh_ms)
        # the schedules, in memory: reading broadcast state per record is a JVM round trip in process mode.
        # Empty after a restore until the first record reads them back from the broadcast state.
        self.store = ScheduleStore(Schedule.parse(self.builtin_json))
        self._restored = False
        self.counters = {}
        self._recovery_failed = False
        attempt = attempt_number(runtime_context)
        self.recovered = self._recover() if attempt > 0 or self.recover_first_attempt else {}
        self.recovered_until = int(time.time() * 1000) + self.state_ttl_ms  # then forgotten, like the mailboxes
        try:
            group = runtime_context.get_metrics_group().add_group("rendezvous")
            for name in ("answers", "answers_default", "late_scores", "duplicate_requests", "dropped_scores",
                         "invalid", "recovered_answers", "recovery_failed", "replies", "reply_dropped", "handed_over",
                         "shadow_answers"):
                self.counters[name] = group.counter(name)
        except Exception:  # noqa: BLE001 - metrics are optional (not every execution mode has them)
            self.counters = {}
        self._count("recovery_failed", int(self._recovery_failed))

    def close(self):
        self._close_lister()

    def _recover(self) -> dict[str, int]:
        """The requests answered after the checkpoint this run restores (jobs/rendezvous/recovery.py)."""
        if self.recovery is None:
            return {}
        import sys

        t0 = time.monotonic()
        try:
            found = answered_after_checkpoint(*self.recovery)
        except Exception as e:  # noqa: BLE001 - availability first: answer on, and say loudly what may follow
            print(f"rendezvous: recovery scan of {self.recovery[3]} failed ({e!r}); requests answered after the "
                  "last checkpoint may be answered again", file=sys.stderr, flush=True)
            self._recovery_failed = True
            return {}
        if found:
            print(f"rendezvous: {len(found)} requests answered since the restored checkpoint will not be answered "
                  f"again (scan took {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
        return found

    def _count(self, name: str, n: int = 1) -> None:
        c = self.counters.get(name)
        if c is not None and n:
            c.inc(n)

    # ---------------------------------------------------------------- schedules (broadcast side)
    def process_broadcast_element(self, value, ctx):
        try:
            sched = Schedule.parse(value)
        except Exception:  # noqa: BLE001 - `rendezvous schedule set` validates; anything else is ignored
            self._count("invalid")
            return
        state = ctx.get_broadcast_state(SCHEDULES_STATE)
        self._restore(state)
        for old in self.store.add(sched):
            state.remove(old)
        state.put(sched.version, value)
        state.put(ACTIVE, str(self.store.active_version))
        state.put(VERSIONS, json.dumps(self.store.versions()))

    def _restore(self, state) -> None:
        if self._restored:
            return
        self._restored = True
        if state.contains(VERSIONS):
            self.store.restore(json.loads(state.get(VERSIONS)),
                               int(state.get(ACTIVE)) if state.contains(ACTIVE) else None,
                               lambda v: state.get(v) if state.contains(v) else None)

    def _schedule(self, ctx, version: int | None) -> Schedule:
        if not self._restored:  # fetching the broadcast state is a JVM call: once, not per record
            self._restore(ctx.get_broadcast_state(SCHEDULES_STATE))
        return self.store.get(version)

    # ---------------------------------------------------------------- effects
    def _apply(self, eff: Effects, mb: Mailbox, timer_service):
        for t in eff.cancel_timers:
            timer_service.delete_processing_time_timer(t)
        for t in eff.timers:
            timer_service.register_processing_time_timer(t)
        if eff.clear:
            self.mailbox.clear()
        elif eff.changed:
            self.mailbox.update(to_state(mb))
        self._count("duplicate_requests", int(eff.duplicate_request))
        self._count("dropped_scores", eff.dropped_scores)
        self._count("handed_over", eff.handed_over)
        for late in eff.late:
            self._count("late_scores")
            yield self.routes.late_score(late)
        if eff.answer is not None and eff.shadow:
            if self.routes.shadow is not None:  # none: a shadow mailbox restored into a job without a shadow topic
                self._count("shadow_answers")
                yield self.routes.shadow_answer(eff.answer)
        elif eff.answer is not None:
            if self.recovered:
                if eff.answer.answered_at_ms >= self.recovered_until:
                    self.recovered = {}  # as long as a mailbox can live: what was not replayed by now never will be
                elif self.recovered.pop(eff.answer.request_id, None) is not None:
                    self._count("recovered_answers")  # answered before the restore: that answer stands
                    return
            self._count("answers")
            self._count("answers_default", int(eff.answer.is_default))
            yield self.routes.answer(eff.answer)
            if eff.reply_to is not None:
                self._count("replies")
                yield self.routes.reply(eff.reply_to, eff.answer)

    def _load(self, request_id: str, now: int) -> Mailbox:
        value = self.mailbox.value()
        return Mailbox(request_id=request_id, first_seen_ms=now) if value is None else from_state(request_id, value)

    def _inherited(self, mb: Mailbox, now: int) -> Effects | None:
        """A version taking over restored the mailboxes of the one handing over: the requests received before it
        started are that version's to answer (it runs on until they are). Made foreign the first time they are
        touched here."""
        if (self.taken_over_at_ms is not None and mb.has_request and not mb.foreign
                and mb.received_at_ms < self.taken_over_at_ms):
            return self.core.hand_over(mb, now)
        return None

    # ---------------------------------------------------------------- events
    def process_element(self, value, ctx):
        now = int(time.time() * 1000)
        if value.kind == "invalid":
            if not value.mine:
                return  # the other version's to quarantine (a hand-over)
            self._count("invalid")
            yield self.routes.quarantine(value.raw)
            return
        mb = self._load(value.request_id, now)
        inherited = self._inherited(mb, now)
        if inherited is not None:
            yield from self._apply(inherited, mb, ctx.timer_service())
        if value.kind == "request" and value.shadow:
            eff = self.core.on_shadow_request(mb, value.request_time_ms, self._schedule(ctx, None), now)
        elif value.kind == "request" and not value.mine:
            eff = self.core.on_foreign_request(mb, value.request_time_ms, now)
        elif value.kind == "request":
            reply = value.reply_to
            if reply is not None and not self.replies.allowed(reply, now):
                self._count("reply_dropped")  # not a reply topic of this answers topic, or none that exists
                reply = None
            eff = self.core.on_request(mb, value.request_time_ms, self._schedule(ctx, None), now, reply_to=reply)
        else:
            sched = self._schedule(ctx, mb.schedule_version) if mb.has_request else None
            eff = self.core.on_score(mb, score_of(value), sched, now)
        yield from self._apply(eff, mb, ctx.timer_service())

    def on_timer(self, timestamp, ctx):
        now = max(int(time.time() * 1000), timestamp)
        value = self.mailbox.value()
        if value is None:
            return  # nothing stored for this key (already cleared)
        mb = from_state(ctx.get_current_key(), value)
        inherited = self._inherited(mb, now)
        if inherited is not None:
            yield from self._apply(inherited, mb, ctx.timer_service())
        sched = self._schedule(ctx, mb.schedule_version) if mb.has_request else None
        yield from self._apply(self.core.on_timer(mb, sched, now), mb, ctx.timer_service())


def build(env: StreamExecutionEnvironment, settings: RendezvousSettings, source: DataStream | None = None,
          schedules: DataStream | None = None, sink=None) -> DataStream:
    """`sink` receives (topic, key, payload) rows (`jobs.common.kafka.ROUTED`): answers (and their copies for
    return addresses), a version taking over's shadow answers (`settings.shadow_topic`) and late scores keyed by
    request id, quarantine records."""
    from jobs.common.kafka import ROUTED, kafka_source, routed_kafka_sink

    data = source if source is not None else kafka_source(
        env, settings.kafka, settings.input_topics, settings.group_id,
        uid="rendezvous-source", name="requests.augmented + scores", start=settings.start, positioned=True)
    sched = schedules if schedules is not None else kafka_source(
        env, settings.kafka, settings.schedules_topic, f"{settings.group_id}-schedules",
        uid="rendezvous-schedules-source", name=settings.schedules_topic, start="earliest")
    keyed = data.flat_map(Envelopes(settings), output_type=ENVELOPE).uid("rendezvous-envelope").name("envelope") \
        .key_by(lambda e: e[1], key_type=Types.STRING())
    out = keyed.connect(sched.broadcast(SCHEDULES_STATE)).process(RendezvousFunction(settings), output_type=ROUTED) \
        .uid(MAILBOX_UID).name("rendezvous")
    out.sink_to(sink if sink is not None else routed_kafka_sink(settings.kafka, settings.sink_linger_ms)) \
        .uid("rendezvous-sink") \
        .name(f"{settings.answers_topic} | {settings.late_topic} | {settings.invalid_topic}")
    return out
