"""Which partitions a topic has, asked of the broker for the named topics only.

kafka-python's `KafkaConsumer.partitions_for_topic`, on a client that does not know the topic yet (every fresh
client), asks for the metadata of *every* topic of the cluster, and the broker describes each one. With 1,229
topics, a fresh client took 130.8 ms per lookup that way (median of 20), 38.0 ms of the broker's CPU, against 7.1 ms
and 3.0 ms naming the topic (`python -m bench.topic_metadata`; README, "Latency through a hand-over", section 12). A production cluster has thousands of topics, and these
lookups run where latency counts: as a hand-over writes its tokens, as a new version opens (its transitions
registry, the rendezvous's recovery scan).

Shared by the jobs and the control plane (no Flink import here).
"""

from __future__ import annotations

from typing import Iterable

UNKNOWN_TOPIC = 3
"""Kafka's UNKNOWN_TOPIC_OR_PARTITION: the topic does not exist."""
TOPIC_AUTHORIZATION_FAILED = 29


class TopicAccessError(RuntimeError):
    """The broker refused to describe a topic to this principal."""


def partitions(client_kwargs: dict, topics: Iterable[str], client_id: str = "rendezvous-topics") \
        -> dict[str, list[int]]:
    """The partition ids (sorted) of each of `topics` that exists; a topic that does not exist (or is still being
    created) is left out. `client_kwargs`: kafka-python settings, `bootstrap_servers` and security.

    One metadata request naming these topics, from a short-lived admin client (no topic is auto-created).
    Raises `TopicAccessError` when the principal may not describe one of them: before, that read as a topic
    that does not exist."""
    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(client_id=client_id, **client_kwargs)
    try:
        described = admin.describe_topics(names)
    finally:
        admin.close()
    return parse_described(described)


def topic_partitions(client_kwargs: dict, topics: Iterable[str], client_id: str = "rendezvous-topics") -> list:
    """Every partition of `topics` as kafka-python TopicPartitions, in the order given (a missing topic has none)."""
    from kafka import TopicPartition

    names = list(topics)
    found = partitions(client_kwargs, names, client_id)
    return [TopicPartition(t, p) for t in names for p in found.get(t, ())]


def parse_described(described: list[dict]) -> dict[str, list[int]]:
    """`partitions` from kafka-python's `describe_topics` answer (a list of MetadataResponse topic dicts)."""
    out: dict[str, list[int]] = {}
    for d in described:
        code = d.get("error_code", 0)
        if code == TOPIC_AUTHORIZATION_FAILED:
            raise TopicAccessError(f"the broker refused to describe topic {d.get('name')!r} to this principal "
                                   "(it needs READ or DESCRIBE on it: README, \"Security\")")
        if code == 0 and d.get("partitions"):
            out[d["name"]] = sorted(p["partition_index"] for p in d["partitions"])
        # UNKNOWN_TOPIC (3), LEADER_NOT_AVAILABLE (5) as a topic is created, ...: not there (yet)
    return out
