"""The Kafka topics of ARCHITECTURE.md and how to create them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        cfg = dict(self.config)
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        return cfg


REQUESTS = "requests"
QUARANTINE = "requests.quarantine"
AUGMENTED = "requests.augmented"
SCORES = "scores"
LATE_SCORES = "scores.late"
SCHEDULES = "schedules"
ANSWERS = "answers"
LIFECYCLE = "lifecycle"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(REQUESTS),
    TopicSpec(QUARANTINE),
    TopicSpec(AUGMENTED),
    TopicSpec(SCORES),
    TopicSpec(LATE_SCORES),
    TopicSpec(SCHEDULES, compacted=True),
    TopicSpec(ANSWERS),
    TopicSpec(LIFECYCLE),
)


def ensure_topics(bootstrap_servers: str, specs=TOPICS, partitions: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="rendezvous-admin")
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(s.name, num_partitions=partitions, replication_factor=1, topic_configs=s.topic_config())
            for s in specs
            if s.name not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()
