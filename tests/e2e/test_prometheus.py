"""Exported metrics on the real stack (README, "Exported metrics (Prometheus)"): with a model job and the
rendezvous answering a little load, the TaskManagers' Prometheus endpoints (found by `rendezvous
metrics endpoints`) export the rendezvous's counters, equal to what the answers topic holds, and the model
job's score count, error count and latency, labelled with the model's id@version."""

from __future__ import annotations

import time

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs, schedules
from control.runtime import metrics
from schemas.model_card import ModelCard
from schemas.records import Answer, Score
from schemas.topics import TopicSpec
from tests.e2e.test_rendezvous import aug

pytestmark = pytest.mark.e2e

CARD = ModelCard(model_id="prom-model", version="1.2", runner="model_udfs.python_runners:ConstantRunner",
                 params={"delay_ms": 20, "fail_rate": 0.25, "seed": 4, "output": {"fraud_probability": 0.1}},
                 timeout_ms=1000)
SCHEDULE = {"name": "metrics", "stages": [{"deadline_ms": 400, "models": [CARD.model_id]}],
            "default_output": {"decision": "default"}}
N = 60
RV = "flink_taskmanager_job_task_operator_rendezvous_"
MODEL = "flink_taskmanager_job_task_operator_model_"


def job_values(job_name: str, prefix: str) -> dict[str, float]:
    """The job's metrics named `prefix*` on every TaskManager's endpoint, summed over subtasks, by name suffix."""
    urls = [e.url for e in metrics.endpoints() if e.role == "taskmanager" and e.url]
    assert urls, "no TaskManager serves metrics"
    out: dict[str, float] = {}
    for url in urls:
        for smp in metrics.scrape(url):
            if smp.name.startswith(prefix) and smp.labels.get("job_name") == job_name:
                out[smp.name[len(prefix):]] = out.get(smp.name[len(prefix):], 0.0) + smp.value
    return out


def test_rendezvous_counters_and_model_latency_on_the_scrape_endpoint(stack, unique, job_cleanup):
    t = {k: f"pm-{k}-{unique}" for k in ("aug", "scores", "sched", "answers", "late", "invalid")}
    ensure_topics(stack.bootstrap_servers, [TopicSpec(v, compacted=(k == "sched")) for k, v in t.items()])
    schedules.publish(stack.bootstrap_servers, SCHEDULE, topic=t["sched"], lifecycle_topic=None)
    model_job, rv_job = f"pm-model-{unique}", f"pm-rv-{unique}"
    job_cleanup.append(deploy.deploy_model(CARD, stack, job_name=model_job, source_topic=t["aug"],
                                           sink_topic=t["scores"], start="earliest", group_id=f"pm-m-{unique}",
                                           wait=False))
    job_cleanup.append(deploy.deploy_rendezvous(
        stack, job_name=rv_job, augmented_topic=t["aug"], scores_topic=t["scores"], schedules_topic=t["sched"],
        answers_topic=t["answers"], late_topic=t["late"], invalid_topic=t["invalid"], group_id=f"pm-rv-{unique}",
        start="earliest", wait=False))
    for jid in job_cleanup:
        jobs.wait_running(jid, stack, timeout=120)

    # a little load: one request to warm the Python workers up, then N at once
    kafka_io.produce(stack.bootstrap_servers, t["aug"], [aug(f"pm-warm-{unique}")])
    kafka_io.consume(stack.bootstrap_servers, t["answers"], count=1, timeout=60)
    ids = {f"pm-{unique}-{i}" for i in range(N)} | {f"pm-warm-{unique}"}
    kafka_io.produce(stack.bootstrap_servers, t["aug"], [aug(rid) for rid in sorted(ids - {f"pm-warm-{unique}"})])
    answers = [Answer.parse(v) for v in kafka_io.consume(
        stack.bootstrap_servers, t["answers"], timeout=60,
        until=lambda vs: {Answer.parse(v).request_id for v in vs} >= ids)]
    scores = [Score.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, t["scores"], count=len(ids),
                                                       timeout=60)]
    assert sorted(a.request_id for a in answers) == sorted(ids)  # one answer each
    defaults = sum(a.is_default for a in answers)
    assert 0 < defaults < len(answers)  # the model's error scores never win: those requests get the default
    errors = sum(not s.ok for s in scores)

    # the counters catch up with what was read (the model's gauges are set at the end of each bundle)
    deadline = time.monotonic() + 30
    while True:
        rv, model = job_values(rv_job, RV), job_values(model_job, MODEL)
        if (rv.get("answers"), model.get("scores")) == (len(answers), len(scores)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rv.get("answers") == len(answers), rv
    assert rv.get("answers_default") == defaults, rv
    assert {"late_scores", "duplicate_requests", "dropped_scores", "invalid"} <= set(rv), rv

    assert model["scores"] == len(scores) and model["errors"] == errors, model
    assert model["skipped_stale"] == 0
    mean_ms = model["latency_ms_sum"] / model["scores"]
    assert CARD.params["delay_ms"] - 1 <= mean_ms <= 2 * CARD.timeout_ms, mean_ms  # every call sleeps delay_ms
    # labelled with the model's id@version
    urls = [e.url for e in metrics.endpoints() if e.role == "taskmanager" and e.url]
    labelled = [smp for url in urls for smp in metrics.scrape(url)
                if smp.name == MODEL + "latency_ms_sum" and smp.labels.get("job_name") == model_job]
    assert labelled and all(smp.labels.get("model") == CARD.key for smp in labelled), labelled


def test_the_cli_lists_one_endpoint_per_flink_process(stack):
    from click.testing import CliRunner

    from control.runtime.flink import live_taskmanagers
    from tools.cli import main

    res = CliRunner().invoke(main, ["metrics", "endpoints"])
    assert res.exit_code == 0, res.output
    rows = [line.split("\t") for line in res.output.splitlines()]
    assert [role for _, role, _ in rows] == ["jobmanager"] + ["taskmanager"] * len(live_taskmanagers(stack))
    for url, _, _ in rows:  # each serves its metrics on loopback, in the configured range
        host, port = url.removeprefix("http://").removesuffix("/metrics").split(":")
        assert host == "127.0.0.1" and int(port) in stack.prometheus_port_range
        assert any(smp.name.startswith("flink_") for smp in metrics.scrape(url))
