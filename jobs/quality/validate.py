"""Validation of one micro-batch of raw records against an expectation suite (Great Expectations).

No Flink here: `BatchValidator` is a plain class (built from the suite's JSON form, which pickles to the
workers), whose `open()` imports Great Expectations and builds the ephemeral context, data source and
suites once per worker; `validate(raws, ...)` then costs one GE validation per batch.

Bad input never raises: a record that is not a JSON object (or a null record value) becomes a row of
nulls (counted in `unparseable`), a mistyped value becomes a null in its column. Such rows count
against the suite's null-rate expectations; the external-state job quarantines them one by one.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Sequence

from schemas.records import (
    MAX_QUALITY_EXAMPLES,
    TRANSITION_TOKEN_PREFIX,
    ExpectationOutcome,
    QualityResult,
)

COLUMNS = ("request_id", "entity_id", "event_time_ms", "amount", "merchant_category", "country")
NUMERIC = ("event_time_ms", "amount")
DERIVED = ("event_age_ms",)
"""event_age_ms = validation time - event_time_ms: event-time plausibility with a suite that does not change."""
MAX_EXAMPLE_CHARS = 200


def rows_of(raws: Sequence[str | bytes | None], now_ms: int) -> tuple[list[dict], int]:
    """One row per record (the suite's columns plus event_age_ms), and how many were not JSON objects."""
    rows, unparseable = [], 0
    for raw in raws:
        if isinstance(raw, str) and raw.startswith(TRANSITION_TOKEN_PREFIX):
            continue  # a transition token between two versions of the external state (not a request)
        rec = None
        if raw:
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                rec = None
        if not isinstance(rec, dict):
            unparseable += 1
            rows.append(dict.fromkeys(COLUMNS + DERIVED))
            continue
        row = {}
        for c in COLUMNS:
            v = rec.get(c)
            if c in NUMERIC:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                row[c] = float(v) if ok else None
            else:
                row[c] = v if isinstance(v, str) else None
        et = row["event_time_ms"]
        row["event_age_ms"] = float(now_ms - et) if et is not None else None
        rows.append(row)
    return rows, unparseable


def plain(v: Any, depth: int = 0) -> Any:
    """A JSON-plain copy of a GE value: numpy scalars as Python numbers, NaN/inf as None, long strings cut."""
    if depth > 6:
        return str(v)[:MAX_EXAMPLE_CHARS]
    if hasattr(v, "tolist") and not isinstance(v, (list, tuple, dict, str, bytes)):
        v = v.tolist()  # numpy scalars and arrays, pandas values
    if isinstance(v, bool) or v is None or isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str):
        return v[:MAX_EXAMPLE_CHARS]
    if isinstance(v, dict):
        return {str(k): plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [plain(x, depth + 1) for x in v]
    return str(v)[:MAX_EXAMPLE_CHARS]


class BatchValidator:
    """Validates batches against one suite (its GE JSON form: name, expectations, meta)."""

    def __init__(self, suite: dict, source_topic: str, max_examples: int = 10):
        self.suite_json = suite
        self.source_topic = source_topic
        self.max_examples = min(max_examples, MAX_QUALITY_EXAMPLES)
        self.suite_name = suite["name"]
        self.suite_version = str(suite.get("meta", {}).get("version", ""))
        self.min_rows = int(suite.get("meta", {}).get("min_rows", 0))
        self._batch_def = None

    # ---- once per worker ---------------------------------------------------------------------
    def open(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        os.environ.setdefault("TQDM_DISABLE", "1")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in the worker's log
        self._batch_def = ctx.data_sources.add_pandas("stream").add_dataframe_asset(self.source_topic) \
            .add_batch_definition_whole_dataframe("micro-batch")
        exps = self.suite_json["expectations"]
        small = [e for e in exps if "min_rows" not in (e.get("meta") or {})]
        self._skipped_small = [self._label(e) for e in exps if "min_rows" in (e.get("meta") or {})]
        self._full = ctx.suites.add(gx.ExpectationSuite(name=self.suite_name, expectations=exps,
                                                        meta=self.suite_json.get("meta", {})))
        self._small = ctx.suites.add(gx.ExpectationSuite(name=f"{self.suite_name}-small", expectations=small,
                                                         meta=self.suite_json.get("meta", {})))

    @staticmethod
    def _label(e: dict) -> str:
        col = (e.get("kwargs") or {}).get("column")
        return f"{e['type']}({col})" if col else e["type"]

    # ---- once per batch ----------------------------------------------------------------------
    def validate(self, raws: Sequence[str | bytes | None], start_ms: int, end_ms: int,
                 now_ms: int | None = None) -> QualityResult:
        if self._batch_def is None:
            self.open()
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        t0 = time.perf_counter()
        rows, unparseable = rows_of(raws, now_ms)
        base = dict(source_topic=self.source_topic, suite_name=self.suite_name, suite_version=self.suite_version,
                    batch_start_ms=start_ms, batch_end_ms=end_ms, records=len(rows), unparseable=unparseable)
        small = len(rows) < self.min_rows
        try:
            import pandas as pd

            df = pd.DataFrame(rows, columns=list(COLUMNS + DERIVED))
            for c in NUMERIC + DERIVED:
                df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
            res = self._batch_def.get_batch(batch_parameters={"dataframe": df}) \
                .validate(self._small if small else self._full)
            outcomes = [self._outcome(r) for r in res.results]
            error = None
        except Exception as e:  # noqa: BLE001 - a batch that cannot be validated is reported, never fatal
            outcomes, error = [], f"{type(e).__name__}: {e}"[:1000]
        failed = [o for o in outcomes if not o.success]
        return QualityResult(**base, success=error is None and not failed, failed=failed,
                             passed=[o for o in outcomes if o.success],
                             skipped=self._skipped_small if small else [], error=error,
                             validation_ms=round((time.perf_counter() - t0) * 1000, 2),
                             validated_at_ms=int(time.time() * 1000))

    def _outcome(self, r) -> ExpectationOutcome:
        cfg = r.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
        result = r.result or {}
        examples = [] if r.success else list(result.get("partial_unexpected_list") or [])[: self.max_examples]
        return ExpectationOutcome(
            expectation=cfg.type, column=kwargs.get("column"), success=bool(r.success), kwargs=plain(kwargs),
            observed_value=plain(result.get("observed_value")),
            unexpected_count=plain(result.get("unexpected_count")),
            unexpected_percent=plain(result.get("unexpected_percent")), examples=plain(examples))
