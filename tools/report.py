"""`rendezvous report` and `rendezvous models`: the live meta-analytics (control/ops/report.py) as one
self-contained HTML file with plots, and as a table in the terminal.

The HTML carries plotly.js inline (no CDN: it opens offline, and on machines that reach no network).
Every plot is a `<div id="plot-NAME" class="plotly-graph-div">` (tests/e2e/test_report.py renders the file
in headless Chromium and finds each one drawn, with its traces); a plot without data is a
`<p class="no-data" id="nodata-NAME">no data for ...</p>` instead, never an empty frame.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from control.ops import report as rp
from schemas.records import Metrics

PLOT_HEIGHT = 460
MARKER_STYLE = {  # category: (line colour, dash, legend name)
    "schedule": ("#1f5fbf", "solid", "schedule changes"),
    "lifecycle": ("#888888", "dot", "lifecycle events"),
    "alarm": ("#d62728", "dash", "guard breaches, rollbacks, alerts"),
}


@dataclass(frozen=True)
class Plot:
    """One section of the report: a figure, or why there is none."""

    name: str
    title: str
    what: str
    figure: object | None  # plotly.graph_objects.Figure
    empty: str = ""

    @property
    def div_id(self) -> str:
        return f"plot-{self.name}"


# ------------------------------------------------------------------------------------------------ text
def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _x(ms: int) -> str:
    """A plotly date (plotly.js takes no time zone: UTC, as the axes say)."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ago(ms: int) -> str:
    s = max(0, ms // 1000)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


HINT = "start the metrics job: `rendezvous metrics start`"

COLUMNS = ("model", "stage", "scores/min", "errors", "p50", "p99", "≠champion", "≠canary", "precision",
           "recall", "answers")


def line_cells(x: rp.ModelLine) -> list[str]:
    name = x.model + (f" ({x.role})" if x.role else "")
    return [name, x.stage or "-", _num(x.scores_per_min), _pct(x.error_rate), _ms(x.p50_ms), _ms(x.p99_ms),
            _pct(x.vs_champion), _pct(x.vs_canary), _pct(x.precision), _pct(x.recall), _pct(x.answer_share)]


def models_text(data: rp.ReportData, now: int) -> tuple[list[str], bool]:
    """`rendezvous models`: the lines to print, and whether there are current figures (False: none, or
    the latest window is stale; the lines then say what to do)."""
    fresh = rp.freshness(data.rows, now)
    if fresh.latest_end_ms is None:
        since = f" in the last {_ago(now - data.since_ms)}" if data.since_ms is not None else ""
        out = [f"no metrics rows in topic {data.topic}{since}: is the metrics job running? ({HINT})"]
        if data.stages:
            out.append("registered: " + ", ".join(f"{k} ({s})" for k, s in sorted(data.stages.items())))
        return out, False
    out = [f"metrics of the latest window per model (windows of {fresh.window_ms / 1000:g} s; the latest ended "
           f"{_when(fresh.latest_end_ms)} UTC, {_ago(now - fresh.latest_end_ms)} ago; topic {data.topic})"]
    if fresh.stale:
        out.append(f"warning: no window ended in the last {_ago(now - fresh.latest_end_ms)}: the metrics job may "
                   f"have stopped (`rendezvous job list`; {HINT})")
    rows = [list(COLUMNS)] + [line_cells(x) for x in rp.model_lines(data)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    d = rp.default_share(data)
    notes = []
    if d is not None:
        notes.append(f"default answers {_pct(d)}")
    notes.append(f"champion {data.champion or '-'}, canary {data.canary or 'none registered'}; ≠: disagreement "
                 "rate (scores on different sides of the threshold); precision/recall: latest window with labels")
    out.append("; ".join(notes))
    return out, not fresh.stale


# ------------------------------------------------------------------------------------------------ plots
def _palette(names) -> dict[str, str]:
    from plotly.colors import qualitative

    colours = qualitative.Plotly + qualitative.D3
    return {n: colours[i % len(colours)] for i, n in enumerate(sorted(names))}


def _figure(title_y: str, markers: list[rp.Marker], percent: bool = False):
    """A figure over time with the markers drawn: a vertical line each, and one hoverable point per marker
    on a hidden overlay axis (one legend entry per category)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(height=PLOT_HEIGHT, showlegend=True, margin=dict(l=60, r=20, t=30, b=40),
                      hovermode="x unified", legend=dict(orientation="h", y=-0.18, yanchor="top"),
                      xaxis=dict(title="window end (UTC)", type="date"),
                      yaxis=dict(title=title_y, tickformat=".1%" if percent else None, rangemode="tozero"),
                      yaxis2=dict(overlaying="y", range=[0, 1], visible=False, fixedrange=True))
    for category, (colour, dash, legend) in MARKER_STYLE.items():
        ms = [m for m in markers if m.category == category]
        for m in ms:
            fig.add_shape(type="line", xref="x", yref="paper", x0=_x(m.at_ms), x1=_x(m.at_ms), y0=0, y1=1,
                          line=dict(color=colour, width=1, dash=dash), layer="below")
        if ms:
            fig.add_trace(go.Scatter(x=[_x(m.at_ms) for m in ms], y=[0.98] * len(ms), yaxis="y2", mode="markers",
                                     name=legend, marker=dict(symbol="triangle-down", size=10, color=colour),
                                     hovertext=[m.label for m in ms], hoverinfo="text"))
    return fig


def _line(fig, name: str, points: list[tuple[int, float]], colour: str, dash: str = "solid", group: str = "",
          **kw) -> None:
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=[_x(t) for t, _ in points], y=[v for _, v in points], name=name, mode="lines+markers",
                             line=dict(color=colour, dash=dash), marker=dict(size=4), legendgroup=group or name,
                             **kw))


def _latency(data: rp.ReportData, markers) -> Plot:
    rows = rp.of_kind(data.rows, "model")
    what = ("Each model's latency (its own: model finished - started) per window: p50 solid, p99 dashed, "
            "max dotted.")
    p50 = rp.series(rows, lambda r: r.model, lambda r: r.latency_p50_ms)
    if not p50:
        return Plot("latency", "Latency per model", what, None, "no data for latency: no `model` rows with latencies")
    p99 = rp.series(rows, lambda r: r.model, lambda r: r.latency_p99_ms)
    mx = rp.series(rows, lambda r: r.model, lambda r: r.latency_max_ms)
    colours = _palette(rp.models_of(data.rows))
    fig = _figure("latency (ms)", markers)
    for m in p50:
        _line(fig, f"{m} p50", p50[m], colours[m], group=m)
        if p99.get(m):
            _line(fig, f"{m} p99", p99[m], colours[m], "dash", group=m)
        if mx.get(m):
            _line(fig, f"{m} max", mx[m], colours[m], "dot", group=m)
    return Plot("latency", "Latency per model", what, fig)


def _scores(data: rp.ReportData, markers) -> Plot:
    rows = [r for r in rp.of_kind(data.rows, "model") if r.score_p50 is not None]
    what = ("Each model's score distribution per window: the median with a bar from p10 to p90, the mean "
            "dotted.")
    if not rows:
        return Plot("scores", "Scores per model over time", what, None,
                    "no data for scores: no `model` rows with score quantiles")
    colours = _palette(rp.models_of(data.rows))
    fig = _figure("score", markers)
    by_model: dict[str, list[Metrics]] = {}
    for r in rows:
        by_model.setdefault(r.model or "", []).append(r)
    for m, rs in sorted(by_model.items()):
        _line(fig, f"{m} p50 (p10-p90)", [(r.window_end_ms, r.score_p50) for r in rs], colours.get(m, "#333"),
              group=m, error_y=dict(type="data", symmetric=False, thickness=1,
                                    array=[(r.score_p90 if r.score_p90 is not None else r.score_p50) - r.score_p50
                                           for r in rs],
                                    arrayminus=[r.score_p50 - (r.score_p10 if r.score_p10 is not None
                                                               else r.score_p50) for r in rs]))
        means = [(r.window_end_ms, r.score_mean) for r in rs if r.score_mean is not None]
        if means:
            _line(fig, f"{m} mean", means, colours.get(m, "#333"), "dot", group=m)
    return Plot("scores", "Scores per model over time", what, fig)


def _agreement(data: rp.ReportData, markers) -> Plot:
    rows = [r for r in rp.of_kind(data.rows, "pair") if r.disagreement_rate is not None]
    refs = [x for x in (data.champion, data.canary) if x]
    what = ("How often two models' scores fall on different sides of the decision threshold, per window: "
            "every model against the champion (solid) and the canary (dashed)" if refs else
            "How often two models' scores fall on different sides of the decision threshold, per window "
            "(no champion or canary known: every pair)")
    if refs:
        # the champion against the canary once (as the canary against the champion)
        rows = [r for r in rows if r.versus in refs and r.model != r.versus
                and not (r.model == data.champion and r.versus == data.canary)]
    else:
        rows = [r for r in rows if (r.model or "") < (r.versus or "")]
    if not rows:
        return Plot("agreement", "Agreement between models", what, None,
                    "no data for agreement: no `pair` rows" + (f" against {' or '.join(refs)}" if refs else ""))
    colours = _palette(rp.models_of(data.rows))
    fig = _figure("disagreement rate", markers, percent=True)
    s = rp.series(rows, lambda r: f"{r.model} vs {r.versus}", lambda r: r.disagreement_rate)
    for name in s:
        model, _, versus = name.partition(" vs ")
        _line(fig, name, s[name], colours.get(model, "#333"), "dash" if versus == data.canary and
              versus != data.champion else "solid")
    return Plot("agreement", "Agreement between models", what, fig)


def _stacked(name: str, title: str, what: str, groups: dict[str, list[tuple[int, float]]], markers,
             colours: dict[str, str]) -> Plot:
    import plotly.graph_objects as go

    if not groups:
        return Plot(name, title, what, None, f"no data for {name.replace('-', ' ')}: no `answers` rows")
    fig = _figure("share of answers", markers, percent=True)
    for g, points in groups.items():
        fig.add_trace(go.Scatter(x=[_x(t) for t, _ in points], y=[v for _, v in points], name=g, mode="lines",
                                 stackgroup="answers", line=dict(width=0.5, color=colours.get(g)), legendgroup=g))
    return Plot(name, title, what, fig)


def _answers(data: rp.ReportData, markers) -> list[Plot]:
    by_stage = rp.shares(data.rows, rp.answer_group)
    by_model = rp.shares(data.rows, rp.answer_model)
    return [
        _stacked("answers", "Answers by stage and trigger", "Share of each window's answers by the stage that "
                 "answered and why (preferred model answered, all answered, deadline passed, default), with "
                 "schedule changes and lifecycle events marked.", by_stage, markers, _palette(by_stage)),
        _stacked("answers-model", "Answers by model", "Share of each window's answers by the model chosen "
                 "(a roll moves it step by step), with schedule changes and lifecycle events marked.", by_model,
                 markers, {**_palette(rp.models_of(data.rows)), "default answer": "#7f7f7f"}),
    ]


def _accuracy(data: rp.ReportData, markers) -> Plot:
    rows = [r for r in rp.of_kind(data.rows, "accuracy") if r.count > 0]
    what = ("Each model's precision (solid) and recall (dashed) over the labels that became known in each "
            "window (outcomes arrive after the answers).")
    p = rp.series(rows, lambda r: r.model, lambda r: r.precision)
    rc = rp.series(rows, lambda r: r.model, lambda r: r.recall)
    if not p and not rc:
        return Plot("accuracy", "Precision and recall over time", what, None,
                    "no data for precision and recall: no `accuracy` rows with labels")
    colours = _palette(rp.models_of(data.rows))
    fig = _figure("precision / recall", markers, percent=True)
    for m in sorted(set(p) | set(rc)):
        if p.get(m):
            _line(fig, f"{m} precision", p[m], colours[m], group=m)
        if rc.get(m):
            _line(fig, f"{m} recall", rc[m], colours[m], "dash", group=m)
    return Plot("accuracy", "Precision and recall over time", what, fig)


BUDGET_HOPS = (("external_state_ms", "external state"), ("queue_ms", "queue"), ("model_ms", "model"),
               ("transit_ms", "transit"), ("wait_ms", "wait"))


def _budget(data: rp.ReportData) -> Plot:
    import plotly.graph_objects as go

    last = rp.latest(data.rows, "budget")
    what = ("Where a request's time goes, per answering model, in the latest window: the median of each hop "
            "(stacked; medians do not add up exactly to the total's), and the total's p50 and p99.")
    if last is None:
        return Plot("budget", "Latency budget (latest window)", what, None, "no data for the latency budget: "
                    "no `budget` rows")
    rows = sorted((r for r in rp.of_kind(data.rows, "budget") if r.window_end_ms == last.window_end_ms),
                  key=lambda r: r.model or "")
    names = [r.model or "default answer" for r in rows]
    fig = go.Figure()
    fig.update_layout(height=PLOT_HEIGHT, barmode="stack", showlegend=True, margin=dict(l=60, r=20, t=30, b=40),
                      legend=dict(orientation="h", y=-0.12, yanchor="top", traceorder="normal"),
                      yaxis=dict(title="ms"))
    for attr, label in BUDGET_HOPS:
        fig.add_trace(go.Bar(x=names, y=[getattr(r, attr) or 0.0 for r in rows], name=label))
    for attr, label, symbol in (("total_p50_ms", "total p50", "diamond"), ("total_p99_ms", "total p99", "x")):
        fig.add_trace(go.Scatter(x=names, y=[getattr(r, attr) for r in rows], name=label, mode="markers",
                                 marker=dict(symbol=symbol, size=11, color="black")))
    return Plot("budget", f"Latency budget (window ending {_when(last.window_end_ms)} UTC)", what, fig)


NODE_STYLE = {"topic": ("circle", "#4c78a8"), "job": ("square", "#72b7b2"), "model": ("diamond", "#f58518"),
              "consumer": ("x", "#d62728")}
"""Marker symbol and colour of each kind of lineage node."""


def _lineage(data: rp.ReportData) -> Plot:
    what = ("The running jobs (squares; model jobs as diamonds) between the topics they read and write (circles), "
            "left to right from the topics no job writes; an undeclared consumer of a model's output in red "
            "(`rendezvous lineage`).")
    import plotly.graph_objects as go

    graph = data.lineage_graph
    if graph is None:
        return Plot("lineage", "Lineage", what, None, "no lineage: the cluster's jobs could not be read")
    nodes, edges = graph.layout()
    at = {n: (layer, -row) for n, _, _, layer, row in nodes}
    fig = go.Figure()
    fig.update_layout(height=max(PLOT_HEIGHT, 60 * (1 + max((r for *_, r in nodes), default=0))), showlegend=True,
                      margin=dict(l=20, r=20, t=30, b=20), xaxis=dict(visible=False), yaxis=dict(visible=False))
    for kind, colour, dash in (("flow", "#999", "solid"), ("undeclared", NODE_STYLE["consumer"][1], "dash")):
        xs, ys = [], []
        for a, b, k in edges:
            if k == kind:
                xs += [at[a][0], at[b][0], None]
                ys += [at[a][1], at[b][1], None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{kind} edges", hoverinfo="skip",
                                     line=dict(color=colour, dash=dash, width=1)))
    for kind, (symbol, colour) in NODE_STYLE.items():
        ns = [n for n in nodes if n[2] == kind]
        if ns:
            fig.add_trace(go.Scatter(x=[n[3] for n in ns], y=[-n[4] for n in ns], mode="markers+text",
                                     name=f"{kind}s", text=[n[1] for n in ns], textposition="top center",
                                     marker=dict(symbol=symbol, size=14, color=colour)))
    return Plot("lineage", "Lineage", what, fig)


def plots(data: rp.ReportData) -> list[Plot]:
    markers = rp.markers_within(data.markers, rp.span(data.rows))
    out = [_latency(data, markers), _scores(data, markers), _agreement(data, markers), *_answers(data, markers),
           _accuracy(data, markers), _budget(data)]
    if data.lineage_graph is not None:
        out.append(_lineage(data))
    return out


# ------------------------------------------------------------------------------------------------ html
CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
p.what, p.meta { color: #555; } p.no-data { color: #a33; font-style: italic; padding: 2em; background: #f7f7f7; }
section { margin-bottom: 2em; }
"""


def _table(table_id: str, header: list[str], rows: list[list[str]], text_cols: int = 1) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=text' if i < text_cols else ''}>{esc(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(data: rp.ReportData, plotly_js: Callable[[], str] | None = None) -> str:
    """The report as one HTML document (plotly.js inline)."""
    import plotly.offline

    esc = html.escape
    bounds = rp.span(data.rows)
    lines = rp.model_lines(data)
    parts = [f"<h1>rendezvous report</h1><p class=meta>Generated {_when(data.generated_at_ms)} UTC from topic "
             f"<code>{esc(data.topic)}</code>: {len(data.rows)} metrics rows"]
    if bounds:
        parts.append(f", windows from {_when(bounds[0])} to {_when(bounds[1])} UTC (length "
                     f"{(rp.window_ms(data.rows) or 0) / 1000:g} s)")
    parts.append(f"; champion {esc(data.champion or '-')}, canary {esc(data.canary or 'none registered')}; "
                 f"{len(data.markers)} schedule changes and lifecycle events"
                 + (f"; {data.unreadable} values in the topic were not metrics rows" if data.unreadable else "")
                 + ".</p>")
    if not data.rows:
        parts.append(f"<p class=no-data id=nodata-rows>no data: no metrics rows in <code>{esc(data.topic)}</code>"
                     f". Is the metrics job running? ({esc(HINT)})</p>")
    parts.append("<section id=sec-models><h2>Models (latest window)</h2>" +
                 _table("table-models", list(COLUMNS), [line_cells(x) for x in lines], 2) + "</section>")
    for p in plots(data):
        parts.append(f'<section id="sec-{p.name}"><h2>{esc(p.title)}</h2><p class=what>{esc(p.what)}</p>')
        if p.figure is None:
            parts.append(f'<p class="no-data" id="nodata-{p.name}">{esc(p.empty)}</p>')
        else:
            parts.append(p.figure.to_html(full_html=False, include_plotlyjs=False, div_id=p.div_id,
                                          default_height=f"{PLOT_HEIGHT}px", config={"displaylogo": False}))
        parts.append("</section>")
    attributed = rp.of_kind(data.rows, "attribution")
    if attributed:
        parts.append("<section id=sec-attribution><h2>Change attribution</h2><p class=what>Windows where a model's "
                     "recall, score mean or answer share moved from the windows before, with the upstream lifecycle "
                     "events of the same span (its own, its inputs', transitively; `rendezvous metrics attribute`)."
                     "</p>" + _table("table-attribution", ["window (UTC)", "model", "figure", "before", "after",
                                                          "upstream event", "deployment", "event time (UTC)"],
                                     [[_when(m.window_start_ms), m.model or "-", m.figure or "-",
                                       f"{m.before or 0:.3f}", f"{m.after or 0:.3f}", m.trigger or "-",
                                       m.versus or "(schedule)",
                                       _when(m.event_at_ms or 0)] for m in attributed], 3) + "</section>")
    if data.lineage:
        parts.append("<section id=sec-lineage><h2>Lineage</h2><p class=what>Which running job reads and writes "
                     "which topic, which model depends on which, undeclared consumers of a model's output "
                     "(`rendezvous lineage`; the Graphviz source below draws it).</p><pre id=lineage-text>"
                     + esc("\n".join(data.lineage)) + "</pre>"
                     + (f"<details><summary>Graphviz</summary><pre id=lineage-dot>{esc(data.lineage_dot)}</pre>"
                        "</details>" if data.lineage_dot else "") + "</section>")
    parts.append("<section id=sec-events><h2>Schedule changes and lifecycle events</h2>" +
                 _table("table-events", ["time (UTC)", "kind", "what"],
                        [[_when(m.at_ms), m.category, m.label] for m in data.markers], 3) + "</section>")
    js = (plotly_js or plotly.offline.get_plotlyjs)()
    return ("<!doctype html><html><head><meta charset=utf-8><title>rendezvous report</title>"
            f"<style>{CSS}</style><script type=\"text/javascript\">{js}</script></head><body>"
            + "".join(parts) + "</body></html>")


def write(data: rp.ReportData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render(data), encoding="utf-8")
    tmp.replace(path)
    return path
