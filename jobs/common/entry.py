"""What every job's main.py shares: the environment from the job's settings, and running the graph."""

from __future__ import annotations

import json
from typing import Callable

from jobs.common.settings import JobSettings

SETTINGS_CLASS = "rendezvous.settings-class"
SETTINGS = "rendezvous.settings"
EXECUTION_MODE = "rendezvous.execution-mode"
STATE = "rendezvous.state"
CODE = "rendezvous.code"
SUBMISSION = "rendezvous.submission"
"""Job parameters; CODE and SUBMISSION are also `flink run -D` keys the control plane sets (control.ops.jobs): the
digest of the job's code, and an id of the submission (to find the job a `flink run` that failed or timed out may
have submitted all the same)."""

TASKMANAGER_RESOURCE = "rendezvous.taskmanager-resource"
"""The `flink run -D` key naming the external resource that only the job's own TaskManagers declare
(control.runtime.pinned): every slot of the job asks for one unit of it."""


def job_parameters(settings: JobSettings, execution_mode: str, code: str | None = None,
                   submission: str | None = None) -> dict[str, str]:
    """What the job records of itself in Flink's global job parameters (shown by the REST API under
    /jobs/<id>/config), so the control plane can submit it again (`rendezvous job rescale`, `job upgrade`): its
    settings class, its settings without the Kafka connection (credentials stay out of the job graph's
    readable config; a resubmission takes the current ones), its Python execution mode, the encodings of the
    state it keeps (`JobSettings.state_encodings`: what an upgrade's new code must read) and the digest of its
    code, and the id of its submission."""
    cls = type(settings)
    encodings = cls.state_encodings()
    params = {SETTINGS_CLASS: f"{cls.__module__}:{cls.__qualname__}",
              SETTINGS: settings.model_dump_json(exclude={"kafka"}),
              EXECUTION_MODE: execution_mode}
    if encodings is not None:
        params[STATE] = json.dumps({k: v.as_json() for k, v in encodings.items()}, sort_keys=True)
    if code:
        params[CODE] = code
    if submission:
        params[SUBMISSION] = submission
    return params


def pin_to_own_taskmanagers(env, resource: str) -> None:
    """Every slot of the job asks for 1 CPU and one unit of `resource`, which only the job's own TaskManagers
    declare (1 CPU and 1 unit each): the job runs there alone. All operators are in the default slot-sharing
    group (no job sets another), so registering that group's resources covers the whole job."""
    from pyflink.datastream.slot_sharing_group import SlotSharingGroup

    env.register_slot_sharing_group(SlotSharingGroup.builder("default").set_cpu_cores(1.0)
                                    .set_task_heap_memory_mb(64).set_managed_memory_mb(16)
                                    .set_external_resource(resource, 1.0).build())


def run(build: Callable, settings: JobSettings) -> None:
    """Build the graph with checkpointing and the settings' buffer timeout, and execute it."""
    from pyflink.datastream import StreamExecutionEnvironment

    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(settings.checkpoint_interval_ms)
    env.set_buffer_timeout(settings.buffer_timeout_ms)
    conf = env._j_stream_execution_environment.getConfiguration().toMap()
    env.get_config().set_global_job_parameters(
        job_parameters(settings, str(conf.get("python.execution-mode") or "process"), conf.get(CODE),
                       conf.get(SUBMISSION)))
    if conf.get(TASKMANAGER_RESOURCE):
        pin_to_own_taskmanagers(env, str(conf.get(TASKMANAGER_RESOURCE)))
    build(env, settings)
    env.execute(settings.job_name)
