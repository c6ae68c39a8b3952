"""Kafka client helpers of the control plane (kafka-python): topics, produce, consume.

Shared by the runtime, operations, tools, the benchmark and the tests; the jobs use Flink's connector.

Every kafka-python client of the project is made here (`consumer`, `producer`, `admin`), authenticated as
the principal `security_for` finds for its bootstrap address: the credentials registered for that address
(`use_credentials`), else the runtime's settings (README, "Security"). By default, a client acts as the
operators' principal; `role` names another (e.g. the load generator's `client`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from schemas.topics import TOPICS, TopicSpec

_CREDENTIALS: dict[str, Path] = {}


def use_credentials(bootstrap: str, credentials_dir: Path | None) -> None:
    """Clients of `bootstrap` authenticate with the principals' files in `credentials_dir` (None: forget)."""
    if credentials_dir is None:
        _CREDENTIALS.pop(bootstrap, None)
    else:
        _CREDENTIALS[bootstrap] = Path(credentials_dir)


def security_for(bootstrap: str, role: str = "operator") -> dict[str, str]:
    """The Java client properties of `role`'s principal on `bootstrap` (empty: no security)."""
    from jobs.common.security import read_properties

    if bootstrap in _CREDENTIALS:
        return read_properties(_CREDENTIALS[bootstrap] / f"{role}.properties")
    from control.settings import RuntimeSettings

    return RuntimeSettings().kafka_client_properties(role)


def client_kwargs(bootstrap: str, role: str = "operator") -> dict:
    """kafka-python settings for a client of `bootstrap` acting as `role`."""
    from jobs.common.security import client_config

    return {"bootstrap_servers": bootstrap, **client_config(security_for(bootstrap, role))}


def librdkafka_config(bootstrap: str, role: str = "operator", **conf) -> dict:
    """confluent-kafka settings for a client of `bootstrap` acting as `role`, plus `conf`."""
    from jobs.common.security import librdkafka_config as convert

    return {"bootstrap.servers": bootstrap, **convert(security_for(bootstrap, role)), **conf}


def consumer(bootstrap: str, role: str = "operator", **kw):
    from kafka import KafkaConsumer

    return KafkaConsumer(**client_kwargs(bootstrap, role), **kw)


def admin(bootstrap: str, role: str = "operator", **kw):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**client_kwargs(bootstrap, role), **kw)


def partitions(bootstrap: str, topics: Iterable[str], role: str = "operator") -> dict[str, list[int]]:
    """The partition ids of each of `topics` that exists (missing ones left out), asking the broker about these
    topics only (jobs/common/topics.py: not kafka-python's `partitions_for_topic`, which asks about every topic)."""
    from jobs.common.topics import partitions as described

    return described(client_kwargs(bootstrap, role), topics)


def topic_partitions(bootstrap: str, topics: Iterable[str], role: str = "operator") -> list:
    """Every partition of `topics` as kafka-python TopicPartitions, in order (a missing topic has none)."""
    from jobs.common.topics import topic_partitions as listed

    return listed(client_kwargs(bootstrap, role), topics)


def producer(bootstrap: str, role: str = "operator", **kw):
    from kafka import KafkaProducer

    return KafkaProducer(**client_kwargs(bootstrap, role), linger_ms=kw.pop("linger_ms", 2),
                         acks=kw.pop("acks", 1), **kw)


def produce(bootstrap: str, topic: str, values: Iterable[bytes | str | dict], key: Callable[[Any], bytes] | None = None,
            role: str = "operator") -> int:
    """Send values (dicts are JSON-encoded) and flush; returns how many were sent."""
    p = producer(bootstrap, role)
    futures = []
    try:
        for v in values:
            raw = json.dumps(v).encode() if isinstance(v, dict) else (v.encode() if isinstance(v, str) else v)
            futures.append(p.send(topic, raw, key=key(v) if key else None))
        p.flush()
        for f in futures:  # raise the broker's error (e.g. an unkeyed record to a compacted topic)
            f.get(timeout=30)
    finally:
        p.close()
    return len(futures)


