"""Settings of the external-state job (environment prefix RENDEZVOUS_EXTERNAL_STATE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from jobs.common.settings import HandedOverJob, StateEncoding
from jobs.external_state.features import (
    ENTITY_STATE_READS,
    ENTITY_STATE_VERSION,
    FEATURES_UID,
)
from schemas.features import DEFAULT_WINDOW_MS


class ExternalStateSettings(HandedOverJob):
    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_EXTERNAL_STATE_")  # the rest from JobSettings

    job_name: str = "external-state"
    group_id: str = "external-state"
    source_topic: str = "requests"
    sink_topic: str = "requests.augmented"
    quarantine_topic: str = "requests.quarantine"
    window_ms: int = Field(default=DEFAULT_WINDOW_MS, gt=0)
    """The sliding event-time window of the window_* features."""
    state_ttl_days: int = Field(default=30, gt=0)
    """Per-entity state not written for this long is dropped."""
    checkpoint_interval_ms: int = 5_000

    @property
    def handed_over_topic(self) -> str:
        return self.source_topic

    @property
    def output_topic(self) -> str:
        return self.sink_topic

    @classmethod
    def state_encodings(cls) -> dict[str, StateEncoding]:
        """Per entity: the features' running state (jobs/external_state/features.py)."""
        return {FEATURES_UID: StateEncoding(ENTITY_STATE_VERSION, ENTITY_STATE_READS)}
