"""Job settings: one frozen pydantic-settings class per job, each field with one default.

The control plane builds a job's settings object (from its own settings and the environment, e.g.
`RENDEZVOUS_RENDEZVOUS_ORPHAN_TIMEOUT_MS=30000`), and submits it whole, as one JSON argument
(`--settings '{...}'`); the job's `main.py` loads it with `load_settings` and builds its pipeline from
it. Run by hand (`flink run -pym jobs.rendezvous.main` without `--settings`), a job takes its
settings from the environment and the defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Start = Literal["committed", "earliest", "latest"]


class KafkaSettings(BaseModel):
    """How a job reaches Kafka."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    """host:port[,host:port...] of the brokers."""

    properties: dict[str, str] = Field(default_factory=dict)
    """Kafka client properties set on every source and sink of the job, e.g. security.protocol,
    sasl.mechanism, sasl.jaas.config, ssl.truststore.location."""

    def __repr__(self) -> str:  # never print credentials
        from jobs.common.security import masked

        shown = masked(self.properties)
        return f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, properties={shown!r})"

    __str__ = __repr__


class JobSettings(BaseSettings):
    """What every job has."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_nested_delimiter="__")

    job_name: str
    """Name of the Flink job."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    group_id: str
    """Kafka consumer group of the job's sources (offsets are committed on checkpoints)."""

    start: Start = "committed"
    """Where a new job starts reading: the group's committed offsets (else the earliest), the earliest
    or the latest. A job restored from a savepoint resumes from the savepoint's offsets."""

    checkpoint_interval_ms: int = Field(default=10_000, gt=0)

    buffer_timeout_ms: int = Field(default=2, ge=-1)
    """Flush network buffers after this long. Flink's default (100 ms) delays every record that crosses
    a keyBy by up to that; measured here: rendezvous median latency 70 ms -> 8 ms at 2 ms."""

    sink_linger_ms: int = Field(default=2, ge=0)
    """How long the Kafka sinks' producers wait to batch records. With 0 every record wakes the producer's
    network thread (a syscall each); measured alone, that was about 30 % of the rendezvous task thread."""

    def to_argv(self) -> list[str]:
        return ["--settings", self.model_dump_json()]

    @classmethod
    def state_encodings(cls) -> dict[str, StateEncoding] | None:
        """The versioned state the job keeps, by the uid of the operator that keeps it: what a savepoint of the
        job may hold, and what the code reads. Recorded in the job's parameters (`jobs.common.entry`);
        `rendezvous job upgrade` compares a running job's with the new code's before stopping it. {}: no state of
        its own (Flink's source offsets and in-flight records are not versioned by the project); None: not
        declared, and no upgrade is offered."""
        return None


class HandedOverJob(JobSettings):
    """A thread-mode job whose versions hand its input over with transition tokens (jobs/common/transition.py,
    control/ops/handover.py): the external state and the rendezvous."""

    owner: str = ""
    """This version's name in hand-overs: the tokens name the version that owns their partition's records from
    them on. "" : the job's name. `rendezvous upgrade` names each new version."""

    takes_over: bool = False
    """Started to take over from a running version: it owns no record until a token names it."""

    transitions_topic: str = "transitions"
    """The transitions registry (where the tokens landed, by input topic), read when the job opens. "" : none."""

    shadow_topic: str | None = Field(default=None, exclude_if=lambda v: v is None)
    """Set by `rendezvous upgrade` on a version taking over (unless `--shadow 0`): until a token names it, it writes
    what it would write for the live records it does not own (augmented requests, answers) into this topic
    (`schemas.topics.shadow_topic` of its `output_topic`), so that its output path and sink have run, and been
    compiled, before it writes for real; and its output can be compared with the running version's. Left out of the
    job's parameters when unset (older code can still take the job over); every restart drops it
    (control.ops.upgrade.restore_bound)."""

    @property
    def owner_name(self) -> str:
        return self.owner or self.job_name

    @property
    def handed_over_topic(self) -> str:
        """The input topic whose partitions the tokens hand over: the one the job's requests come from."""
        raise NotImplementedError

    @property
    def output_topic(self) -> str:
        """The topic the job writes what its owned records give (a shadow writes the same into `shadow_topic`)."""
        raise NotImplementedError

    @property
    def input_topics(self) -> list[str]:
        """Every topic the job's one positioned source reads (a new version keeps up with all of them before it
        takes over)."""
        return [self.handed_over_topic]


@dataclass(frozen=True)
class StateEncoding:
    """The encoding of one operator's state: the version this code writes, and every version it reads (a
    savepoint of this code may hold any of them: entities not seen since an earlier upgrade keep theirs)."""

    writes: int
    reads: tuple[int, ...]

    def as_json(self) -> dict:
        return {"writes": self.writes, "reads": sorted(set(self.reads) | {self.writes})}


S = TypeVar("S", bound=JobSettings)


def load_settings(cls: type[S], argv: list[str] | None = None) -> S:
    """The job's settings from `--settings JSON` (as submitted by the control plane), else from the
    environment and defaults."""
    p = argparse.ArgumentParser(description=f"{cls.__name__}: see {cls.__module__}")
    p.add_argument("--settings", default=None, help=f"the {cls.__name__} as JSON")
    a = p.parse_args(argv)
    return cls.model_validate_json(a.settings) if a.settings else cls()
