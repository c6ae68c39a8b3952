"""What every job's main.py shares: the common command-line options and running the built graph."""

from __future__ import annotations

import argparse
import os


def common_options(p: argparse.ArgumentParser, job_name: str, checkpoint_interval_ms: int) -> None:
    p.add_argument("--bootstrap", default=os.environ.get("RENDEZVOUS_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--checkpoint-interval-ms", type=int, default=checkpoint_interval_ms)
    p.add_argument("--buffer-timeout-ms", type=int, default=2,
                   help="flush network buffers after this long (Flink's default, 100 ms, delays every "
                        "record that crosses a keyBy by up to that)")
    p.add_argument("--job-name", default=job_name)


def run(build, settings, args) -> None:
    """Build the graph with checkpointing and a short buffer timeout, and execute it."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(args.checkpoint_interval_ms)
    env.set_buffer_timeout(args.buffer_timeout_ms)
    build(env, settings)
    env.execute(args.job_name)
