"""`rendezvous replay CARD`: a candidate model over archived input, compared with the model that answered it:
the development-exit gate (README, "Replay").

The archived augmented requests of a time range (their JSON exactly as the models read it) go to a side topic of
their own; the candidate's ordinary model job (the production code path, process mode) scores them into another
side topic, never the production `scores`; once every request is scored the job is stopped, its Python worker's
peak memory read from its `peak_rss_mb` metric, the side topics deleted, and the scores written to Parquet under
the output directory with a report (JSON) that compares them with the recorded scores of the model that answered
those requests (`--against`), on the same request ids, and with the archived labels. `--fail-if` thresholds
turn it into a CI gate for a model repository. `compare` is pure.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from control.errors import ControlError
from control.settings import RuntimeSettings
from schemas.model_card import ModelCard
from schemas.records import Score
from schemas.topics import TopicNames, TopicSpec


class ReplayError(ControlError):
    pass


FIGURES = ("requests", "scored", "errors", "compared", "agreement", "disagreement", "correlation", "mean_abs_diff",
           "max_abs_diff",
           "labelled", "precision", "recall", "auc", "against_precision", "against_recall", "against_auc",
           "p50_ms", "p90_ms", "p99_ms", "max_ms", "peak_rss_mb")


@dataclass
class ReplayReport:
    model: str
    against: str | None
    since_ms: int | None
    until_ms: int | None
    threshold: float
    output_field: str
    requests: int = 0
    scored: int = 0
    errors: int = 0
    compared: int = 0
    agreement: float | None = None
    disagreement: float | None = None
    correlation: float | None = None
    mean_abs_diff: float | None = None
    max_abs_diff: float | None = None
    labelled: int = 0
    precision: float | None = None
    recall: float | None = None
    auc: float | None = None
    against_precision: float | None = None
    against_recall: float | None = None
    against_auc: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    peak_rss_mb: float | None = None
    disagreements: list[dict] = field(default_factory=list)
    """The requests they disagree on, largest score difference first (at most 20)."""
    failed: list[str] = field(default_factory=list)
    """The `--fail-if` conditions that hold."""

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ pure
def _value(output: dict | None, name: str) -> float | None:
    if not output or name not in output:
        return None
    try:
        v = float(output[name])
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _rates(pairs: list[tuple[float, bool]], threshold: float) -> tuple[float | None, float | None, float | None]:
    """(precision, recall, AUC) of scores against labels."""
    tp = sum(1 for p, y in pairs if p >= threshold and y)
    fp = sum(1 for p, y in pairs if p >= threshold and not y)
    fn = sum(1 for p, y in pairs if p < threshold and y)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    ys = {y for _, y in pairs}
    auc = None
    if ys == {True, False}:
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score([y for _, y in pairs], [p for p, _ in pairs]))
    return precision, recall, auc


def compare(report: ReplayReport, candidate: list[Score], recorded: list[Score], labels: dict[str, bool]) -> None:
    """Fill `report`'s figures: the candidate's scores against the recorded ones of `report.against` on the same
    request ids (first score per request each), against the labels, and its latency distribution."""
    import numpy as np

    f, thr = report.output_field, report.threshold
    cand = {}
    for x in candidate:
        cand.setdefault(x.request_id, x)
    report.scored = len(cand)
    report.errors = sum(1 for x in cand.values() if x.error is not None)
    lat = [x.model_latency_ms for x in cand.values()]
    if lat:
        report.p50_ms, report.p90_ms, report.p99_ms = (float(v) for v in np.percentile(lat, [50, 90, 99]))
        report.max_ms = float(max(lat))
    mine = {k: _value(x.output, f) for k, x in cand.items()}
    mine = {k: v for k, v in mine.items() if v is not None}
    theirs = {}
    for x in recorded:
        v = _value(x.output, f)
        if v is not None:
            theirs.setdefault(x.request_id, v)
    both = sorted(set(mine) & set(theirs))
    report.compared = len(both)
    if both:
        a, b = np.array([mine[k] for k in both]), np.array([theirs[k] for k in both])
        differ = [(k, mine[k], theirs[k]) for k in both if (mine[k] >= thr) != (theirs[k] >= thr)]
        report.disagreement = len(differ) / len(both)
        report.agreement = 1.0 - report.disagreement
        report.mean_abs_diff = float(np.mean(np.abs(a - b)))
        report.max_abs_diff = float(np.max(np.abs(a - b)))
        report.correlation = float(np.corrcoef(a, b)[0, 1]) if len(both) > 1 and a.std() > 0 and b.std() > 0 else None
        report.disagreements = [{"request_id": k, "score": s1, "against": s2, "label": labels.get(k)}
                                for k, s1, s2 in sorted(differ, key=lambda d: -abs(d[1] - d[2]))[:20]]
    lab = [k for k in mine if k in labels]
    report.labelled = len(lab)
    if lab:
        report.precision, report.recall, report.auc = _rates([(mine[k], labels[k]) for k in lab], thr)
        theirs_lab = [k for k in lab if k in theirs]
        if theirs_lab:
            report.against_precision, report.against_recall, report.against_auc = _rates(
                [(theirs[k], labels[k]) for k in theirs_lab], thr)


_COND = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|<|>)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")


def parse_condition(text: str) -> tuple[str, str, float]:
    """`agreement<0.95` -> ("agreement", "<", 0.95); an error naming the figures for anything else."""
    m = _COND.match(text)
    if not m or m.group(1) not in FIGURES:
        raise ReplayError(f"cannot read the condition {text!r}: write FIGURE<NUMBER (or >, <=, >=) with a figure of "
                          f"{', '.join(FIGURES)}, e.g. --fail-if 'agreement<0.95' --fail-if 'p99_ms>50'")
    return m.group(1), m.group(2), float(m.group(3))


def failed_conditions(report: ReplayReport, conditions: list[str]) -> list[str]:
    """The conditions that hold (a figure that could not be computed fails its condition: nothing to judge by)."""
    out = []
    for c in conditions:
        name, op, bound = parse_condition(c)
        v = getattr(report, name)
        hold = v is None or {"<": v < bound, ">": v > bound, "<=": v <= bound, ">=": v >= bound}[op]
        if hold:
            out.append(f"{c} ({name} = {'n/a' if v is None else round(v, 4)})")
    return out


# ------------------------------------------------------------------------------------------------ running
def _peak_rss(jid: str, s: RuntimeSettings) -> float | None:
    """The job's largest `peak_rss_mb` gauge, from Flink's REST API (None until a bundle reported it)."""
    from control.ops.jobs import flink_rest

    best = None
    for v in flink_rest(s, f"/jobs/{jid}").get("vertices", []):
        base = f"/jobs/{jid}/vertices/{v['id']}/metrics"
        ids = [m["id"] for m in flink_rest(s, base) if m["id"].endswith("peak_rss_mb")]
        if ids:
            for m in flink_rest(s, f"{base}?get={','.join(ids)}"):
                try:
                    best = max(best or 0.0, float(m["value"]))
                except (TypeError, ValueError):
                    pass
    return best


def replay(card: ModelCard, s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(),
           archive: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
           against: str | None = None, threshold: float = 0.5, output_field: str = "fraud_probability",
           out_dir: str | Path | None = None, fail_if: list[str] = (), timeout_s: float = 600.0,
           progress: Callable[[str], None] | None = print) -> ReplayReport:
    """Replay `card` over the archived requests with request time in [since_ms, until_ms) (None: unbounded) and
    compare; writes `out_dir`/scores.parquet and report.json; returns the report (`failed` set by `fail_if`)."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from control import kafka_io
    from control.ops import archive as arch
    from control.ops import deploy, jobs

    s = s or RuntimeSettings()
    say = progress or (lambda _: None)
    for c in fail_if:
        parse_condition(c)  # refused before anything runs
    where = archive or s.archive
    flt = None
    if since_ms is not None:
        flt = ds.field("event_time_ms") >= since_ms
    if until_ms is not None:
        flt = (ds.field("event_time_ms") < until_ms) if flt is None else flt & (ds.field("event_time_ms") < until_ms)
    rows = arch.dataset("requests", where).to_table(filter=flt, columns=["request_id", "augmented_json"]).to_pylist()
    inputs = {}
    for r in rows:
        inputs.setdefault(r["request_id"], r["augmented_json"])
    if not inputs:
        raise ReplayError(f"no archived request in that range in {where}; widen --since/--until")
    ids = set(inputs)
    answers = arch.read("answers", where, ids, columns=["request_id", "model"]).to_pylist()
    if against is None:
        from collections import Counter

        common = Counter(a["model"] for a in answers if a["model"]).most_common(1)
        against = common[0][0] if common else None
    report = ReplayReport(model=card.key, against=against, since_ms=since_ms, until_ms=until_ms,
                          threshold=threshold, output_field=output_field, requests=len(inputs))
    run = uuid.uuid4().hex[:8]
    side_in, side_out = f"replay-{run}-in", f"replay-{run}-scores"
    kafka_io.ensure_topics(s.bootstrap_servers, [TopicSpec(side_in), TopicSpec(side_out)])
    jid = None
    try:
        say(f"replaying {len(inputs)} archived requests into {card.key} (side topics {side_in} -> {side_out}; "
            f"compared with {against or 'no recorded model'})")
        kafka_io.produce(s.bootstrap_servers, side_in, list(inputs.values()),
                         key=lambda v: json.loads(v)["request"]["request_id"].encode())
        jid = deploy.deploy_model(card, s, job_name=f"replay {card.key} {run}", source_topic=side_in,
                                  sink_topic=side_out, start="earliest", group_id=f"replay-{run}",
                                  lifecycle_topic=topics.lifecycle)
        deadline, scored, last = time.monotonic() + timeout_s, {}, 0.0
        while len(scored) < len(inputs):
            if time.monotonic() > deadline:
                raise ReplayError(f"{card.key} scored {len(scored)} of {len(inputs)} requests in {timeout_s:.0f} s; "
                                  f"job {jid}: `rendezvous job list`")
            for r in kafka_io.records_to_end(s.bootstrap_servers, side_out, timeout=60):
                x = Score.parse(r.value)
                scored.setdefault(x.request_id, x)
            if time.monotonic() - last > 5:
                say(f"  scored {len(scored)}/{len(inputs)}")
                last = time.monotonic()
            time.sleep(0.5)
        deadline = time.monotonic() + 30  # Flink's REST metrics refresh every few seconds
        while report.peak_rss_mb is None and time.monotonic() < deadline:
            report.peak_rss_mb = _peak_rss(jid, s)
            time.sleep(1)
    finally:
        if jid:
            try:
                jobs.cancel(jid, s)
            except ControlError:
                pass
        kafka_io.delete_topics(s.bootstrap_servers, [side_in, side_out])
    recorded = []
    if against:
        mid, _, version = against.partition("@")
        rec = arch.read("scores", where, ids).to_pylist()
        recorded = [Score.model_validate({**{k: v for k, v in r.items() if k in Score.model_fields},
                                          "output": dict(r["output"]) if r["output"] is not None else None})
                    for r in rec if r["model_id"] == mid and r["model_version"] == version]
    labels = {r["request_id"]: r["positive"] for r in arch.read("labels", where, ids).to_pylist()} \
        if _has_table("labels", where) else {}
    compare(report, list(scored.values()), recorded, labels)
    report.failed = failed_conditions(report, list(fail_if))
    out = Path(out_dir or s.run_dir / "replay" / run)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([{**x.model_dump(exclude={"output"}), "output": json.dumps(x.output),
                                          "score": _value(x.output, output_field)} for x in scored.values()]),
                   out / "scores.parquet")
    (out / "report.json").write_text(json.dumps(report.as_dict(), indent=2))
    say(f"scores: {out / 'scores.parquet'}; report: {out / 'report.json'}")
    return report


