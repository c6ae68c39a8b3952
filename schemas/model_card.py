"""The model card: what a model deployment is (model id + version, the runner that hosts it, its
artifact and checksum, the features it was trained on, its budget). Read by the registry and the CLI,
shipped to model jobs, and checked by runners at load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.features import FEATURE_VERSION


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(pattern=r"^[^@\s]+$", description="stable name the schedules refer to, e.g. "
                          "'fraud-champion' (no '@' or spaces: `id@version` is a deployment's identity)")
    version: str = Field(pattern=r"^[^@\s]+$")
    runner: str = Field(description="import string of the ModelRunner class, 'package.module:Class'")
    artifact: str | None = Field(default=None, description="path of the model artifact (relative to the card)")
    sha256: str | None = Field(default=None, description="expected sha256 of the artifact; checked at load")
    feature_version: str | None = Field(default=FEATURE_VERSION, description="the feature contract the model was "
                                        "trained on (schemas.features); None: the model reads no features")
    params: dict[str, Any] = Field(default_factory=dict, description="runner-specific settings")
    timeout_ms: int = Field(default=1000, gt=0, description="per-request budget; slower calls become error scores")
    capacity: int = Field(default=100, gt=0, description="max in-flight requests of the async operator")
    description: str = ""
    inputs: list[str] = Field(default_factory=list, description="upstream deployments whose scores this model "
                              "reads (a cascade): `id@version`, or a bare `id` (any version: the first score of "
                              "that model for the request). The model job joins each request with them by request "
                              "id; the runner sees them as features['inputs'][name] = {model, output, error}")
    inputs_timeout_ms: int = Field(default=5000, gt=0, description="how long the model job waits for its inputs "
                                   "after the request (or the first input) arrived; then an error score names "
                                   "what was missing")

    @field_validator("inputs")
    @classmethod
    def _inputs_are_deployments(cls, inputs: list[str]) -> list[str]:
        for name in inputs:
            if not name or any(c.isspace() for c in name) or name.count("@") > 1 or name.startswith("@") \
                    or name.endswith("@"):
                raise ValueError(f"an input is `id@version` or a bare `id`, not {name!r}")
        ids = [n.partition("@")[0] for n in inputs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"inputs name one model twice: {inputs} (each input is one upstream model)")
        return inputs

    @model_validator(mode="after")
    def _not_its_own_input(self):
        if self.model_id in {n.partition("@")[0] for n in self.inputs}:
            raise ValueError(f"{self.key} lists itself among its inputs: a model cannot read its own scores")
        return self

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text())
        else:
            data = json.loads(path.read_text())
        card = cls.model_validate(data)
        if card.artifact and not Path(card.artifact).is_absolute():
            card = card.model_copy(update={"artifact": str((path.parent / card.artifact).resolve())})
        return card

    @property
    def key(self) -> str:
        """`id@version`: the model's identity in scores, mailboxes, answers and schedules."""
        return f"{self.model_id}@{self.version}"
