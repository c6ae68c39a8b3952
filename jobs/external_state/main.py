"""Entry point: `flink run -pym jobs.external_state.main [--source-topic requests ...]`."""

import argparse
import os

from pyflink.datastream import StreamExecutionEnvironment

from jobs.external_state.pipeline import ExternalStateSettings, build


def main(argv=None) -> None:
    d = ExternalStateSettings(bootstrap="")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", default=os.environ.get("RENDEZVOUS_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--source-topic", default=d.source_topic)
    p.add_argument("--sink-topic", default=d.sink_topic)
    p.add_argument("--quarantine-topic", default=d.quarantine_topic)
    p.add_argument("--group-id", default=d.group_id)
    p.add_argument("--start", choices=("committed", "earliest", "latest"), default=d.start)
    p.add_argument("--window-ms", type=int, default=d.window_ms)
    p.add_argument("--checkpoint-interval-ms", type=int, default=d.checkpoint_interval_ms)
    p.add_argument("--buffer-timeout-ms", type=int, default=2,
                   help="flush network buffers after this long (Flink's default, 100 ms, delays every "
                        "record that crosses the keyBy by up to that)")
    p.add_argument("--job-name", default="external-state")
    a = p.parse_args(argv)
    settings = ExternalStateSettings(a.bootstrap, a.source_topic, a.sink_topic, a.quarantine_topic, a.group_id,
                                     a.start, a.window_ms, checkpoint_interval_ms=a.checkpoint_interval_ms)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(settings.checkpoint_interval_ms)
    env.set_buffer_timeout(a.buffer_timeout_ms)
    build(env, settings)
    env.execute(a.job_name)


if __name__ == "__main__":
    main()
