"""The seed's example of hidden data coupling (figures 6-1 and 6-2) as a runnable scenario.

Transactions are red or blue (equally common, a hidden `payload.hidden.colour` nobody analyses), half of each
colour fraud. Model A flags 80 % of red frauds and no blue ones; model B, cascaded after A (its card's
`inputs: ["cascade-a"]`), judges what A passed as clean and flags 80 % of blue frauds, no red ones; the
cascade (`cascade`, inputs A and B) flags what either flagged: 80 % of all fraud. Then A' (A@2: 40 % of red
frauds, 100 % of blue ones, 70 % of all fraud instead of A's 40 %) goes live in A's place. B, unchanged,
now receives no blue fraud: its recall collapses, and the cascade drops to 70 %.

Every figure comes from the system's own `metrics` stream (the accuracy rows over the labels); `summarise`
reads them per phase. The detections are deterministic (a Weyl sequence of difficulties per colour), so a
window's recall is within a few points of the rates.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field

from schemas.model_card import ModelCard
from schemas.records import Metrics

A_ID, B_ID, CASCADE_ID = "cascade-a", "cascade-b", "cascade"
A, A_PRIME, B, CASCADE = f"{A_ID}@1", f"{A_ID}@2", f"{B_ID}@1", f"{CASCADE_ID}@1"
DETECTOR = "model_udfs.cascade_runners:ColourDetector"

_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def cards() -> dict[str, ModelCard]:
    """A, A', B and the cascade, by `id@version` (no artifacts: their skill is in their params)."""
    common = dict(runner=DETECTOR, feature_version=None, timeout_ms=1000)
    return {
        A: ModelCard(model_id=A_ID, version="1", params={"finds": {"red": 0.8, "blue": 0.0}},
                     description="finds 80 % of red frauds, no blue ones (40 % of all fraud)", **common),
        A_PRIME: ModelCard(model_id=A_ID, version="2", params={"finds": {"red": 0.4, "blue": 1.0}},
                           description="the 'improved' A: 40 % of red frauds, all blue ones (70 % of all fraud)",
                           **common),
        B: ModelCard(model_id=B_ID, version="1", inputs=[A_ID],
                     params={"finds": {"red": 0.0, "blue": 0.8}, "after": A_ID},
                     description="judges what A passed as clean: 80 % of blue frauds, no red ones", **common),
        CASCADE: ModelCard(model_id=CASCADE_ID, version="1", inputs=[A_ID, B_ID],
                           runner="model_udfs.cascade_runners:CascadeRunner", feature_version=None,
                           description="the cascade's verdict: fraud when A or B flags it"),
    }


class CascadeTraffic:
    """Deterministic transactions of the scenario: colours alternate, every second transaction of a colour is
    fraud, and the n-th fraud of a colour has difficulty frac(n * golden ratio + offset) (evenly spread over
    [0, 1) in any stretch of the stream, so a detector's recall is close to its rate in every window). The
    ordinary fields come from `training.synthetic.TransactionGenerator` (valid requests for external state)."""

    def __init__(self, prefix: str, seed: int = 7):
        from training.synthetic import TransactionGenerator

        self.base = TransactionGenerator(seed=seed, prefix=prefix, fraud_fraction=0.0)
        self.n = 0
        self.seen = {"red": 0, "blue": 0}
        self.frauds = {"red": 0, "blue": 0}

    def next(self, t_ms: int) -> tuple[dict, bool]:
        request = self.base.next(t_ms).request
        colour = ("red", "blue")[self.n % 2]
        self.n += 1
        self.seen[colour] += 1
        fraud = self.seen[colour] % 2 == 0
        difficulty = 1.0
        if fraud:
            self.frauds[colour] += 1
            difficulty = (self.frauds[colour] * _PHI + (0.0 if colour == "red" else 0.5)) % 1.0
        request["payload"] = {**request["payload"],
                              "hidden": {"colour": colour, "fraud": fraud, "difficulty": round(difficulty, 6)}}
        return request, fraud


# ------------------------------------------------------------------------------------------------------
# figures of a run, from the metrics rows (pure)
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recall:
    tp: int
    positives: int
    windows: int

    @property
    def value(self) -> float | None:
        return self.tp / self.positives if self.positives else None


def recall_between(rows: list[Metrics], model: str, start_ms: int, end_ms: int) -> Recall:
    """A model's recall over the accuracy windows lying wholly in [start_ms, end_ms) (summed counts)."""
    tp = pos = n = 0
    for m in rows:
        if m.kind == "accuracy" and m.model == model and m.window_start_ms >= start_ms and m.window_end_ms <= end_ms:
            tp += m.tp or 0
            pos += (m.tp or 0) + (m.fn or 0)
            n += 1
    return Recall(tp, pos, n)


