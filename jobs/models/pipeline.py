"""requests.augmented [joined with the card's upstream scores] -> async model UDF (unordered) -> scores."""

from __future__ import annotations

from pyflink.common import Time, Types
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.async_data_stream import AsyncDataStream

from jobs.models.settings import ModelJobSettings


def build(env: StreamExecutionEnvironment, settings: ModelJobSettings,
          source: DataStream | None = None, sink=None) -> DataStream:
    from jobs.common.kafka import kafka_sink, kafka_source
    from model_udfs.async_udf import ModelAsyncFunction

    card = settings.card
    p = settings.uid_prefix
    stream = source if source is not None else kafka_source(
        env, settings.kafka, settings.source_topic, settings.group_id, uid=f"{p}-source",
        name=f"{settings.source_topic} ({card.key})", start=settings.start, new_group_starts="latest")
    if card.inputs:  # a cascade: each request waits for its upstream models' scores (jobs.models.cascade)
        from jobs.models.cascade import with_inputs

        stream = with_inputs(env, settings, stream)
    # no operator timeout (0): with one, PyFlink starts and cancels a threading.Timer per record
    # (0.3-0.76 ms each, measured here). The UDF enforces the card's timeout_ms itself (asyncio.wait_for)
    # and turns it into an error score.
    scores = AsyncDataStream.unordered_wait(
        stream, ModelAsyncFunction(card, settings.skip_older_than_ms), Time.milliseconds(0),
        capacity=card.capacity, output_type=Types.STRING(),
    ).uid(f"{p}-predict").name(f"predict {card.key}")
    scores.sink_to(sink if sink is not None
                   else kafka_sink(settings.kafka, settings.sink_topic, settings.sink_linger_ms)) \
        .uid(f"{p}-sink").name(f"{settings.sink_topic}")
    return scores
