"""In-process runner: a scikit-learn model loaded from a version-controlled artifact (joblib), scoring
the calls in flight as one batch (`BatchingRunner`)."""

from __future__ import annotations

import asyncio
from typing import Any

from model_udfs.base import BatchingRunner, verify_artifact
from schemas.features import feature_vector


class SklearnRunner(BatchingRunner):
    """params: output_name (default 'fraud_probability'), output_index (default 1), max_batch_size (64),
    max_batch_wait_ms (0), score_shift (0: added to each probability, clipped to [0, 1]: a deliberately
    miscalibrated variant of a model, to see comparisons and guards at work)."""

    _model = None

    def prepare(self) -> None:
        import joblib

        path = verify_artifact(self.card)  # refuses an artifact whose sha256 is not the card's
        self._model = joblib.load(path)

    async def load(self) -> None:
        if self._model is None:  # not prepared (e.g. a runner used outside a model job)
            await asyncio.get_running_loop().run_in_executor(None, self.prepare)

    async def predict_batch(self, requests: list[dict[str, Any]], features: list[dict[str, Any]]) \
            -> list[dict[str, Any]]:
        if self._model is None:
            raise RuntimeError(f"{self.card.key}: predict before load")
        import numpy as np

        x = np.asarray([feature_vector(r, f) for r, f in zip(requests, features)], dtype=float)
        proba = self._model.predict_proba(x)
        idx = int(self.card.params.get("output_index", 1))
        name = self.card.params.get("output_name", "fraud_probability")
        shift = float(self.card.params.get("score_shift", 0.0))
        if shift:
            return [{name: min(1.0, max(0.0, float(p) + shift))} for p in proba[:, idx]]
        return [{name: float(p)} for p in proba[:, idx]]
