"""Kafka sources and sinks for the jobs: JSON strings on the wire, built from settings."""

from __future__ import annotations

from pyflink.common import WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)


def kafka_source(env: StreamExecutionEnvironment, bootstrap: str, topics: str | list[str], group_id: str,
                 uid: str, name: str | None = None, start: str = "earliest") -> DataStream:
    """A stream of the topics' values as str.

    `start`: 'committed' (the group's committed offsets, else the earliest: a redeployed job goes on
    where the last one stopped), 'earliest' or 'latest'. A job restored from a savepoint resumes from the
    offsets in the savepoint whatever `start` says."""
    if start == "latest":
        offsets = KafkaOffsetsInitializer.latest()
    elif start == "committed":
        offsets = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    elif start == "earliest":
        offsets = KafkaOffsetsInitializer.earliest()
    else:
        raise ValueError(f"start must be committed, earliest or latest, not {start!r}")
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(*([topics] if isinstance(topics, str) else topics))
        .set_group_id(group_id)
        .set_starting_offsets(offsets)
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("partition.discovery.interval.ms", "60000")
        .set_property("client.id.prefix", group_id)
        .build()
    )
    return env.from_source(source, WatermarkStrategy.no_watermarks(), name or uid).uid(uid)


def kafka_sink(bootstrap: str, topic: str, linger_ms: int = 0) -> KafkaSink:
    """At-least-once sink of str values (consumers de-duplicate by request id)."""
    return (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", str(linger_ms))
        .build()
    )
