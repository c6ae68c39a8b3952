"""requests -> validate (bad -> requests.quarantine) -> key by entity -> features in keyed state -> requests.augmented."""

from __future__ import annotations

import time

from pyflink.common import Row, Time, Types
from pyflink.datastream import (
    DataStream,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import (
    ListStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)

from jobs.external_state.features import EntityState, FeatureComputer
from jobs.external_state.settings import ExternalStateSettings
from jobs.external_state.validation import validate
from schemas.records import AugmentedRequest, Request

QUARANTINE_TAG = OutputTag("quarantine", Types.STRING())

VALID_ROW = Types.ROW_NAMED(["entity_id", "request_json"], [Types.STRING(), Types.STRING()])
STATS_ROW = Types.ROW_NAMED(["count", "mean", "m2", "last_event_ms"],
                            [Types.LONG(), Types.DOUBLE(), Types.DOUBLE(), Types.LONG()])
WINDOW_ENTRY = Types.ROW_NAMED(["ts", "amount"], [Types.LONG(), Types.DOUBLE()])


class Validate(ProcessFunction):
    """Valid requests go on as (entity_id, json); bad ones to the quarantine side output."""

    def __init__(self, source_topic: str):
        self.source_topic = source_topic

    def process_element(self, value, ctx):
        result = validate(value, self.source_topic)
        if isinstance(result, Request):
            yield Row(entity_id=result.entity_id, request_json=result.to_json())
        else:
            yield QUARANTINE_TAG, result.to_json()


class AugmentWithFeatures(KeyedProcessFunction):
    """Per-entity features in typed keyed state (with TTL), computed by FeatureComputer."""

    def __init__(self, window_ms: int, ttl_days: int):
        self.window_ms = window_ms
        self.ttl_days = ttl_days

    def open(self, runtime_context: RuntimeContext):
        ttl = (StateTtlConfig.new_builder(Time.days(self.ttl_days))
               .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
               .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
               .build())
        stats = ValueStateDescriptor("entity-stats", STATS_ROW)
        stats.enable_time_to_live(ttl)
        window = ListStateDescriptor("entity-window", WINDOW_ENTRY)
        window.enable_time_to_live(ttl)
        self.stats = runtime_context.get_state(stats)
        self.window = runtime_context.get_list_state(window)
        self.computer = FeatureComputer(self.window_ms)

    def process_element(self, value, ctx):
        req = Request.parse(value.request_json)
        row = self.stats.value()
        st = EntityState()
        if row is not None:
            st.count, st.mean, st.m2 = int(row.count), float(row.mean), float(row.m2)
            st.last_event_ms = int(row.last_event_ms) if row.last_event_ms is not None else None
            st.window = [(int(e.ts), float(e.amount)) for e in (self.window.get() or [])]
        features = self.computer.update(st, req)
        self.stats.update(Row(count=st.count, mean=st.mean, m2=st.m2, last_event_ms=st.last_event_ms))
        self.window.update([Row(ts=ts, amount=a) for ts, a in st.window])
        yield AugmentedRequest(request=req, features=features, entity_seq=st.count,
                               augmented_at_ms=int(time.time() * 1000)).to_json()


def build(env: StreamExecutionEnvironment, settings: ExternalStateSettings,
          source: DataStream | None = None, sink=None, quarantine_sink=None) -> DataStream:
    from jobs.common.kafka import kafka_sink, kafka_source

    raw = source if source is not None else kafka_source(
        env, settings.kafka, settings.source_topic, settings.group_id, uid="external-state-source",
        name=settings.source_topic, start=settings.start)
    valid = raw.process(Validate(settings.source_topic), output_type=VALID_ROW) \
        .uid("external-state-validate").name("validate")
    quarantined = valid.get_side_output(QUARANTINE_TAG)
    augmented = valid.key_by(lambda r: r.entity_id, key_type=Types.STRING()) \
        .process(AugmentWithFeatures(settings.window_ms, settings.state_ttl_days), output_type=Types.STRING()) \
        .uid("external-state-features").name("features")
    augmented.sink_to(sink if sink is not None else kafka_sink(settings.kafka, settings.sink_topic)) \
        .uid("external-state-sink").name(settings.sink_topic)
    quarantined.sink_to(quarantine_sink if quarantine_sink is not None
                        else kafka_sink(settings.kafka, settings.quarantine_topic)) \
        .uid("external-state-quarantine-sink").name(settings.quarantine_topic)
    return augmented
