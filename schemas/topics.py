"""The Kafka topics of the architecture (docs/architecture.md, "Streams"): names and how each is configured."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)
    single_partition: bool = False
    """A control topic (schedules, lifecycle, the registry): one partition whatever the data topics have, so
    its readers see one total order (a schedule's versions, the audit log) and no partition count change
    can reorder it."""

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
REGISTRY = "models"
QUALITY = "quality"
LABELS = "labels"
METRICS = "metrics"
TRANSITIONS = "transitions"

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(REQUESTS),
    TopicSpec(QUARANTINE),
    TopicSpec(AUGMENTED),
    TopicSpec(SCORES),
    TopicSpec(LATE_SCORES),
    TopicSpec(SCHEDULES, compacted=True, single_partition=True),
    # broker append time: the rendezvous's recovery scan finds the answers written after a checkpoint by time
    TopicSpec(ANSWERS, config={"message.timestamp.type": "LogAppendTime"}),
    TopicSpec(LIFECYCLE, single_partition=True),
    TopicSpec(REGISTRY, compacted=True, single_partition=True),
    TopicSpec(QUALITY),
    TopicSpec(LABELS),  # outcomes known later (chargebacks), keyed by request id
    TopicSpec(METRICS),  # the live meta-analytics (jobs/metrics)
    # where transition tokens landed, by input topic (jobs/common/transition.py)
    TopicSpec(TRANSITIONS, compacted=True, single_partition=True),
)


def shadow_topic(output_topic: str) -> str:
    """Where a new version of a job writing into `output_topic` (the rendezvous's answers, the external state's
    augmented requests) writes as a shadow before it takes over (control/ops/handover.py): `<output topic>-shadow`;
    not `<answers topic>.*`, the names of the reply topics, where a request may ask for a copy of its answer, nor
    anything the model jobs read. Created by the hand-over that uses it."""
    return f"{output_topic}-shadow"


@dataclass(frozen=True)
class TopicNames:
    """The topics one deployment of the system uses (the defaults above; tests and side-by-side installs
    use their own, e.g. `TopicNames.suffixed(...)`)."""

    requests: str = REQUESTS
    augmented: str = AUGMENTED
    scores: str = SCORES
    late: str = LATE_SCORES
    schedules: str = SCHEDULES
    answers: str = ANSWERS
    lifecycle: str = LIFECYCLE
    registry: str = REGISTRY
    quarantine: str = QUARANTINE
    quality: str = QUALITY
    labels: str = LABELS
    metrics: str = METRICS
    transitions: str = TRANSITIONS

    @classmethod
    def suffixed(cls, suffix: str) -> "TopicNames":
        return cls(**{f: f"{getattr(cls, f)}-{suffix}" for f in cls.__dataclass_fields__})

    def specs(self) -> list[TopicSpec]:
        """The topic specs under these names (compaction, configs and partitioning as for the defaults)."""
        from dataclasses import replace

        by_default = {t.name: t for t in TOPICS}
        return [replace(by_default[getattr(TopicNames, f)], name=getattr(self, f), config=dict(
            by_default[getattr(TopicNames, f)].config)) for f in self.__dataclass_fields__]
