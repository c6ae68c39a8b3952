"""Entry point for `flink run -py jobs/smoke/main.py --source-topic A --sink-topic B`."""

import argparse
import os

from pyflink.datastream import StreamExecutionEnvironment

from jobs.smoke.pipeline import SmokeSettings, build


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", default=os.environ.get("RENDEZVOUS_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--source-topic", required=True)
    p.add_argument("--sink-topic", required=True)
    p.add_argument("--group-id", default=None)
    p.add_argument("--job-name", default="smoke")
    a = p.parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    build(env, SmokeSettings(a.bootstrap, a.source_topic, a.sink_topic, a.group_id or f"smoke-{a.source_topic}"))
    env.execute(a.job_name)


if __name__ == "__main__":
    main()
