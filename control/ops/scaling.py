"""Rescaling a running job: stop it with a savepoint, submit it again from there at another parallelism."""

from __future__ import annotations

import json

from control.errors import ControlError
from control.ops import deploy, registry
from control.ops import jobs as jobs_lib
from control.settings import RuntimeSettings
from jobs.common.entry import EXECUTION_MODE, SETTINGS, SETTINGS_CLASS
from jobs.models.settings import ModelJobSettings
from jobs.rendezvous.settings import RendezvousSettings
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
    params = jobs_lib.job_parameters(job_id, s)
    classes = {f"{c.__module__}:{c.__qualname__}": c for c in deploy.ENTRY_POINTS}
    cls = classes.get(params.get(SETTINGS_CLASS, ""))
    if cls is None or SETTINGS not in params:
        raise ControlError(f"job {job_id} does not say how it was deployed (no {SETTINGS_CLASS} in its job "
                           "parameters): it was not deployed by `rendezvous deploy`, or by an older version. Stop it "
                           "with `rendezvous job stop` and deploy it again with --from-savepoint and --parallelism.")
    if not 1 <= parallelism <= jobs_lib.MAX_PARALLELISM:
        raise ControlError(f"parallelism must be between 1 and {jobs_lib.MAX_PARALLELISM}, not {parallelism}")
    state = jobs_lib.job_state(job_id, s)
    if state != "RUNNING":
        raise ControlError(f"job {job_id} is {state}; only a running job can be rescaled (a savepoint needs it)")
    fields = json.loads(params[SETTINGS])
    if cls is RendezvousSettings:
        fields["restored"] = True
    settings = deploy.job_settings(cls, s, **fields)
    before = max(jobs_lib.job_parallelism(job_id, s).values(), default=1)
    if progress:
        progress(f"stopping {settings.job_name} ({job_id}, parallelism {before}) with a savepoint")
    savepoint = jobs_lib.stop_with_savepoint(job_id, s, progress=progress)
    if progress:
        progress(f"savepoint {savepoint}; submitting it again at parallelism {parallelism}")
    try:
        new = deploy.submit_job(settings, s, savepoint, True, params.get(EXECUTION_MODE, "process"), parallelism=parallelism)
    except ControlError as e:
        raise ControlError(f"{settings.job_name} was stopped with savepoint {savepoint}, but starting it at "
                           f"parallelism {parallelism} failed: {e}\nDeploy it again from that savepoint "
                           f"(`rendezvous deploy ... --from-savepoint {savepoint}`).") from e
    if isinstance(settings, ModelJobSettings):  # the registry names the job of a registered model
        moved = registry.job_moved(registry.Plane(s, registry_topics or TopicNames()), job_id, new)
        if moved and progress:
            progress(f"registry: {moved.model_id}@{moved.version} runs as job {new} now")
    deploy._record(s, LifecycleEvent(kind="job_rescaled", job_id=new, at_ms=now_ms(),
                              detail={"name": settings.job_name, "from_job_id": job_id, "savepoint": savepoint,
                                      "from_parallelism": before, "to_parallelism": parallelism}))
    return new
