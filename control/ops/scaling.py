"""Rescaling a running job: stop it with a savepoint, submit it again from there at another parallelism."""

from __future__ import annotations

from control.errors import ControlError
from control.ops import deploy
from control.ops import jobs as jobs_lib
from control.ops.upgrade import recorded, restart_from_savepoint
from control.settings import RuntimeSettings
from schemas.records import LifecycleEvent, now_ms
from schemas.topics import TopicNames


def rescale(job_id: str, parallelism: int, s: RuntimeSettings | None = None, progress=None,
            registry_topics: TopicNames | None = None) -> str:
    """Run a job at another parallelism: stop it with a savepoint, submit it again from that savepoint at
    `parallelism` with the settings and execution mode it recorded (`jobs.common.entry.job_parameters`) and
    the runtime's current Kafka connection; a registered model's entry (in `registry_topics`' registry, default
    `models`) is pointed at the new job. Keyed state is redistributed by key group (up to
    `jobs.MAX_PARALLELISM`). Returns the new job id. Between the stop and the restart no record is processed:
    the rendezvous's in-flight requests wait, and answer after the restart (deadlines passed meanwhile
    give default answers at once)."""
    s = s or RuntimeSettings()
    if not 1 <= parallelism <= jobs_lib.MAX_PARALLELISM:
        raise ControlError(f"parallelism must be between 1 and {jobs_lib.MAX_PARALLELISM}, not {parallelism}")
    rec = recorded(job_id, s)
    done = restart_from_savepoint(rec, s, parallelism=parallelism, progress=progress, registry_topics=registry_topics)
    deploy._record(s, LifecycleEvent(kind="job_rescaled", job_id=done.job_id, at_ms=now_ms(),
                                     detail={"name": rec.settings.job_name, "from_job_id": job_id,
                                             "savepoint": done.savepoint, "from_parallelism": rec.parallelism,
                                             "to_parallelism": parallelism}))
    return done.job_id
