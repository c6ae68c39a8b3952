"""The shared catalog: every stream's table (schemas.tables) registered in a TableEnvironment, used by the
`rendezvous sql` tool (bounded, batch) and by SQL jobs (continuous, streaming)."""

from __future__ import annotations

from schemas.tables import CATALOG, DATABASE, create_tables
from schemas.topics import TopicNames


def register_tables(t_env, bootstrap_servers: str, properties: dict[str, str] | None = None,
                    topics: TopicNames = TopicNames(), bounded: bool = False, start: str = "earliest",
                    group_id: str | None = None, only_topics: set[str] | None = None,
                    watermark_delay_s: int | None = None) -> list[str]:
    """Create the streams' tables in `CATALOG`.`DATABASE` of `t_env`; returns their names. `bounded`: each
    scan stops at the topic's latest offsets of when the query starts (batch queries). `only_topics`: only
    the tables whose topics these are (e.g. the ones that exist)."""
    t_env.use_catalog(CATALOG)
    t_env.use_database(DATABASE)
    ddl = create_tables(bootstrap_servers, topics, properties, bounded, start, group_id, only_topics,
                        watermark_delay_s)
    for statement in ddl.values():
        t_env.execute_sql(statement)
    return list(ddl)
