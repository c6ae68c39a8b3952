"""The load generator: synthetic transactions at a fixed rate, and a report read from the answers topic.

Two paths in: straight to the requests topic (the default), or through a gateway (`gateway=URL`): each request
one Open Inference Protocol call, so client-observed latency includes the HTTP hop and the gateway. Either way
the report reads the answers topic too (the recorded answers: models, triggers, duplicates)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Callable

from control import kafka_io
from schemas.records import Label
from training.synthetic import TransactionGenerator


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile, rounded to 0.1 (ms): the clocks measured are no finer."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 1)


@dataclass
class LoadReport:
    rate: float
    duration_s: float
    sent: int
    answered: int
    unanswered: int
    duplicate_answers: int
    answers_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    overshoot_p50_ms: float | None
    overshoot_p99_ms: float | None
    overhead_p50_ms: float | None
    overhead_p99_ms: float | None
    client_latency_p50_ms: float | None = None
    client_latency_p99_ms: float | None = None
    default_share: float | None = None
    by_model: dict[str, int] = field(default_factory=dict)
    by_trigger: dict[str, int] = field(default_factory=dict)
    by_stage: dict[str, int] = field(default_factory=dict)
    by_schedule: dict[str, int] = field(default_factory=dict)
    by_schedule_model: dict[str, dict[str, int]] = field(default_factory=dict)
    fraud_sent: int = 0
    fraud_flagged: int = 0
    legit_flagged: int = 0
    conflicting_answers: int = 0
    """Later answers of a request id whose model or output differ from its first (the contract: none)."""
    max_answer_gap_ms: float | None = None
    """The longest time in which no answer arrived (e.g. while a failed job recovered)."""
    prefix: str = ""
    """The request ids of this run start with it."""
    labels_sent: int = 0
    """Outcomes published to the labels topic (`--labels`)."""
    path: str = "kafka"
    """How the requests went in: `kafka` (the requests topic) or `gateway` (one V2 infer call each)."""
    gateway_status: dict[str, int] = field(default_factory=dict)
    """Through a gateway: calls by HTTP status (200 answered, 504 past the budget, ...)."""
    gateway_mismatches: int = 0
    """Through a gateway: calls whose HTTP answer differs from the answers topic's first answer (contract: none)."""

    def as_dict(self) -> dict:
        return asdict(self)

    def on_time(self, on_time_ms: float) -> bool:
        """Every request answered, none by the default, client-observed latency p99 within on_time_ms."""
        return (self.sent > 0 and self.unanswered == 0 and not self.default_share
                and self.client_latency_p99_ms is not None and self.client_latency_p99_ms <= on_time_ms)

    def summary(self) -> str:
        def ms(x):
            return "-" if x is None else f"{x:.1f} ms"

        lines = [
            f"sent {self.sent} requests in {self.duration_s:.1f} s (target {self.rate:.0f}/s); "
            f"answered {self.answered}, unanswered {self.unanswered}, duplicate answers {self.duplicate_answers} "
            f"({self.conflicting_answers} conflicting)",
            f"answers/s {self.answers_per_s:.1f}",
            f"answers from a model: {100 * (1 - (self.default_share or 0)):.2f} % (default answers "
            f"{100 * (self.default_share or 0):.2f} %)",
            f"client-observed latency (answer received - request sent{', through the gateway' if self.path == 'gateway' else ''}): "
            f"p50 {ms(self.client_latency_p50_ms)}, p99 {ms(self.client_latency_p99_ms)}",
            f"answer latency (answered - request time): p50 {ms(self.latency_p50_ms)}, p99 {ms(self.latency_p99_ms)}",
            f"deadline overshoot (answered - deadline): p50 {ms(self.overshoot_p50_ms)}, "
            f"p99 {ms(self.overshoot_p99_ms)}",
            f"rendezvous overhead (answered - winning model finished): p50 {ms(self.overhead_p50_ms)}, "
            f"p99 {ms(self.overhead_p99_ms)}",
            "answers by model:    " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_model.items())),
            "answers by trigger:  " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_trigger.items())),
            "answers by stage:    " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_stage.items())),
            "answers by schedule: " + ", ".join(f"v{k} {v}" for k, v in sorted(self.by_schedule.items())),
        ]
        if len(self.by_schedule_model) > 1:  # the signature of a schedule change: who answered under each
            for v, models in sorted(self.by_schedule_model.items(), key=lambda kv: int(kv[0])
                                    if kv[0].lstrip("-").isdigit() else -1):
                n = sum(models.values())
                lines.append(f"  under v{v}: " + ", ".join(f"{m} {100 * c / n:.1f} %" for m, c in
                                                           sorted(models.items(), key=lambda kv: -kv[1])))
        if self.fraud_sent:
            lines.append(f"fraud: {self.fraud_sent} sent, {self.fraud_flagged} flagged (p >= 0.5); "
                         f"legit flagged: {self.legit_flagged}")
        if self.path == "gateway":
            lines.append("gateway calls by HTTP status: " + ", ".join(f"{k} {v}" for k, v in
                                                                    sorted(self.gateway_status.items()))
                         + f"; answers differing from the answers topic: {self.gateway_mismatches}")
        if self.labels_sent:
            lines.append(f"labels published: {self.labels_sent} (outcomes of the requests, to the labels topic)")
        return "\n".join(lines)


