"""Kafka topic -> parse JSON -> add fields -> Kafka topic. No state; a bare PyFlink pass-through."""

from __future__ import annotations

import json
import time

from pyflink.common import Types
from pyflink.datastream import DataStream, StreamExecutionEnvironment

from jobs.smoke.settings import SmokeSettings


def transform(raw: str) -> str:
    """Parse a JSON object, mark it as seen by the job, and serialise it again."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return json.dumps({"error": "not json", "raw": raw})
    if not isinstance(rec, dict):
        return json.dumps({"error": "not an object", "raw": raw})
    rec["seen_by"] = "smoke"
    rec["processed_at_ms"] = int(time.time() * 1000)
    if isinstance(rec.get("value"), (int, float)):
        rec["doubled"] = rec["value"] * 2
    return json.dumps(rec)


def build(env: StreamExecutionEnvironment, settings: SmokeSettings,
          source: DataStream | None = None, sink=None) -> DataStream:
    from jobs.common.kafka import kafka_sink, kafka_source

    stream = source if source is not None else kafka_source(
        env, settings.kafka, settings.source_topic, settings.group_id, uid="smoke-source", start=settings.start)
    out = stream.map(transform, output_type=Types.STRING()).uid("smoke-transform").name("transform")
    out.sink_to(sink if sink is not None
                else kafka_sink(settings.kafka, settings.sink_topic, settings.sink_linger_ms)).uid("smoke-sink")
    return out