def summarise(rows: list[Metrics], before: tuple[int, int], after: tuple[int, int],
              models: tuple[str, ...] = (A, A_PRIME, B, CASCADE)) -> dict[str, dict[str, Recall]]:
    """Per model, its recall in the `before` span and the `after` span (ms, [start, end))."""
    return {m: {"before": recall_between(rows, m, *before), "after": recall_between(rows, m, *after)}
            for m in models}


# ------------------------------------------------------------------------------------------------------
# running it (deployments, load, A' going live)
# ------------------------------------------------------------------------------------------------------
class Load(threading.Thread):
    """Sends the scenario's transactions at `rate` per second and their labels `label_delay_s` later, until
    stopped; counts what it sent."""

    def __init__(self, bootstrap: str, topics, prefix: str, rate: float = 40.0, label_delay_s: float = 1.0):
        super().__init__(daemon=True)
        from tools.load import LabelFeed

        self.bootstrap, self.topics, self.rate = bootstrap, topics, rate
        self.traffic = CascadeTraffic(prefix)
        self.feed = LabelFeed(delay_s=label_delay_s)
        self.stopped = threading.Event()
        self.sent = self.labels = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from control import kafka_io

        producer = kafka_io.producer(self.bootstrap)
        step = 0.1
        per_step = max(1, round(self.rate * step))
        try:
            next_at = time.monotonic()
            while not self.stopped.is_set():
                now_s = time.monotonic()
                for _ in range(per_step):
                    req, fraud = self.traffic.next(int(time.time() * 1000))
                    producer.send(self.topics.requests, key=req["request_id"].encode(), value=json.dumps(req).encode())
                    self.feed.add(req["request_id"], fraud, req["event_time_ms"], now_s)
                    self.sent += 1
                for lab in self.feed.due(now_s, int(time.time() * 1000)):
                    producer.send(self.topics.labels, key=lab.request_id.encode(), value=lab.to_json().encode())
                    self.labels += 1
                producer.flush()
                next_at += step
                self.stopped.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.error = e
        finally:
            producer.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)
        if self.error is not None:
            raise RuntimeError(f"the scenario's load failed: {self.error}") from self.error


@dataclass
class Deployment:
    """The scenario's jobs on one topic set (`names` prefixes the job names and groups)."""

    s: object
    topics: object
    names: str
    jobs: dict[str, str] = field(default_factory=dict)

    def deploy(self, rendezvous: bool = False, start: str = "earliest", progress=print) -> dict[str, str]:
        """External state, A@1, B and the cascade (and a rendezvous answering with the cascade's verdict);
        returns job ids by name once all run. `start`: where the jobs start reading (fresh topics: earliest;
        topics of an earlier run: committed)."""
        from control.ops import deploy, jobs

        t = self.topics
        progress("deploying external state, A@1, B@1 and the cascade")
        self.jobs["external_state"] = deploy.deploy_external_state(
            self.s, job_name=f"{self.names}-es", source_topic=t.requests, sink_topic=t.augmented,
            quarantine_topic=t.quarantine, group_id=f"{self.names}-es", transitions_topic=t.transitions, start=start,
            wait=False)
        models = (A, B, CASCADE)
        self.jobs.update(zip(models, deploy.side_by_side(
            [lambda key=key: self.deploy_model(key, start=start, wait=False) for key in models], self.s)))
        if rendezvous:
            from control.ops import schedules

            schedules.publish(self.s.bootstrap_servers, {
                "name": "cascade", "stages": [{"deadline_ms": 2000, "models": [CASCADE_ID]}],
                "default_output": {"fraud_probability": 0.0}}, topic=t.schedules, lifecycle_topic=t.lifecycle)
            self.jobs["rendezvous"] = deploy.deploy_rendezvous(
                self.s, job_name=f"{self.names}-rv", augmented_topic=t.augmented, scores_topic=t.scores,
                schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late,
                invalid_topic=t.quarantine, group_id=f"{self.names}-rv", transitions_topic=t.transitions, start=start,
                wait=False)
        for jid in self.jobs.values():
            jobs.wait_running(jid, self.s, timeout=180)
        return dict(self.jobs)

    def deploy_model(self, key: str, **kw) -> str:
        from control.ops import deploy

        card = cards()[key]
        t = self.topics
        name = f"{self.names}-{card.model_id}-{card.version}"
        return deploy.deploy_model(card, self.s, job_name=name, group_id=name, source_topic=t.augmented,
                                   sink_topic=t.scores, inputs_topic=t.scores, lifecycle_topic=t.lifecycle, **kw)

    def a_prime_goes_live(self, progress=print) -> tuple[int, int, int]:
        """A' (A@2) deployed, then A@1 stopped (both recorded in the lifecycle topic): B follows A's id, so it
        reads A' from now on. Returns (ms when A' was submitted, ms when it ran, ms when A@1 had stopped):
        until the second A@1 alone scores, between the second and the third both do (B takes whichever
        scores a request first)."""
        from control.ops import jobs, lifecycle
        from schemas.records import LifecycleEvent, now_ms

        progress("A' (cascade-a@2) goes live in place of A@1")
        submitted = now_ms()
        self.jobs[A_PRIME] = self.deploy_model(A_PRIME)
        running = now_ms()
        old = self.jobs.pop(A)
        jobs.cancel(old, self.s)
        lifecycle.record(self.s.bootstrap_servers, LifecycleEvent(
            kind="job_stopped", model_id=A_ID, model_version="1", job_id=old, at_ms=now_ms(),
            detail={"job": "model", "replaced_by": A_PRIME}), self.topics.lifecycle)
        return submitted, running, now_ms()

    def cancel(self) -> None:
        from control.ops import jobs

        for jid in self.jobs.values():
            try:
                jobs.cancel(jid, self.s)
            except Exception:  # noqa: BLE001 - best effort at the end
                pass


