"""augmented requests + scores (keyed by request id) x schedules (broadcast) -> answers (+ late scores).

The Flink function only maps typed keyed state and processing-time timers onto `core.Rendezvous`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from pyflink.common import Row, Time, Types
from pyflink.datastream import DataStream, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, MapFunction
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from jobs.common.records import QuarantineRecord, Reason, Schedule, Score, Stage
from jobs.rendezvous.core import HeldScore, Mailbox, Rendezvous, RendezvousConfig

# One output stream, routed to topics by record type. (Side outputs from on_timer are emitted as main
# output in thread mode in PyFlink 2.3 - a ClassCastException at run time - so none are used.)
ANSWER_PREFIX = '{"request_id":'
LATE_PREFIX = '{"score":'
QUARANTINE_PREFIX = '{"raw":'


class RouteByRecord:
    """Kafka topic of an output record, from the first field of its JSON (pydantic keeps field order)."""

    def __init__(self, answers: str, late: str, invalid: str):
        self.answers, self.late, self.invalid = answers, late, invalid

    def __call__(self, value: str) -> str:
        if value.startswith(ANSWER_PREFIX):
            return self.answers
        if value.startswith(LATE_PREFIX):
            return self.late
        return self.invalid

ENVELOPE = Types.ROW_NAMED(["kind", "request_id", "request_time_ms", "body"],
                           [Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING()])
SCORE_ROW = Types.ROW_NAMED(
    ["model_version", "output_json", "error", "started_at_ms", "finished_at_ms", "arrived_at_ms",
     "request_time_ms", "received_at_ms"],
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG(), Types.LONG(), Types.LONG(),
     Types.LONG()])
MAILBOX_ROW = Types.ROW_NAMED(
    ["first_seen_ms", "request_time_ms", "received_at_ms", "schedule_version", "stage", "answered_at_ms",
     "expires_at_ms", "scores"],
    [Types.LONG(), Types.LONG(), Types.LONG(), Types.LONG(), Types.INT(), Types.LONG(), Types.LONG(),
     Types.MAP(Types.STRING(), SCORE_ROW)])
"""The mailbox of one request id: one typed value (one state read and one write per event)."""
SCHEDULES_STATE = MapStateDescriptor("schedules", Types.LONG(), Types.STRING())
ACTIVE = -1  # key of the active schedule's version in the broadcast state
VERSIONS = -2  # key of the JSON list of versions kept (iterating broadcast state fails in thread mode)
KEEP_VERSIONS = 32

BUILTIN_SCHEDULE = Schedule(version=0, name="builtin", stages=[Stage(deadline_ms=100, models=["fraud-champion"])],
                            default_output={"fraud_probability": 0.0, "decision": "review"})


@dataclass(frozen=True)
class RendezvousSettings:
    bootstrap: str
    augmented_topic: str = "requests.augmented"
    scores_topic: str = "scores"
    schedules_topic: str = "schedules"
    answers_topic: str = "answers"
    late_topic: str = "scores.late"
    invalid_topic: str = "requests.quarantine"
    group_id: str = "rendezvous"
    start: str = "committed"
    builtin_schedule: Schedule = field(default_factory=lambda: BUILTIN_SCHEDULE)
    orphan_timeout_ms: int = 60_000
    answered_retention_ms: int = 30_000
    checkpoint_interval_ms: int = 10_000


def envelope(raw: str) -> Row:
    """Tell augmented requests from scores, and pull out the key."""
    try:
        rec = json.loads(raw)
        if isinstance(rec, dict) and isinstance(rec.get("request"), dict):
            r = rec["request"]
            return Row(kind="request", request_id=str(r["request_id"]), request_time_ms=int(r["event_time_ms"]),
                       body=raw)
        if isinstance(rec, dict) and "model_id" in rec and rec.get("request_id"):
            return Row(kind="score", request_id=str(rec["request_id"]), request_time_ms=int(rec["request_time_ms"]),
                       body=raw)
    except Exception:  # noqa: BLE001
        pass
    return Row(kind="invalid", request_id="", request_time_ms=0, body=raw)


class Envelope(MapFunction):
    def map(self, value):
        return envelope(value)


class RendezvousFunction(KeyedBroadcastProcessFunction):
    def __init__(self, builtin_schedule_json: str, orphan_timeout_ms: int, answered_retention_ms: int,
                 state_ttl_ms: int):
        self.builtin_schedule_json = builtin_schedule_json
        self.orphan_timeout_ms = orphan_timeout_ms
        self.answered_retention_ms = answered_retention_ms
        self.state_ttl_ms = state_ttl_ms

    def open(self, runtime_context: RuntimeContext):
        ttl = (StateTtlConfig.new_builder(Time.milliseconds(self.state_ttl_ms))
               .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
               .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired).build())
        mailbox = ValueStateDescriptor("mailbox", MAILBOX_ROW)
        if self.state_ttl_ms > 0:
            mailbox.enable_time_to_live(ttl)
        self.mailbox = runtime_context.get_state(mailbox)
        self.core = Rendezvous(RendezvousConfig(orphan_timeout_ms=self.orphan_timeout_ms,
                                                answered_retention_ms=self.answered_retention_ms))
        self.builtin = Schedule.parse(self.builtin_schedule_json)
        self._schedule_cache: dict[int, Schedule] = {}
        # the active schedule, cached in memory: reading broadcast state per record is a round trip to the
        # JVM in process mode. None = not known yet (read once from the broadcast state, e.g. after restore)
        self._active: Schedule | None = None
        self.counters = {}
        try:
            group = runtime_context.get_metrics_group().add_group("rendezvous")
            for name in ("answers", "answers_default", "late_scores", "duplicate_requests", "dropped_scores",
                         "invalid"):
                self.counters[name] = group.counter(name)
        except Exception:  # noqa: BLE001 - metrics are optional (not every execution mode has them)
            self.counters = {}

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
        state.put(sched.version, value)
        active = int(state.get(ACTIVE)) if state.contains(ACTIVE) else None
        if active is None or sched.version >= active:
            state.put(ACTIVE, str(sched.version))
        versions = sorted(set(json.loads(state.get(VERSIONS)) if state.contains(VERSIONS) else []) | {sched.version})
        for old in versions[:-KEEP_VERSIONS]:
            state.remove(old)
            self._schedule_cache.pop(old, None)
        state.put(VERSIONS, json.dumps(versions[-KEEP_VERSIONS:]))
        self._schedule_cache[sched.version] = sched
        if self._active is None or sched.version >= self._active.version:
            self._active = sched

    def _schedule(self, ctx, version: int | None) -> Schedule:
        """The schedule of `version` (None: the active one), from memory; the broadcast state is read only
        when memory has not seen it yet (after a restore): in process mode every read is a JVM round trip."""
        if version is None:
            if self._active is None:
                state = ctx.get_broadcast_state(SCHEDULES_STATE)
                self._active = (self._from_state(state, int(state.get(ACTIVE))) if state.contains(ACTIVE)
                                else None) or self.builtin
            return self._active
        if version == self.builtin.version:
            return self.builtin
        sched = self._schedule_cache.get(version)
        if sched is None:
            # a version evicted from the state (more than KEEP_VERSIONS newer ones): use the active one
            sched = self._from_state(ctx.get_broadcast_state(SCHEDULES_STATE), version) or self._schedule(ctx, None)
            self._schedule_cache[version] = sched
        return sched

    @staticmethod
    def _from_state(state, version: int) -> Schedule | None:
        return Schedule.parse(state.get(version)) if state.contains(version) else None

    # ---------------------------------------------------------------- mailbox <-> typed state
    def _load(self, request_id: str, now: int, row=None):
        row = row if row is not None else self.mailbox.value()
        if row is None:
            return Mailbox(request_id=request_id, first_seen_ms=now)
        mb = Mailbox(request_id=request_id, first_seen_ms=row.first_seen_ms, request_time_ms=row.request_time_ms,
                     received_at_ms=row.received_at_ms, schedule_version=row.schedule_version,
                     stage=row.stage or 0, answered_at_ms=row.answered_at_ms, expires_at_ms=row.expires_at_ms)
        for model_id, sc in (row.scores or {}).items():
            mb.scores[model_id] = HeldScore(
                sc.model_version, json.loads(sc.output_json) if sc.output_json else None, sc.error,
                sc.started_at_ms, sc.finished_at_ms, sc.arrived_at_ms, sc.request_time_ms, sc.received_at_ms)
        return mb

    def _save(self, mb) -> None:
        scores = {
            model_id: Row(model_version=h.model_version,
                          output_json=json.dumps(h.output) if h.output is not None else None, error=h.error,
                          started_at_ms=h.started_at_ms, finished_at_ms=h.finished_at_ms,
                          arrived_at_ms=h.arrived_at_ms, request_time_ms=h.request_time_ms,
                          received_at_ms=h.received_at_ms)
            for model_id, h in mb.scores.items()}
        self.mailbox.update(Row(first_seen_ms=mb.first_seen_ms, request_time_ms=mb.request_time_ms,
                                received_at_ms=mb.received_at_ms, schedule_version=mb.schedule_version,
                                stage=mb.stage, answered_at_ms=mb.answered_at_ms, expires_at_ms=mb.expires_at_ms,
                                scores=scores))

    def _apply(self, eff, mb, timer_service):
        for t in eff.timers:
            timer_service.register_processing_time_timer(t)
        if eff.clear:
            self.mailbox.clear()
        elif eff.changed:
            self._save(mb)
        self._count("duplicate_requests", int(eff.duplicate_request))
        self._count("dropped_scores", eff.dropped_scores)
        for late in eff.late:
            self._count("late_scores")
            yield late.to_json()
        if eff.answer is not None:
            self._count("answers")
            self._count("answers_default", int(eff.answer.is_default))
            yield eff.answer.to_json()

    # ---------------------------------------------------------------- events
    def process_element(self, value, ctx):
        now = int(time.time() * 1000)
        if value.kind == "invalid":
            self._count("invalid")
            yield invalid_record(value.body)
            return
        mb = self._load(value.request_id, now)
        if value.kind == "request":
            eff = self.core.on_request(mb, value.request_time_ms, self._schedule(ctx, None), now)
        else:
            try:
                score = Score.parse(value.body)
            except Exception:  # noqa: BLE001
                self._count("invalid")
                yield invalid_record(value.body)
                return
            sched = self._schedule(ctx, mb.schedule_version) if mb.has_request else None
            eff = self.core.on_score(mb, score, sched, now)
        yield from self._apply(eff, mb, ctx.timer_service())

    def on_timer(self, timestamp, ctx):
        now = max(int(time.time() * 1000), timestamp)
        row = self.mailbox.value()
        if row is None:
            return  # nothing stored for this key (already cleared)
        mb = self._load(ctx.get_current_key(), now, row)
        sched = self._schedule(ctx, mb.schedule_version) if mb.has_request else None
        eff = self.core.on_timer(mb, sched, now)
        yield from self._apply(eff, mb, ctx.timer_service())


def invalid_record(raw: str) -> str:
    return QuarantineRecord(raw=raw, reasons=[Reason(code="invalid", message="neither an augmented request nor a "
                                                                               "score")],
                            source_topic="requests.augmented|scores", stage="rendezvous",
                            quarantined_at_ms=int(time.time() * 1000)).to_json()


def build(env: StreamExecutionEnvironment, settings: RendezvousSettings, source: DataStream | None = None,
          schedules: DataStream | None = None, sink=None) -> DataStream:
    """`sink` receives answers, late scores and quarantine records (see RouteByRecord)."""
    from jobs.common.kafka import kafka_source

    data = source if source is not None else kafka_source(
        env, settings.bootstrap, [settings.augmented_topic, settings.scores_topic], settings.group_id,
        uid="rendezvous-source", name="requests.augmented + scores", start=settings.start)
    sched = schedules if schedules is not None else kafka_source(
        env, settings.bootstrap, settings.schedules_topic, f"{settings.group_id}-schedules",
        uid="rendezvous-schedules-source", name=settings.schedules_topic, start="earliest")
    sched_b = sched.broadcast(SCHEDULES_STATE)
    keyed = data.map(Envelope(), output_type=ENVELOPE).uid("rendezvous-envelope").name("envelope") \
        .key_by(lambda e: e.request_id, key_type=Types.STRING())
    max_deadline = 600_000
    ttl_ms = max_deadline + settings.orphan_timeout_ms + settings.answered_retention_ms + 60_000
    answers = keyed.connect(sched_b).process(
        RendezvousFunction(settings.builtin_schedule.to_json(), settings.orphan_timeout_ms,
                           settings.answered_retention_ms, ttl_ms),
        output_type=Types.STRING()).uid("rendezvous-mailbox").name("rendezvous")
    outputs = sink if sink is not None else routed_kafka_sink(settings)
    answers.sink_to(outputs).uid("rendezvous-sink").name(f"{settings.answers_topic} | {settings.late_topic} | "
                                                          f"{settings.invalid_topic}")
    return answers


def routed_kafka_sink(settings: RendezvousSettings):
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    return (KafkaSink.builder()
            .set_bootstrap_servers(settings.bootstrap)
            .set_record_serializer(
                KafkaRecordSerializationSchema.builder()
                .set_topic_selector(RouteByRecord(settings.answers_topic, settings.late_topic, settings.invalid_topic))
                .set_value_serialization_schema(SimpleStringSchema())
                .build())
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
            .set_property("linger.ms", "0")
            .build())
