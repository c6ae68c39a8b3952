"""Return addresses: which reply topics the rendezvous writes a copy of an answer to.

A request may carry a return address (`Request.reply_to`): the reply topic of the gateway whose caller waits
for its answer (gateway/, README "The gateway"). The rendezvous then writes the answer to the answers topic, as
always, and a copy to that topic, so a gateway reads only the answers of its own callers.

The address comes from whoever wrote the request, so it is checked before anything is written there:

- it must be named `<answers topic>.<something>`: a request cannot make the rendezvous write into `schedules`,
  `scores` or any other topic of the system (a secured broker grants the rendezvous writes under that prefix
  only);
- the topic must exist: the Kafka sink would wait a minute for the metadata of a missing topic and then fail
  the job, and with the input replayed, fail it again: one request would stop the rendezvous. Gateways create
  their reply topic before they take requests.

Existence is looked up in the broker's topic list, cached; an unknown name refreshes the list at most every
`refresh_ms` (the lookup is a metadata request on the task thread). A request whose address fails either check
is answered on the answers topic only (counted as `reply_dropped`). A reply topic deleted while requests
addressed to it are in flight is the one case left that stalls the sink: delete a gateway's topic only after
the gateway stopped.
"""

from __future__ import annotations

from typing import Callable


class ReplyTopics:
    def __init__(self, answers_topic: str, list_topics: Callable[[], set[str]], refresh_ms: int = 5_000):
        self.prefix = f"{answers_topic}."
        self.list_topics = list_topics
        self.refresh_ms = refresh_ms
        self.known: set[str] = set()
        self.refreshed_at_ms: int | None = None
        self.lookups = 0
        self.failed_lookups = 0

    def under_prefix(self, topic: str | None) -> bool:
        return isinstance(topic, str) and topic.startswith(self.prefix) and len(topic) > len(self.prefix)

    def allowed(self, topic: str | None, now_ms: int) -> bool:
        """Whether the rendezvous may write a reply to `topic` (None: no return address)."""
        if not self.under_prefix(topic):
            return False
        if topic in self.known:
            return True
        if self.refreshed_at_ms is not None and now_ms - self.refreshed_at_ms < self.refresh_ms:
            return False
        self.refreshed_at_ms = now_ms
        self.lookups += 1
        try:
            self.known = {t for t in self.list_topics() if self.under_prefix(t)}
        except Exception:  # noqa: BLE001 - no lookup, no reply: the answer still goes to the answers topic
            self.failed_lookups += 1
            return False
        return topic in self.known


def kafka_topic_lister(kafka, client_id: str) -> tuple[Callable[[], set[str]], Callable[[], None]]:
    """(list_topics, close) over one lazily made kafka-python consumer of the job's Kafka settings (no group:
    no background thread). Listing every topic never auto-creates one."""
    from jobs.common.security import client_config

    holder: list = []

    def list_topics() -> set[str]:
        if not holder:
            from kafka import KafkaConsumer

            holder.append(KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                                        enable_auto_commit=False, client_id=client_id, request_timeout_ms=5_000,
                                        **client_config(kafka.properties)))
        return set(holder[0].topics())

    def close() -> None:
        if holder:
            try:
                holder.pop().close()
            except Exception:  # noqa: BLE001
                pass

    return list_topics, close
