"""Entry point of a continuous SQL job: `flink run -pym jobs.sql.main --settings '{"script": "..."}'`.

Registers the streams' tables (streaming: unbounded scans), runs the script's SET and DDL statements, and
submits its INSERT INTO statements as one job."""

from __future__ import annotations

from jobs.common.settings import load_settings
from jobs.sql.settings import SqlSettings


def statements_of(settings: SqlSettings) -> list[str]:
    """The script's statements with `${kafka}` expanded; an error when it has no INSERT INTO."""
    from jobs.sql.statements import expand_kafka, is_insert, split_statements
    from schemas.tables import connector_options

    kafka = {k: v for k, v in connector_options("-", settings.kafka.bootstrap_servers,
                                                settings.kafka.properties).items()
             if k.startswith("properties.")}
    stmts = split_statements(expand_kafka(settings.script, kafka))
    if not any(is_insert(s) for s in stmts):
        raise ValueError("a continuous SQL job needs at least one INSERT INTO statement")
    return stmts


def run(settings: SqlSettings) -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from jobs.sql.catalog import register_tables
    from jobs.sql.statements import is_insert, set_option
    from schemas.topics import TopicNames

    stmts = statements_of(settings)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.name", settings.job_name)
    conf.set("execution.checkpointing.interval", f"{settings.checkpoint_interval_ms} ms")
    register_tables(t_env, settings.kafka.bootstrap_servers, settings.kafka.properties,
                    TopicNames(**settings.topics), start=settings.start, group_id=settings.group_id,
                    watermark_delay_s=settings.watermark_delay_s)
    inserts = t_env.create_statement_set()
    for s in stmts:
        kv = set_option(s)
        if kv:
            conf.set(*kv)
        elif is_insert(s):
            inserts.add_insert_sql(s)
        else:
            t_env.execute_sql(s)
    inserts.execute()


def main(argv=None) -> None:
    run(load_settings(SqlSettings, argv))


if __name__ == "__main__":
    main()
