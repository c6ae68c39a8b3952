"""`rendezvous sql`'s output and error messages (no JVM)."""

import datetime
import json

from pyflink.common import Row

from control.ops.sql import QueryResult, flink_message, render


def test_render_table_csv_and_json():
    r = QueryResult(["model", "trigger", "n", "out"],
                    [("m@1", "preferred", 12, {"p": "0.5"}), (None, "default", 3, None)])
    table = render(r).splitlines()
    assert table[0].split(" | ")[0].strip() == "model" and table[1].startswith("-----")
    assert table[2].startswith("m@1   | preferred | 12 | {\"p\":\"0.5\"}")
    assert table[3].startswith("null  | default   |  3 | null")
    assert table[-1] == "(2 rows)"
    assert render(r, "csv").splitlines() == ["model,trigger,n,out", 'm@1,preferred,12,"{""p"":""0.5""}"',
                                             ",default,3,"]
    lines = [json.loads(x) for x in render(r, "json").splitlines()]
    assert lines[0] == {"model": "m@1", "trigger": "preferred", "n": 12, "out": {"p": "0.5"}}
    assert lines[1]["model"] is None


def test_render_rows_and_times_as_plain_values():
    row = Row(latency_ms=3, error=None)
    t = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000)
    out = json.loads(render(QueryResult(["t", "timing"], [(t, row)]), "json"))
    assert out == {"t": "2026-01-02 03:04:05.600", "timing": {"latency_ms": 3, "error": None}}


def test_flink_message_keeps_the_exception_and_its_root_cause_without_traces():
    trace = """org.apache.flink.table.api.ValidationException: SQL validation failed. From line 1, column 15 to line 1, column 21: Object 'answerz' not found
\tat org.apache.flink.table.planner.calcite.FlinkPlannerImpl.validate(FlinkPlannerImpl.scala:200)
Caused by: org.apache.calcite.runtime.CalciteContextException: From line 1, column 15 to line 1, column 21: Object 'answerz' not found
\tat java.base/jdk.internal.reflect.Whatever
Caused by: org.apache.calcite.sql.validate.SqlValidatorException: Object 'answerz' not found
\tat x.y.Z(Z.java:1)
"""
    msg = flink_message(Exception(trace))
    assert msg == ("ValidationException: SQL validation failed. From line 1, column 15 to line 1, column 21: "
                   "Object 'answerz' not found")
    assert flink_message(Exception("plain words")) == "plain words"


def test_the_cli_takes_a_query_or_a_file_not_both(tmp_path):
    from click.testing import CliRunner

    from tools.cli import main

    f = tmp_path / "x.sql"
    f.write_text("INSERT INTO s SELECT 1")
    for args in (["sql"], ["sql", "-f", str(f), "SELECT 1"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and "either a query" in res.output


def test_a_file_without_insert_is_refused_before_submission(tmp_path, monkeypatch):
    import pytest

    from control.errors import SubmissionError
    from control.ops import deploy
    from control.ops import sql as sql_lib

    monkeypatch.setattr(deploy, "submit_job", lambda *a, **k: pytest.fail("submitted"))
    with pytest.raises(SubmissionError, match="INSERT INTO.*nothing was submitted"):
        sql_lib.submit("CREATE TABLE t (x INT) WITH ('connector' = 'blackhole')")
