"""Entry point: `flink run -pym jobs.models.main --card path/to/card.json [--source-topic ...]`."""

import argparse
import json
import os

from pyflink.datastream import StreamExecutionEnvironment

from jobs.models.pipeline import ModelJobSettings, build
from model_udfs.base import ModelCard


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", default=os.environ.get("RENDEZVOUS_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--card", help="path of the model card (json or yaml)")
    p.add_argument("--card-json", help="the model card itself, inline")
    p.add_argument("--source-topic", default="requests.augmented")
    p.add_argument("--sink-topic", default="scores")
    p.add_argument("--start", choices=("committed", "earliest", "latest"), default="committed")
    p.add_argument("--group-id", default=None)
    p.add_argument("--job-name", default=None)
    a = p.parse_args(argv)
    if a.card_json:
        card = ModelCard.model_validate(json.loads(a.card_json))
    elif a.card:
        card = ModelCard.load(a.card)
    else:
        p.error("one of --card or --card-json is required")
    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(10_000)
    build(env, ModelJobSettings(a.bootstrap, card, a.source_topic, a.sink_topic, a.start, a.group_id))
    env.execute(a.job_name or f"model {card.key}")


if __name__ == "__main__":
    main()
