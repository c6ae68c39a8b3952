"""Plain-Python runners: a rule model, and behaviours used by demos and tests (slow, failing, silent).

All take their behaviour from the card's params, so a deployment is fully described by its card.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from model_udfs.base import ModelRunner
from schemas.features import HOME_COUNTRY, RISKY_MERCHANTS


class RuleRunner(ModelRunner):
    """A hand-written fraud rule; the canary (a simple reference model kept forever)."""

    async def predict(self, request: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        score = 0.05
        if request.get("merchant_category") in RISKY_MERCHANTS:
            score += 0.35
        if request.get("country") != self.card.params.get("home_country", HOME_COUNTRY):
            score += 0.25
        if float(features.get("amount_zscore", 0.0)) > 3.0:
            score += 0.25
        return {self.card.params.get("output_name", "fraud_probability"): min(score, 0.99)}


class ConstantRunner(ModelRunner):
    """Answers params.output after params.delay_ms (plus up to params.jitter_ms) and params.cpu_ms of CPU time
    burnt in this thread (a CPU-bound model: it holds the interpreter, as an in-process model does); fails a fraction
    params.fail_rate of requests with an exception; never answers a fraction params.silent_rate
    (sleeps past any timeout); fails every request from params.fail_after_s seconds after its first one
    on, or while the file params.fail_if_file exists (a model that goes bad in production, on cue).
    Deterministic per request id when params.seed is set."""

    _first_call: float | None = None

    async def predict(self, request: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        p = self.card.params
        if p.get("fail_if_file") and os.path.exists(p["fail_if_file"]):
            raise RuntimeError(p.get("error_message", "model failed (injected, fail_if_file)"))
        if p.get("fail_after_s") is not None:
            now = time.monotonic()
            self._first_call = self._first_call or now
            if now - self._first_call >= float(p["fail_after_s"]):
                raise RuntimeError(p.get("error_message", "model failed (injected, fail_after_s)"))
        rng = random.Random(f"{p.get('seed', 0)}:{request.get('request_id')}")
        if rng.random() < float(p.get("silent_rate", 0.0)):
            await asyncio.sleep(3600)
        cpu_s = float(p.get("cpu_ms", 0)) / 1000.0
        if cpu_s > 0:
            until = time.thread_time() + cpu_s
            while time.thread_time() < until:
                pass
        delay = float(p.get("delay_ms", 0)) + rng.random() * float(p.get("jitter_ms", 0))
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if rng.random() < float(p.get("fail_rate", 0.0)):
            raise RuntimeError(p.get("error_message", "model failed (injected)"))
        return dict(p.get("output", {"fraud_probability": 0.0}))
