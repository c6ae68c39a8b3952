"""The decoy: the archive of every input exactly as the models saw it, with every score, answer and label, as one
Flink SQL script (`archive_script(archive_dir)`; pure, no PyFlink).

The decoy consumes the augmented requests like any model (it scores nothing) and writes them, and the `scores`,
`answers` and `labels` streams, to Parquet files under `archive_dir`, one directory per table, partitioned by the
request's date and hour in UTC (`dt=2026-11-29/hr=14`: a request, its scores, its answer and its label land in
the same partition). Columns come from the records (`schemas.records`, through `schemas.tables.columns`): an
archived request has the request's fields and the features' as columns, then `feature_version`, `entity_seq`,
`augmented_at_ms`; every table adds `kafka_time_ms` (the record's Kafka timestamp) and the partition columns.

Exactly once: Flink's file sink writes in-progress (hidden) files and publishes them when a checkpoint completes;
the Kafka offsets are in the same checkpoint. After a failure the job restarts from the last checkpoint: the
rows after it are written again into new files and the unpublished ones are dropped, so a crash neither loses
nor duplicates a row. Readers see only published files (`_SUCCESS` marks a partition committed; files
starting with `.` or `_` are not data).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import records
from schemas.tables import columns, literal, quote, with_clause

ARCHIVE_FORMAT_VERSION = "archive-v1"
"""The archive's layout (tables, columns, partitioning); a reader refuses a layout it does not know."""


@dataclass(frozen=True)
class ArchiveTable:
    name: str
    """Its directory under the archive and its SQL table name (`archive_<name>`)."""
    source: str
    """The stream's SQL table it copies."""
    columns: tuple[tuple[str, str, str], ...]
    """(column, SQL type, SQL expression over the source)."""
    time_ms: str
    """The source expression of the request time (epoch ms) that partitions it."""


def _fields(model: type[records.Record], prefix: str = "") -> tuple[tuple[str, str, str], ...]:
    return tuple((name, typ, prefix + quote(name)) for name, typ in columns(model))


def _json_fields(model: type[records.Record], path: str) -> tuple[tuple[str, str, str], ...]:
    """The record's fields read from the raw JSON text (`raw`): scalars with JSON_VALUE, free-shape objects as
    their JSON text (a MAP<STRING, STRING> would turn {"n": 1} and {"n": "1"} into the same thing)."""
    out = []
    for name, typ in columns(model):
        where = literal(f"{path}.{name}")
        if typ.startswith(("MAP<", "ROW<", "ARRAY<")):
            out.append((name, "STRING", f"JSON_QUERY(`raw`, {where})"))
        else:
            # (JSON_VALUE ... RETURNING BIGINT compiles to "unsupported type": cast its text instead)
            out.append((name, typ, f"JSON_VALUE(`raw`, {where})" if typ == "STRING"
                        else f"CAST(JSON_VALUE(`raw`, {where}) AS {typ})"))
    return tuple(out)


RAW_SOURCE = "archive_augmented_raw"
"""The augmented requests as the models read them: each record's JSON text (`raw`), and its Kafka time."""

TABLES: tuple[ArchiveTable, ...] = (
    ArchiveTable("requests", RAW_SOURCE,
                 _json_fields(records.Request, "$.request") + _json_fields(records.Features, "$.features")
                 + _json_fields(records.AugmentedRequest, "$")[2:]  # feature_version, entity_seq, augmented_at_ms
                 + (("augmented_json", "STRING", "`raw`"),),
                 "CAST(JSON_VALUE(`raw`, '$.request.event_time_ms') AS BIGINT)"),
    ArchiveTable("scores", "scores", _fields(records.Score), "request_time_ms"),
    ArchiveTable("answers", "answers", _fields(records.Answer), "request_time_ms"),
    ArchiveTable("labels", "labels", _fields(records.Label), "event_time_ms"),
)
"""What the decoy archives, table by table. An archived request is the augmented record's JSON exactly as the
models read it (`augmented_json`: what replay feeds a candidate) and its fields as columns (what queries read:
the request's, the features', `feature_version`, `entity_seq`, `augmented_at_ms`; `payload` as JSON text)."""

PARTITIONS = (("dt", "yyyy-MM-dd"), ("hr", "HH"))


def table(name: str) -> ArchiveTable:
    for t in TABLES:
        if t.name == name:
            return t
    raise KeyError(f"no archive table {name!r}; the archive has {[t.name for t in TABLES]}")


def create_archive_table(t: ArchiveTable, archive_dir: str) -> str:
    cols = [f"  {quote(c)} {typ}" for c, typ, _ in t.columns]
    cols += [f"  {quote('kafka_time_ms')} BIGINT"] + [f"  {quote(p)} STRING" for p, _ in PARTITIONS]
    options = {"connector": "filesystem", "path": f"{archive_dir.rstrip('/')}/{t.name}", "format": "parquet",
               "sink.partition-commit.policy.kind": "success-file"}
    return (f"CREATE TABLE {quote('archive_' + t.name)} (\n" + ",\n".join(cols) + "\n) PARTITIONED BY ("
            + ", ".join(quote(p) for p, _ in PARTITIONS) + ") WITH (\n" + with_clause(options) + "\n)")


def insert_archive(t: ArchiveTable) -> str:
    sel = [f"{expr} AS {quote(c)}" for c, _, expr in t.columns]
    sel.append("UNIX_TIMESTAMP(CAST(kafka_time AS STRING), 'yyyy-MM-dd HH:mm:ss.SSS') * 1000 "
               f"+ EXTRACT(MILLISECOND FROM kafka_time) AS {quote('kafka_time_ms')}")
    sel += [f"DATE_FORMAT(TO_TIMESTAMP_LTZ({t.time_ms}, 3), {literal(fmt)}) AS {quote(p)}" for p, fmt in PARTITIONS]
    where = ""
    if t.source == RAW_SOURCE:  # transition tokens between two versions of the rendezvous are not requests
        where = f"\nWHERE `raw` IS NULL OR `raw` NOT LIKE {literal(records.TRANSITION_TOKEN_PREFIX + '%')}"
    return (f"INSERT INTO {quote('archive_' + t.name)}\nSELECT\n  " + ",\n  ".join(sel)
            + f"\nFROM {quote(t.source)}" + where)


def raw_source(augmented_topic: str, group_id: str) -> str:
    """The augmented topic read as JSON text (the connection's options are the script's `${kafka}`)."""
    options = {"connector": "kafka", "topic": augmented_topic, "format": "raw",
               "scan.startup.mode": "group-offsets", "properties.group.id": group_id,
               "properties.auto.offset.reset": "earliest"}
    return (f"CREATE TABLE {quote(RAW_SOURCE)} (\n  `raw` STRING,\n  `kafka_time` TIMESTAMP_LTZ(3) METADATA FROM "
            f"'timestamp' VIRTUAL\n) WITH (\n{with_clause(options)},\n  ${{kafka}}\n)")


def archive_script(archive_dir: str, augmented_topic: str, group_id: str) -> str:
    """The decoy job's SQL script: UTC session time (partitions, Kafka times), the raw augmented source, one
    Parquet table and one INSERT per archived stream (the other streams' tables are the shared catalog's)."""
    stmts = ["SET 'table.local-time-zone' = 'UTC'", raw_source(augmented_topic, group_id)]
    stmts += [create_archive_table(t, archive_dir) for t in TABLES]
    stmts += [insert_archive(t) for t in TABLES]
    return ";\n\n".join(stmts) + ";\n"