class LabelFeed:
    """The outcomes of the sent transactions, each published `delay_s` after its request, as chargebacks
    arrive after the decision (`schemas.records.Label`, to the labels topic, keyed by request id)."""

    def __init__(self, delay_s: float):
        if delay_s < 0:
            raise ValueError(f"the label delay cannot be negative, not {delay_s}")
        self.delay_s = delay_s
        self._pending: deque[tuple[float, str, bool, int]] = deque()

    def add(self, request_id: str, is_fraud: bool, event_time_ms: int, sent_s: float) -> None:
        self._pending.append((sent_s + self.delay_s, request_id, is_fraud, event_time_ms))

    def due(self, now_s: float, known_at_ms: int) -> list[Label]:
        """The labels whose time has come (in the order their requests were sent)."""
        out = []
        while self._pending and self._pending[0][0] <= now_s:
            _, rid, fraud, event_ms = self._pending.popleft()
            out.append(Label(request_id=rid, outcome="fraud" if fraud else "legit", positive=fraud,
                             event_time_ms=event_ms, known_at_ms=known_at_ms))
        return out

    def __len__(self) -> int:
        return len(self._pending)


class AnswerCollector(threading.Thread):
    """Reads the answers topic from its end (as of construction), keeping answers whose id has our prefix.

    confluent-kafka (librdkafka) fetches in its own C threads; this thread only parses what it is handed,
    so the client's clock for "answer received" is not held up by the producer (measured: kafka-python
    used 7-10x more CPU for the same produce/consume load and competed with the system it measures)."""

    def __init__(self, bootstrap: str, topic: str, prefix: str):
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.prefix = prefix
        self.answers: dict[str, dict] = {}
        self.received_ms: dict[str, float] = {}  # when this client saw each answer (wall clock)
        self.duplicates = 0
        self.conflicting = 0
        self.first_answer_s: float | None = None
        self.last_answer_s: float | None = None
        self._halt = threading.Event()
        self._c = Consumer(kafka_io.librdkafka_config(bootstrap, "client", **{
            "group.id": f"{prefix}-collector", "enable.auto.commit": False, "fetch.wait.max.ms": 10}))
        meta = self._c.list_topics(topic, timeout=30).topics.get(topic)
        parts = sorted(meta.partitions) if meta is not None and meta.partitions else [0]
        # resolve the end offsets now, before any request is sent
        ends = [TopicPartition(topic, p, self._c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
                for p in parts]
        self._c.assign(ends if all(tp.offset >= 0 for tp in ends) else [TopicPartition(topic, p, OFFSET_END)
                                                                          for p in parts])
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                first = self._c.poll(0.05)  # returns as soon as one answer is there
                # then what else is already fetched; consume(n, timeout) would wait for n records or the timeout
                for r in ([first] + self._c.consume(num_messages=1000, timeout=0)) if first is not None else ():
                    if r.error():
                        continue
                    now_ms = time.time() * 1000
                    try:
                        a = json.loads(r.value())
                    except (TypeError, ValueError):
                        continue
                    rid = a.get("request_id", "") if isinstance(a, dict) else ""
                    if not rid.startswith(self.prefix):
                        continue
                    now = time.monotonic()
                    with self.lock:
                        if rid in self.answers:
                            self.duplicates += 1
                            first = self.answers[rid]
                            if (first.get("model"), first.get("output")) != (a.get("model"), a.get("output")):
                                self.conflicting += 1
                        else:
                            self.answers[rid] = a
                            self.received_ms[rid] = now_ms
                        self.first_answer_s = self.first_answer_s or now
                        self.last_answer_s = now
        finally:
            self._c.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def count(self) -> int:
        with self.lock:
            return len(self.answers)


class GatewaySender:
    """Sends each request as one V2 infer call to a gateway, from an event loop in its own thread (aiohttp's
    client: one pooled keep-alive connection per call in flight), and keeps each call's status, answer and the
    wall-clock time its response was read."""

    def __init__(self, url: str, model: str = "rendezvous", budget_ms: float | None = None):
        self.endpoint = f"{url.rstrip('/')}/v2/models/{model}/infer"
        self.budget_ms = budget_ms
        self.results: dict[str, tuple[int, float, dict]] = {}  # request id -> (status, received ms, body)
        self.sent = 0
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="gateway-sender")
        self._thread.start()
        self._session = asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(10)

    async def _open(self):
        import aiohttp

        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000),
                                     timeout=aiohttp.ClientTimeout(total=120))

    def send(self, request: dict) -> None:
        self.sent += 1
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self._call(request)))

    async def _call(self, request: dict) -> None:
        from gateway.client import infer_body

        rid = request["request_id"]
        try:
            async with self._session.post(self.endpoint, json=infer_body(request, self.budget_ms)) as r:
                body = await r.json(content_type=None)
                status = r.status
        except Exception as e:  # noqa: BLE001 - counted as status 0 (no HTTP answer)
            status, body = 0, {"error": f"{type(e).__name__}: {e}"}
        received = time.time() * 1000
        with self.lock:
            self.results[rid] = (status, received, body)

    def done(self) -> int:
        with self.lock:
            return len(self.results)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._session.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


