"""The SQL job's script handling (no JVM)."""

import pytest

from jobs.common.settings import KafkaSettings
from jobs.sql.main import statements_of
from jobs.sql.settings import SqlSettings
from jobs.sql.statements import expand_kafka, is_insert, set_option, split_statements


def test_split_respects_strings_identifiers_and_comments():
    script = """
    -- a comment; with a semicolon
    SET 'pipeline.name' = 'x;y';
    CREATE TABLE `a;b` (x STRING) WITH ('k' = 'it''s; fine'); /* block; comment */
    INSERT INTO t SELECT * FROM answers /*+ OPTIONS('scan.startup.mode'='latest-offset') */ ;
    ;
    """
    stmts = split_statements(script)
    assert len(stmts) == 3
    assert stmts[0] == "SET 'pipeline.name' = 'x;y'"
    assert "`a;b`" in stmts[1] and "'it''s; fine'" in stmts[1]
    assert "/*+ OPTIONS" in stmts[2]
    assert set_option(stmts[0]) == ("pipeline.name", "x;y")
    assert set_option(stmts[1]) is None
    assert is_insert(stmts[2]) and not is_insert(stmts[1])


def test_kafka_placeholder_expands_to_the_connection_options():
    out = expand_kafka("WITH ('topic' = 't', ${kafka})", {"properties.bootstrap.servers": "h:1",
                                                          "properties.sasl.jaas.config": "p='x'"})
    assert out == ("WITH ('topic' = 't', 'properties.bootstrap.servers' = 'h:1', "
                   "'properties.sasl.jaas.config' = 'p=''x''')")


def test_a_job_script_needs_an_insert_and_gets_the_jobs_kafka():
    s = SqlSettings(script="CREATE TABLE s (n BIGINT) WITH ('connector' = 'kafka', ${kafka}); "
                           "INSERT INTO s SELECT COUNT(*) FROM answers",
                    kafka=KafkaSettings(bootstrap_servers="b:9", properties={"security.protocol": "SSL"}))
    stmts = statements_of(s)
    assert "'properties.bootstrap.servers' = 'b:9', 'properties.security.protocol' = 'SSL'" in stmts[0]
    with pytest.raises(ValueError, match="INSERT INTO"):
        statements_of(SqlSettings(script="SELECT 1"))
