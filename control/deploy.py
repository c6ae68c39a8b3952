"""Deploying the data plane's jobs: external state, one job per model deployment, the rendezvous.

Every deployment is recorded in the `lifecycle` topic (the audit log).
"""

from __future__ import annotations

from pathlib import Path

from control import jobs as jobs_lib
from control.settings import RuntimeSettings
from control.topics import LIFECYCLE
from jobs.common.records import LifecycleEvent, now_ms
from model_udfs.base import ModelCard


def _record(s: RuntimeSettings, event: LifecycleEvent, topic: str | None = LIFECYCLE) -> None:
    if not topic:
        return
    from control import kafka_io

    try:
        kafka_io.produce(s.bootstrap_servers, topic, [event.to_json()])
    except Exception:  # noqa: BLE001 - the audit log must not block a deployment
        pass


def _args(options: dict) -> list[str]:
    out: list[str] = []
    for k, v in options.items():
        if v is not None:
            out += ["--" + k.replace("_", "-"), str(v)]
    return out


def deploy_external_state(s: RuntimeSettings | None = None, job_name: str = "external-state",
                          savepoint: str | None = None, wait: bool = True, execution_mode: str = "thread",
                          **options) -> str:
    """Thread mode by default: keyed state access is in-process (measured ~4x the records/s of process mode
    here); see README, "Execution modes"."""
    s = s or RuntimeSettings()
    jid = jobs_lib.submit("jobs.external_state.main", _args({"job_name": job_name, **options}), savepoint=savepoint,
                          s=s, extra_conf={"python.execution-mode": execution_mode})
    if wait:
        jobs_lib.wait_running(jid, s)
    _record(s, LifecycleEvent(kind="job_submitted", job_id=jid, at_ms=now_ms(),
                              detail={"job": "external_state", "name": job_name, "savepoint": savepoint}))
    return jid


def deploy_model(card: ModelCard | str | Path, s: RuntimeSettings | None = None, job_name: str | None = None,
                 savepoint: str | None = None, wait: bool = True, **options) -> str:
    """Start the model job of one deployment (model id + version) from its card."""
    s = s or RuntimeSettings()
    card_obj = card if isinstance(card, ModelCard) else ModelCard.load(card)
    name = job_name or f"model {card_obj.key}"
    # the card travels inline: the cluster need not see this machine's files (the artifact path must be
    # readable by the TaskManagers, as it is on the embedded runtime)
    jid = jobs_lib.submit("jobs.models.main", _args({"card_json": card_obj.model_dump_json(), "job_name": name,
                                                      **options}), savepoint=savepoint, s=s)
    if wait:
        jobs_lib.wait_running(jid, s)
    _record(s, LifecycleEvent(kind="job_submitted", model_id=card_obj.model_id, model_version=card_obj.version,
                              job_id=jid, at_ms=now_ms(), detail={"job": "model", "name": name,
                                                                   "runner": card_obj.runner}))
    return jid


def deploy_rendezvous(s: RuntimeSettings | None = None, job_name: str = "rendezvous", savepoint: str | None = None,
                      wait: bool = True, execution_mode: str = "thread", **options) -> str:
    s = s or RuntimeSettings()
    extra = {"python.execution-mode": execution_mode}
    jid = jobs_lib.submit("jobs.rendezvous.main", _args({"job_name": job_name, **options}), savepoint=savepoint,
                          s=s, extra_conf=extra)
    if wait:
        jobs_lib.wait_running(jid, s)
    _record(s, LifecycleEvent(kind="job_submitted", job_id=jid, at_ms=now_ms(),
                              detail={"job": "rendezvous", "name": job_name, "execution_mode": execution_mode}))
    return jid


def stop_jobs_named(prefix: str, s: RuntimeSettings | None = None, progress=None) -> list[str]:
    """Cancel the running jobs whose name starts with prefix (e.g. a previous demo's)."""
    s = s or RuntimeSettings()
    stopped = []
    for j in jobs_lib.list_jobs(s):
        if j.name.startswith(prefix) and j.state in ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING"):
            if progress:
                progress(f"cancelling {j.name} ({j.job_id})")
            jobs_lib.cancel(j.job_id, s)
            stopped.append(j.job_id)
    return stopped


