"""The report's pure parts: metrics rows in, figures and HTML out (no broker, no browser; the e2e test
tests/e2e/test_report.py reads the rows from Kafka and draws the report in headless Chromium)."""

from __future__ import annotations

import re

import pytest

from control.ops import report as rp
from schemas.records import LifecycleEvent, Metrics, ModelEntry, Schedule, Stage
from tests.tools.report_rows import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    WINDOW_MS,
    WINDOWS,
    scenario,
)
from tools import report as tr

T0 = 1_760_000_000_000
NOW = T0 + WINDOWS * WINDOW_MS + 5_000
STAGES = {CHAMPION: "production", CHALLENGER: "preproduction", CANARY: "preproduction"}


@pytest.fixture(scope="module")
def data() -> rp.ReportData:
    sc = scenario(T0)
    return rp.ReportData(rows=tuple(sc.rows), markers=tuple(rp.markers_of(sc.events, sc.schedules)),
                         champion=rp.champion_of(sc.schedules[-1], rp.models_of(sc.rows), STAGES), canary=CANARY,
                         stages=STAGES, generated_at_ms=NOW)


def row(**kw) -> Metrics:
    return Metrics(**{"kind": "model", "window_start_ms": 0, "window_end_ms": 10, "count": 1, **kw})


def test_rows_are_deduplicated_keeping_the_last_copy_and_garbage_is_counted():
    a, b = row(model="m@1", count=5), row(model="m@1", count=7)  # the same window written again
    other = row(model="m@1", window_start_ms=10, window_end_ms=20)
    rows, bad = rp.parse_rows([other.to_json(), a.to_json(), b"not json", b.to_json(), None, '{"kind": "x"}'])
    assert [r.count for r in rows] == [7, 1] and bad == 3
    assert [r.window_end_ms for r in rows] == [10, 20]


def test_answer_shares_sum_over_what_the_grouping_does_not_tell_apart_and_fill_empty_windows():
    ans = [Metrics(kind="answers", window_start_ms=0, window_end_ms=10, model="a@1", stage=0, trigger="preferred",
                   count=6, total=10, share=0.6),
           Metrics(kind="answers", window_start_ms=0, window_end_ms=10, model="b@1", stage=0, trigger="preferred",
                   count=3, total=10, share=0.3),
           Metrics(kind="answers", window_start_ms=0, window_end_ms=10, model=None, stage=None, trigger="default",
                   count=1, total=10, share=0.1),
           Metrics(kind="answers", window_start_ms=10, window_end_ms=20, model="a@1", stage=1, trigger="deadline",
                   count=4, total=4, share=1.0)]
    assert rp.shares(ans, rp.answer_group) == {"default": [(10, 0.1), (20, 0.0)],
                                               "stage 0 preferred": [(10, 0.9), (20, 0.0)],
                                               "stage 1 deadline": [(10, 0.0), (20, 1.0)]}
    assert rp.shares(ans, rp.answer_model)["default answer"] == [(10, 0.1), (20, 0.0)]
    assert rp.shares(ans, rp.answer_model)["a@1"] == [(10, 0.6), (20, 1.0)]


def test_markers_mark_each_schedule_change_once_and_alarms_apart():
    sched = Schedule(version=2, name="roll", stages=[Stage(deadline_ms=50, models=["a@1"])],
                     default_output={}, created_at_ms=1_000)
    events = [LifecycleEvent(kind="schedule_published", schedule_version=2, at_ms=1_001),
              LifecycleEvent(kind="schedule_published", schedule_version=7, at_ms=900),  # compacted away: kept
              LifecycleEvent(kind="guard_breached", model_id="b", model_version="2", at_ms=2_000,
                             detail={"breaches": ["error rate 9% > 5%"]}),
              LifecycleEvent(kind="stage_changed", model_id="b", model_version="2", from_stage="development",
                             to_stage="preproduction", at_ms=500)]
    m = rp.markers_of(events, [sched])
    assert [(x.at_ms, x.category) for x in m] == [(500, "lifecycle"), (900, "lifecycle"), (1_000, "schedule"),
                                                  (2_000, "alarm")]
    assert "b@2 development -> preproduction" in m[0].label and "schedule v2 'roll' ['a@1']" in m[2].label
    assert "error rate 9%" in m[3].label
    assert [x.at_ms for x in rp.markers_of(events, [sched], since_ms=950)] == [1_000, 2_000]
    assert [x.at_ms for x in rp.markers_within(m, (600, 1_500))] == [900, 1_000]


