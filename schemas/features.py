"""The feature contract: what the external-state job computes and every model reads.

One module, imported by the external-state job (which produces the features), the runners (which turn
them into a model's input vector) and training (which fits models on the same vector). A model card
names the feature version it was trained on; a runner refuses to load against another version
(`check_feature_version`), instead of silently scoring a vector whose columns mean something else.

Change anything here that alters a vector (names, order, encoding, constants) together with a new
`FEATURE_VERSION`, and retrain.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

FEATURE_VERSION = "features-v1"
"""Version of the feature definitions below (carried by every augmented request and model card)."""

FEATURE_NAMES: tuple[str, ...] = (
    "amount", "entity_count", "window_count", "window_sum", "log_ms_since_prev",
    "amount_mean", "amount_std", "amount_zscore", "foreign", "risky_merchant",
)
"""The model input vector, in order (see `feature_vector`)."""

HOME_COUNTRY = "DE"
"""Transactions outside this country count as foreign."""

RISKY_MERCHANTS = frozenset({"gambling", "crypto", "gift_cards", "wire_transfer"})
"""Merchant categories that count as risky."""

DEFAULT_WINDOW_MS = 60 * 60 * 1000
"""The sliding event-time window of the window_* features."""


class FeatureVersionError(ValueError):
    """A model was trained on other features than the ones the system computes."""


def check_feature_version(model: str, expected: str | None, actual: str = FEATURE_VERSION) -> None:
    """Refuse a model whose card names a feature version other than `actual`."""
    if expected is not None and expected != actual:
        raise FeatureVersionError(
            f"{model} was trained on {expected!r} but the external-state job computes {actual!r}: "
            f"retrain it (`rendezvous train`) or deploy the external-state version it was trained for")


def feature_vector(request: Mapping[str, Any], features: Mapping[str, Any]) -> list[float]:
    """The numeric vector the models are trained and served on, in `FEATURE_NAMES` order."""
    since = features.get("ms_since_prev")
    return [
        float(request["amount"]),
        float(features["entity_count"]),
        float(features["window_count"]),
        float(features["window_sum"]),
        math.log1p(since / 1000.0) if since is not None and since >= 0 else -1.0,
        float(features["amount_mean"]),
        float(features["amount_std"]),
        float(features["amount_zscore"]),
        1.0 if request.get("country") != HOME_COUNTRY else 0.0,
        1.0 if request.get("merchant_category") in RISKY_MERCHANTS else 0.0,
    ]