def _has_table(table: str, where: str) -> bool:
    from control.ops import archive as arch

    try:
        arch.dataset(table, where)
        return True
    except arch.ArchiveError:
        return False


def render(r: ReplayReport) -> str:
    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    def num(v, fmt="{:.1f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = [f"replay of {r.model} over {r.requests} archived requests: {r.scored} scored, {r.errors} errors",
             f"  against {r.against or '(no recorded model)'} on {r.compared} requests: agreement {pct(r.agreement)}, "
             f"correlation {num(r.correlation, '{:.4f}')}, |difference| mean {num(r.mean_abs_diff, '{:.2g}')} max "
             f"{num(r.max_abs_diff, '{:.2g}')}",
             f"  labels: {r.labelled} requests; {r.model}: precision {pct(r.precision)}, recall {pct(r.recall)}, "
             f"AUC {num(r.auc, '{:.3f}')}; {r.against}: precision {pct(r.against_precision)}, recall "
             f"{pct(r.against_recall)}, AUC {num(r.against_auc, '{:.3f}')}",
             f"  latency p50 {num(r.p50_ms)} ms, p90 {num(r.p90_ms)} ms, p99 {num(r.p99_ms)} ms, max {num(r.max_ms)} ms;"
             f" Python worker peak memory {num(r.peak_rss_mb, '{:.0f}')} MiB"]
    if r.disagreements:
        lines.append(f"  disagreements (largest first, {len(r.disagreements)} shown):")
        lines += [f"    {d['request_id']}: {d['score']:.4f} vs {d['against']:.4f}"
                  + ("" if d["label"] is None else f" (label: {'positive' if d['label'] else 'negative'})")
                  for d in r.disagreements[:10]]
    if r.failed:
        lines.append("FAILED: " + "; ".join(r.failed))
    return "\n".join(lines)
