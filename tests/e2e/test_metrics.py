"""The live meta-analytics job on the real stack (issue 11's Done-when): a champion, a challenger whose scores
are deliberately shifted down and a canary score a labelled load; the `metrics` topic shows the challenger's
disagreement with the champion, its recall gap and each model's latency, equal to what this test computes
itself from the raw topics (same windows by Kafka timestamp, same joins, numpy's linear percentiles)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs, schedules
from control.ops import metrics as metrics_ops
from jobs.sql.metrics import MetricsConfig
from schemas.model_card import ModelCard
from schemas.records import Label, Metrics, Score
from schemas.topics import TopicNames
from tools.load import LabelFeed
from training.synthetic import TransactionGenerator

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CFG = MetricsConfig(window_s=10, join_within_s=5, label_horizon_s=15, idle_timeout_s=5)
CHAMPION, CHALLENGER, CANARY = "fraud-champion@1.0.0", "fraud-shifted@1", "fraud-canary@1"


def cards() -> list[ModelCard]:
    champion = ModelCard.load(REPO / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json")
    challenger = champion.model_copy(update={"model_id": "fraud-shifted", "version": "1",
                                             "params": {**champion.params, "score_shift": -0.6}})
    canary = ModelCard(model_id="fraud-canary", version="1", runner="model_udfs.python_runners:RuleRunner")
    return [champion, challenger, canary]


def window_of(t_ms: int) -> int:
    return t_ms - t_ms % (CFG.window_s * 1000)


def flagged(score: float) -> bool:
    return score >= CFG.threshold


def expected(scores: list[tuple[int, Score]], labels: list[tuple[int, Label]]) -> dict:
    """The figures computed here from the raw records (Kafka timestamp, record), keyed like the job's rows."""
    out: dict = {}
    per_model = defaultdict(list)
    by_request = defaultdict(list)
    for t, s in scores:
        per_model[(window_of(t), s.key)].append(s)
        p = (s.output or {}).get(CFG.output_field)
        if s.error is None and p is not None:
            by_request[s.request_id].append((t, s.key, float(p)))
    for key, ss in per_model.items():
        lat = [x.finished_at_ms - x.started_at_ms for x in ss]
        out[("model",) + key] = {"count": len(ss), "errors": sum(x.error is not None for x in ss),
                                 "latency_p50_ms": float(np.percentile(lat, 50)),
                                 "latency_p99_ms": float(np.percentile(lat, 99))}
    pairs = defaultdict(lambda: [0, 0])
    for rows in by_request.values():
        for ta, a, pa in rows:
            for tb, b, pb in rows:
                if a != b and abs(tb - ta) <= CFG.join_within_s * 1000:
                    c = pairs[(window_of(ta), a, b)]
                    c[0] += 1
                    c[1] += flagged(pa) != flagged(pb)
    for (w, a, b), (n, d) in pairs.items():
        out[("pair", w, a, b)] = {"count": n, "disagreements": d}
    acc = defaultdict(lambda: [0, 0, 0])  # labelled, tp, fn
    for tl, lab in labels:
        for ts, m, p in by_request.get(lab.request_id, []):
            if tl - CFG.label_horizon_s * 1000 <= ts <= tl:
                c = acc[(window_of(tl), m)]
                c[0] += 1
                c[1] += flagged(p) and lab.positive
                c[2] += (not flagged(p)) and lab.positive
    for (w, m), (n, tp, fn) in acc.items():
        out[("accuracy", w, m)] = {"count": n, "tp": tp, "fn": fn}
    return out


def row_key(m: Metrics) -> tuple:
    if m.kind == "pair":
        return ("pair", m.window_start_ms, m.model, m.versus)
    return (m.kind, m.window_start_ms, m.model)


