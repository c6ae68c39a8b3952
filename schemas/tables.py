"""Flink SQL tables over the streams: one `CREATE TABLE` per topic, derived from its record (schemas.records).

The record's pydantic model stays the one definition; the columns are its fields, in order, with these
SQL types (`sql_type`):

| record field | SQL type |
|---|---|
| `str`, a `Literal` of strings | `STRING` |
| `int`, a `Literal` of ints | `BIGINT` (the `*_ms` times are epoch ms: `TO_TIMESTAMP_LTZ(x, 3)`) |
| `float` | `DOUBLE` |
| `bool` | `BOOLEAN` |
| `X | None` | the type of `X` (every column is nullable) |
| a nested record (e.g. `AugmentedRequest.request`) | `ROW<...>` of its fields (`request.amount`) |
| `dict[str, Any]` of free shape (`Answer.output`, `Score.output`, `detail`, `payload`, `card`) | `MAP<STRING, STRING>`: every value as text, numbers as written (`CAST(output['fraud_probability'] AS DOUBLE)`), nested objects and lists as their JSON text |
| `dict[str, X]` (`Answer.timings`) | `MAP<STRING, type of X>` (`timings['m@1'].latency_ms`) |
| `list[X]` | `ARRAY<type of X>` (1-based: `reasons[1].code`) |
| `Any` | `STRING` (the value's text or JSON text) |

Any other type is an error naming the record and field (`TableTypeError`): a new field with a type that has
no deliberate SQL type breaks the tests, not a query.

Each table also has Kafka metadata columns: `kafka_time` (the record's Kafka timestamp, `TIMESTAMP_LTZ(3)`,
an event-time attribute with a watermark `WATERMARK_DELAY` behind it; broker append time for `answers`),
`kafka_partition` and `kafka_offset`. They are virtual (read, never written).

Pure: no PyFlink here. `jobs.sql.tables` registers these in a TableEnvironment (the catalog the `rendezvous
sql` tool and SQL jobs share: `CATALOG`.`DATABASE`, Flink's default in-memory catalog)."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from schemas import records
from schemas.flink_types import SCALAR_SQL_TYPES as _SCALARS
from schemas.topics import TopicNames

CATALOG = "default_catalog"
DATABASE = "default_database"
"""Where the tables are registered: Flink's default in-memory catalog and database, so queries name tables
bare (`answers`)."""


@dataclass(frozen=True)
class TableDef:
    name: str
    """The SQL table name."""
    topic_field: str
    """The `TopicNames` field of its topic."""
    record: type[records.Record]


TABLES: tuple[TableDef, ...] = (
    TableDef("requests", "requests", records.Request),
    TableDef("augmented_requests", "augmented", records.AugmentedRequest),
    TableDef("scores", "scores", records.Score),
    TableDef("late_scores", "late", records.LateScore),
    TableDef("answers", "answers", records.Answer),
    TableDef("quarantine", "quarantine", records.QuarantineRecord),
    TableDef("lifecycle", "lifecycle", records.LifecycleEvent),
    TableDef("quality", "quality", records.QualityResult),
    TableDef("schedules", "schedules", records.Schedule),
    TableDef("registry", "registry", records.ModelEntry),  # `models` is a keyword (SHOW MODELS)
    TableDef("labels", "labels", records.Label),
    TableDef("metrics", "metrics", records.Metrics),
    TableDef("transitions", "transitions", records.Transitions),
)
"""Every stream of the architecture as a table (docs/architecture.md, "Streams")."""

METADATA_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("kafka_time", "TIMESTAMP_LTZ(3)", "timestamp"),
    ("kafka_partition", "INT", "partition"),
    ("kafka_offset", "BIGINT", "offset"),
)
"""(column, SQL type, Kafka connector metadata key) added to every table."""

WATERMARK_DELAY = "5"
"""Seconds the watermark of `kafka_time` lags behind the largest one seen (streaming jobs' event-time
windows; batch queries ignore it)."""

STARTUP_MODES = {"earliest": "earliest-offset", "latest": "latest-offset", "committed": "group-offsets"}


class TableTypeError(TypeError):
    """A record field has a type with no deliberate SQL type."""


def quote(identifier: str) -> str:
    """A SQL identifier in backticks (record fields such as `trigger`, `output`, `model` are SQL keywords)."""
    return "`" + identifier.replace("`", "``") + "`"


def literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_type(annotation: Any, where: str) -> str:
    """The SQL type of a record field's annotation; `where` (`Record.field`) names it in errors."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return "STRING"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return sql_type(rest[0], where)
        raise TableTypeError(f"{where}: a union of {rest} has no SQL type; give the field one type "
                             f"(or map it in schemas/tables.py)")
    if origin is Literal:
        kinds = {type(v) for v in args}
        if len(kinds) == 1 and next(iter(kinds)) in _SCALARS:
            return _SCALARS[next(iter(kinds))]
        raise TableTypeError(f"{where}: a Literal of mixed or non-scalar values {args} has no SQL type")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return row_type(annotation)
    if origin is dict:
        key, value = args if args else (Any, Any)
        if key is not str:
            raise TableTypeError(f"{where}: a dict with {key} keys has no SQL type (JSON object keys are strings)")
        return f"MAP<STRING, {'STRING' if value is Any else sql_type(value, where + '[value]')}>"
    if origin is list:
        item = args[0] if args else Any
        return f"ARRAY<{sql_type(item, where + '[item]')}>"
    raise TableTypeError(f"{where}: the type {annotation!r} has no SQL type; map it deliberately in "
                         f"schemas/tables.py (sql_type)")


