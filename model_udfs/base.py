"""The model runner interface: a small async class per kind of model, named by import string in a model card."""

from __future__ import annotations

import hashlib
import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from schemas.features import check_feature_version
from schemas.model_card import ModelCard


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

    def check_features(self) -> None:
        """Refuse a card trained on another feature contract than the one the system computes."""
        check_feature_version(self.card.key, self.card.feature_version)

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
    """The card's runner, after checking the card's feature version against the feature contract."""
    runner = runner_class(card.runner)(card)
    runner.check_features()
    return runner