def same_answer(http: dict, recorded: dict) -> bool:
    """Whether a gateway's response carries the recorded answer: the same model and outputs."""
    params = http.get("parameters") or {}
    outputs = {t.get("name"): (t.get("data") or [None])[0] for t in http.get("outputs") or []}
    if params.get("model") != recorded.get("model"):
        return False
    for k, v in (recorded.get("output") or {}).items():
        got = outputs.get(k)
        if isinstance(v, (dict, list)) and isinstance(got, str):
            try:
                got = json.loads(got)
            except ValueError:
                return False
        if got != v:
            return False
    return True


def run_load(bootstrap: str, rate: float, duration_s: float, requests_topic: str = "requests",
             answers_topic: str = "answers", fraud_fraction: float = 0.02, seed: int | None = None,
             drain_s: float = 10.0, progress: Callable[[str], None] | None = print,
             on_tick: Callable[[float], None] | None = None, labels_topic: str | None = None,
             label_delay_s: float = 5.0, gateway: str | None = None, model: str = "rendezvous",
             budget_ms: float | None = None, keep_going: Callable[[], bool] | None = None) -> LoadReport:
    """Send `rate` requests/s for `duration_s` (and on past it while `keep_going()` is true: a roll that
    needs traffic to judge its steps), then wait up to `drain_s` for the last answers. With
    `labels_topic`, each transaction's outcome follows `label_delay_s` after it (the run waits for the last).
    With `gateway` (its URL), every request is one infer call of rendezvous `model` there (with `budget_ms`, if
    given) instead of a record on `requests_topic`; client-observed latency is then the call's."""
    from confluent_kafka import Producer

    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    run_id = uuid.uuid4().hex[:8]
    prefix = f"load-{run_id}"
    gen = TransactionGenerator(seed=seed if seed is not None else int(time.time()), fraud_fraction=fraud_fraction,
                               prefix=prefix)
    collector = AnswerCollector(bootstrap, answers_topic, prefix)
    collector.start()
    errors: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    prod = Producer(kafka_io.librdkafka_config(bootstrap, "client", **{"linger.ms": 1, "acks": 1}))
    sender = GatewaySender(gateway, model, budget_ms) if gateway else None
    feed = LabelFeed(label_delay_s) if labels_topic else None
    labels_sent = 0

    def publish_due_labels() -> None:
        nonlocal labels_sent
        if feed is None:
            return
        for lab in feed.due(time.monotonic(), int(time.time() * 1000)):
            prod.produce(labels_topic, lab.to_json().encode(), key=lab.request_id.encode(), on_delivery=delivered)
            labels_sent += 1

    labels: dict[str, bool] = {}
    sent_ms: dict[str, float] = {}
    t0 = time.monotonic()
    sent = 0
    total = int(duration_s * rate)
    last_report = t0
    try:
        while True:
            now = time.monotonic()
            elapsed = now - t0
            extended = sent >= total and keep_going is not None and keep_going()
            if sent >= total and not extended:
                break
            due = int(elapsed * rate) + 1 if extended else min(int(elapsed * rate) + 1, total)
            while sent < due:
                now_ms = time.time() * 1000
                txn = gen.next(int(now_ms))
                rid = txn.request["request_id"]
                labels[rid] = txn.is_fraud
                sent_ms[rid] = now_ms
                if feed is not None:
                    feed.add(rid, txn.is_fraud, txn.request["event_time_ms"], time.monotonic())
                if sender is not None:
                    sender.send(txn.request)
                else:
                    prod.produce(requests_topic, json.dumps(txn.request).encode(),
                                 key=txn.request["entity_id"].encode(), on_delivery=delivered)
                sent += 1
            publish_due_labels()
            prod.poll(0)
            if on_tick:
                on_tick(elapsed)
            if progress and now - last_report >= 1.0:
                last_report = now
                progress(f"  t={elapsed:5.1f}s  sent {sent:7d}  answered {collector.count():7d}")
            time.sleep(max(0.0, min(0.005, (sent / rate) - (time.monotonic() - t0))))
        if prod.flush(30) > 0:
            errors.append("some requests were still unsent after 30 s (is the broker up?)")
        if errors:
            raise RuntimeError(f"{len(errors)} requests could not be sent to Kafka: {errors[0]}")
        send_end = time.monotonic()
        drain_until = send_end + drain_s
        while (time.monotonic() < drain_until and (collector.count() < sent or (sender and sender.done() < sent))) \
                or (feed is not None and len(feed)):
            publish_due_labels()
            if progress and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                progress(f"  draining: answered {collector.count()}/{sent}"
                         + (f", labels {labels_sent}/{sent}" if feed is not None else ""))
            time.sleep(0.05)
        if feed is not None and prod.flush(30) > 0:
            raise RuntimeError("some labels were still unsent after 30 s (is the broker up?)")
        if errors:
            raise RuntimeError(f"{len(errors)} records could not be sent to Kafka: {errors[0]}")
    finally:
        collector.stop()
        if sender is not None:
            sender.close()
    report = build_report(rate, max(duration_s, sent / rate), sent, labels, collector.answers, collector.duplicates,
                          collector.first_answer_s, collector.last_answer_s)
    if sender is not None:  # the caller's view: when its call returned the answer
        report.path = "gateway"
        status: Counter = Counter()
        client = []
        for rid, (code, received, body) in sender.results.items():
            status[str(code)] += 1
            if code == 200 and rid in sent_ms:
                client.append(received - sent_ms[rid])
                recorded = collector.answers.get(rid)
                if recorded is not None and not same_answer(body, recorded):
                    report.gateway_mismatches += 1
        status["unfinished"] = len(sent_ms) - len(sender.results)
        report.gateway_status = {k: v for k, v in status.items() if v}
    else:
        client = [collector.received_ms[rid] - sent_ms[rid] for rid in collector.received_ms if rid in sent_ms]
    report.client_latency_p50_ms = percentile(client, 0.5)
    report.client_latency_p99_ms = percentile(client, 0.99)
    report.conflicting_answers = collector.conflicting
    report.prefix = prefix
    report.labels_sent = labels_sent
    arrivals = sorted(collector.received_ms.values())
    if len(arrivals) > 1:
        report.max_answer_gap_ms = round(max(b - a for a, b in zip(arrivals, arrivals[1:])), 1)
    return report


