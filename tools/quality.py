"""Data-quality checks on inputs: a Great Expectations suite derived from the `Request` record,
run over micro-batches read from a topic (`rendezvous quality`).

The streaming validation in the external-state job quarantines records one by one; this looks at a
batch as a whole (e.g. duplicate request ids, a country column gone wrong) and reports with examples.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from schemas.records import Request

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TQDM_DISABLE", "1")


@dataclass
class CheckResult:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    examples: list[Any] = field(default_factory=list)


@dataclass
class QualityReport:
    records: int
    not_objects: int
    results: list[CheckResult]

    @property
    def success(self) -> bool:
        return self.not_objects == 0 and all(r.success for r in self.results)

    def summary(self) -> str:
        lines = [f"{self.records} records checked; {self.not_objects} not JSON objects; "
                 f"{'PASS' if self.success else 'FAIL'}"]
        for r in self.results:
            mark = "ok  " if r.success else "FAIL"
            extra = "" if r.success else f"  ({r.unexpected_count} unexpected, e.g. {r.examples[:3]})"
            lines.append(f"  {mark} {r.expectation}({r.column}){extra}")
        return "\n".join(lines)


def expectations_for(model=Request) -> list:
    """One expectation per constraint of the pydantic model: required fields not null, numeric bounds,
    string lengths; plus unique request ids within the batch."""
    import annotated_types as at
    import great_expectations as gx

    out = []
    for name, f in model.model_fields.items():
        if f.is_required():
            out.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=name))
        lo = hi = min_len = max_len = None
        for m in f.metadata:
            if isinstance(m, (at.Ge, at.Gt)):
                lo = getattr(m, "ge", getattr(m, "gt", None))
            elif isinstance(m, (at.Le, at.Lt)):
                hi = getattr(m, "le", getattr(m, "lt", None))
            elif isinstance(m, at.MinLen):
                min_len = m.min_length
            elif isinstance(m, at.MaxLen):
                max_len = m.max_length
        if lo is not None or hi is not None:
            out.append(gx.expectations.ExpectColumnValuesToBeBetween(column=name, min_value=lo, max_value=hi))
        if min_len is not None or max_len is not None:
            out.append(gx.expectations.ExpectColumnValueLengthsToBeBetween(column=name, min_value=min_len,
                                                                          max_value=max_len))
    out.append(gx.expectations.ExpectColumnValuesToBeUnique(column="request_id"))
    return out


def validate_records(raws: list[str | bytes], model=Request) -> QualityReport:
    import great_expectations as gx
    import pandas as pd

    rows, not_objects = [], 0
    for raw in raws:
        try:
            rec = json.loads(raw)
        except ValueError:
            not_objects += 1
            continue
        if not isinstance(rec, dict):
            not_objects += 1
            continue
        rows.append({name: rec.get(name) for name in model.model_fields})
    df = pd.DataFrame(rows, columns=list(model.model_fields))
    if df.empty:
        return QualityReport(len(raws), not_objects, [])
    # numeric columns with strings in them cannot be compared: make them NaN-free numbers or None
    for name, f in model.model_fields.items():
        if f.annotation in (int, float):
            df[name] = pd.to_numeric(df[name], errors="coerce")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = ctx.data_sources.add_pandas("inputs").add_dataframe_asset("batch") \
        .add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{model.__name__.lower()}-inputs"))
    for e in expectations_for(model):
        suite.add_expectation(e)
    res = batch_def.get_batch(batch_parameters={"dataframe": df}).validate(suite)
    results = [CheckResult(r.expectation_config.type, r.expectation_config.kwargs.get("column"), bool(r.success),
                           r.result.get("unexpected_count"), list(r.result.get("partial_unexpected_list") or []))
               for r in res.results]
    return QualityReport(len(raws), not_objects, results)


def last_records(bootstrap: str, topic: str, n: int, timeout: float = 15.0) -> list[bytes]:
    """The last n records of every partition of topic."""
    from control import kafka_io

    return kafka_io.last(bootstrap, topic, n, timeout)


def check_topic(bootstrap: str, topic: str = "requests", last: int = 1000) -> QualityReport:
    return validate_records(last_records(bootstrap, topic, last))
