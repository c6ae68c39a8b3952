"""Settings of a model job (environment prefix RENDEZVOUS_MODEL_)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from jobs.common.settings import JobSettings, Start, StateEncoding
from schemas.model_card import ModelCard
from schemas.topics import SCORES

INPUTS_UID = "model-<id>-inputs"
"""The cascade join's uid, per model id (`jobs.models.cascade.inputs_uid`)."""

PRODUCTION_SCORES = SCORES
"""The scores topic the rendezvous answers from: a replay must never write into it."""


class ModelJobSettings(JobSettings):
    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_MODEL_")  # the rest from JobSettings

    card: ModelCard
    """The deployment: model id + version, runner, artifact, budget. Travels inline, so the cluster need
    not see the client's files (the artifact path must be readable by the TaskManagers)."""
    job_name: str = ""
    """Default: `model <id>@<version>`."""
    group_id: str = ""
    """Default: `model-<id>-<version>`."""
    source_topic: str = "requests.augmented"
    sink_topic: str = "scores"
    inputs_topic: str = "scores"
    """Where the scores of the card's `inputs` (upstream models of a cascade) are read from."""
    start: Start = "committed"
    """A new deployment (a consumer group with no committed offsets) starts at the END of its input: it
    scores what comes from now on, and never re-scores a day of past inputs into the production scores.
    `earliest` replays the retained input, and is refused into the production scores topic (give the
    replay its own `sink_topic`, e.g. `scores.replay`)."""
    skip_older_than_ms: int | None = Field(default=None, gt=0)
    """Load shedding: requests older than this (now - request time) when they reach the job are not scored
    and yield no score. Set it to about the schedule's last deadline: such a request can no longer be
    answered by this model in time, its score would only be a late score, and under overload the
    rendezvous is spared a record. None: score everything (e.g. to compare models on a replayed backlog)."""

    @model_validator(mode="before")
    @classmethod
    def _names_from_card(cls, data):
        if isinstance(data, dict) and data.get("card") is not None:
            card = data["card"] if isinstance(data["card"], ModelCard) else ModelCard.model_validate(data["card"])
            data = {**data, "job_name": data.get("job_name") or f"model {card.key}",
                    "group_id": data.get("group_id") or f"model-{card.model_id}-{card.version}"}
        return data

    @model_validator(mode="after")
    def _replay_not_into_production(self):
        if self.start == "earliest" and self.sink_topic == PRODUCTION_SCORES:
            raise ValueError(f"a replay (start=earliest) would write past inputs' scores into the production "
                             f"topic {PRODUCTION_SCORES!r}; give it its own sink_topic (e.g. 'scores.replay')")
        return self

    @classmethod
    def state_encodings(cls) -> dict[str, StateEncoding]:
        """A model job's state is Flink's (its source's offsets, the async operator's requests in flight), and,
        for a card with `inputs`, the cascade's join (`jobs.models.inputs`), under the uid
        `model-<id>-inputs`."""
        from jobs.models.inputs import INPUTS_READS, INPUTS_STATE_VERSION

        return {INPUTS_UID: StateEncoding(writes=INPUTS_STATE_VERSION, reads=INPUTS_READS)}

    @property
    def uid_prefix(self) -> str:
        # uids are per model id (not version): a new version of the same model can take over the
        # source offsets from a savepoint of the old one
        return f"model-{self.card.model_id}"