def build_report(rate: float, duration_s: float, sent: int, labels: dict[str, bool], answers: dict[str, dict],
                 duplicates: int, first_s: float | None, last_s: float | None) -> LoadReport:
    latencies, overshoots, overheads = [], [], []
    by_model, by_trigger, by_stage, by_schedule = Counter(), Counter(), Counter(), Counter()
    by_schedule_model: dict[str, Counter] = {}
    fraud_flagged = legit_flagged = 0
    for rid, a in answers.items():
        latencies.append(a["answered_at_ms"] - a["request_time_ms"])
        if a.get("deadline_at_ms") is not None:
            overshoots.append(a["answered_at_ms"] - a["deadline_at_ms"])
        winner = a.get("model") or a.get("model_id")  # `id@version` (answers before versions: the id)
        if a.get("trigger") == "preferred" and winner and winner in a.get("timings", {}):
            overheads.append(a["answered_at_ms"] - a["timings"][winner]["finished_at_ms"])
        by_model[winner or "(default)"] += 1
        by_trigger[a.get("trigger")] += 1
        by_stage["default" if a.get("stage") is None else str(a["stage"])] += 1
        by_schedule[str(a.get("schedule_version"))] += 1
        by_schedule_model.setdefault(str(a.get("schedule_version")), Counter())[winner or "(default)"] += 1
        p = (a.get("output") or {}).get("fraud_probability")
        if isinstance(p, (int, float)) and p >= 0.5:
            if labels.get(rid):
                fraud_flagged += 1
            else:
                legit_flagged += 1
    span = (last_s - first_s) if first_s and last_s and last_s > first_s else duration_s
    return LoadReport(
        rate=rate, duration_s=duration_s, sent=sent, answered=len(answers),
        unanswered=sum(1 for rid in labels if rid not in answers), duplicate_answers=duplicates,
        answers_per_s=round(len(answers) / span, 1) if span else 0.0,
        latency_p50_ms=percentile(latencies, 0.5), latency_p99_ms=percentile(latencies, 0.99),
        overshoot_p50_ms=percentile(overshoots, 0.5), overshoot_p99_ms=percentile(overshoots, 0.99),
        overhead_p50_ms=percentile(overheads, 0.5), overhead_p99_ms=percentile(overheads, 0.99),
        by_model=dict(by_model), by_trigger=dict(by_trigger), by_stage=dict(by_stage),
        by_schedule=dict(by_schedule), by_schedule_model={k: dict(v) for k, v in by_schedule_model.items()},
        fraud_sent=sum(labels.values()), fraud_flagged=fraud_flagged,
        legit_flagged=legit_flagged,
        default_share=round(by_model.get("(default)", 0) / len(answers), 4) if answers else None)


