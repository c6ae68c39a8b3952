"""The Flink side of a cascade's join (`jobs.models.inputs`, pure): the model job's augmented requests
connected with its upstream models' scores, keyed by request id, through `InputsJoinFunction`."""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedCoProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from jobs.models.inputs import (
    InputsJoin,
    Pending,
    Step,
    request_id_of_request,
    request_id_of_score,
)
from jobs.models.settings import ModelJobSettings


class InputsJoinFunction(KeyedCoProcessFunction):
    """Maps one value state and processing-time timers onto `InputsJoin`. Metrics (group `model`, variable
    `model` = id@version): `inputs_joined`, `inputs_timed_out`, `inputs_orphans`, `inputs_duplicates`."""

    def __init__(self, inputs: list[str], timeout_ms: int, key: str):
        self.join = InputsJoin(inputs, timeout_ms)
        self.key = key

    def open(self, runtime_context: RuntimeContext):
        self.state = runtime_context.get_state(ValueStateDescriptor("inputs-pending", Types.STRING()))
        self.joined = self.timed_out = self.orphans = self.duplicates = 0
        try:
            group = runtime_context.get_metrics_group().add_group("model", self.key)
            group.gauge("inputs_joined", lambda: self.joined)
            group.gauge("inputs_timed_out", lambda: self.timed_out)
            group.gauge("inputs_orphans", lambda: self.orphans)
            group.gauge("inputs_duplicates", lambda: self.duplicates)
        except Exception:  # noqa: BLE001 - metrics are optional
            pass

    def _apply(self, step: Step, ctx):
        if step.pending is None:
            self.state.clear()
        else:
            self.state.update(step.pending.to_state())
        if step.timer_ms is not None:
            ctx.timer_service().register_processing_time_timer(step.timer_ms)
        self.orphans += step.orphans
        self.duplicates += step.duplicates
        if step.emit is not None:
            self.timed_out += bool(step.timed_out)
            self.joined += not step.timed_out
            yield step.emit

    def process_element1(self, value, ctx):
        now = ctx.timer_service().current_processing_time()
        yield from self._apply(self.join.on_request(Pending.from_state(self.state.value()), value or "", now), ctx)

    def process_element2(self, value, ctx):
        now = ctx.timer_service().current_processing_time()
        yield from self._apply(self.join.on_score(Pending.from_state(self.state.value()), value, now), ctx)

    def on_timer(self, timestamp: int, ctx):
        now = ctx.timer_service().current_processing_time()
        yield from self._apply(self.join.on_timer(Pending.from_state(self.state.value()), now), ctx)


def inputs_uid(settings: ModelJobSettings) -> str:
    return f"{settings.uid_prefix}-inputs"


def with_inputs(env, settings: ModelJobSettings, requests: DataStream, upstream: DataStream | None = None) \
        -> DataStream:
    """`requests` joined with the scores of the card's inputs (read from `settings.inputs_topic` unless given)."""
    from jobs.common.kafka import kafka_source

    card = settings.card
    p = settings.uid_prefix
    join = InputsJoin(card.inputs, card.inputs_timeout_ms)
    scores = upstream if upstream is not None else kafka_source(
        env, settings.kafka, settings.inputs_topic, settings.group_id, uid=f"{p}-inputs-source",
        name=f"{settings.inputs_topic} ({', '.join(card.inputs)} -> {card.key})", start=settings.start,
        new_group_starts="latest")
    wanted = scores.filter(join.wanted).uid(f"{p}-inputs-filter").name(f"inputs of {card.key}")
    return requests.connect(wanted) \
        .key_by(request_id_of_request, request_id_of_score, key_type=Types.STRING()) \
        .process(InputsJoinFunction(card.inputs, card.inputs_timeout_ms, card.key), output_type=Types.STRING()) \
        .uid(inputs_uid(settings)).name(f"join inputs {card.key}")
