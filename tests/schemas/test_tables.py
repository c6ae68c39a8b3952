"""The streams' SQL tables are derived from the records (no JVM)."""

import re
from typing import Any

import pytest
from pydantic import BaseModel

from schemas import records
from schemas.tables import (
    METADATA_COLUMNS,
    TABLES,
    TableDef,
    TableTypeError,
    columns,
    connector_options,
    create_table,
    create_tables,
    sql_type,
)
from schemas.topics import TopicNames


def test_every_stream_has_a_table_of_its_topic():
    names = {t.name for t in TABLES}
    assert names == {"requests", "augmented_requests", "scores", "late_scores", "answers", "quarantine",
                     "lifecycle", "quality", "schedules", "registry", "labels", "metrics", "transitions"}
    assert {t.topic_field for t in TABLES} == set(TopicNames.__dataclass_fields__)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_field_of_the_record_is_a_column_with_its_mapped_type(table):
    ddl = create_table(table, connector_options("t", "k:9092"))
    body = ddl.split("\n) WITH (")[0]
    lines = body.splitlines()[1:]
    declared = [ln.strip().rstrip(",") for ln in lines]
    fields = list(table.record.model_fields)
    assert [d.split("`")[1] for d in declared[:len(fields)]] == fields
    for name, d in zip(fields, declared):
        assert d == f"`{name}` {sql_type(table.record.model_fields[name].annotation, name)}"
    assert [d.split("`")[1] for d in declared[len(fields):len(fields) + 3]] == [m[0] for m in METADATA_COLUMNS]


def test_types_are_mapped_deliberately():
    answer = dict(columns(records.Answer))
    assert answer["request_id"] == "STRING"
    assert answer["model_id"] == "STRING"  # str | None
    assert answer["stage"] == "BIGINT"  # int | None
    assert answer["trigger"] == "STRING"  # Literal of str
    assert answer["is_default"] == "BOOLEAN"
    assert answer["output"] == "MAP<STRING, STRING>"  # free shape
    assert answer["timings"] == ("MAP<STRING, ROW<`model_version` STRING, `latency_ms` BIGINT, `finished_at_ms` "
                                 "BIGINT, `received_at_ms` BIGINT, `started_at_ms` BIGINT, `arrived_after_ms` BIGINT, "
                                 "`error` STRING>>")
    aug = dict(columns(records.AugmentedRequest))
    assert aug["request"].startswith("ROW<`request_id` STRING, `entity_id` STRING, `event_time_ms` BIGINT, "
                                     "`amount` DOUBLE,")
    assert aug["features"].startswith("ROW<`entity_count` BIGINT,")
    assert dict(columns(records.QuarantineRecord))["reasons"].startswith("ARRAY<ROW<`code` STRING, `field` STRING")
    assert dict(columns(records.ExpectationOutcome))["observed_value"] == "STRING"  # Any
    assert dict(columns(records.ExpectationOutcome))["examples"] == "ARRAY<STRING>"
    assert dict(columns(records.Stage))["split"] == "MAP<STRING, BIGINT>"
    assert dict(columns(records.LateScore))["score"].startswith("ROW<`request_id` STRING, `model_id` STRING")


def test_a_change_in_a_record_changes_its_table():
    class Before(records.Record):
        a: int
        b: str | None = None

    class After(records.Record):
        a: float
        b: str | None = None
        c: dict[str, int] = {}

    t1, t2 = TableDef("x", "answers", Before), TableDef("x", "answers", After)
    opts = connector_options("t", "k:9092")
    assert "`a` BIGINT" in create_table(t1, opts) and "`a` DOUBLE" in create_table(t2, opts)
    assert "`c` MAP<STRING, BIGINT>" in create_table(t2, opts)


def test_a_type_without_a_deliberate_sql_type_is_an_error_naming_the_field():
    class Odd(BaseModel):
        when: bytes

    class Mixed(BaseModel):
        v: int | str

    class Keys(BaseModel):
        d: dict[int, Any]

    for model, name in ((Odd, "Odd.when"), (Mixed, "Mixed.v"), (Keys, "Keys.d")):
        with pytest.raises(TableTypeError, match=re.escape(name)):
            columns(model)


def test_connector_options_bounded_secured_and_quoted():
    o = connector_options("answers-x", "h:1", {"security.protocol": "SASL_PLAINTEXT",
                                               "sasl.jaas.config": "x password='p';"}, bounded=True)
    assert o["topic"] == "answers-x" and o["properties.bootstrap.servers"] == "h:1"
    assert o["scan.startup.mode"] == "earliest-offset" and o["scan.bounded.mode"] == "latest-offset"
    assert o["properties.security.protocol"] == "SASL_PLAINTEXT"
    ddl = create_table(TABLES[0], o)
    assert "'properties.sasl.jaas.config' = 'x password=''p'';'" in ddl
    c = connector_options("t", "h:1", start="committed", group_id="g")
    assert c["scan.startup.mode"] == "group-offsets" and c["properties.group.id"] == "g"
    assert "scan.bounded.mode" not in c
    with pytest.raises(ValueError):
        connector_options("t", "h:1", start="sometime")


def test_tables_follow_the_topic_names():
    ddl = create_tables("h:1", TopicNames.suffixed("abc"))
    assert "'topic' = 'answers-abc'" in ddl["answers"] and "'topic' = 'models-abc'" in ddl["registry"]
    only = create_tables("h:1", TopicNames.suffixed("abc"), only_topics={"scores-abc"})
    assert list(only) == ["scores"]
    assert "METADATA FROM 'timestamp' VIRTUAL" in ddl["scores"] and "WATERMARK FOR `kafka_time`" in ddl["scores"]
