"""Great Expectations Data Docs (HTML) of the quality gate's results, rendered from the `quality` topic.

The quality job runs wherever the Flink cluster is; its results travel in the `quality` topic as
`QualityResult` records, each with every expectation's arguments, success, observed value and examples.
`render(results, out_dir)` turns them back into GE validation results and builds a Data Docs site with
GE's own site builder: `index.html` (every batch, newest first, passed or failed) and one page per batch.
It runs where the CLI runs (`rendezvous quality docs|watch`), so it works the same with a remote cluster.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from schemas.records import QualityResult

MARKER = ".rendezvous-data-docs"
"""A directory with this file was written here: a new render may replace its pages."""
SITE = "rendezvous-quality"


@dataclass
class DataDocs:
    index: Path
    pages: list[Path]
    """One page per batch, in the order of the results given."""

    @property
    def latest(self) -> Path | None:
        return self.pages[-1] if self.pages else None


def batch_identifier(r: QualityResult) -> str:
    return f"{r.source_topic}-{r.batch_start_ms}"


def _validation_result(r: QualityResult):
    from great_expectations.core import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    results = []
    for o in r.failed + r.passed:
        result = {"observed_value": o.observed_value}
        if o.unexpected_count is not None:
            result.update(element_count=r.records, unexpected_count=o.unexpected_count,
                          unexpected_percent=o.unexpected_percent, partial_unexpected_list=o.examples)
        results.append(ExpectationValidationResult(
            success=o.success, expectation_config=ExpectationConfiguration(type=o.expectation, kwargs=o.kwargs),
            result=result))
    n, ok = len(results), len(r.passed)
    run_time = dt.datetime.fromtimestamp(r.batch_end_ms / 1000, tz=dt.timezone.utc)
    run_id = RunIdentifier(run_name=f"batch-{run_time:%Y%m%dT%H%M%S}Z", run_time=run_time)
    meta = {"run_id": run_id, "active_batch_definition": {"data_asset_name": r.source_topic},
            "batch_kwargs": {"data_asset_name": r.source_topic},
            "batch_spec": {"source_topic": r.source_topic, "records": r.records, "unparseable": r.unparseable,
                           "batch_start_ms": r.batch_start_ms, "batch_end_ms": r.batch_end_ms,
                           "skipped": r.skipped, "error": r.error},
            "suite_version": r.suite_version}
    return run_id, ExpectationSuiteValidationResult(
        success=r.success, results=results, suite_name=r.suite_name, meta=meta,
        statistics={"evaluated_expectations": n, "successful_expectations": ok,
                    "unsuccessful_expectations": n - ok, "success_percent": 100.0 * ok / n if n else None})


def render(results: list[QualityResult], out_dir: Path) -> DataDocs:
    """Write a Data Docs site of `results` into out_dir (replacing the pages of an earlier render there)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise FileExistsError(f"{out_dir} is not empty and was not written by `rendezvous quality docs`; "
                              f"choose another directory with --out")
    for old in ("validations", "index.html", "expectations"):
        p = out_dir / old
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("Data Docs of the quality gate, rendered by `rendezvous quality docs`\n")
    ctx = gx.get_context(mode="ephemeral")
    ctx.add_data_docs_site(SITE, {"class_name": "SiteBuilder",
                                  "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                                    "base_directory": str(out_dir)},
                                  "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    keys = []
    for r in results:
        run_id, vr = _validation_result(r)
        key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=r.suite_name), run_id, batch_identifier(r))
        ctx.validation_results_store.set(key, vr)
        keys.append(key)
    ctx.build_data_docs(site_names=[SITE])
    pages = [out_dir / "validations" / Path(*[str(p) for p in k.to_tuple()[:-1]]) / f"{k.to_tuple()[-1]}.html"
             for k in keys]
    return DataDocs(index=out_dir / "index.html", pages=pages)