# ------------------------------------------------------------------------------------------------------
# the demo (`rendezvous demo --scenario cascade`)
# ------------------------------------------------------------------------------------------------------
DEMO_SUFFIX = "cascade"
"""The demo's topic set (`requests-cascade`, ..., `metrics-cascade`): `--topics-suffix cascade` reads it."""


def run_demo(progress=print, rate: float = 40.0, phase_s: float = 30.0) -> dict:
    """The scenario on the embedded runtime, with a rendezvous answering with the cascade's verdict: A, B and
    the cascade under labelled load, then A' live; prints each model's recall per phase from the metrics
    stream, the attribution rows and the lineage. Returns the figures."""
    from control import kafka_io, runtime
    from control.ops import attribution, deploy, jobs, lineage
    from control.ops import metrics as metrics_ops
    from control.settings import RuntimeSettings
    from jobs.sql.metrics import MetricsConfig
    from schemas.topics import TopicNames

    s = RuntimeSettings()
    runtime.up(s, progress=progress)
    topics = TopicNames.suffixed(DEMO_SUFFIX)
    deploy.stop_jobs_named("cascade-demo", s, progress=progress)
    metrics_ops.stop(s, topics)
    kafka_io.ensure_topics(s.bootstrap_servers, topics.specs(), partitions=s.topic_partitions)
    dep = Deployment(s, topics, "cascade-demo")
    cfg = MetricsConfig(window_s=10, join_within_s=5, label_horizon_s=8, idle_timeout_s=5, lateness_s=5)
    metrics_id = metrics_ops.start(s, topics, cfg, wait=False, start_from="latest")
    dep.deploy(rendezvous=True, start="committed", progress=progress)
    jobs.wait_running(metrics_id, s, timeout=180)
    load = Load(s.bootstrap_servers, topics, f"cascade-{int(time.time())}", rate=rate)
    load.start()
    start_ms = int(time.time() * 1000)
    try:
        progress(f"phase 1: A@1 -> B@1 -> cascade@1, {rate:.0f} requests/s for {phase_s:.0f} s")
        load.stopped.wait(phase_s)
        _, a_prime_ms, live_ms = dep.a_prime_goes_live(progress=progress)
        progress("phase 2: A' -> B@1 -> cascade@1, until two windows of it are judged")
        rows: list[Metrics] = []
        deadline = time.monotonic() + phase_s + 90
        while time.monotonic() < deadline:
            load.stopped.wait(3)
            rows = metrics_ops.read(s, topics)
            if recall_between(rows, CASCADE, live_ms, int(time.time() * 1000)).windows >= 2:
                break
        end_ms = int(time.time() * 1000)
    finally:
        load.stop()
    new = attribution.run_once(s, topics)
    figures = summarise(rows, (start_ms + 5_000, a_prime_ms), (live_ms, end_ms))
    progress("recall from the metrics stream (before A' -> after A'):")
    for model, phases in figures.items():
        b, a = phases["before"].value, phases["after"].value
        progress(f"  {model:<14} {'-' if b is None else f'{b:.1%}':>7} -> {'-' if a is None else f'{a:.1%}':>7}")
    progress("attribution:" if new else "attribution: no shift with an upstream event")
    for m in new:
        progress("  " + attribution.describe(m))
    for line in lineage.read(s).lines():
        progress(line)
    progress(f"the jobs keep running (`rendezvous models --topics-suffix {DEMO_SUFFIX}`, `rendezvous report "
             f"--topics-suffix {DEMO_SUFFIX}`); `rendezvous demo --scenario cascade` again replaces them")
    return {m: {p: r.value for p, r in ph.items()} for m, ph in figures.items()}
