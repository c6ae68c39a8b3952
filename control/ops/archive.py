"""The decoy archive: start and stop the decoy (archive) job, read the archive (`rendezvous archive ...`).

The job is `jobs.sql.archive`'s SQL script run as a continuous SQL job with the Parquet format's jars; it is
recorded in the registry as the decoy (`decoy@archive-v1`, a deployment that never answers). The archive is
Parquet, Hive-partitioned (`<table>/dt=YYYY-MM-DD/hr=HH/part-...`), readable with pyarrow or pandas directly:

    import pyarrow.dataset as ds
    requests = ds.dataset("run/archive/requests", format="parquet", partitioning="hive").to_table()
"""

from __future__ import annotations

from pathlib import Path

from control.errors import ControlError, SubmissionError
from control.settings import RuntimeSettings
from jobs.sql.archive import ARCHIVE_FORMAT_VERSION, TABLES, archive_script
from schemas.topics import TopicNames

ACTIVE = ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING")


class ArchiveError(ControlError):
    pass


def job_name(topics: TopicNames = TopicNames()) -> str:
    """`decoy`, or `decoy-<augmented topic>` for another topic set."""
    return "decoy" if topics.augmented == TopicNames.augmented else f"decoy-{topics.augmented}"


def running(s: RuntimeSettings | None = None, topics: TopicNames = TopicNames()) -> list[str]:
    from control.ops import jobs as jobs_lib

    name = job_name(topics)
    return [j.job_id for j in jobs_lib.list_jobs(s or RuntimeSettings()) if j.name == name and j.state in ACTIVE]


def start(s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(), archive: str | None = None,
          parallelism: int | None = None, wait: bool = True, register: bool = True) -> str:
    """Submit the decoy; returns its job id. It reads each stream from its group's committed offsets (the earliest
    on a first start: what the topics still hold is archived first). Refused while one runs for these topics."""
    from control import kafka_io
    from control.ops import registry, sql

    s = s or RuntimeSettings()
    already = running(s, topics)
    if already:
        raise SubmissionError(f"the decoy runs already for these topics ({', '.join(already)}); "
                              "`rendezvous archive stop` first")
    if not s.parquet_jars:
        raise SubmissionError("the Parquet format's jars are missing from build/jars/parquet; run `make setup`")
    target = archive or s.archive
    if "://" not in target:
        Path(target).mkdir(parents=True, exist_ok=True)
        target = str(Path(target).resolve())
    kafka_io.ensure_topics(s.bootstrap_servers, topics.specs(), partitions=s.topic_partitions)
    name = job_name(topics)
    jid = sql.submit(archive_script(target, topics.augmented, name), s, topics, job_name=name, start="committed",
                     group_id=name, parallelism=parallelism, wait=wait, extra_jars=s.parquet_jars)
    if register:
        registry.put_decoy(registry.Plane(s, topics), ARCHIVE_FORMAT_VERSION, jid, {"archive": target})
    return jid


def stop(s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(), register: bool = True) -> list[str]:
    """Cancel the decoy (a new start resumes from its committed offsets; files not yet published by a checkpoint
    are written again then)."""
    from control.ops import jobs as jobs_lib
    from control.ops import registry

    s = s or RuntimeSettings()
    ids = running(s, topics)
    for jid in ids:
        jobs_lib.cancel(jid, s)
    if ids and register:
        registry.put_decoy(registry.Plane(s, topics), ARCHIVE_FORMAT_VERSION, None, {})
    return ids


# ------------------------------------------------------------------------------------------------ reading
def dataset(table: str, archive: str | None = None):
    """One archived table as a pyarrow dataset (published files only); an error when there is none yet."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if table not in {t.name for t in TABLES}:
        raise ArchiveError(f"no archive table {table!r}; tables: {', '.join(t.name for t in TABLES)}")
    root = f"{(archive or RuntimeSettings().archive).rstrip('/')}/{table}"
    if "://" not in root and not Path(root).is_dir():
        raise ArchiveError(f"no archive at {root}: is the decoy running (`rendezvous archive start`), and has it "
                           "completed a checkpoint (files are published every 10 s)?")
    d = ds.dataset(root, format="parquet",
                   partitioning=ds.partitioning(pa.schema([("dt", pa.string()), ("hr", pa.string())]), flavor="hive"))
    if not d.files:
        raise ArchiveError(f"no archive files at {root} yet: the decoy publishes them at each checkpoint (10 s)")
    return d


def read(table: str, archive: str | None = None, request_ids: set[str] | None = None, columns=None):
    """An archived table (only these request ids, when given) as a pyarrow Table."""
    import pyarrow.dataset as ds

    d = dataset(table, archive)
    flt = ds.field("request_id").isin(sorted(request_ids)) if request_ids is not None else None
    return d.to_table(filter=flt, columns=columns)
