"""Data Docs rendered from quality results (as read from the quality topic): an index and one page per
batch, the failed expectation on the failing batch's page (no JVM, no broker)."""

import html
import json
import re

import pytest

from jobs.quality.validate import BatchValidator
from schemas.records import QualityResult
from tools import data_docs
from training.quality_profile import requests_suite
from training.synthetic import TransactionGenerator

NOW = 1_800_000_000_000


def text_of(path) -> str:
    t = re.sub(r"<(script|style).*?</\1>", " ", path.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


@pytest.fixture(scope="module")
def results():
    v = BatchValidator(requests_suite(), "requests")
    gen = TransactionGenerator(seed=9)
    out = []
    for i, scale in enumerate((1, 10)):
        batch = []
        for _ in range(300):
            r = gen.next(NOW).request
            batch.append(json.dumps({**r, "amount": round(r["amount"] * scale, 2)}))
        out.append(QualityResult.parse(v.validate(batch, NOW + i * 1000, NOW + i * 1000 + 500, now_ms=NOW).to_json()))
    return out


def test_a_site_with_one_page_per_batch_and_the_failure_on_its_page(results, tmp_path):
    ok, bad = results
    assert ok.success and not bad.success
    docs = data_docs.render(results, tmp_path / "dd")
    assert docs.index.exists() and [p.exists() for p in docs.pages] == [True, True]
    assert docs.latest.name == f"requests-{bad.batch_start_ms}.html"
    page = text_of(docs.latest)
    assert "Status: Failed" in page and "quantiles must be within" in page
    assert "mean must be greater than or equal to" in page
    assert "Status: Succeeded" in text_of(docs.pages[0])
    index = docs.index.read_text()
    assert f"requests-{ok.batch_start_ms}" in index and f"requests-{bad.batch_start_ms}" in index


def test_a_new_render_replaces_the_old_pages_and_refuses_foreign_directories(results, tmp_path):
    out = tmp_path / "dd"
    data_docs.render(results, out)
    docs = data_docs.render(results[1:], out)
    assert [p.name for p in out.rglob("requests-*.html")] == [docs.latest.name]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="--out"):
        data_docs.render(results, foreign)
    assert (foreign / "notes.txt").read_text() == "keep"


def test_cli_prints_the_suite_and_keeps_the_on_demand_check_as_the_default(tmp_path):
    from click.testing import CliRunner

    from tools.cli import main

    out = tmp_path / "suite.json"
    res = CliRunner().invoke(main, ["quality", "suite", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text()) == requests_suite()
    res = CliRunner().invoke(main, ["quality", "--help"])
    assert "--topic" in res.output and "--last" in res.output
    assert all(c in res.output for c in ("show", "watch", "docs", "suite"))
