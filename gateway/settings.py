"""Settings of the gateway (environment prefix RENDEZVOUS_GATEWAY_). Its address comes from the runtime's
settings: `RENDEZVOUS_GATEWAY_PORT` (`RuntimeSettings.gateway_port`) on the runtime's listen host (loopback
unless `RENDEZVOUS_BIND_HOST` / `RENDEZVOUS_HOST` say otherwise)."""

from __future__ import annotations

import re
import socket

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import ANSWERS, REQUESTS, SCHEDULES, TopicNames


class Endpoint(BaseModel):
    """The topics of one rendezvous deployment the gateway serves (its V2 model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: str = REQUESTS
    answers: str = ANSWERS
    schedules: str = SCHEDULES

    @classmethod
    def of(cls, topics: TopicNames) -> "Endpoint":
        return cls(requests=topics.requests, answers=topics.answers, schedules=topics.schedules)

    def reply_topic(self, gateway_id: str) -> str:
        """This gateway's return address for this rendezvous: `<answers>.<gateway id>` (the rendezvous writes
        replies only to existing topics under `<answers>.`, jobs/rendezvous/replies.py)."""
        return f"{self.answers}.{gateway_id}"


def default_id(port: int) -> str:
    """`gw-<host name>-<port>`: stable across restarts of one gateway (it finds its reply topic again), distinct
    between gateways of one machine."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"gw-{socket.gethostname()}-{port}")[:120]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_GATEWAY_", frozen=True)

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,120}$")
    """Names this gateway's reply topics (`<answers>.<id>`); default `default_id(port)`."""
    rendezvous: dict[str, Endpoint] = Field(default_factory=lambda: {"rendezvous": Endpoint()})
    """The rendezvous served, by V2 model name, as JSON: RENDEZVOUS_GATEWAY_RENDEZVOUS='{"fraud": {"requests":
    "requests", "answers": "answers", "schedules": "schedules"}}'."""
    margin_ms: float = Field(default=100.0, ge=0)
    """How long after the budget a caller still waits for its answer before the timeout response (the hops back
    from the rendezvous through Kafka take a few ms; a loaded system more)."""
    default_budget_ms: float | None = Field(default=None, gt=0)
    """The budget of a call that gives none; default: the active schedule's last deadline (the rendezvous
    answers by then: a model's answer or the default)."""
    max_budget_ms: float = Field(default=60_000.0, gt=0)
    """The longest budget a caller may ask for."""
    max_batch: int = Field(default=64, ge=1, le=10_000)
    """Rows (requests) per infer call."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest infer body accepted (413 above)."""
    recent_answers: int = Field(default=10_000, ge=0)
    """Answers remembered by request id: a caller who timed out and asks again with the same id gets the one
    recorded (`gateway.router`)."""
    reply_retention_ms: int = Field(default=3_600_000, gt=0)
    """retention.ms of the reply topics the gateway creates (only callers waiting now read them)."""
    linger_ms: float = Field(default=1.0, ge=0)
    """Producer batching of requests (librdkafka linger.ms)."""
    bootstrap_servers: str | None = None
    """Kafka of the served rendezvous; default: the runtime's (`RENDEZVOUS_BOOTSTRAP_SERVERS` or the embedded
    broker)."""
