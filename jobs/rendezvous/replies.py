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

Existence is looked up by name (a metadata request for that one topic, on the task thread: a listing of every
topic costs the broker and the job a describe of each, 131 ms on a broker with 1,229 topics: jobs/common/topics.py) and cached once
found. A name found missing is not looked up again for `refresh_ms`; at most `LOOKUPS_PER_REFRESH` lookups go out
in any `refresh_ms`, and after a failed one (the broker away) none until `refresh_ms` has passed, so requests with
ever new addresses cannot keep the task thread waiting. A request whose address fails either check is answered
on the answers topic only (counted as `reply_dropped`). A reply topic deleted while requests addressed to it are
in flight is the one case left that stalls the sink: delete a gateway's topic only after the gateway stopped.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

LOOKUPS_PER_REFRESH = 10
"""Lookups of unknown reply topics allowed in any `refresh_ms` (a new gateway's topic needs one)."""
MISSING_REMEMBERED = 1_000
"""Names found missing that are remembered (the oldest forgotten first)."""


class ReplyTopics:
    def __init__(self, answers_topic: str, exists: Callable[[str], bool], refresh_ms: int = 5_000):
        self.prefix = f"{answers_topic}."
        self.exists = exists
        self.refresh_ms = refresh_ms
        self.known: set[str] = set()
        self.missing: dict[str, int] = {}  # name -> when it was found missing
        self.recent: deque[int] = deque()  # when the lookups of the last refresh_ms went out
        self.failed_at_ms: int | None = None
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
        if now_ms - self.missing.get(topic, now_ms - self.refresh_ms) < self.refresh_ms:
            return False
        if self.failed_at_ms is not None and now_ms - self.failed_at_ms < self.refresh_ms:
            return False
        while self.recent and now_ms - self.recent[0] >= self.refresh_ms:
            self.recent.popleft()
        if len(self.recent) >= LOOKUPS_PER_REFRESH:
            return False
        self.recent.append(now_ms)
        self.lookups += 1
        try:
            found = self.exists(topic)
        except Exception:  # noqa: BLE001 - no lookup, no reply: the answer still goes to the answers topic
            self.failed_lookups += 1
            self.failed_at_ms = now_ms
            return False
        if found:
            self.known.add(topic)
            self.missing.pop(topic, None)
            return True
        self.missing.pop(topic, None)
        self.missing[topic] = now_ms
        while len(self.missing) > MISSING_REMEMBERED:
            del self.missing[next(iter(self.missing))]
        return False


def kafka_topic_lookup(kafka, client_id: str) -> tuple[Callable[[str], bool], Callable[[], None]]:
    """(exists, close) over one lazily made kafka-python admin client of the job's Kafka settings: `exists(topic)`
    asks the broker about that topic only (jobs/common/topics.py), and never creates it."""
    from jobs.common.security import client_config
    from jobs.common.topics import TopicAccessError, parse_described

    holder: list = []

    def exists(topic: str) -> bool:
        if not holder:
            from kafka import KafkaAdminClient

            holder.append(KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, client_id=client_id,
                                           request_timeout_ms=5_000, bootstrap_timeout_ms=5_000,
                                           **client_config(kafka.properties)))
        try:
            return topic in parse_described(holder[0].describe_topics([topic]))
        except TopicAccessError:  # not ours to write: as a missing one (not a failed lookup, which stops them all)
            return False

    def close() -> None:
        if holder:
            try:
                holder.pop().close()
            except Exception:  # noqa: BLE001
                pass

    return exists, close