def test_metrics_show_disagreement_recall_gap_and_latency_as_computed_from_the_topics(stack, unique, job_cleanup):
    topics = TopicNames.suffixed(f"mx{unique}")
    ensure_topics(stack.bootstrap_servers, topics.specs())
    schedules.publish(stack.bootstrap_servers, {
        "name": "compare", "stages": [{"deadline_ms": 400, "models": [CHAMPION]},
                                      {"deadline_ms": 1500, "models": [CHAMPION, CANARY, CHALLENGER]}],
        "default_output": {"fraud_probability": 0.0}}, topic=topics.schedules, lifecycle_topic=None)
    common = dict(start="earliest", wait=False)
    job_cleanup.append(deploy.deploy_external_state(
        stack, job_name=f"mx-es-{unique}", source_topic=topics.requests, sink_topic=topics.augmented,
        quarantine_topic=topics.quarantine, group_id=f"mx-es-{unique}", **common))
    job_cleanup.extend(deploy.side_by_side([lambda card=card: deploy.deploy_model(
        card, stack, job_name=f"mx-{card.model_id}-{unique}", source_topic=topics.augmented,
        sink_topic=topics.scores, group_id=f"mx-{card.model_id}-{unique}", **common) for card in cards()], stack))
    job_cleanup.append(deploy.deploy_rendezvous(
        stack, job_name=f"mx-rv-{unique}", augmented_topic=topics.augmented, scores_topic=topics.scores,
        schedules_topic=topics.schedules, answers_topic=topics.answers, late_topic=topics.late,
        invalid_topic=topics.quarantine, group_id=f"mx-rv-{unique}", **common))
    job_cleanup.append(metrics_ops.start(stack, topics, CFG, wait=False))
    for jid in job_cleanup:
        jobs.wait_running(jid, stack, timeout=180)
    assert metrics_ops.running(stack, topics) == [job_cleanup[-1]]

    gen = TransactionGenerator(seed=11, prefix=f"mx-{unique}")
    feed = LabelFeed(delay_s=2.0)
    producer = kafka_io.producer(stack.bootstrap_servers)

    def found(rows: list[Metrics]) -> bool:
        """Closed windows with every model's latency, the challenger compared with the champion, and both
        judged on labelled frauds."""
        kinds = {(m.kind, m.model, m.versus) for m in rows if m.count > 0}
        frauds = {m.model for m in rows if m.kind == "accuracy" and m.tp + m.fn > 0}
        return ({("model", k, None) for k in (CHAMPION, CHALLENGER, CANARY)} <= kinds
                and ("pair", CHALLENGER, CHAMPION) in kinds and {CHAMPION, CHALLENGER} <= frauds)

    t_start = time.monotonic()
    rows: list[Metrics] = []
    try:
        while time.monotonic() - t_start < 150:
            now_s = time.monotonic()
            for _ in range(5):  # about 25 requests/s
                txn = gen.next(int(time.time() * 1000))
                producer.send(topics.requests, key=txn.request["request_id"].encode(),
                              value=json.dumps(txn.request).encode())
                feed.add(txn.request["request_id"], txn.is_fraud, txn.request["event_time_ms"], now_s)
            for lab in feed.due(now_s, int(time.time() * 1000)):
                producer.send(topics.labels, key=lab.request_id.encode(), value=lab.to_json().encode())
            producer.flush()
            time.sleep(0.2)
            if int(now_s - t_start) % 5 == 0:
                rows = metrics_ops.read(stack, topics)
                if found(rows):
                    break
    finally:
        producer.close()
    elapsed = time.monotonic() - t_start
    assert found(rows), (f"after {elapsed:.0f} s of load the metrics topic has "
                         f"{sorted({(m.kind, m.model, m.versus) for m in rows}, key=str)}")
    assert elapsed < 120 + 5, f"the figures took {elapsed:.0f} s (more than two minutes) to appear"

    # what the job wrote equals what the raw topics say, window by window
    scores = [(r.timestamp, Score.parse(r.value)) for r in kafka_io.records_to_end(stack.bootstrap_servers,
                                                                                 topics.scores)]
    labels = [(r.timestamp, Label.parse(r.value)) for r in kafka_io.records_to_end(stack.bootstrap_servers,
                                                                                 topics.labels)]
    want = expected(scores, labels)
    checked = defaultdict(int)
    for m in metrics_ops.read(stack, topics):
        if m.kind not in ("model", "pair", "accuracy"):
            continue
        key = row_key(m)
        assert key in want, f"the job wrote {key}, which the topics do not give"
        for field, value in want[key].items():
            assert getattr(m, field) == pytest.approx(value), (key, field, getattr(m, field), value)
        checked[m.kind] += 1
    assert checked["model"] >= 3 and checked["pair"] >= 1 and checked["accuracy"] >= 2, checked

    rows = metrics_ops.read(stack, topics)
    last_pair = [m for m in rows if m.kind == "pair" and (m.model, m.versus) == (CHALLENGER, CHAMPION)][-1]
    assert last_pair.disagreements > 0 and last_pair.disagreement_rate > 0  # the shift shows
    acc = defaultdict(lambda: [0, 0])
    for m in rows:
        if m.kind == "accuracy":
            acc[m.model][0] += m.tp
            acc[m.model][1] += m.tp + m.fn
    recall = {k: tp / pos for k, (tp, pos) in acc.items() if pos}
    assert recall[CHAMPION] > recall[CHALLENGER], recall  # the recall gap
    lat = {m.model: m.latency_p50_ms for m in rows if m.kind == "model"}
    assert set(lat) >= {CHAMPION, CHALLENGER, CANARY} and all(v is not None and v >= 0 for v in lat.values())
    # the rendezvous's side: answers by model, stage and trigger with their share, and the latency budget
    answers = [m for m in rows if m.kind == "answers"]
    assert answers and all(0 < m.share <= 1 for m in answers)
    budget = [m for m in rows if m.kind == "budget" and m.model == CHAMPION]
    assert budget and all(m.model_ms is not None and m.total_p50_ms is not None for m in budget)
    print(f"metrics after {elapsed:.0f} s of load: {dict(checked)} rows equal to the topics'; recall {recall}; "
          f"challenger vs champion disagreement {last_pair.disagreement_rate:.1%}; latency p50 {lat}")
