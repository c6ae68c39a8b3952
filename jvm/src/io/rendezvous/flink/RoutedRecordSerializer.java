package io.rendezvous.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.flink.types.Row;

/**
 * Serializes the jobs' routed rows, {@code (topic, key, payload)} strings, into Kafka records: each goes
 * to its row's topic, keyed by its key (no key when null), with the payload as value. Runs in the JVM,
 * so no Python step runs per record (see jobs/common/kafka.py, routed_kafka_sink).
 */
public final class RoutedRecordSerializer implements KafkaRecordSerializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    @Override
    public ProducerRecord<byte[], byte[]> serialize(Row row, KafkaSinkContext context, Long timestamp) {
        String topic = (String) row.getField(0);
        Object key = row.getField(1);
        Object payload = row.getField(2);
        // no timestamp (null, or a negative one: a record without) lets the producer stamp it, as Flink's own
        // serializers do; a negative one would be refused
        return new ProducerRecord<>(topic, null, timestamp == null || timestamp < 0 ? null : timestamp,
                key == null ? null : ((String) key).getBytes(StandardCharsets.UTF_8),
                payload == null ? null : ((String) payload).getBytes(StandardCharsets.UTF_8));
    }
}
