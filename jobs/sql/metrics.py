"""The live meta-analytics as one Flink SQL script: `metrics_script(MetricsConfig)` (pure, no PyFlink).

It runs as a continuous SQL job (`jobs.sql.main`, submitted by `rendezvous metrics start`) over the streams'
tables (schemas.tables) and writes `schemas.records.Metrics` rows to the `metrics` topic, one INSERT per
kind, all in one job:

- `model`: `scores` per model deployment and tumbling event-time window (the scores' Kafka timestamps);
- `pair`: `scores` joined with `scores` on the request id (within `join_within_s` of each other), per
  ordered pair of deployments: how often their decisions at the threshold disagree;
- `accuracy`: `labels` joined with the `scores` of the `label_horizon_s` before each label, per model and
  window of the labels' Kafka timestamps (precision and recall as outcomes become known);
- `answers`: `answers` per chosen model, stage and trigger, with the window's total (a window join);
- `budget`: `answers` joined with `augmented_requests` on the request id, the chosen model's timings split
  into the hops of a request's latency.

Windows close when the watermark (the largest Kafka timestamp seen, `lateness_s` behind, idle inputs excluded
after `idle_timeout_s`) passes their end (a score's Kafka timestamp is its request's: the model job's sink keeps
the element's time; a model job lagging the others by more than `lateness_s` has its scores dropped); an interval join holds its output
back by its interval, so `pair` and `budget` rows come `join_within_s` later, `accuracy` rows
`label_horizon_s` later. A window whose records stop coming (no traffic) closes when traffic resumes.
Quantiles are Flink's PERCENTILE (exact, linear interpolation between the two nearest values).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import records
from schemas.tables import columns, literal, quote

KINDS = ("model", "pair", "accuracy", "answers", "budget")


@dataclass(frozen=True)
class MetricsConfig:
    window_s: int = 60
    """Length of the tumbling event-time windows."""
    output_field: str = "fraud_probability"
    """The output field read as the score (a number)."""
    threshold: float = 0.5
    """The decision threshold: a score at or above it flags (fraud); agreement and precision/recall use it."""
    join_within_s: int = 30
    """How far apart (Kafka timestamps) two scores of one request, or an answer and its augmented request,
    may be to be matched."""
    label_horizon_s: int = 120
    """How long after its score a label still counts (outcomes known later are not in `accuracy`)."""
    idle_timeout_s: int = 10
    """A partition without records for this long no longer holds the watermark back."""
    lateness_s: int = 15
    """How far the watermark lags behind the largest Kafka timestamp seen: a score stamped with its request's
    time that comes later than this (a model job lagging behind the others) is dropped by the windows."""

    def __post_init__(self) -> None:
        for name in ("window_s", "join_within_s", "label_horizon_s", "idle_timeout_s", "lateness_s"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number of seconds >= 1, not {getattr(self, name)!r}")
        if not self.output_field:
            raise ValueError("output_field must name the output field that holds the score")


def _ms(column: str) -> str:
    """A window bound (TIMESTAMP(3) in the job's UTC session time zone) as epoch ms."""
    return f"UNIX_TIMESTAMP(CAST({column} AS STRING)) * 1000"


def interval(seconds: int) -> str:
    """An SQL interval of whole seconds (DAY TO SECOND: `INTERVAL '120' SECOND` exceeds SECOND's default
    precision of two digits)."""
    d, rest = divmod(seconds, 86_400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return f"INTERVAL '{d} {h:02d}:{m:02d}:{sec:02d}' DAY TO SECOND"


def _p(expr: str, q: float) -> str:
    return f"PERCENTILE(CAST({expr} AS DOUBLE), {q})"


def _count_if(cond: str) -> str:
    return f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)"


def _rate(num: str, den: str) -> str:
    return f"CAST({num} AS DOUBLE) / NULLIF({den}, 0)"


def insert(kind: str, values: dict[str, str], source: str, group_by: str | None, cfg: MetricsConfig,
           sink: str = "metrics") -> str:
    """`INSERT INTO sink` of one kind: every Metrics column in order, `values[column]` (an SQL expression) where
    given, else NULL, each cast to the column's type (the record is the one definition of the row)."""
    values = {"kind": literal(kind), "window_start_ms": _ms("window_start"), "window_end_ms": _ms("window_end"),
              "threshold": repr(float(cfg.threshold)), "output_field": literal(cfg.output_field), **values}
    cols = columns(records.Metrics)
    unknown = set(values) - {c for c, _ in cols}
    if unknown:
        raise ValueError(f"not Metrics columns: {sorted(unknown)}")
    select = ",\n  ".join(f"CAST({values.get(c, 'NULL')} AS {t}) AS {quote(c)}" for c, t in cols)
    grouped = f"\nGROUP BY {group_by}" if group_by else ""
    return f"INSERT INTO {quote(sink)}\nSELECT\n  {select}\nFROM {source}{grouped}"


def _tumble(table: str, time_col: str, cfg: MetricsConfig) -> str:
    return f"TABLE(TUMBLE(TABLE {table}, DESCRIPTOR({quote(time_col)}), {interval(cfg.window_s)}))"


def metrics_script(cfg: MetricsConfig = MetricsConfig()) -> str:
    """The SQL script of the metrics job (SET, views, one INSERT per kind)."""
    thr = repr(float(cfg.threshold))
    within, horizon = interval(cfg.join_within_s), interval(cfg.label_horizon_s)
    flagged = f"score >= {thr}"
    views = [
        "SET 'table.local-time-zone' = 'UTC'",
        f"SET 'table.exec.source.idle-timeout' = '{cfg.idle_timeout_s} s'",
        # one row per score: the deployment, its score (NULL for an error or a non-number), its latency
        f"""CREATE TEMPORARY VIEW metrics_scored AS
SELECT request_id, CONCAT(model_id, '@', model_version) AS model,
  TRY_CAST(`output`[{literal(cfg.output_field)}] AS DOUBLE) AS score,
  error IS NOT NULL AS failed,
  error IS NOT NULL AND LOWER(error) LIKE '%timeout%' AS timed_out,
  finished_at_ms - started_at_ms AS latency_ms,
  kafka_time
FROM scores""",
        f"""CREATE TEMPORARY VIEW metrics_pairs AS
SELECT a.model, b.model AS versus, a.score AS score_a, b.score AS score_b, a.kafka_time
FROM metrics_scored a JOIN metrics_scored b
  ON a.request_id = b.request_id AND a.model <> b.model
  AND b.kafka_time BETWEEN a.kafka_time - {within} AND a.kafka_time + {within}
WHERE a.score IS NOT NULL AND b.score IS NOT NULL""",
        f"""CREATE TEMPORARY VIEW metrics_labelled AS
SELECT s.model, s.score, l.positive, l.kafka_time AS label_time
FROM labels l JOIN metrics_scored s
  ON s.request_id = l.request_id
  AND s.kafka_time BETWEEN l.kafka_time - {horizon} AND l.kafka_time
WHERE s.score IS NOT NULL""",
        # the chosen model's timings (NULL for the default answer) beside the request's augmentation time
        f"""CREATE TEMPORARY VIEW metrics_budget AS
SELECT a.model, a.request_time_ms, a.received_at_ms, a.answered_at_ms, g.augmented_at_ms,
  a.timings[a.model].started_at_ms AS started_at_ms,
  a.timings[a.model].finished_at_ms AS finished_at_ms,
  a.received_at_ms + a.timings[a.model].arrived_after_ms AS score_arrived_ms,
  a.kafka_time
FROM answers a JOIN augmented_requests g
  ON g.request.request_id = a.request_id
  AND g.kafka_time BETWEEN a.kafka_time - {within} AND a.kafka_time""",
    ]
    model = insert("model", {
        "model": "model", "count": "COUNT(*)", "errors": _count_if("failed"), "timeouts": _count_if("timed_out"),
        "error_rate": _rate(_count_if("failed"), "COUNT(*)"),
        "latency_p50_ms": _p("latency_ms", 0.5), "latency_p99_ms": _p("latency_ms", 0.99),
        "latency_max_ms": "MAX(latency_ms)",
        "score_mean": "AVG(score)", "score_p10": _p("score", 0.1), "score_p50": _p("score", 0.5),
        "score_p90": _p("score", 0.9), "positives": _count_if(flagged),
    }, _tumble("metrics_scored", "kafka_time", cfg), "window_start, window_end, model", cfg)
    disagree = f"(score_a >= {thr}) <> (score_b >= {thr})"
    pair = insert("pair", {
        "model": "model", "versus": "versus", "count": "COUNT(*)", "disagreements": _count_if(disagree),
        "disagreement_rate": _rate(_count_if(disagree), "COUNT(*)"),
        "score_abs_diff_mean": "AVG(ABS(score_a - score_b))",
    }, _tumble("metrics_pairs", "kafka_time", cfg), "window_start, window_end, model, versus", cfg)
    tp, fp = _count_if(f"{flagged} AND positive"), _count_if(f"{flagged} AND NOT positive")
    fn, tn = _count_if(f"NOT {flagged} AND positive"), _count_if(f"NOT {flagged} AND NOT positive")
    accuracy = insert("accuracy", {
        "model": "model", "count": "COUNT(*)", "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": _rate(tp, f"{tp} + {fp}"), "recall": _rate(tp, f"{tp} + {fn}"),
    }, _tumble("metrics_labelled", "label_time", cfg), "window_start, window_end, model", cfg)
    per_group = (f"(SELECT window_start, window_end, model, stage, `trigger`, COUNT(*) AS n, "
                 f"{_count_if('is_default')} AS d FROM {_tumble('answers', 'kafka_time', cfg)} "
                 f"GROUP BY window_start, window_end, model, stage, `trigger`) g")
    totals = (f"(SELECT window_start, window_end, COUNT(*) AS total FROM {_tumble('answers', 'kafka_time', cfg)} "
              f"GROUP BY window_start, window_end) t")
    answers = insert("answers", {
        "model": "g.model", "stage": "g.stage", "trigger": "g.`trigger`", "count": "g.n", "total": "t.total",
        "share": _rate("g.n", "t.total"), "defaults": "g.d",
        "window_start_ms": _ms("g.window_start"), "window_end_ms": _ms("g.window_end"),
    }, f"{per_group} JOIN {totals} ON g.window_start = t.window_start AND g.window_end = t.window_end",
        None, cfg)
    arrival = "GREATEST(score_arrived_ms, received_at_ms)"
    budget = insert("budget", {
        "model": "model", "count": "COUNT(*)",
        "external_state_ms": _p("augmented_at_ms - request_time_ms", 0.5),
        "queue_ms": _p("started_at_ms - augmented_at_ms", 0.5),
        "model_ms": _p("finished_at_ms - started_at_ms", 0.5),
        "transit_ms": _p("score_arrived_ms - finished_at_ms", 0.5),
        "wait_ms": _p(f"answered_at_ms - COALESCE({arrival}, received_at_ms)", 0.5),
        "total_p50_ms": _p("answered_at_ms - request_time_ms", 0.5),
        "total_p99_ms": _p("answered_at_ms - request_time_ms", 0.99),
    }, _tumble("metrics_budget", "kafka_time", cfg), "window_start, window_end, model", cfg)
    return ";\n\n".join(views + [model, pair, accuracy, answers, budget]) + ";\n"
