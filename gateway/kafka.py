"""The gateway's Kafka side: one producer of requests and one consumer of its reply topics and the schedules.

Both are confluent-kafka (librdkafka) clients, made with the settings of the `client` principal
(`control.kafka_io.librdkafka_config`): they fetch and send in librdkafka's own threads, so the event loop only
hands records over (kafka-python measured 7-10x the CPU for the same load, docs/architecture.md "Platform
facts"; on two cores that is latency taken from the system the gateway fronts).

The consumer is the one per gateway process: it reads this gateway's reply topics (`<answers>.<gateway id>`,
created here, one partition, short retention) from their end as of start, and each rendezvous's schedules
topic from its beginning (the active schedule sets the default budget and the model metadata). It parses each
reply's request id and hands a batch of answers to the event loop at a time (`Router.deliver_many`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from control import kafka_io
from gateway.router import Key, Router
from gateway.settings import Endpoint
from jobs.rendezvous.schedule import BUILTIN_SCHEDULE
from schemas.records import Request, Schedule

log = logging.getLogger("gateway")


class NotReady(Exception):
    """The gateway cannot take requests yet (or any more): the reason says why."""


class KafkaBridge:
    def __init__(self, bootstrap: str, endpoints: dict[str, Endpoint], gateway_id: str, linger_ms: float = 1.0,
                 reply_retention_ms: int = 3_600_000):
        self.bootstrap = bootstrap
        self.endpoints = endpoints
        self.gateway_id = gateway_id
        self.linger_ms = linger_ms
        self.reply_retention_ms = reply_retention_ms
        self.reply_topics = {name: ep.reply_topic(gateway_id) for name, ep in endpoints.items()}
        self._names_by_reply: dict[str, list[str]] = {}
        for name, topic in self.reply_topics.items():
            self._names_by_reply.setdefault(topic, []).append(name)
        self._names_by_schedules: dict[str, list[str]] = {}
        for name, ep in endpoints.items():
            self._names_by_schedules.setdefault(ep.schedules, []).append(name)
        self._schedules: dict[str, Schedule] = {}
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer = None
        self._consumer = None
        self._unloaded: dict = {}  # schedules partitions not read to their end as of start -> end offset
        self.setup_done = False
        self.problem: str | None = "starting"
        self.answers_read = 0

    # ------------------------------------------------------------------------------------------ state
    @property
    def ready(self) -> bool:
        return self.setup_done and not self._unloaded and self.problem is None

    def schedule(self, name: str) -> Schedule:
        """The active schedule of rendezvous `name` (the built-in one until one is published)."""
        return self._schedules.get(name) or BUILTIN_SCHEDULE

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, deliver: Callable[[list[tuple[Key, dict]]], None], fail: Callable[[Key, str], None]) -> None:
        """Set up in a thread (the broker may come later); then consume. `deliver` and `fail` are called from
        Kafka's threads: they must hand over to the event loop themselves."""
        self._deliver, self._fail = deliver, fail
        t = threading.Thread(target=self._setup_then_consume, name="gateway-kafka", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        self._halt.set()
        for t in self._threads:
            t.join(timeout=5)
        if self._producer is not None:
            self._producer.flush(5)
        if self._consumer is not None:
            self._consumer.close()

    def _setup_then_consume(self) -> None:
        while not self._halt.is_set():
            try:
                self._setup()
                break
            except Exception as e:  # noqa: BLE001 - not ready: say why, try again
                self.problem = f"Kafka at {self.bootstrap}: {e}"
                log.warning("gateway not ready: %s (retrying)", self.problem)
                self._halt.wait(2.0)
        if self._halt.is_set():
            return
        poller = threading.Thread(target=self._poll_producer, name="gateway-producer", daemon=True)
        poller.start()
        self._threads.append(poller)
        self._consume()

    def _setup(self) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        adm = kafka_io.admin(self.bootstrap, role="client", client_id=f"{self.gateway_id}-admin")
        try:
            existing = set(adm.list_topics())
            needed = {t for ep in self.endpoints.values() for t in (ep.requests, ep.schedules)}
            missing = sorted(needed - existing)
            if missing:
                raise NotReady(f"topics {missing} do not exist (is the runtime up, and are these the served "
                               "rendezvous's topics?)")
            new = [NewTopic(t, num_partitions=1, replication_factor=1,
                            topic_configs={"retention.ms": str(self.reply_retention_ms)})
                   for t in sorted(self._names_by_reply) if t not in existing]
            if new:
                try:
                    adm.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
        finally:
            adm.close()
        self._producer = Producer(kafka_io.librdkafka_config(self.bootstrap, "client", **{
            "linger.ms": self.linger_ms, "acks": 1, "client.id": self.gateway_id}))
        c = Consumer(kafka_io.librdkafka_config(self.bootstrap, "client", **{
            "group.id": f"load-gateway-{self.gateway_id}", "enable.auto.commit": False,
            # the broker answers a fetch as soon as a reply is appended; this is only how long an idle fetch waits
            "fetch.wait.max.ms": 100,
            "client.id": self.gateway_id}))
        assignment = []
        deadline = time.monotonic() + 30
        for topic in self._names_by_reply:  # a just-created topic may take a moment to have its partition
            while True:
                meta = c.list_topics(topic, timeout=10).topics.get(topic)
                if meta is not None and meta.partitions and meta.error is None:
                    break
                if time.monotonic() > deadline:
                    raise NotReady(f"reply topic {topic} has no partitions")
                time.sleep(0.1)
            for p in sorted(meta.partitions):  # from its end now: resolved before any request is sent
                end = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                assignment.append(TopicPartition(topic, p, end))
        for topic in self._names_by_schedules:
            meta = c.list_topics(topic, timeout=10).topics[topic]
            for p in sorted(meta.partitions):
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assignment.append(TopicPartition(topic, p, low))
                if high > low:
                    self._unloaded[(topic, p)] = high
        c.assign(assignment)
        self._consumer = c
        self.setup_done = True
        self.problem = None
        log.info("gateway %s: reply topics %s, schedules %s", self.gateway_id, sorted(self._names_by_reply),
                 sorted(self._names_by_schedules))

    def _poll_producer(self) -> None:
        while not self._halt.is_set():
            self._producer.poll(0.1)  # delivery reports

    def _consume(self) -> None:
        c = self._consumer
        while not self._halt.is_set():
            try:
                first = c.poll(0.05)
                msgs = [first] + c.consume(num_messages=1000, timeout=0) if first is not None else []
                batch: list[tuple[Key, dict]] = []
                for m in msgs:
                    if m.error():
                        continue
                    names = self._names_by_reply.get(m.topic())
                    if names is not None:
                        try:
                            answer = json.loads(m.value())
                            rid = answer["request_id"]
                        except Exception:  # noqa: BLE001 - not an answer: not for anyone here
                            continue
                        batch += [((name, rid), answer) for name in names]
                    else:
                        self._schedule_record(m)
                if batch:
                    self.answers_read += len(batch)
                    self._deliver(batch)
                if self._unloaded:
                    self._check_loaded()
            except Exception as e:  # noqa: BLE001 - keep serving; say what happened
                log.exception("gateway consumer: %s", e)
                self._halt.wait(0.5)

    def _schedule_record(self, m) -> None:
        try:
            sched = Schedule.parse(m.value())
        except Exception:  # noqa: BLE001 - the rendezvous ignores what is not a schedule; so do we
            return
        for name in self._names_by_schedules.get(m.topic(), []):
            current = self._schedules.get(name)
            if current is None or sched.version >= current.version:  # the newest version is active
                self._schedules[name] = sched

    def _check_loaded(self) -> None:
        from confluent_kafka import TopicPartition

        positions = self._consumer.position([TopicPartition(t, p) for t, p in self._unloaded])
        for tp in positions:
            if tp.offset >= self._unloaded.get((tp.topic, tp.partition), 0):
                self._unloaded.pop((tp.topic, tp.partition), None)

    # ------------------------------------------------------------------------------------------ requests
    def produce(self, name: str, key: Key, request: Request) -> None:
        """Queue `request` for rendezvous `name`'s requests topic (keyed by entity, as every client does); a
        failed delivery fails the callers of `key`."""
        if not self.ready:
            raise NotReady(self.problem or "still reading the schedules")
        fail = self._fail

        def delivered(err, _msg) -> None:
            if err is not None:
                fail(key, f"Kafka did not take the request: {err}")

        self._producer.produce(self.endpoints[name].requests, request.to_json().encode(),
                               key=request.entity_id.encode(), on_delivery=delivered)


def handing_over(loop, router: Router) -> tuple[Callable, Callable]:
    """(deliver, fail) for `KafkaBridge.start` that run the router's methods on `loop`."""
    def deliver(batch):
        loop.call_soon_threadsafe(router.deliver_many, batch)

    def fail(key, message):
        loop.call_soon_threadsafe(router.fail, key, message)

    return deliver, fail
