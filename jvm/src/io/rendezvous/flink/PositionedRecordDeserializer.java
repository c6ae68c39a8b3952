package io.rendezvous.flink;

import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Deserializes a Kafka record into a row {@code (topic, partition, offset, value)}: the value as a UTF-8 string
 * (null for a null value, which Python quarantines) and where the record sits in its topic. The thread-mode jobs
 * read their input through it: a transition token (jobs/common/transition.py) hands over each partition at a
 * position, so which job owns a record depends on its partition and offset.
 */
public final class PositionedRecordDeserializer implements KafkaRecordDeserializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
        byte[] value = record.value();
        out.collect(Row.of(record.topic(), record.partition(), record.offset(),
                value == null ? null : new String(value, StandardCharsets.UTF_8)));
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW_NAMED(new String[] {"topic", "partition", "offset", "value"},
                Types.STRING, Types.INT, Types.LONG, Types.STRING);
    }
}
