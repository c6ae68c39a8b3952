"""The quality job on the real stack: normal traffic passes, amounts x10 fail the next batch (naming the
amount expectation) with a lifecycle alert and Data Docs; a batch closed by its timer; bad input counted."""

import json
import time

import pytest
from click.testing import CliRunner

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy
from control.ops import quality as q
from schemas.records import LifecycleEvent
from schemas.topics import TopicSpec
from training.synthetic import TransactionGenerator

pytestmark = pytest.mark.e2e


def requests(gen, n, scale=1.0):
    now = int(time.time() * 1000)
    out = []
    for _ in range(n):
        r = gen.next(now).request
        out.append({**r, "amount": round(r["amount"] * scale, 2)})
    return out


def results(stack, topic, n, timeout=120):
    """The first n quality results (waits for them, bounded)."""
    vals = kafka_io.consume(stack.bootstrap_servers, topic, count=n, timeout=timeout)
    assert len(vals) >= n, f"{len(vals)} quality results after {timeout} s, expected {n}"
    return q.parse(vals).results


def test_drift_fails_one_batch_with_an_alert_and_data_docs(stack, unique, job_cleanup, tmp_path):
    t = {"src": f"req-{unique}", "q": f"quality-{unique}", "lc": f"lifecycle-{unique}"}
    ensure_topics(stack.bootstrap_servers, [TopicSpec(v) for v in t.values()])
    jid = deploy.deploy_quality(stack, source_topic=t["src"], sink_topic=t["q"], lifecycle_topic=t["lc"],
                                group_id=f"quality-{unique}", job_name=f"quality-{unique}", start="earliest",
                                batch_records=300, batch_interval_ms=4000, checkpoint_interval_ms=2000)
    job_cleanup.append(jid)
    gen = TransactionGenerator(seed=42, prefix=f"q-{unique}")

    # normal demo traffic (and a record that is not JSON: a null row, never an exception): one batch,
    # closed by count
    kafka_io.produce(stack.bootstrap_servers, t["src"], requests(gen, 299) + ["not json"])
    [first] = results(stack, t["q"], 1)
    assert first.success, [(o.label, o.observed_value) for o in first.failed]
    assert (first.records, first.unparseable) == (300, 1)
    assert not first.skipped and first.suite_name == "requests-profile"

    # from now on amounts x10: the very next batch fails, naming the amount's distribution
    kafka_io.produce(stack.bootstrap_servers, t["src"], requests(gen, 300, scale=10))
    second = results(stack, t["q"], 2)[1]
    assert not second.success and second.records == 300
    failed = {o.label: o for o in second.failed}
    quantiles = failed["expect_column_quantile_values_to_be_between(amount)"]
    assert quantiles.observed_value["values"][2] > quantiles.kwargs["quantile_ranges"]["value_ranges"][2][1]
    assert "expect_column_mean_to_be_between(amount)" in failed

    # ... which raises a lifecycle alert
    alerts = [LifecycleEvent.parse(v) for v in kafka_io.consume(
        stack.bootstrap_servers, t["lc"], timeout=60,
        until=lambda vs: any(json.loads(v)["kind"] == "quality_alert" for v in vs))]
    [alert] = [a for a in alerts if a.kind == "quality_alert"]
    assert alert.detail["batch_start_ms"] == second.batch_start_ms
    assert "expect_column_quantile_values_to_be_between(amount)" in alert.detail["failed"]

    # the CLI shows it (exit 1: the latest batch failed) and says where the Data Docs are
    out = tmp_path / "data_docs"
    from tools.cli import main

    res = CliRunner().invoke(main, ["quality", "show", "--topic", t["q"], "--docs", "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output and "expect_column_quantile_values_to_be_between(amount)" in res.output
    assert f"Data Docs: {out.resolve() / 'index.html'}" in res.output
    page = out / "validations" / "requests-profile"
    [html] = [p for p in page.rglob(f"{t['src']}-{second.batch_start_ms}.html")]
    text = html.read_text()
    assert "Failed" in text and "quantiles must be within" in text

    # back to normal; a small batch closes by its timer
    kafka_io.produce(stack.bootstrap_servers, t["src"], requests(gen, 20))
    third = results(stack, t["q"], 3)[2]
    assert third.records == 20
    assert third.batch_end_ms - third.batch_start_ms >= 4000  # closed by time, not count
    assert third.skipped  # too small for the distribution checks
    assert third.success, [(o.label, o.observed_value) for o in third.failed]
