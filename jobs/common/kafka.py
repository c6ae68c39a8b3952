"""Kafka sources and sinks of the jobs: JSON strings on the wire, built from the job's KafkaSettings."""

from __future__ import annotations

from pyflink.common import Types, WatermarkStrategy
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

from jobs.common.settings import KafkaSettings

ROUTED = Types.ROW_NAMED(["topic", "key", "payload"], [Types.STRING(), Types.STRING(), Types.STRING()])
"""A record for `routed_kafka_sink`: the topic it goes to, its Kafka key (None: none), and its JSON."""

POSITIONED = Types.ROW_NAMED(["topic", "partition", "offset", "value"],
                             [Types.STRING(), Types.INT(), Types.LONG(), Types.STRING()])
"""A record of a `positioned` source: where it sits (topic, partition, offset) and its value (None: a null value)."""


def kafka_source(env: StreamExecutionEnvironment, kafka: KafkaSettings, topics: str | list[str], group_id: str,
                 uid: str, name: str | None = None, start: str = "earliest",
                 new_group_starts: str = "earliest", positioned: bool = False) -> DataStream:
    """A stream of the topics' values as str; `positioned`: of `POSITIONED` rows (deserialized in the JVM by the
    project's `io.rendezvous.flink.PositionedRecordDeserializer`), for a job whose records are handed over between
    versions by transition tokens (jobs/common/transition.py).

    `start`: 'committed' (the group's committed offsets: a redeployed job goes on where the last one
    stopped; a group with none starts at `new_group_starts`, 'earliest' or 'latest'), 'earliest' or
    'latest'. A job restored from a savepoint resumes from the offsets in the savepoint whatever `start`
    says."""
    if start == "latest":
        offsets = KafkaOffsetsInitializer.latest()
    elif start == "committed":
        offsets = KafkaOffsetsInitializer.committed_offsets(
            KafkaOffsetResetStrategy.LATEST if new_group_starts == "latest" else KafkaOffsetResetStrategy.EARLIEST)
    elif start == "earliest":
        offsets = KafkaOffsetsInitializer.earliest()
    else:
        raise ValueError(f"start must be committed, earliest or latest, not {start!r}")
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka.bootstrap_servers)
        .set_topics(*([topics] if isinstance(topics, str) else topics))
        .set_group_id(group_id)
        .set_starting_offsets(offsets)
        .set_property("partition.discovery.interval.ms", "60000")
        .set_property("client.id.prefix", group_id)
    )
    for k, v in kafka.properties.items():
        builder = builder.set_property(k, v)
    if positioned:
        from pyflink.java_gateway import get_gateway

        builder._j_builder.setDeserializer(get_gateway().jvm.io.rendezvous.flink.PositionedRecordDeserializer())
        return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), name or uid,
                               type_info=POSITIONED).uid(uid)
    builder._j_builder.setDeserializer(_null_tolerant_values())
    return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), name or uid).uid(uid)


def _null_tolerant_values():
    """Record values as str, and None for a record with a null value (a tombstone, or a producer's bug).

    PyFlink's `set_value_only_deserializer(SimpleStringSchema())` throws on a null value inside the JVM,
    before any Python code can quarantine it, and the job restarts on that record forever. Kafka's own
    StringDeserializer (as shaded in the connector) returns null, which reaches Python as None."""
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import get_java_class

    jvm = get_gateway().jvm
    return jvm.org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema \
        .valueOnly(get_java_class(jvm.org.apache.flink.kafka.shaded.org.apache.kafka.common.serialization
                                  .StringDeserializer))


def _sink_builder(kafka: KafkaSettings, linger_ms: int):
    builder = (KafkaSink.builder()
               .set_bootstrap_servers(kafka.bootstrap_servers)
               .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
               .set_property("linger.ms", str(linger_ms)))
    for k, v in kafka.properties.items():
        builder = builder.set_property(k, v)
    return builder


def kafka_sink(kafka: KafkaSettings, topic: str, linger_ms: int = 0) -> KafkaSink:
    """At-least-once sink of str values to one topic (consumers de-duplicate by request id)."""
    return (_sink_builder(kafka, linger_ms)
            .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic(topic)
                                   .set_value_serialization_schema(SimpleStringSchema()).build())
            .build())


def routed_kafka_sink(kafka: KafkaSettings, linger_ms: int = 0) -> KafkaSink:
    """At-least-once sink of `ROUTED` rows: each row's payload goes to the row's topic, keyed by the row's key.

    Serialised in the JVM by the project's `io.rendezvous.flink.RoutedRecordSerializer` (jvm/, built by
    `make setup` into the connector jar directory), so no Python step runs per record. Answers are keyed by
    request id: with more than one partition, all answers of a request land in one partition, in order,
    which is what the consumer's rule (first answer wins) needs."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    builder = _sink_builder(kafka, linger_ms)
    builder._j_builder.setRecordSerializer(jvm.io.rendezvous.flink.RoutedRecordSerializer())
    return builder.build()
