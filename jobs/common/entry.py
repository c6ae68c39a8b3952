"""What every job's main.py shares: the environment from the job's settings, and running the graph."""

from __future__ import annotations

from typing import Callable

from jobs.common.settings import JobSettings

SETTINGS_CLASS = "rendezvous.settings-class"
SETTINGS = "rendezvous.settings"
EXECUTION_MODE = "rendezvous.execution-mode"


def job_parameters(settings: JobSettings, execution_mode: str) -> dict[str, str]:
    """What the job records of itself in Flink's global job parameters (shown by the REST API under
    /jobs/<id>/config), so the control plane can submit it again (e.g. `rendezvous job rescale`): its
    settings class, its settings without the Kafka connection (credentials stay out of the job graph's
    readable config; a resubmission takes the current ones) and its Python execution mode."""
    cls = type(settings)
    return {SETTINGS_CLASS: f"{cls.__module__}:{cls.__qualname__}",
            SETTINGS: settings.model_dump_json(exclude={"kafka"}),
            EXECUTION_MODE: execution_mode}


def run(build: Callable, settings: JobSettings) -> None:
    """Build the graph with checkpointing and the settings' buffer timeout, and execute it."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(settings.checkpoint_interval_ms)
    env.set_buffer_timeout(settings.buffer_timeout_ms)
    mode = env._j_stream_execution_environment.getConfiguration().toMap().get("python.execution-mode")
    env.get_config().set_global_job_parameters(job_parameters(settings, str(mode or "process")))
    build(env, settings)
    env.execute(settings.job_name)
