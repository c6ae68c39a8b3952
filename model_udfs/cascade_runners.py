"""The runners of the seed's cascade (figure 6-1 / 6-2; `tools.cascade` runs the scenario): stand-ins for
trained fraud models whose skill per hidden kind of transaction (red or blue) is set in their cards, so the
scenario's figures are exact enough to check.

A transaction of the scenario carries `payload.hidden` = {colour, fraud, difficulty} (`tools.cascade`): what a
trained model would pick up from its features without anyone seeing it. Only these runners read it; the
analytics know only the labels. A `ColourDetector` flags a fraud of colour c when its difficulty is below
`finds[c]` (its recall on that colour), never a legit one (the seed ignores false alarms).
"""

from __future__ import annotations

from typing import Any

from model_udfs.base import ModelRunner


def _score_of(item: dict[str, Any] | None, field: str) -> float | None:
    """An input's score (None: an error, or no score: e.g. a screened request)."""
    if not item or item.get("error") is not None or not isinstance(item.get("output"), dict):
        return None
    value = item["output"].get(field)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class ColourDetector(ModelRunner):
    """params: finds ({'red': 0.8, 'blue': 0.0}: the share of each colour's frauds it flags), output_name
    ('fraud_probability'), flagged (0.9) / clean (0.1): the scores it gives, threshold (0.5), after (optional:
    the input this model is cascaded after; a request that input flagged is not judged again: the output is
    `{"screened_by": <input's id@version>}`, with no score, so this model's figures are over what it was
    passed as clean, as in the seed)."""

    async def predict(self, request: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        p = self.card.params
        name = p.get("output_name", "fraud_probability")
        after = p.get("after")
        if after:
            item = (features.get("inputs") or {}).get(after)
            if item is None:
                raise ValueError(f"{self.card.key} is cascaded after {after!r} but has no such input (card inputs: "
                                 f"{self.card.inputs})")
            up = _score_of(item, name)
            if up is not None and up >= float(p.get("threshold", 0.5)):
                return {"screened_by": item["model"]}
        hidden = (request.get("payload") or {}).get("hidden")
        if not isinstance(hidden, dict) or hidden.get("colour") not in ("red", "blue"):
            raise ValueError("no hidden colour in payload.hidden (not a transaction of the cascade scenario)")
        finds = float(dict(p.get("finds", {})).get(hidden["colour"], 0.0))
        hit = bool(hidden.get("fraud")) and float(hidden.get("difficulty", 1.0)) < finds
        return {name: float(p.get("flagged", 0.9)) if hit else float(p.get("clean", 0.1))}


class CascadeRunner(ModelRunner):
    """The cascade's verdict from its inputs: the highest of their scores (fraud when any model flags it).
    params: output_name ('fraud_probability'). Inputs without a score (errors, screened) are skipped; with
    none at all it fails, naming why."""

    async def predict(self, request: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        name = self.card.params.get("output_name", "fraud_probability")
        inputs = features.get("inputs") or {}
        scores = [s for s in (_score_of(v, name) for v in inputs.values()) if s is not None]
        if not scores:
            raise ValueError(f"no input has a score: {({k: (v or {}).get('error') for k, v in inputs.items()})}")
        return {name: max(scores)}
