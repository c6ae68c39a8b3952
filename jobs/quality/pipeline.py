"""requests -> micro-batches (keyed state + processing-time timer) -> Great Expectations -> quality
(+ a quality_alert LifecycleEvent to lifecycle when a batch fails), through one routed Kafka sink.

All records go to one key: a micro-batch is a slice of the whole stream, validated by one operator
instance (parallelism 1 for that operator; the quality gate is not on the request path). The batch's
records are in list state and its (start, count, timer) in a versioned value state, so a batch in
progress is part of every checkpoint and a restore goes on with it (the source rewinds to the same
checkpoint): no record is lost or counted twice within a batch. A batch emitted after the last
checkpoint is emitted again after a restore (at-least-once sink), possibly cut at another point by the
timer: consumers de-duplicate by (source_topic, batch_start_ms).
"""

from __future__ import annotations

from pyflink.common import Row, Types
from pyflink.datastream import (
    DataStream,
    KeyedProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from jobs.quality.batching import BATCHES_UID, BatchPolicy, Decision, OpenBatch
from jobs.quality.settings import QualitySettings
from jobs.quality.validate import BatchValidator
from schemas.records import LifecycleEvent, QualityResult

UID_PREFIX = "quality"


def alert_for(result: QualityResult) -> LifecycleEvent:
    """The lifecycle alert of a failing batch."""
    return LifecycleEvent(kind="quality_alert", at_ms=result.validated_at_ms, detail={
        "job": "quality", "source_topic": result.source_topic, "suite": result.suite_name,
        "suite_version": result.suite_version, "batch_start_ms": result.batch_start_ms,
        "batch_end_ms": result.batch_end_ms, "records": result.records,
        "failed": [o.label for o in result.failed], "error": result.error})


class QualityBatchFunction(KeyedProcessFunction):
    """Maps keyed state and timers onto `BatchPolicy`; validates a closed batch with `BatchValidator`."""

    def __init__(self, settings: QualitySettings):
        self.policy = BatchPolicy(settings.batch_records, settings.batch_interval_ms)
        self.validator = BatchValidator(settings.suite, settings.source_topic, settings.max_examples)
        self.sink_topic = settings.sink_topic
        self.lifecycle_topic = settings.lifecycle_topic

    def open(self, runtime_context: RuntimeContext):
        self.records = runtime_context.get_list_state(ListStateDescriptor("batch-records", Types.STRING()))
        self.batch = runtime_context.get_state(ValueStateDescriptor("batch", Types.PICKLED_BYTE_ARRAY()))
        self.validator.open()  # imports Great Expectations once per worker, builds the suites

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        now = ctx.timer_service().current_processing_time()
        self.records.add(value if value is not None else "")  # a null value: an unparseable row
        before = OpenBatch.from_state(self.batch.value())
        yield from self._apply(self.policy.on_record(before, now), before, now, ctx.timer_service())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        now = ctx.timer_service().current_processing_time()
        before = OpenBatch.from_state(self.batch.value())
        yield from self._apply(self.policy.on_timer(before, timestamp), before, now, ctx.timer_service())

    def _apply(self, d: Decision, before: OpenBatch | None, now: int, timers):
        if d.delete_timer is not None:
            timers.delete_processing_time_timer(d.delete_timer)
        if d.register_timer is not None:
            timers.register_processing_time_timer(d.register_timer)
        if not d.close:
            if d.batch is not None and d.batch != before:
                self.batch.update(d.batch.to_state())
            return
        raws = list(self.records.get() or [])
        self.records.clear()
        self.batch.clear()
        result = self.validator.validate(raws, before.start_ms if before else now, now)
        yield Row(self.sink_topic, None, result.to_json())
        if not result.success and self.lifecycle_topic:
            yield Row(self.lifecycle_topic, None, alert_for(result).to_json())


def build(env: StreamExecutionEnvironment, settings: QualitySettings,
          source: DataStream | None = None, sink=None) -> DataStream:
    """`sink` receives (topic, key, payload) rows (`jobs.common.kafka.ROUTED`): quality results and alerts."""
    from jobs.common.kafka import ROUTED, kafka_source, routed_kafka_sink

    p = UID_PREFIX
    raw = source if source is not None else kafka_source(
        env, settings.kafka, settings.source_topic, settings.group_id, uid=f"{p}-source",
        name=settings.source_topic, start=settings.start)
    out = raw.key_by(lambda _: 0, key_type=Types.INT()) \
        .process(QualityBatchFunction(settings), output_type=ROUTED) \
        .uid(BATCHES_UID).name(f"quality {settings.suite['name']}")
    out.sink_to(sink if sink is not None else routed_kafka_sink(settings.kafka, settings.sink_linger_ms)) \
        .uid(f"{p}-sink").name(f"{settings.sink_topic} | {settings.lifecycle_topic or '-'}")
    return out
