"""The metrics job's SQL script: its shape (no JVM), and that Flink's planner accepts it as a streaming job
(a local TableEnvironment with the streams' tables; no broker is contacted to plan)."""

import re

import pytest

from jobs.sql.metrics import KINDS, MetricsConfig, interval, metrics_script
from jobs.sql.statements import is_insert, set_option, split_statements
from schemas import records
from schemas.tables import columns


def test_intervals_are_day_to_second_literals():
    assert interval(5) == "INTERVAL '0 00:00:05' DAY TO SECOND"
    assert interval(120) == "INTERVAL '0 00:02:00' DAY TO SECOND"
    assert interval(90_061) == "INTERVAL '1 01:01:01' DAY TO SECOND"


def test_one_insert_per_kind_each_filling_every_metrics_column_in_order():
    stmts = split_statements(metrics_script(MetricsConfig(window_s=10, threshold=0.7, output_field="p")))
    inserts = [s for s in stmts if is_insert(s)]
    assert [re.search(r"CAST\('(\w+)' AS STRING\) AS `kind`", s).group(1) for s in inserts] == list(KINDS)
    cols = [c for c, _ in columns(records.Metrics)]
    for s in inserts:
        assert re.findall(r" AS `(\w+)`,?\n", s) == cols
        assert "CAST(0.7 AS DOUBLE) AS `threshold`" in s and "CAST('p' AS STRING) AS `output_field`" in s
    assert dict(filter(None, map(set_option, stmts))) == {"table.local-time-zone": "UTC",
                                                          "table.exec.source.idle-timeout": "10 s"}
    assert "`output`['p']" in metrics_script(MetricsConfig(output_field="p"))


@pytest.mark.parametrize("bad", [dict(window_s=0), dict(join_within_s=-1), dict(label_horizon_s=1.5),
                                 dict(output_field="")])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        MetricsConfig(**bad)


@pytest.mark.e2e  # a JVM (PyFlink's local environment), no broker
@pytest.mark.parametrize("cfg", [MetricsConfig(), MetricsConfig(window_s=300, join_within_s=120,
                                                                label_horizon_s=86_400)])
def test_flink_plans_the_script_as_one_streaming_job(cfg):
    from control.ops.sql import local_table_env
    from control.settings import RuntimeSettings
    from jobs.sql.catalog import register_tables

    t_env = local_table_env(RuntimeSettings(), batch=False)
    register_tables(t_env, "127.0.0.1:1")
    inserts = t_env.create_statement_set()
    for s in split_statements(metrics_script(cfg)):
        kv = set_option(s)
        if kv:
            t_env.get_config().set(*kv)
        elif is_insert(s):
            inserts.add_insert_sql(s)
        else:
            t_env.execute_sql(s)
    plan = inserts.explain()
    assert plan.count("LogicalSink(table=[default_catalog.default_database.metrics]") == len(KINDS)
    assert "IntervalJoin" in plan and "WindowJoin" in plan  # pairs/labels/budget; answer shares
