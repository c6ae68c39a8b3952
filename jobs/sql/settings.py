"""Settings of a continuous SQL job (`rendezvous sql -f FILE.sql`; environment prefix RENDEZVOUS_SQL_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobs.common.settings import JobSettings, Start


class SqlSettings(JobSettings):
    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_SQL_")  # the rest from JobSettings

    job_name: str = "sql"
    group_id: str = "sql"
    start: Start = "earliest"
    """Where the streams' tables start reading: earliest, latest, or committed (the group's offsets, else the
    earliest). A query can override it per table with a hint: `answers /*+ OPTIONS('scan.startup.mode' =
    'latest-offset') */`."""

    script: str = Field(min_length=1)
    """The SQL statements (`;`-separated): SET, CREATE TABLE/VIEW (`${kafka}` in a WITH clause stands for
    the Kafka connection's options), and at least one INSERT INTO; all INSERTs run as one job."""

    watermark_delay_s: int | None = Field(default=None, ge=1)
    """How far the tables' event-time watermark lags behind the largest Kafka timestamp seen (None: the
    catalog's, schemas.tables.WATERMARK_DELAY): records later than that are dropped by event-time windows."""

    topics: dict[str, str] = Field(default_factory=dict)
    """The topic names (schemas.topics.TopicNames fields) where they differ from the defaults."""
