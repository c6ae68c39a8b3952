"""SQL over the streams (`rendezvous sql`): bounded queries in a local Flink, continuous SQL jobs on the cluster.

A query runs in this process's own PyFlink TableEnvironment (batch mode, a mini cluster; no cluster
needed, only Kafka): every table (schemas.tables) scans its topic from the earliest offsets to the latest
ones of when the query starts, so the result is of the topics as they are now. A SQL file runs as a
continuous job on the Flink cluster (`jobs.sql.main`, streaming mode), submitted with `flink run`.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import ControlError, SubmissionError
from control.settings import RuntimeSettings
from schemas.records import LifecycleEvent, now_ms
from schemas.tables import TABLES
from schemas.topics import TopicNames


class SqlError(ControlError):
    """A SQL statement was refused or failed (the message is Flink's, trimmed), or Kafka was unreachable."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple] = field(default_factory=list)


FORMATS = ("table", "csv", "json")


# ------------------------------------------------------------------------------------------------
# values and output (pure)
# ------------------------------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """A query result's value as plain JSON-able Python: rows as dicts, timestamps as ISO text."""
    from pyflink.common import Row

    if isinstance(value, Row):
        names = value.as_dict() if getattr(value, "_fields", None) else None
        return {k: plain(v) for k, v in names.items()} if names is not None else [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat(sep=" ", timespec="milliseconds") if isinstance(value, datetime.datetime) \
            else value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(result: QueryResult, fmt: str = "table") -> str:
    """The result as an aligned table (NULL shown as `null`), CSV (with a header) or JSON Lines."""
    rows = [[plain(v) for v in r] for r in result.rows]
    if fmt == "json":
        return "".join(json.dumps(dict(zip(result.columns, r))) + "\n" for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(result.columns)
        w.writerows([[_text(v) for v in r] for r in rows])
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    cells = [["null" if v is None else _text(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows if r[i] is not None)
               for i in range(len(result.columns))]

    def line(vals):
        return " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    out = [line(result.columns), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


_JAVA_EXC = re.compile(r"^(?:: )?(?:Caused by: )?(?:[a-z][\w$]*\.)+([A-Z][\w$]*(?:Exception|Error)): ?(.*)$")


def flink_message(error: BaseException) -> str:
    """The useful part of a Flink (Java) error: the first exception's message and its innermost cause's,
    without the stack traces."""
    text = str(error)
    found = [m.groups() for m in (_JAVA_EXC.match(line.strip()) for line in text.splitlines()) if m]
    if not found:
        return text.strip().splitlines()[0] if text.strip() else type(error).__name__
    first = f"{found[0][0]}: {found[0][1]}".strip()
    last = f"{found[-1][0]}: {found[-1][1]}".strip()
    return first if found[-1][1].strip() in found[0][1] else f"{first}\n  caused by {last}"


# ------------------------------------------------------------------------------------------------
# bounded queries
# ------------------------------------------------------------------------------------------------
def existing_topics(bootstrap: str) -> set[str]:
    """The broker's topics; an SqlError saying what to do when it cannot be reached."""
    from control import kafka_io

    try:
        # kafka-python waits bootstrap_timeout_ms (30 s by default), not request_timeout_ms, for a broker
        adm = kafka_io.admin(bootstrap, client_id="rendezvous-sql", request_timeout_ms=10_000,
                             bootstrap_timeout_ms=10_000)
    except Exception as e:  # noqa: BLE001 - NoBrokersAvailable, auth errors: all mean "no Kafka"
        raise SqlError(f"Kafka at {bootstrap} cannot be reached ({type(e).__name__}: {e}): start the runtime with "
                       f"`rendezvous up`, or point RENDEZVOUS_BOOTSTRAP_SERVERS at the broker") from e
    try:
        return set(adm.list_topics())
    finally:
        adm.close()


def local_table_env(s: RuntimeSettings, batch: bool = True):
    """A TableEnvironment running in this process's own mini cluster, with the Kafka SQL connector."""
    from control.settings import java_executable

    java = java_executable()
    if java and "JAVA_HOME" not in os.environ:
        os.environ["JAVA_HOME"] = str(Path(java).resolve().parent.parent)
    os.environ.setdefault("FLINK_LOG_DIR", str(s.log_dir))
    s.log_dir.mkdir(parents=True, exist_ok=True)
    # no Python worker runs in a SQL query; without this PyFlink starts its "loopback" worker pool for a local
    # mini cluster anyway, a gRPC server on every interface ([::]:0, hard-coded in
    # pyflink.fn_execution.beam.beam_worker_pool_service): nothing of the project listens beyond loopback
    os.environ.setdefault("_python_worker_execution_mode", "process")
    from pyflink.table import EnvironmentSettings, TableEnvironment

    jars = [j for j in s.connector_jars if "kafka" in j.name]
    if not jars:
        raise SqlError(f"the Flink Kafka SQL connector jar is missing from {s.flink_jar_dir}; run `make setup`")
    jars += s.parquet_jars  # the archive's tables (Parquet)
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode() if batch
                                    else EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.jars", ";".join(j.as_uri() for j in jars))
    conf.set("parallelism.default", "1")
    conf.set("rest.bind-port", "0")  # the mini cluster's web endpoint: any free port, on loopback
    conf.set("rest.bind-address", "127.0.0.1")
    for key in ("jobmanager.bind-host", "taskmanager.bind-host", "taskmanager.host"):  # blob server, data exchange
        conf.set(key, "127.0.0.1")
    return t_env


_QUERY = re.compile(r"^\s*(\(\s*)*(SELECT|WITH|VALUES|TABLE)\b", re.IGNORECASE)


def _execute_last(t_env, stmt: str):
    """Execute the statement whose result is shown. A query's TIMESTAMP_LTZ columns (e.g. `kafka_time`) are
    shown as TIMESTAMP(3) in the session's time zone (`table.local-time-zone`): PyFlink cannot collect
    TIMESTAMP_LTZ values ("PickleException: couldn't introspect javabean")."""
    if not _QUERY.match(stmt):
        return t_env.execute_sql(stmt)
    from pyflink.table import DataTypes
    from pyflink.table.expressions import col

    table = t_env.sql_query(stmt)
    cols = table._j_table.getResolvedSchema().getColumns()
    ltz = {c.getName() for c in cols
           if c.getDataType().getLogicalType().getTypeRoot().name() == "TIMESTAMP_WITH_LOCAL_TIME_ZONE"}
    if ltz:
        table = table.select(*[col(c.getName()).cast(DataTypes.TIMESTAMP(3)).alias(c.getName())
                               if c.getName() in ltz else col(c.getName()) for c in cols])
    return table.execute()


def register_archive(t_env, s: RuntimeSettings, archive: str | None = None) -> list[str]:
    """The decoy archive's tables (`archive_requests`, `archive_scores`, `archive_answers`, `archive_labels`),
    those that have files, when the archive is a local directory; returns their names."""
    from jobs.sql.archive import TABLES as ARCHIVE_TABLES
    from jobs.sql.archive import create_archive_table

    where = archive or s.archive
    if "://" in where or not s.parquet_jars:
        return []
    names = []
    for t in ARCHIVE_TABLES:
        d = Path(where) / t.name
        if d.is_dir() and any(p.is_file() and not p.name.startswith((".", "_")) for p in d.rglob("*")):
            t_env.execute_sql(create_archive_table(t, str(Path(where).resolve())))
            names.append(f"archive_{t.name}")
    return names


def query(sql: str, s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(),
          bootstrap: str | None = None, role: str = "operator", limit: int | None = None) -> QueryResult:
    """Run `sql` (one statement, or several separated by `;` of which the last gives the result, e.g. SET
    ones first) over the streams' tables as the topics are now; returns the result's columns and rows
    (at most `limit`). The tables of topics that do not exist are not registered."""
    from jobs.sql.catalog import register_tables
    from jobs.sql.statements import set_option, split_statements

    s = s or RuntimeSettings()
    bootstrap = bootstrap or s.bootstrap_servers
    stmts = split_statements(sql)
    if not stmts:
        raise SqlError("no SQL statement given")
    from control import kafka_io

    present = existing_topics(bootstrap)
    props = kafka_io.security_for(bootstrap, role)
    t_env = local_table_env(s)
    registered = register_tables(t_env, bootstrap, props, topics, bounded=True,
                                 only_topics=present)
    registered += register_archive(t_env, s)
    try:
        for stmt in stmts[:-1]:
            kv = set_option(stmt)
            if kv:
                t_env.get_config().set(*kv)
            else:
                t_env.execute_sql(stmt).wait()
        result = _execute_last(t_env, stmts[-1])
        columns = list(result.get_resolved_schema().get_column_names())
        rows = []
        with result.collect() as it:
            for row in it:
                rows.append(tuple(row))
                if limit is not None and len(rows) >= limit:
                    break
        return QueryResult(columns, rows)
    except Exception as e:  # noqa: BLE001 - Flink's exceptions arrive as Py4J/JavaException wrappers
        if type(e).__module__.startswith(("py4j", "pyflink")):
            msg = flink_message(e)
            missing = [t.name for t in TABLES if t.name not in registered]
            if "not found" in msg and missing:
                msg += (f"\n  tables: {', '.join(registered) or 'none'} (no topic yet for "
                        f"{', '.join(missing)}: {', '.join(getattr(topics, t.topic_field) for t in TABLES if t.name in missing)})")
            raise SqlError(msg) from None
        raise


# ------------------------------------------------------------------------------------------------
# continuous jobs
# ------------------------------------------------------------------------------------------------
def topic_overrides(topics: TopicNames) -> dict[str, str]:
    return {f: getattr(topics, f) for f in TopicNames.__dataclass_fields__ if getattr(topics, f) != getattr(
        TopicNames, f)}


def submit(script: str, s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(),
           job_name: str = "sql", start: str = "earliest", group_id: str | None = None,
           parallelism: int | None = None, wait: bool = True, extra_jars=(),
           watermark_delay_s: int | None = None) -> str:
    """Submit `script` (SET, CREATE TABLE/VIEW and INSERT INTO statements; `${kafka}` in a WITH clause
    stands for the Kafka connection's options) as a continuous job (`jobs.sql.main`); returns its job id.
    The script is checked here first (it has an INSERT INTO)."""
    from control.ops import deploy
    from control.ops import jobs as jobs_lib
    from jobs.sql.main import statements_of
    from jobs.sql.settings import SqlSettings

    s = s or RuntimeSettings()
    settings = deploy.job_settings(SqlSettings, s, script=script, job_name=job_name, start=start,
                                   group_id=group_id or f"sql-{job_name}", topics=topic_overrides(topics),
                                   watermark_delay_s=watermark_delay_s)
    try:
        statements_of(settings)
    except ValueError as e:
        raise SubmissionError(f"{e}; nothing was submitted") from e
    jid = deploy.submit_job(settings, s, wait=False, parallelism=parallelism, extra_jars=extra_jars)
    if wait:
        jobs_lib.wait_running(jid, s)
    deploy._record(s, LifecycleEvent(kind="job_submitted", job_id=jid, at_ms=now_ms(),
                                     detail={"job": "sql", "name": job_name}), topics.lifecycle)
    return jid