def row_type(model: type[BaseModel]) -> str:
    """A nested record as `ROW<...>` of its fields."""
    return "ROW<" + ", ".join(f"{quote(n)} {t}" for n, t in columns(model)) + ">"


def columns(model: type[BaseModel]) -> list[tuple[str, str]]:
    """(column, SQL type) of every field of the record, in field order."""
    return [(name, sql_type(f.annotation, f"{model.__name__}.{name}")) for name, f in model.model_fields.items()]


def connector_options(topic: str, bootstrap_servers: str, properties: dict[str, str] | None = None,
                      bounded: bool = False, start: str = "earliest", group_id: str | None = None) -> dict[str, str]:
    """The Kafka SQL connector's options for one topic: JSON values, the client `properties` (security) as
    `properties.*`. `bounded`: read up to the latest offsets at the start (a batch query over the topic as it
    is now). `start`: earliest, latest or committed (the group's offsets, else the earliest)."""
    if start not in STARTUP_MODES:
        raise ValueError(f"start must be one of {sorted(STARTUP_MODES)}, not {start!r}")
    opts = {"connector": "kafka", "topic": topic, "properties.bootstrap.servers": bootstrap_servers,
            "format": "json",
            # a malformed value (the requests topic takes what callers send) is skipped, not a failed query
            "json.ignore-parse-errors": "true",
            "scan.startup.mode": STARTUP_MODES[start]}
    if group_id:
        opts["properties.group.id"] = group_id
    if start == "committed":
        opts["properties.auto.offset.reset"] = "earliest"
    if bounded:
        opts["scan.bounded.mode"] = "latest-offset"
    for k, v in (properties or {}).items():
        opts[f"properties.{k}"] = v
    return opts


def with_clause(options: dict[str, str]) -> str:
    return ",\n".join(f"  {literal(k)} = {literal(v)}" for k, v in options.items())


def create_table(table: TableDef, options: dict[str, str], watermark: bool = True,
                 watermark_delay_s: int | None = None) -> str:
    """The `CREATE TABLE` statement of one stream; `watermark_delay_s`: instead of `WATERMARK_DELAY`."""
    cols = [f"  {quote(n)} {t}" for n, t in columns(table.record)]
    cols += [f"  {quote(n)} {t} METADATA FROM {literal(key)} VIRTUAL" for n, t, key in METADATA_COLUMNS]
    if watermark:
        cols.append(f"  WATERMARK FOR {quote('kafka_time')} AS {quote('kafka_time')} - INTERVAL "
                    f"{literal(str(watermark_delay_s) if watermark_delay_s else WATERMARK_DELAY)} SECOND")
    return (f"CREATE TABLE {quote(table.name)} (\n" + ",\n".join(cols) + "\n) WITH (\n" + with_clause(options)
            + "\n)")


def create_tables(bootstrap_servers: str, topics: TopicNames = TopicNames(), properties: dict[str, str] | None = None,
                  bounded: bool = False, start: str = "earliest", group_id: str | None = None,
                  only_topics: set[str] | None = None, watermark_delay_s: int | None = None) -> dict[str, str]:
    """`CREATE TABLE` of every stream by table name (those whose topic is in `only_topics`, when given)."""
    out = {}
    for t in TABLES:
        topic = getattr(topics, t.topic_field)
        if only_topics is not None and topic not in only_topics:
            continue
        out[t.name] = create_table(t, connector_options(topic, bootstrap_servers, properties, bounded, start,
                                                        group_id), watermark_delay_s=watermark_delay_s)
    return out