def warm_up(bootstrap: str, rate: float, on_time_ms: float, requests_topic: str = "requests",
            answers_topic: str = "answers", window_s: float = 5.0, max_s: float = 120.0,
            progress: Callable[[str], None] | None = print) -> tuple[bool, list[LoadReport]]:
    """Send load at `rate` in windows of `window_s` until one window is on time: every request answered,
    none by the default, client-observed latency p99 within `on_time_ms`. Returns (ready, the windows).

    A readiness gate, as production traffic would get behind one: after a deployment the JVMs compile
    the new jobs' classes and fresh Python workers import and warm up their models, for tens of seconds
    on two cores (measured: a fresh runtime answered 7 % of the first 40 s by the default, late); the
    same jobs then run on time."""
    reports: list[LoadReport] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        r = run_load(bootstrap, rate, window_s, requests_topic=requests_topic, answers_topic=answers_topic,
                     drain_s=max(2.0, 3 * on_time_ms / 1000), progress=None)
        reports.append(r)
        ready = r.on_time(on_time_ms)
        if progress:
            progress(f"  warm-up {len(reports)} ({time.monotonic() - t0:4.0f} s): {r.answered}/{r.sent} answered, "
                     f"default {100 * (r.default_share or 0):.1f} %, client p99 "
                     f"{r.client_latency_p99_ms or float('nan'):.0f} ms (ready at <= {on_time_ms:.0f} ms): "
                     f"{'ready' if ready else 'not yet'}")
        if ready:
            return True, reports
    return False, reports
