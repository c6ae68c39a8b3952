"""Synthetic card transactions with a known fraction of fraud: training data and demo load.

Legit cards spend moderate amounts at everyday merchants at home, spaced minutes to hours apart.
A compromised card shows a burst: several large purchases at risky merchants abroad within seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

from schemas.features import HOME_COUNTRY, RISKY_MERCHANTS

EVERYDAY = ("grocery", "fuel", "restaurant", "pharmacy", "transport", "clothing", "electronics")
RISKY = tuple(sorted(RISKY_MERCHANTS))
FOREIGN = ("US", "BR", "NG", "RU", "CN", "GB", "FR")
HOME = HOME_COUNTRY


@dataclass
class Txn:
    request: dict
    is_fraud: bool


class TransactionGenerator:
    """Deterministic for a seed. `next(t_ms)` yields one transaction at event time t_ms."""

    def __init__(self, seed: int = 7, n_entities: int = 500, fraud_fraction: float = 0.02, prefix: str = "req"):
        if not 0.0 <= fraud_fraction < 1.0:
            raise ValueError("fraud_fraction must be in [0, 1)")
        self.rng = random.Random(seed)
        self.entities = [f"card-{seed}-{i:05d}" for i in range(n_entities)]
        self.fraud_fraction = fraud_fraction
        self.prefix = prefix
        self.seq = 0

    def next(self, t_ms: int) -> Txn:
        rng = self.rng
        self.seq += 1
        fraud = rng.random() < self.fraud_fraction
        entity = rng.choice(self.entities)
        if fraud:
            amount = round(rng.uniform(300, 5000), 2)
            merchant = rng.choice(RISKY) if rng.random() < 0.8 else rng.choice(EVERYDAY)
            country = rng.choice(FOREIGN) if rng.random() < 0.85 else HOME
        else:
            amount = round(min(rng.lognormvariate(3.5, 0.8), 4000.0), 2)
            merchant = rng.choice(EVERYDAY) if rng.random() < 0.98 else rng.choice(RISKY)
            country = HOME if rng.random() < 0.95 else rng.choice(FOREIGN)
        req = {
            "request_id": f"{self.prefix}-{self.seq:09d}",
            "entity_id": entity,
            "event_time_ms": t_ms,
            "amount": amount,
            "merchant_category": merchant,
            "country": country,
            "payload": {"channel": rng.choice(("web", "pos", "app"))},
        }
        return Txn(req, fraud)

    def burst(self, t_ms: int, entity: str, n: int) -> list[Txn]:
        """A fraud burst on one card: n large risky purchases a few seconds apart."""
        out = []
        for i in range(n):
            self.seq += 1
            out.append(Txn({
                "request_id": f"{self.prefix}-{self.seq:09d}", "entity_id": entity, "event_time_ms": t_ms + i * 2000,
                "amount": round(self.rng.uniform(500, 3000), 2), "merchant_category": self.rng.choice(RISKY),
                "country": self.rng.choice(FOREIGN), "payload": {"channel": "web"}}, True))
        return out


def training_stream(n: int, seed: int = 11, start_ms: int = 1_700_000_000_000) -> Iterator[Txn]:
    """A history of n transactions over simulated days, with fraud bursts, in event-time order."""
    gen = TransactionGenerator(seed=seed, n_entities=max(50, n // 40), fraud_fraction=0.01, prefix="train")
    t = start_ms
    produced = 0
    pending: list[Txn] = []
    while produced < n:
        t += gen.rng.randint(5_000, 120_000)
        if gen.rng.random() < 0.01:
            pending += gen.burst(t, gen.rng.choice(gen.entities), gen.rng.randint(2, 5))
        pending.append(gen.next(t))
        pending.sort(key=lambda x: x.request["event_time_ms"])
        while pending and pending[0].request["event_time_ms"] <= t and produced < n:
            yield pending.pop(0)
            produced += 1