def consume(bootstrap: str, topic: str, count: int | None = None, timeout: float = 60.0,
            until: Callable[[list], bool] | None = None, group_id: str | None = None,
            idle_timeout: float | None = None, role: str = "operator") -> list[bytes]:
    """Read `topic` from the beginning until `count` values (or `until(values)`) or `timeout`.

    With `idle_timeout`, also stop once nothing new arrived for that long (after `count` is reached or
    when no count is given) — used to prove that nothing *more* arrives."""
    from kafka import TopicPartition

    # manual assignment, not a consumer group: a group that joins right after the topic was created can
    # get no partitions and not look again for minutes (metadata max age)
    parts_deadline = time.monotonic() + min(timeout, 30.0)
    while True:
        parts = partitions(bootstrap, [topic], role).get(topic)
        if parts:
            break
        if time.monotonic() > parts_deadline:
            raise TimeoutError(f"topic {topic} has no partitions (does it exist?)")
        time.sleep(0.2)
    c = consumer(bootstrap, role, enable_auto_commit=False, group_id=group_id)
    tps = [TopicPartition(topic, p) for p in parts]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = c.poll(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    out.append(r.value)
                    last_new = time.monotonic()
            done = (count is not None and len(out) >= count) or (until is not None and until(out))
            if done and idle_timeout is None:
                break
            if idle_timeout is not None and (done or (count is None and until is None)) \
                    and time.monotonic() - last_new >= idle_timeout:
                break
    finally:
        c.close()
    return out


def read_to_end(bootstrap: str, topic: str, timeout: float = 10.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) in `topic` from its beginning to its end as of now, in order (per partition).
    A topic that does not exist reads as empty."""
    return [(r.key, r.value) for r in records_to_end(bootstrap, topic, timeout)]


def records_to_end(bootstrap: str, topic: str, timeout: float = 10.0, since_ms: int | None = None,
                   contains: bytes | None = None) -> list:
    """Every record (kafka-python ConsumerRecord: key, value, timestamp, partition, offset) in `topic` from its
    beginning, or from the first whose Kafka timestamp is at or after `since_ms` (found by the broker's time
    index), to its end as of now, in order per partition; with `contains`, only the records whose value holds
    those bytes (a search: the rest is not kept). A topic that does not exist reads as empty. `timeout`: per
    10,000 records read (a long topic takes longer)."""
    tps = topic_partitions(bootstrap, [topic])
    if not tps:
        return []
    c = consumer(bootstrap, enable_auto_commit=False, group_id=None)
    try:
        c.assign(tps)
        end = c.end_offsets(tps)
        if since_ms is None:
            c.seek_to_beginning(*tps)
        else:
            start = c.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:  # no record that late: nothing to read there
                c.seek(tp, start[tp].offset if start.get(tp) is not None else end[tp])
        out: list = []
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read topic {topic} to its end within {timeout:.0f} s "
                                   "(is the broker up? `rendezvous status`)")
            for tp, recs in c.poll(timeout_ms=200, max_records=10_000).items():
                deadline = max(deadline, time.monotonic() + timeout * len(recs) / 10_000)
                out += [r for r in recs if r.offset < end[tp] and (contains is None or (r.value or b"").find(
                    contains) >= 0)]
        return out
    finally:
        c.close()


def read_since(bootstrap: str, topic: str, since_ms: int | None, timeout: float = 30.0) -> list[bytes]:
    """The values of `topic` whose Kafka timestamp is at or after `since_ms` (None: from the beginning) up
    to its end as of now, in order per partition: a reader of the recent part of a long topic skips the
    rest by the broker's time index. A topic that does not exist reads as empty."""
    return [r.value for r in records_to_end(bootstrap, topic, timeout, since_ms)]


def last(bootstrap: str, topic: str, n: int, timeout: float = 15.0) -> list[bytes]:
    """The last n values of every partition of `topic` (in partition order, then offset order)."""
    parts = topic_partitions(bootstrap, [topic])
    if not parts:
        raise RuntimeError(f"topic {topic} does not exist (is the runtime up, and is this the right topic?)")
    c = consumer(bootstrap, enable_auto_commit=False, group_id=None)
    try:
        c.assign(parts)
        end = c.end_offsets(parts)
        for p in parts:
            c.seek(p, max(0, end[p] - n))
        out: dict = {p: [] for p in parts}
        deadline = time.monotonic() + timeout
        while any(c.position(p) < end[p] for p in parts) and time.monotonic() < deadline:
            for tp, recs in c.poll(timeout_ms=200).items():
                out[tp] += [r.value for r in recs if r.offset < end[tp]]
        return [v for p in parts for v in out[p]]
    finally:
        c.close()


def consume_json(*args, **kw) -> list[dict]:
    return [json.loads(v) for v in consume(*args, **kw)]


def ensure_topics(bootstrap_servers: str, specs: Iterable[TopicSpec] = TOPICS, partitions: int = 1,
                  progress: Callable[[str], None] | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Data topics get `partitions`
    partitions, control topics (`TopicSpec.single_partition`) one. An existing data topic with fewer
    partitions is grown to `partitions` (Kafka cannot shrink one; keyed records of one key land in a new
    partition from then on, which the rendezvous does not mind: it keys by request id itself). An existing
    topic whose settings differ from its spec's (e.g. an answers topic made before it stamped broker time)
    is brought in line."""
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    if partitions < 1:
        raise ValueError(f"a topic needs at least one partition, not {partitions}")
    specs = list(specs)
    want_parts = {s.name: 1 if s.single_partition else partitions for s in specs}
    adm = admin(bootstrap_servers, client_id="rendezvous-admin")
    try:
        existing = set(adm.list_topics())
        new = [
            NewTopic(s.name, num_partitions=want_parts[s.name], replication_factor=1, topic_configs=s.topic_config())
            for s in specs
            if s.name not in existing
        ]
        if new:
            try:
                adm.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        grow = [s.name for s in specs if s.name in existing and want_parts[s.name] > 1]
        if grow:
            have_parts = {d["name"]: len(d["partitions"]) for d in adm.describe_topics(grow)}
            more = {n: NewPartitions(total_count=want_parts[n]) for n in grow if have_parts.get(n, 0) < want_parts[n]}
            if more:
                adm.create_partitions(more)
                if progress:
                    progress(f"grew {', '.join(f'{n} ({have_parts[n]} -> {want_parts[n]})' for n in more)} partitions")
        made = {t.name: want_parts[t.name] for t in new}
        made.update({n: want_parts[n] for n in grow if n not in made})
        if made:
            wait_led(bootstrap_servers, made)
        for spec in (s for s in specs if s.name in existing and s.topic_config()):
            want = spec.topic_config()
            res = adm.describe_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name)])
            have = {k: (d or {}).get("value") for k, d in res.get("topic", {}).get(spec.name, {}).items()}
            changed = {k: v for k, v in want.items() if have.get(k) != v}
            if changed:  # set just these (incremental where the broker has it; the client keeps the others)
                adm.alter_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name, configs=changed)])
        return [t.name for t in new]
    finally:
        adm.close()


def wait_led(bootstrap_servers: str, topics: dict[str, int], timeout: float = 30.0) -> None:
    """Return once the broker answers as the leader of every partition of `topics` (name -> partitions): the end
    offsets of each can be read. A topic just created (or grown) is not led at once: a client asking its offsets a
    moment later was told "Not leader for partition" (seen in CI, a load generator's answer collector)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
    deadline = time.monotonic() + timeout
    c = consumer(bootstrap_servers, enable_auto_commit=False, group_id=None, request_timeout_ms=int(timeout * 1000))
    try:
        while True:
            try:
                ends = c.end_offsets(tps)
                if all(ends.get(tp) is not None for tp in tps):
                    return
            except KafkaError as e:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the broker did not lead {', '.join(topics)} within {timeout:.0f} s of their "
                                       f"creation ({type(e).__name__}: {e}); is it overloaded (`rendezvous status`)?")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end offsets for {', '.join(topics)} within {timeout:.0f} s of their creation")
            time.sleep(0.1)
    finally:
        c.close()


def partition_count(bootstrap_servers: str, topic: str) -> int:
    """How many partitions `topic` has (0: it does not exist)."""
    return len(partitions(bootstrap_servers, [topic]).get(topic, ()))


def delete_topics(bootstrap_servers: str, names: Iterable[str]) -> None:
    """Delete these topics (the ones that exist); side topics of a finished run."""
    a = admin(bootstrap_servers)
    try:
        existing = set(a.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            a.delete_topics(gone)
    finally:
        a.close()
