"""The live meta-analytics job: start and stop it, read its rows (`rendezvous metrics start|stop|show`).

The job is the SQL script of `jobs.sql.metrics` run as a continuous SQL job (control.ops.sql.submit); it
writes `schemas.records.Metrics` rows to the `metrics` topic. One runs per topic set (its name says which).
"""

from __future__ import annotations

from control.errors import SubmissionError
from control.settings import RuntimeSettings
from jobs.sql.metrics import MetricsConfig, metrics_script
from schemas.records import Metrics
from schemas.topics import TopicNames

ACTIVE = ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING")


def job_name(topics: TopicNames = TopicNames()) -> str:
    """The metrics job's name for a topic set: `metrics`, or `metrics-<metrics topic>` for another set."""
    return "metrics" if topics.metrics == TopicNames.metrics else f"metrics-{topics.metrics}"


def running(s: RuntimeSettings | None = None, topics: TopicNames = TopicNames()) -> list[str]:
    """Ids of the running metrics jobs of this topic set."""
    from control.ops import jobs as jobs_lib

    name = job_name(topics)
    return [j.job_id for j in jobs_lib.list_jobs(s or RuntimeSettings()) if j.name == name and j.state in ACTIVE]


def start(s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(), cfg: MetricsConfig = MetricsConfig(),
          parallelism: int | None = None, start_from: str = "committed", wait: bool = True) -> str:
    """Submit the metrics job; returns its id. It reads each stream from its group's committed offsets (the
    earliest on a first start: the figures of what the topics still hold come first). Refused while one
    runs for these topics."""
    from control import kafka_io
    from control.ops import sql

    s = s or RuntimeSettings()
    already = running(s, topics)
    if already:
        raise SubmissionError(f"a metrics job for these topics runs already ({', '.join(already)}); stop it "
                              f"first (`rendezvous metrics stop`) to start one with other settings")
    kafka_io.ensure_topics(s.bootstrap_servers, topics.specs(), partitions=s.topic_partitions)
    name = job_name(topics)
    return sql.submit(metrics_script(cfg), s, topics, job_name=name, start=start_from, group_id=name,
                      parallelism=parallelism, wait=wait, watermark_delay_s=cfg.lateness_s)


def stop(s: RuntimeSettings | None = None, topics: TopicNames = TopicNames()) -> list[str]:
    """Cancel the running metrics jobs of this topic set; returns their ids. (Its state is its windows in
    progress and its offsets; a new start resumes from the committed offsets.)"""
    from control.ops import jobs as jobs_lib

    s = s or RuntimeSettings()
    ids = running(s, topics)
    for jid in ids:
        jobs_lib.cancel(jid, s)
    return ids


def read(s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(), since_ms: int | None = None) \
        -> list[Metrics]:
    """The metrics topic's rows (windows starting at or after `since_ms`), each once (the report's reading:
    `control.ops.report.parse_rows`), oldest window first."""
    from control import kafka_io
    from control.ops.report import parse_rows

    s = s or RuntimeSettings()
    rows, _ = parse_rows(kafka_io.read_since(s.bootstrap_servers, topics.metrics, None))
    return [m for m in rows if since_ms is None or m.window_start_ms >= since_ms]
