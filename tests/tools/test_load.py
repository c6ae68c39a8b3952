"""The load generator: its report and readiness rule (pure), and its clients against the real broker."""

import json
import time

import pytest

from tools.load import build_report


def answer(rid: str, model: str | None, latency: int, trigger: str = "preferred") -> dict:
    return {"request_id": rid, "model_id": model, "trigger": trigger, "stage": 0 if model else None,
            "schedule_version": 1, "request_time_ms": 1000, "answered_at_ms": 1000 + latency,
            "deadline_at_ms": None, "output": {"fraud_probability": 0.9 if model else 0.0}, "timings": {}}


def report(answers: dict, sent: int, client_p99: float | None):
    labels = {f"r{i}": i == 0 for i in range(sent)}
    r = build_report(100, 1, sent, labels, answers, 0, None, None)
    r.client_latency_p99_ms = client_p99
    return r


def test_a_window_is_on_time_only_when_all_answered_by_models_within_the_bound():
    good = {f"r{i}": answer(f"r{i}", "m", 50) for i in range(3)}
    assert report(good, 3, 120.0).on_time(600)
    assert not report(good, 3, 601.0).on_time(600)  # late
    assert not report(good, 4, 120.0).on_time(600)  # one unanswered
    with_default = {**good, "r2": answer("r2", None, 600, trigger="default")}
    assert not report(with_default, 3, 120.0).on_time(600)  # the default answered one
    assert not report({}, 0, None).on_time(600)  # nothing measured is not ready


def test_the_report_counts_fraud_caught_and_defaults():
    answers = {"r0": answer("r0", "m", 10), "r1": answer("r1", None, 600, trigger="default")}
    r = report(answers, 2, 10.0)
    assert (r.fraud_sent, r.fraud_flagged, r.legit_flagged) == (1, 1, 0)
    assert r.default_share == 0.5 and r.by_trigger == {"preferred": 1, "default": 1}


@pytest.mark.e2e
def test_collector_sees_answers_written_after_it_started_and_only_its_own(stack, unique):
    """The collector starts at the topic's end, keeps only its prefix, counts duplicates."""
    from control.kafka_io import ensure_topics, produce
    from schemas.topics import TopicSpec
    from tools.load import AnswerCollector

    topic = f"answers-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(topic)])
    produce(stack.bootstrap_servers, topic, [answer("load-x-old", "m", 1)])  # before: not seen
    c = AnswerCollector(stack.bootstrap_servers, topic, "load-x-")
    c.start()
    try:
        produce(stack.bootstrap_servers, topic, [answer("load-x-1", "m", 1), answer("other-2", "m", 1),
                                                 answer("load-x-1", "m", 1), b"not json"])
        produce(stack.bootstrap_servers, topic, [json.dumps(answer("load-x-3", "m", 1))])
        deadline = time.monotonic() + 30
        while c.count() < 2 and time.monotonic() < deadline:  # in-partition order: the duplicate came first
            time.sleep(0.05)
    finally:
        c.stop()
    assert sorted(c.answers) == ["load-x-1", "load-x-3"]
    assert c.duplicates == 1


def test_report_figures_are_rounded_to_what_the_clocks_resolve():
    from tools.load import percentile

    assert percentile([1.0, 2.0, 3.0, 200.0], 0.99) == 194.1  # not 194.11999999999998
    assert percentile([], 0.5) is None


def test_labels_follow_their_requests_after_the_delay_in_send_order():
    from tools.load import LabelFeed

    feed = LabelFeed(delay_s=5.0)
    feed.add("a", True, 1_000, sent_s=10.0)
    feed.add("b", False, 1_001, sent_s=11.0)
    assert feed.due(14.9, known_at_ms=99) == [] and len(feed) == 2
    first = feed.due(15.0, known_at_ms=99)
    assert [(x.request_id, x.outcome, x.positive, x.event_time_ms, x.known_at_ms) for x in first] == \
        [("a", "fraud", True, 1_000, 99)]
    assert [x.outcome for x in feed.due(100.0, known_at_ms=100)] == ["legit"] and len(feed) == 0


@pytest.mark.e2e
def test_the_load_generator_publishes_every_outcome_after_its_delay(stack, unique):
    """Labels as chargebacks arrive: one per request sent, after the delay, fraud exactly where it was sent
    (no pipeline runs here: the answers are not the point)."""
    from control.kafka_io import consume, ensure_topics
    from schemas.records import Label
    from schemas.topics import TopicSpec
    from tools.load import run_load

    requests, answers, labels = (f"{n}-{unique}" for n in ("requests", "answers", "labels"))
    ensure_topics(stack.bootstrap_servers, [TopicSpec(requests), TopicSpec(answers), TopicSpec(labels)])
    report = run_load(stack.bootstrap_servers, rate=40, duration_s=2, requests_topic=requests, answers_topic=answers,
                      fraud_fraction=0.3, seed=3, drain_s=0.1, progress=None, labels_topic=labels, label_delay_s=1.0)
    got = [Label.parse(v) for v in consume(stack.bootstrap_servers, labels, count=report.sent, timeout=60)]
    assert report.labels_sent == report.sent == len(got) == len({x.request_id for x in got}) == 80
    assert all(x.request_id.startswith(report.prefix) for x in got)
    assert sum(x.positive for x in got) == report.fraud_sent > 0
    assert all(x.outcome == ("fraud" if x.positive else "legit") for x in got)
    assert all(x.known_at_ms - x.event_time_ms >= 900 for x in got)  # published a delay (1 s) after the request