def test_champion_is_the_first_choice_resolved_to_a_version_and_canary_the_live_one():
    builtin = Schedule(version=0, stages=[Stage(deadline_ms=100, models=["fraud-champion"])], default_output={})
    keys = {"fraud-champion@1.0.0", "fraud-champion@1.1.0"}
    assert rp.champion_of(builtin, keys, {"fraud-champion@1.1.0": "production"}) == "fraud-champion@1.1.0"
    assert rp.champion_of(builtin, {"fraud-champion@1.0.0"}, {}) == "fraud-champion@1.0.0"
    assert rp.champion_of(builtin, keys, {}) == "fraud-champion"  # ambiguous: left as named

    def entry(key, stage, canary, since=0):
        mid, ver = key.split("@")
        return ModelEntry(model_id=mid, version=ver, stage=stage, card={}, canary=canary, registered_at_ms=0,
                          stage_since_ms=since)

    assert rp.canary_of([entry("r@1", "retired", True), entry("r@2", "development", True),
                         entry("r@3", "preproduction", True), entry("c@1", "production", False)]) == "r@3"
    assert rp.canary_of([entry("r@1", "retired", True)]) is None


def test_model_lines_take_each_figure_from_its_latest_row(data):
    lines = {x.model: x for x in rp.model_lines(data)}
    assert [x.model for x in rp.model_lines(data)] == [CHAMPION, CHALLENGER, CANARY]  # champion, stage, canary last
    ch, new, can = lines[CHAMPION], lines[CHALLENGER], lines[CANARY]
    assert (ch.role, new.role, can.role) == ("champion", "", "canary")
    last = WINDOWS - 1
    assert ch.window == (T0 + last * WINDOW_MS, T0 + WINDOWS * WINDOW_MS)
    assert ch.scores_per_min == pytest.approx((1500 + 7 * last) * 6)
    assert ch.p50_ms == 6.0 + last % 3 and ch.p99_ms == 24.0 + last % 5
    assert new.vs_champion == round(1500 * (0.004 + 0.001 * (last % 3))) / 1500 and ch.vs_champion is None
    assert new.vs_canary == round(1500 * (0.035 + 0.001 * (last % 3))) / 1500 and can.vs_canary is None
    assert (ch.precision, ch.recall, ch.labelled) == (0.8, 0.8, 1500)
    assert new.answer_share == pytest.approx(0.5) and ch.answer_share == pytest.approx(745 / 1500)
    assert can.answer_share == 0.0 and rp.default_share(data) == pytest.approx(5 / 1500)


def test_a_registered_model_without_rows_is_listed_without_figures(data):
    d = rp.ReportData(rows=data.rows, champion=CHAMPION, canary=CANARY,
                      stages={**STAGES, "fraud-new@3": "development", "fraud-old@0": "retired"})
    lines = {x.model: x for x in rp.model_lines(d)}
    assert "fraud-old@0" not in lines
    assert lines["fraud-new@3"].stage == "development" and lines["fraud-new@3"].window is None


def test_freshness_says_when_the_windows_stopped():
    rows = [row(window_start_ms=0, window_end_ms=10_000)]
    assert not rp.freshness(rows, 60_000).stale
    assert rp.freshness(rows, 70_001).stale  # 3 windows are 30 s; at least a minute
    assert rp.freshness([], 0) == rp.Freshness(None, None, True)


