"""The model runner interface: a small async class per kind of model, named by import string in a model card."""

from __future__ import annotations

import hashlib
import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelCard(BaseModel):
    """What a model deployment is: a model id + version, the runner that hosts it, and its artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(description="stable name the schedules refer to, e.g. 'fraud-champion'")
    version: str
    runner: str = Field(description="import string of the ModelRunner class, 'package.module:Class'")
    artifact: str | None = Field(default=None, description="path of the model artifact (relative to the card)")
    sha256: str | None = Field(default=None, description="expected sha256 of the artifact; checked at load")
    params: dict[str, Any] = Field(default_factory=dict, description="runner-specific settings")
    timeout_ms: int = Field(default=1000, gt=0, description="per-request budget; slower calls become error scores")
    capacity: int = Field(default=100, gt=0, description="max in-flight requests of the async operator")
    description: str = ""

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
        return f"{self.model_id}@{self.version}"


class ArtifactChecksumError(RuntimeError):
    pass


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_artifact(card: ModelCard) -> Path:
    if not card.artifact:
        raise ArtifactChecksumError(f"{card.key}: the card names no artifact")
    path = Path(card.artifact)
    if not path.exists():
        raise ArtifactChecksumError(f"{card.key}: artifact {path} does not exist (run `make setup` to train the "
                                    f"demo models)")
    if card.sha256:
        actual = sha256_of(path)
        if actual != card.sha256:
            raise ArtifactChecksumError(f"{card.key}: artifact {path} has sha256 {actual}, the card expects "
                                        f"{card.sha256}; refusing to serve a model that is not the registered one")
    return path


class ModelRunner(ABC):
    """Hosts one model. Created from a card in the worker; `load` once, `predict` per request."""

    def __init__(self, card: ModelCard):
        self.card = card

    @property
    def name(self) -> str:
        return self.card.model_id

    @property
    def version(self) -> str:
        return self.card.version

    async def load(self) -> None:
        """Load the model (check the artifact's checksum, open clients)."""

    @abstractmethod
    async def predict(self, request: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        """Score one request; returns the output dict (e.g. {'fraud_probability': 0.03})."""

    async def close(self) -> None:
        """Release clients and resources."""


def runner_class(import_string: str) -> type[ModelRunner]:
    module, _, attr = import_string.partition(":")
    if not attr:
        raise ValueError(f"runner {import_string!r} is not 'package.module:Class'")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, ModelRunner)):
        raise TypeError(f"{import_string} is not a ModelRunner")
    return cls


def make_runner(card: ModelCard) -> ModelRunner:
    return runner_class(card.runner)(card)
