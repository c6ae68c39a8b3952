"""The seed's figure 6-2 on the real stack (issue 15's Done-when): model B cascaded after model A (B's card
declares A as its input; its job joins each request with A's score), the cascade's verdict a third model over
both; labelled load; then A' goes live in A's place. From the `metrics` stream: the cascade's recall is
about 80 % before and 70 % after, B's collapses, and an attribution row names A's version change. Then
`rendezvous lineage` matches the deployed jobs and reports an undeclared consumer group of the scores topic.
"""

from __future__ import annotations

import time

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import attribution, jobs, lineage
from control.ops import metrics as metrics_ops
from jobs.sql.metrics import MetricsConfig
from schemas.records import Metrics
from schemas.topics import TopicNames
from tools import cascade
from tools.cascade import A_ID, A_PRIME, CASCADE, A, B

pytestmark = pytest.mark.e2e

CFG = MetricsConfig(window_s=10, join_within_s=5, label_horizon_s=8, idle_timeout_s=5, lateness_s=5)
RATE = 40.0
PHASE_S = 22.0


@pytest.fixture(scope="module")
def run(stack):
    """One deployment and one run of the scenario shared by the module's tests."""
    unique = f"cs{int(time.time() * 1000) % 10**9}"
    topics = TopicNames.suffixed(unique)
    ensure_topics(stack.bootstrap_servers, topics.specs())
    dep = cascade.Deployment(stack, topics, unique)
    metrics_job = None
    load = None
    t0 = time.monotonic()
    try:
        metrics_job = metrics_ops.start(stack, topics, CFG, wait=False)
        dep.deploy(rendezvous=False)
        jobs.wait_running(metrics_job, stack, timeout=180)
        deployed = time.monotonic() - t0
        load = cascade.Load(stack.bootstrap_servers, topics, f"{unique}-tx", rate=RATE)
        load.start()
        load_start_ms = int(time.time() * 1000)
        load.stopped.wait(PHASE_S)  # phase 1: A@1 (the load runs in its own thread)
        _, a_prime_ms, live_ms = dep.a_prime_goes_live(progress=lambda m: None)

        def closed(rows: list[Metrics]) -> bool:  # two whole windows of A' alone, judged on their labels
            return cascade.recall_between(rows, CASCADE, live_ms, int(time.time() * 1000)).windows >= 2

        rows: list[Metrics] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # phase 2: A' (windows close only while traffic flows)
            load.stopped.wait(3)
            rows = metrics_ops.read(stack, topics)
            if closed(rows):
                break
        end_ms = int(time.time() * 1000)
        load.stop()
        sent, load = load.sent, None
        new = attribution.run_once(stack, topics)
        yield {"stack": stack, "topics": topics, "dep": dep, "rows": metrics_ops.read(stack, topics),
               "spans": ((load_start_ms + 5_000, a_prime_ms), (live_ms, end_ms)), "attribution": new,
               "timings": {"deploy_s": round(deployed), "total_s": round(time.monotonic() - t0),
                           "sent": sent}}
    finally:
        if load is not None:
            load.stopped.set()
        dep.cancel()
        if metrics_job:
            metrics_ops.stop(stack, topics)


def test_cascade_recall_drops_from_80_to_70_and_b_collapses(run):
    before, after = run["spans"]
    got = cascade.summarise(run["rows"], before, after)
    fig = {m: {p: r.value for p, r in phases.items()} for m, phases in got.items()}
    print("attribution rows:\n" + "\n".join(attribution.describe(m) for m in run["rows"] if m.kind == "attribution"))
    print(f"recall by phase: {fig}; windows: "
          f"{ {m: (p['before'].windows, p['after'].windows) for m, p in got.items()} }; {run['timings']}")
    assert got[CASCADE]["before"].windows >= 1 and got[CASCADE]["after"].windows >= 2, got
    assert fig[CASCADE]["before"] == pytest.approx(0.80, abs=0.05)
    assert fig[CASCADE]["after"] == pytest.approx(0.70, abs=0.05)
    # A alone looks better (40 % -> 70 %), B, unchanged, collapses (2/3 of what A passed -> none)
    assert fig[A]["before"] == pytest.approx(0.40, abs=0.05)
    assert fig[A_PRIME]["after"] == pytest.approx(0.70, abs=0.05)
    assert fig[B]["before"] == pytest.approx(2 / 3, abs=0.07)
    assert fig[B]["after"] is not None and fig[B]["after"] <= 0.05


def test_attribution_names_a_version_change(run):
    rows = [m for m in run["rows"] if m.kind == "attribution"]
    print("attribution rows:\n" + "\n".join(attribution.describe(m) for m in rows))
    assert rows and {m.model for m in run["attribution"]} <= {m.model for m in rows}
    on_b = [m for m in rows if m.model == B and m.figure == "recall" and m.after < m.before]
    assert on_b, f"no attribution of B's recall drop: {[attribution.describe(m) for m in rows]}"
    assert any(m.versus == A_PRIME and m.trigger == "job_submitted" for m in on_b), \
        [attribution.describe(m) for m in on_b]


def test_lineage_matches_the_jobs_and_flags_an_undeclared_consumer(run):
    s, topics, dep = run["stack"], run["topics"], run["dep"]
    # an undeclared reader of the models' output: a consumer group committing offsets on the scores topic
    group = f"{topics.scores}-snooper"
    consumer = kafka_io.consumer(s.bootstrap_servers, group_id=group, enable_auto_commit=False)
    try:
        from kafka import TopicPartition

        parts = [TopicPartition(topics.scores, p) for p in consumer.partitions_for_topic(topics.scores)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        consumer.poll(timeout_ms=2000, max_records=10)
        consumer.commit()
    finally:
        consumer.close()
    graph = lineage.read(s)
    mine = {j.job_id: j for j in graph.jobs if j.job_id in set(dep.jobs.values())}
    assert set(mine) == set(dep.jobs.values())  # every deployed job of the scenario, none missing
    by_model = {j.model: j for j in mine.values() if j.model}
    assert set(by_model) == {A_PRIME, B, CASCADE}
    assert by_model[B].reads == (topics.augmented, topics.scores) and by_model[B].writes == (topics.scores,)
    assert by_model[B].inputs == (A_ID,) and set(by_model[CASCADE].inputs) == {A_ID, "cascade-b"}
    assert by_model[A_PRIME].reads == (topics.augmented,)
    es = mine[dep.jobs["external_state"]]
    assert es.reads == (topics.transitions, topics.requests) and topics.augmented in es.writes
    flagged = [f for f in graph.findings if f.topic == topics.scores]
    assert [f.group for f in flagged] == [group], [f.message for f in graph.findings]
    text = "\n".join(graph.lines())
    assert f"{B} <- {A_ID}" in text and "UNDECLARED" in text
    print(text)
    # the CLI: the same graph, exit status 4 for the undeclared consumer; the attribution rows as lines
    from click.testing import CliRunner

    from tools.cli import main

    out = CliRunner().invoke(main, ["lineage"])
    assert out.exit_code == 4 and f"{B} <- {A_ID}" in out.output and f"{group!r} reads" in out.output, out.output
    suffix = topics.metrics.removeprefix("metrics-")
    out = CliRunner().invoke(main, ["metrics", "attribute", "--topics-suffix", suffix])
    assert out.exit_code == 0 and f"{B}: recall" in out.output and f"job_submitted {A_PRIME}" in out.output, \
        out.output