def test_models_text_is_a_table_with_the_champion_first(data):
    lines, current = tr.models_text(data, NOW)
    assert current and "windows of 10 s" in lines[0] and "5s ago" in lines[0]
    header, first, second = lines[1], lines[2], lines[3]
    assert header.split()[:3] == ["model", "stage", "scores/min"]
    assert first.split()[:3] == [CHAMPION, "(champion)", "production"]
    assert second.split() == [CHALLENGER, "preproduction", "10218", "0.4%", "11", "ms", "40", "ms", "0.6%", "3.7%",
                              "83.3%", "83.3%", "50.0%"]
    assert "default answers 0.3%" in lines[-1]


def test_models_text_without_rows_says_to_start_the_metrics_job():
    d = rp.ReportData(rows=(), stages={CHAMPION: "production"}, since_ms=NOW - 600_000)
    lines, current = tr.models_text(d, NOW)
    assert not current
    assert "no metrics rows in topic metrics in the last 10m00s" in lines[0]
    assert "`rendezvous metrics start`" in lines[0] and CHAMPION in lines[1]


def test_models_text_warns_when_the_rows_are_stale(data):
    lines, current = tr.models_text(data, NOW + 3_600_000)
    assert not current and lines[1].startswith("warning: no window ended in the last 1h00m")


def test_html_is_self_contained_with_one_div_per_plot(data):
    import plotly.offline

    assert plotly.offline.get_plotlyjs()[:200] in tr.render(data)  # plotly.js inline, not fetched
    page = tr.render(data, plotly_js=lambda: "/* plotly.js */")
    assert not re.search(r"<script[^>]+src=", page) and "http" not in page  # nothing else fetched either
    ids = re.findall(r'<div id="(plot-[a-z-]+)" class="plotly-graph-div"', page)
    assert ids == [f"plot-{p}" for p in ("latency", "scores", "agreement", "answers", "answers-model", "accuracy",
                                         "budget")]
    assert "no-data" not in page.split("</style>")[1]
    assert page.count("<tr>") == 1 + 3 + 1 + len(data.markers)  # models table and events table


def test_html_without_rows_says_no_data_in_every_section():
    page = tr.render(rp.ReportData(rows=()), plotly_js=lambda: "")
    sections = ("latency", "scores", "agreement", "answers", "answers-model", "accuracy", "budget")
    for s in sections:
        assert re.search(rf'<p class="no-data" id="nodata-{s}">no data for ', page), s
    assert "plotly-graph-div" not in page and "rendezvous metrics start" in page


def test_html_shows_attribution_rows_and_the_lineage_when_there_are_some(data):
    attributed = Metrics(kind="attribution", window_start_ms=T0, window_end_ms=T0 + WINDOW_MS, model="b@1",
                         versus="a@2", trigger="job_submitted", count=60, figure="recall", before=0.667, after=0.0,
                         event_at_ms=T0 + 500)
    with_them = rp.ReportData(rows=data.rows + (attributed,), lineage=("jobs (reads -> job -> writes):",
                                                                       "  b@1 <- a"), lineage_dot="digraph {}")
    page = tr.render(with_them, plotly_js=lambda: "")
    table = page.split('id="table-attribution"')[1].split("</table>")[0]
    assert "b@1" in table and "recall" in table and "0.667" in table and "job_submitted" in table and "a@2" in table
    assert "b@1 &lt;- a" in page and 'id=lineage-dot>digraph {}' in page
    assert "sec-attribution" not in tr.render(data, plotly_js=lambda: "")


def test_the_lineage_is_drawn_when_the_graph_was_read(data):
    from tests.control.test_lineage import graph

    assert "lineage" not in [p.name for p in tr.plots(data)]  # not read: no drawing (the text says why)
    g = graph({"snoop": {"sc"}})
    plot = next(p for p in tr.plots(rp.ReportData(rows=data.rows, lineage_graph=g)) if p.name == "lineage")
    names = {t.name: t for t in plot.figure.data}
    assert {"flow edges", "undeclared edges", "topics", "jobs", "models", "consumers"} <= set(names)
    assert set(names["topics"].text) == {"rq", "aug", "q", "sc", "an", "lb", "mx", "transitions"}
    assert list(names["consumers"].text) == ["snoop"]
    page = tr.render(rp.ReportData(rows=data.rows, lineage_graph=g), plotly_js=lambda: "")
    assert 'id="plot-lineage"' in page
