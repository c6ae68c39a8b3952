"""`rendezvous report` and `rendezvous models` on the real broker: metrics rows (as the metrics job writes
them), schedules, lifecycle events and registry entries go to a topic set of the test's own; the CLI reads
them back; the report is drawn in headless Chromium and every plot is found drawn with its traces."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from control import kafka_io
from control.ops import schedules
from schemas.records import ModelEntry, now_ms
from schemas.topics import TopicNames
from tests.tools.browser import drawn_plots, dump_dom
from tests.tools.report_rows import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    MODELS,
    WINDOW_MS,
    WINDOWS,
    scenario,
)
from tools.cli import main

pytestmark = pytest.mark.e2e

STAGES = {CHAMPION: "production", CHALLENGER: "preproduction", CANARY: "preproduction"}
MARKERS = ["schedule changes", "lifecycle events", "guard breaches, rollbacks, alerts"]
EXPECTED = {  # plot: its legend, in drawing order (markers first: their overlay traces are added first)
    "latency": MARKERS + [f"{m} {q}" for m in sorted(MODELS) for q in ("p50", "p99", "max")],
    "scores": MARKERS + [f"{m} {q}" for m in sorted(MODELS) for q in ("p50 (p10-p90)", "mean")],
    "agreement": MARKERS + [f"{CHALLENGER} vs {CHAMPION}", f"{CHALLENGER} vs {CANARY}", f"{CANARY} vs {CHAMPION}"],
    "answers": MARKERS + ["default", "stage 0 preferred", "stage 1 deadline"],
    "answers-model": MARKERS + ["default answer", CHAMPION, CHALLENGER],
    "accuracy": MARKERS + [f"{m} {q}" for m in sorted(MODELS) for q in ("precision", "recall")],
    "budget": ["external state", "queue", "model", "transit", "wait", "total p50", "total p99"],
}
# inside the windows: 2 schedule versions (the first is older), stage change, roll start, guard passed, alert
MARKS_IN_WINDOWS = 6


@pytest.fixture(scope="module")
def plane_topics(stack):
    """A topic set with a roll's worth of metrics rows (windows ending 5 s ago), its schedules, lifecycle
    events and registry entries."""
    import uuid

    suffix = uuid.uuid4().hex[:10]
    topics = TopicNames.suffixed(suffix)
    b = stack.bootstrap_servers
    kafka_io.ensure_topics(b, topics.specs())
    sc = scenario(now_ms() - WINDOWS * WINDOW_MS - 5_000)
    kafka_io.produce(b, topics.metrics, [r.to_json() for r in sc.rows])
    for s in sc.schedules:
        kafka_io.produce(b, topics.schedules, [s.to_json()], key=lambda _, v=s.version: schedules.schedule_key(v))
    kafka_io.produce(b, topics.lifecycle, [e.to_json() for e in sc.events])
    entries = [ModelEntry(model_id=k.split("@")[0], version=k.split("@")[1], stage=st, card={}, canary=k == CANARY,
                          registered_at_ms=sc.t0, stage_since_ms=sc.t0) for k, st in STAGES.items()]
    for e in entries:
        kafka_io.produce(b, topics.registry, [e.to_json()], key=lambda _, k=e.key: k.encode())
    return suffix, sc


def test_report_draws_every_plot_in_a_browser(plane_topics, tmp_path):
    suffix, sc = plane_topics
    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["report", "--topics-suffix", suffix, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"{len(sc.rows)} metrics rows" in res.output
    plots, no_data = drawn_plots(dump_dom(out))
    assert not no_data
    assert sorted(plots) == sorted([*EXPECTED, "lineage"])  # the lineage of whatever jobs the cluster runs now
    assert plots["lineage"].count("main-svg") >= 1
    assert set(plots["lineage"].legend) <= {"flow edges", "undeclared edges", "topics", "jobs", "models", "consumers"}
    for name, legend in EXPECTED.items():
        drawn = plots[name]
        assert drawn.count("main-svg") >= 1, f"{name}: no plotly SVG drawn"
        assert drawn.legend == legend, name
        assert drawn.count("trace") == len(legend), name  # one drawn trace per legend entry
        if name != "budget":  # a vertical line per schedule change and lifecycle event in the windows
            assert drawn.shapes == MARKS_IN_WINDOWS, name


def test_models_shows_the_latest_window_per_model(plane_topics):
    suffix, _ = plane_topics
    res = CliRunner().invoke(main, ["models", "--topics-suffix", suffix])
    assert res.exit_code == 0, res.output
    print(res.output)
    lines = res.output.splitlines()
    assert "windows of 10 s" in lines[0]
    table = {ln.split()[0]: ln.split()[1:] for ln in lines[2:5]}
    # the last window (29): 1703 scores in 10 s; pair rates 0.6 % / 3.7 % / 3.2 %; the challenger answers 50 %
    assert table[CHAMPION] == ["(champion)", "production", "10218", "0.2%", "8", "ms", "28", "ms", "-", "3.2%",
                               "80.0%", "80.0%", "49.7%"]
    assert table[CHALLENGER] == ["preproduction", "10218", "0.4%", "11", "ms", "40", "ms", "0.6%", "3.7%", "83.3%",
                                 "83.3%", "50.0%"]
    assert table[CANARY] == ["(canary)", "preproduction", "10218", "0.0%", "2", "ms", "6", "ms", "3.2%", "-",
                             "47.4%", "60.0%", "0.0%"]
    assert "default answers 0.3%" in lines[5]


def test_without_metrics_rows_both_say_to_start_the_metrics_job(stack, unique, tmp_path):
    topics = TopicNames.suffixed(unique)
    kafka_io.ensure_topics(stack.bootstrap_servers, [s for s in topics.specs() if s.name == topics.metrics])
    res = CliRunner().invoke(main, ["models", "--topics-suffix", unique])
    assert res.exit_code == 3, res.output
    assert "no metrics rows" in res.output and "`rendezvous metrics start`" in res.output
    out = tmp_path / "empty.html"
    res = CliRunner().invoke(main, ["report", "--topics-suffix", unique, "--out", str(out)])
    assert res.exit_code == 0 and "rendezvous metrics start" in res.output
    plots, no_data = drawn_plots(dump_dom(out))
    assert sorted(plots) == ["lineage"]  # the running jobs' lineage needs no metrics rows
    assert sorted(no_data) == sorted(["rows", *EXPECTED])
    assert all(t.startswith("no data") for t in no_data.values())
