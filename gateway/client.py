"""A small Python client of the gateway (any Open Inference Protocol client works too: README, "The gateway").

    from gateway.client import GatewayClient

    with GatewayClient("http://127.0.0.1:8000") as gw:
        a = gw.infer({"entity_id": "card-1", "amount": 42.5, "merchant_category": "grocery", "country": "DE"})
        a.output["fraud_probability"], a.model, a.trigger, a.schedule_version

A transaction is a dict of the request's fields (`entity_id`, `amount`, `merchant_category`, `country`, and
optionally `event_time_ms`, `payload`, and `request_id`, which becomes the call's id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.protocol import PROVENANCE

FIELDS = {"entity_id": "BYTES", "amount": "FP64", "merchant_category": "BYTES", "country": "BYTES",
          "event_time_ms": "INT64", "payload": "BYTES"}


def infer_body(transaction: dict, budget_ms: float | None = None) -> dict:
    """The V2 infer request of one transaction (its `request_id`, if any, is the call's id)."""
    inputs = []
    for name, datatype in FIELDS.items():
        if name not in transaction:
            continue
        value = transaction[name]
        if name == "payload":
            value = json.dumps(value, separators=(",", ":"))
        inputs.append({"name": name, "shape": [1], "datatype": datatype, "data": [value]})
    body: dict[str, Any] = {"inputs": inputs}
    if transaction.get("request_id"):
        body["id"] = transaction["request_id"]
    if budget_ms is not None:
        body["parameters"] = {"budget_ms": budget_ms}
    return body


@dataclass
class GatewayAnswer:
    """The answer to one call: its outputs (one value each) and its provenance (model, stage, trigger, ...)."""

    output: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        """A provenance parameter (`model`, `trigger`, `stage`, ...); None when the answer has none (a default
        answer has no model)."""
        if name in PROVENANCE:
            return self.__dict__["provenance"].get(name)
        raise AttributeError(name)

    @classmethod
    def of(cls, response: dict) -> "GatewayAnswer":
        return cls({t["name"]: t["data"][0] for t in response.get("outputs", [])}, dict(response.get("parameters", {})))


class GatewayError(Exception):
    """A call the gateway refused (400, with `reasons`), could not answer in time (504) or could not send (503)."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"{status}: {body.get('error', body)}")
        self.status = status
        self.body = body
        self.reasons = body.get("reasons", [])


class GatewayClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", model: str = "rendezvous", timeout_s: float = 30.0):
        import httpx

        self.url = url.rstrip("/")
        self.model = model
        self._http = httpx.Client(timeout=timeout_s)

    def ready(self) -> bool:
        try:
            return self._http.get(f"{self.url}/v2/models/{self.model}/ready").status_code == 200
        except Exception:  # noqa: BLE001 - not reachable: not ready
            return False

    def infer(self, transaction: dict, budget_ms: float | None = None) -> GatewayAnswer:
        r = self._http.post(f"{self.url}/v2/models/{self.model}/infer", json=infer_body(transaction, budget_ms))
        body = r.json()
        if r.status_code != 200:
            raise GatewayError(r.status_code, body)
        return GatewayAnswer.of(body)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
