"""In-process runner: a scikit-learn model loaded from a version-controlled artifact (joblib)."""

from __future__ import annotations

import asyncio
from typing import Any

from model_udfs.base import ModelRunner, verify_artifact
from schemas.features import feature_vector


class SklearnRunner(ModelRunner):
    """params: output_name (default 'fraud_probability'), output_index (default 1)."""

    _model = None

    async def load(self) -> None:
        import joblib

        path = verify_artifact(self.card)  # refuses an artifact whose sha256 is not the card's
        self._model = await asyncio.get_running_loop().run_in_executor(None, joblib.load, path)

    async def predict(self, request: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        if self._model is None:
            raise RuntimeError(f"{self.card.key}: predict before load")
        x = [feature_vector(request, features)]
        proba = self._model.predict_proba(x)[0]
        idx = int(self.card.params.get("output_index", 1))
        return {self.card.params.get("output_name", "fraud_probability"): float(proba[idx])}
