"""Transition tokens: which version of a thread-mode job owns each record of its input, during and after an upgrade
that hands over without stopping (control/ops/handover.py, the seed's "Upgrading the Rendezvous System").

Two versions of the external state (or of the rendezvous) read the same input topic at once, the old one running,
the new one restored from a savepoint of it (the snapshot token) and caught up. Then `rendezvous upgrade` writes a
transition token into every partition of the input (`schemas.records.TransitionToken`, naming the version that
takes over) and records where each landed in the transitions registry (`schemas.records.Transitions`, a compacted
topic keyed by input topic). A record belongs to the owner named by the last token before it in its partition, and
to the version that was there first when no token precedes it; every version decides the same way, because the
token sits at one place in the partition's order, so each record has exactly one owner. The versions differ only
in what they do with the records they do not own: the external state keeps its features up to date but writes
nothing; the rendezvous does not open a mailbox (jobs/rendezvous/core.py, `hand_over`), except that a version
taking over, before its first token (`Ownership.warming`), may write what it would for the live ones into a
shadow topic (`HandedOverJob.shadow_topic`; the rendezvous's `on_shadow_request`): never into its real output.

The decision is taken where the partition's order still holds: in the operator chained to the Kafka source, from
the record's position (`jobs.common.kafka.POSITIONED`). Tokens seen in the stream take effect at once; a job
restored past a token (a failover after a checkpoint that follows it) reads the registry when it opens.
"""

from __future__ import annotations

import bisect
import time
from typing import Iterable

from schemas.records import TRANSITION_TOKEN_PREFIX as TOKEN_PREFIX
from schemas.records import TokenPosition, TransitionInfo, Transitions, TransitionToken

SHADOW_MAX_AGE_MS = 5_000
"""A version warming up shadows only the live records, the ones reaching it within this of their request's time
(which deadlines count from by default); the backlog it reads while catching up from its snapshot (tens of seconds)
was served long ago, and shadowing it would only take CPU from the version serving."""


def parse_token(raw: str | None) -> TransitionInfo | None:
    """The token's content if `raw` is a transition token, else None (a request, or anything else)."""
    if raw is None or not raw.startswith(TOKEN_PREFIX):
        return None
    try:
        return TransitionToken.parse(raw).transition
    except ValueError:
        return None


class Ownership:
    """Which records of its input this job version owns. Pure: fed tokens, asked about positions.

    `owner`: this version's name. `first`: whether it owns the records no token precedes (the version that was
    running before any hand-over of the topic; a version started to take over owns nothing until a token names
    it). `known`: tokens from the registry (`read_registry`), by topic."""

    def __init__(self, owner: str, first: bool, known: dict[str, Iterable[TokenPosition]] | None = None):
        self.owner = owner
        self.first = first
        self._tokens: dict[tuple[str, int], list[tuple[int, str]]] = {}
        for topic, tokens in (known or {}).items():
            for t in tokens:
                self._add(topic, t.partition, t.offset, t.owner)

    def _add(self, topic: str, partition: int, offset: int, owner: str) -> None:
        tokens = self._tokens.setdefault((topic, partition), [])
        if (offset, owner) not in tokens:
            bisect.insort(tokens, (offset, owner))

    def token(self, topic: str, partition: int, offset: int, info: TransitionInfo) -> None:
        """A token read from the stream at this position."""
        self._add(topic, partition, offset, info.owner)

    def owns(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the record at this position is this version's."""
        tokens = self._tokens.get((topic, partition))
        if not tokens:
            return self.first
        if offset > tokens[-1][0]:  # the usual case: after the latest token
            return tokens[-1][1] == self.owner
        i = bisect.bisect_left(tokens, (offset, "")) - 1
        return tokens[i][1] == self.owner if i >= 0 else self.first

    def warming(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the record at this position precedes every record of its partition this version owns: a version
        taking over, before the token that names it (it may write what it would for such records into a shadow topic). False for the version
        that was first, and for a version after a token took the partition from it (it is retiring)."""
        if self.first:
            return False
        return not any(owner == self.owner and o < offset for o, owner in self._tokens.get((topic, partition), ()))

    def owners(self) -> dict[str, str]:
        """The current owner of every partition a token was seen for, as `topic:partition` -> owner."""
        return {f"{t}:{p}": tokens[-1][1] for (t, p), tokens in self._tokens.items()}


def read_registry(kafka, registry_topic: str | None, topics: list[str], timeout_s: float = 30.0) \
        -> dict[str, list[TokenPosition]]:
    """The registry's tokens of `topics` (`kafka`: a `jobs.common.settings.KafkaSettings`). Empty when the registry
    topic does not exist (a runtime from before the registry, or a test's own topics without one). Raises when the
    broker cannot be read: a job that opened without its tokens could take records that are not its own."""
    if not registry_topic:
        return {}
    from kafka import KafkaConsumer

    from jobs.common.security import client_config
    from jobs.common.topics import topic_partitions

    config = {"bootstrap_servers": kafka.bootstrap_servers, **client_config(kafka.properties)}
    tps = topic_partitions(config, [registry_topic], client_id="transitions-reader")
    if not tps:
        return {}
    c = KafkaConsumer(enable_auto_commit=False, group_id=None, client_id="transitions-reader", **config)
    try:
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        latest: dict[str, Transitions] = {}
        deadline = time.monotonic() + timeout_s
        while any(c.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the transitions registry {registry_topic} took over {timeout_s:.0f} s")
            for recs in c.poll(timeout_ms=500).values():
                for r in recs:
                    if r.value is None:
                        continue
                    try:
                        t = Transitions.parse(r.value)
                    except ValueError:
                        continue  # not written by the control plane: ignored
                    latest[t.topic] = t
        return {t: latest[t].tokens for t in topics if t in latest}
    finally:
        c.close()


def registry_record(current: Transitions | None, topic: str, positions: list[TokenPosition], keep: int = 64) \
        -> Transitions:
    """The registry's new record of `topic`: its tokens so far and the new ones (the last `keep`)."""
    tokens = (list(current.tokens) if current is not None else []) + positions
    return Transitions(topic=topic, tokens=tokens[-keep:])


def token_json(upgrade_id: str, topic: str, partition: int, owner: str, previous: str, now_ms: int) -> str:
    return TransitionToken(transition=TransitionInfo(upgrade_id=upgrade_id, topic=topic, partition=partition,
                                                     owner=owner, previous=previous,
                                                     written_at_ms=now_ms)).to_json()

