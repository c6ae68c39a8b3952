"""The Kafka topics of the architecture (docs/architecture.md, "Streams"): names and how each is configured."""

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
QUALITY = "quality"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(REQUESTS),
    TopicSpec(QUARANTINE),
    TopicSpec(AUGMENTED),
    TopicSpec(SCORES),
    TopicSpec(LATE_SCORES),
    TopicSpec(SCHEDULES, compacted=True),
    TopicSpec(ANSWERS),
    TopicSpec(LIFECYCLE),
    TopicSpec(QUALITY),
)
