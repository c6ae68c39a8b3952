"""What every job's main.py shares: the environment from the job's settings, and running the graph."""

from __future__ import annotations

from typing import Callable

from jobs.common.settings import JobSettings


def run(build: Callable, settings: JobSettings) -> None:
    """Build the graph with checkpointing and the settings' buffer timeout, and execute it."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(settings.checkpoint_interval_ms)
    env.set_buffer_timeout(settings.buffer_timeout_ms)
    build(env, settings)
    env.execute(settings.job_name)
