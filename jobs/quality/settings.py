"""Settings of the quality job (environment prefix RENDEZVOUS_QUALITY_)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from jobs.common.settings import JobSettings, StateEncoding
from jobs.quality.batching import BATCH_STATE_READS, BATCH_STATE_VERSION, BATCHES_UID


class QualitySettings(JobSettings):
    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_QUALITY_")  # the rest from JobSettings

    suite: dict[str, Any]
    """The expectation suite in Great Expectations' JSON form (name, expectations, meta with version and
    min_rows). Travels inline, so the cluster needs no file; `control.ops.deploy.deploy_quality` derives it
    from the training data's profile (`training.quality_profile.requests_suite`)."""
    job_name: str = "quality"
    group_id: str = "quality"
    source_topic: str = "requests"
    sink_topic: str = "quality"
    """One QualityResult per batch."""
    lifecycle_topic: str = "lifecycle"
    """A failing batch also writes a `quality_alert` LifecycleEvent here; empty: no alerts."""
    batch_records: int = Field(default=1000, gt=0)
    """A batch closes after this many records ..."""
    batch_interval_ms: int = Field(default=10_000, gt=0)
    """... or this long after its first record, whichever comes first."""
    max_examples: int = Field(default=10, ge=0, le=20)
    """Unexpected values reported per failed expectation."""

    @classmethod
    def state_encodings(cls) -> dict[str, StateEncoding]:
        """The open micro-batch (jobs/quality/batching.py; its records are list state of the raw strings)."""
        return {BATCHES_UID: StateEncoding(BATCH_STATE_VERSION, BATCH_STATE_READS)}

    @field_validator("suite")
    @classmethod
    def _suite_shape(cls, v: dict) -> dict:
        if not isinstance(v.get("name"), str) or not isinstance(v.get("expectations"), list):
            raise ValueError("suite must be a Great Expectations suite in JSON form: {name, expectations, meta}; "
                             "derive one with `rendezvous quality suite`")
        return v
