"""Settings of the rendezvous job (environment prefix RENDEZVOUS_RENDEZVOUS_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobs.common.settings import HandedOverJob, StateEncoding
from jobs.rendezvous.mailbox import MAILBOX_READS, MAILBOX_STATE_VERSION, MAILBOX_UID
from jobs.rendezvous.schedule import BUILTIN_SCHEDULE
from schemas.records import Schedule


class RendezvousSettings(HandedOverJob):
    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_RENDEZVOUS_")  # the rest from JobSettings

    job_name: str = "rendezvous"
    group_id: str = "rendezvous"
    augmented_topic: str = "requests.augmented"
    scores_topic: str = "scores"
    schedules_topic: str = "schedules"
    answers_topic: str = "answers"
    late_topic: str = "scores.late"
    invalid_topic: str = "requests.quarantine"
    builtin_schedule: Schedule = BUILTIN_SCHEDULE
    """Used until a schedule is published on the schedules topic."""
    orphan_timeout_ms: int = Field(default=60_000, gt=0)
    """How long scores wait for their request before they are given up (emitted as late scores)."""
    answered_retention_ms: int = Field(default=30_000, gt=0)
    """How long an answered mailbox is kept to recognise late scores and duplicate requests."""
    recover_answers: bool = True
    """After a restore, read back the answers written since the checkpoint and never answer those requests
    again (jobs/rendezvous/recovery.py): a request keeps the one answer it was given."""
    restored: bool = False
    """Set by the control plane when the job starts from a savepoint or retained checkpoint: its first attempt
    runs the recovery scan too (a failover's later attempts always do; so does `start=committed`)."""
    recover_from_ms: int | None = Field(default=None, ge=0, exclude_if=lambda v: v is None)
    """Set by the control plane when it starts the job from a savepoint: when that savepoint was asked for (epoch ms).
    The recovery scan starts there when the group committed no offsets: a job stopped with a savepoint before a
    checkpoint of its had completed left none (in CI, and again under load), and the requests its timers answered
    after the savepoint's barrier were answered a second time by the job restored from it. Left out of the job's
    parameters when unset, so that code from before this setting can still take a job over (a rollback)."""
    recovery_margin_ms: int = Field(default=5_000, ge=0)
    """How far before the checkpoint the recovery scan starts (clock skew; answers topics that keep
    producer timestamps)."""
    reply_topics_refresh_ms: int = Field(default=5_000, gt=0)
    """How often at most a reply topic found missing is asked about again, and the window of the lookups' limit
    (jobs/rendezvous/replies.py: replies go only to existing `<answers_topic>.*` topics)."""
    taken_over_at_ms: int | None = None
    """Set by `rendezvous upgrade` on a version taking over: the mailboxes it restored with a request received before
    this time are the version handing over's (it answers them); this one keeps them only as foreign tombstones."""
    max_deadline_ms: int = 600_000
    """The largest stage deadline a schedule may have (schemas.records.Stage); sizes the state TTL."""

    @property
    def handed_over_topic(self) -> str:
        return self.augmented_topic

    @property
    def output_topic(self) -> str:
        return self.answers_topic

    @property
    def input_topics(self) -> list[str]:
        return [self.augmented_topic, self.scores_topic]

    @classmethod
    def state_encodings(cls) -> dict[str, StateEncoding]:
        """Per request id: the mailbox (jobs/rendezvous/mailbox.py). The schedules' broadcast state (each schedule's
        JSON by version) is read by `ScheduleStore` as the records it holds."""
        return {MAILBOX_UID: StateEncoding(MAILBOX_STATE_VERSION, MAILBOX_READS)}

    @property
    def state_ttl_ms(self) -> int:
        """Safety net for mailboxes whose timers were lost: longer than any mailbox legitimately lives."""
        return self.max_deadline_ms + self.orphan_timeout_ms + self.answered_retention_ms + 60_000
