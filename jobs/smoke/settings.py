"""Settings of the pass-through job (environment prefix RENDEZVOUS_SMOKE_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from jobs.common.settings import JobSettings, StateEncoding


class SmokeSettings(JobSettings):
    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_SMOKE_")  # the rest from JobSettings

    job_name: str = "smoke"
    group_id: str = "smoke"
    source_topic: str
    sink_topic: str
    start: str = "earliest"

    @classmethod
    def state_encodings(cls) -> dict[str, StateEncoding]:
        """A pass-through: no state of its own."""
        return {}
