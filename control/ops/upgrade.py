"""Restarting a running job from a savepoint: into new code (`upgrade`), or at another parallelism
(`control.ops.scaling.rescale`), with the settings and execution mode it recorded in its job parameters
(`jobs.common.entry.job_parameters`).

An upgrade checks, before the running job is stopped, that the new code can take its state over: the job
recorded the encodings of its state at submission (`JobSettings.state_encodings`: per operator uid, the
version it writes and every version it reads); the new code's are read by importing its settings class
from the new code, in a fresh interpreter (this process's modules are this checkout's). A state the new
code does not keep, or an encoding it does not read, refuses the upgrade with what differs; the running
job is left as it was. A thread-mode job's new version starts on TaskManagers of its own
(control.runtime.pinned), with a fresh interpreter that imports the new code; the old one's are stopped
with it. Between the stop and the new job's start nothing is processed: records wait in Kafka (and the
rendezvous's requests in their restored mailboxes, their timers as they were).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from control.errors import ControlError
from control.ops import deploy, registry
from control.ops import jobs as jobs_lib
from control.runtime import pinned
from control.settings import RuntimeSettings
from jobs.common.entry import CODE, EXECUTION_MODE, SETTINGS, SETTINGS_CLASS, STATE
from jobs.common.settings import HandedOverJob, JobSettings
from jobs.models.settings import ModelJobSettings
from jobs.rendezvous.settings import RendezvousSettings
from schemas.records import LifecycleEvent, now_ms
from schemas.topics import LIFECYCLE, TopicNames


@dataclass(frozen=True)
class Recorded:
    """How a running job was deployed, from its job parameters."""

    job_id: str
    settings: JobSettings
    settings_class: str
    execution_mode: str
    state: dict | None
    """Its state encodings as recorded (`StateEncoding.as_json` by operator uid); None: not recorded."""
    code: str | None
    """The digest of the code it was submitted with (`control.ops.jobs.sources_digest`)."""
    parallelism: int
    target_fields: frozenset[str] | None = None
    """The settings the code it goes to knows (`check` reads them there); None: not read (this checkout's)."""


def restore_bound(settings: JobSettings, target_fields: frozenset[str] | None, asked_ms: int) -> JobSettings:
    """The settings to start a job with from a savepoint asked for at `asked_ms`: a rendezvous gets that time as its
    recovery scan's bound (`RendezvousSettings.recover_from_ms`) when the code it goes to knows the setting
    (`target_fields`, None: this checkout's; code from before it does not, and would refuse it). A shadow topic
    (`HandedOverJob.shadow_topic`) is dropped: it served the version before its tokens only, and code from before
    shadows would refuse it."""
    update: dict = {}
    if isinstance(settings, HandedOverJob) and settings.shadow_topic is not None:
        update["shadow_topic"] = None
    if isinstance(settings, RendezvousSettings) and (target_fields is None or "recover_from_ms" in target_fields):
        update["recover_from_ms"] = asked_ms
    return settings.model_copy(update=update) if update else settings


def recorded(job_id: str, s: RuntimeSettings) -> Recorded:
    """The running job's deployment as it recorded it; ControlError when it is not running or recorded none."""
    try:
        params = jobs_lib.job_parameters(job_id, s)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise ControlError(f"the cluster has no job {job_id} (`rendezvous job list`)") from None
        raise
    classes = {f"{c.__module__}:{c.__qualname__}": c for c in deploy.ENTRY_POINTS}
    cls = classes.get(params.get(SETTINGS_CLASS, ""))
    if cls is None or SETTINGS not in params:
        raise ControlError(f"job {job_id} does not say how it was deployed (no {SETTINGS_CLASS} in its job "
                           "parameters): it was not deployed by `rendezvous deploy`, or by an older version. Stop it "
                           "with `rendezvous job stop` and deploy it again with --from-savepoint.")
    state = jobs_lib.job_state(job_id, s)
    if state != "RUNNING":
        raise ControlError(f"job {job_id} is {state}; only a running job can be restarted from a savepoint "
                           f"(taking one needs it running)")
    fields = json.loads(params[SETTINGS])
    if cls is RendezvousSettings:
        fields["restored"] = True  # its first attempt runs the recovery scan (jobs/rendezvous/recovery.py)
        fields.pop("recover_from_ms", None)  # the bound of its own restore: each restore sets its own
    return Recorded(job_id=job_id, settings=deploy.job_settings(cls, s, **fields),
                    settings_class=params[SETTINGS_CLASS],
                    execution_mode=params.get(EXECUTION_MODE, "process"),
                    state=json.loads(params[STATE]) if STATE in params else None, code=params.get(CODE),
                    parallelism=max(jobs_lib.job_parallelism(job_id, s).values(), default=1))


def state_problems(held: dict, new: dict | None) -> list[str]:
    """What keeps the new code from taking over a savepoint of a job whose recorded state encodings are `held`
    (by operator uid: {"writes": v, "reads": [...]}); `new` is the new code's declaration (None: none). Empty:
    compatible. Pure."""
    if new is None:
        return ["the new code does not declare the encodings of its state (JobSettings.state_encodings)"]
    out = []
    for uid in sorted(held):
        enc = held[uid]
        may_hold = sorted(set(enc["reads"]) | {enc["writes"]})
        if uid not in new:
            out.append(f"{uid}: the new code keeps no such state (the operator's uid was removed or renamed): the "
                       f"savepoint's state of it would not be restored")
            continue
        missing = [v for v in may_hold if v not in set(new[uid]["reads"]) | {new[uid]["writes"]}]
        if missing:
            out.append(f"{uid}: the savepoint may hold encoding(s) {', '.join(map(str, may_hold))} (the running job "
                       f"writes {enc['writes']} and reads {', '.join(map(str, enc['reads']))}); the new code reads "
                       f"{', '.join(map(str, new[uid]['reads']))}, not {', '.join(map(str, missing))}")
    return out


_PROBE = """
import importlib, json, sys
module, _, name = sys.argv[1].partition(":")
mod = importlib.import_module(module)
cls = getattr(mod, name)
cls.model_validate_json(sys.stdin.read())
enc = cls.state_encodings() if hasattr(cls, "state_encodings") else None
print(json.dumps({"file": mod.__file__, "fields": sorted(cls.model_fields),
                  "state": None if enc is None else {k: v.as_json() for k, v in enc.items()}}))
"""


def probe(code: Path, rec: Recorded, s: RuntimeSettings) -> dict:
    """What the new code in `code` says of the job's settings class, read in a fresh interpreter there (which also
    validates the job's settings against it): `state` (its state encodings), `fields` (the settings it knows), `file`.
    ControlError if it cannot."""
    python = str(s.venv_python if s.venv_python.exists() else Path(sys.executable))
    env = {**os.environ, "PYTHONPATH": str(code)}  # and cwd: the new code comes first on sys.path
    settings = restore_bound(rec.settings, frozenset(), 0)  # as any restart submits them: without a shadow topic
    out = subprocess.run([python, "-c", _PROBE, rec.settings_class], cwd=code, input=settings.model_dump_json(),
                         capture_output=True, text=True, timeout=120, env=env)
    if out.returncode != 0:
        raise ControlError(f"the new code at {code} cannot take job {rec.job_id} over; nothing was stopped. Loading "
                           f"its {rec.settings_class} with the job's settings failed:\n{out.stderr.strip()[-3000:]}")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(found["file"]).resolve().is_relative_to(code):
        raise ControlError(f"{rec.settings_class} was imported from {found['file']}, not from the new code at {code}")
    return found


@dataclass(frozen=True)
class Restarted:
    job_id: str
    from_job_id: str
    savepoint: str
    stop_s: float
    """From the stop request to the savepoint's completion (the old job has ended)."""
    start_s: float
    """From then to the new job running (every task RUNNING)."""


def restart_from_savepoint(rec: Recorded, s: RuntimeSettings, *, parallelism: int | None = None,
                           code: Path | None = None, progress: Callable[[str], None] | None = None,
                           registry_topics: TopicNames | None = None) -> Restarted:
    """Stop the job with a savepoint and submit it again from there (at `parallelism`, from `code`); a registered
    model's entry is pointed at the new job."""
    name = rec.settings.job_name
    if progress:
        progress(f"stopping {name} ({rec.job_id}) with a savepoint")
    t0 = time.monotonic()
    settings = restore_bound(rec.settings, rec.target_fields, now_ms())  # before the stop: the rendezvous's recovery scan's bound
    savepoint = jobs_lib.stop_with_savepoint(rec.job_id, s, progress=progress, retire=False)
    t1 = time.monotonic()
    if progress:
        progress(f"savepoint {savepoint} ({t1 - t0:.1f} s); submitting {name} from it")
    try:
        new = deploy.submit_job(settings, s, savepoint, True, rec.execution_mode,
                                parallelism=parallelism or rec.parallelism, code=code)
    except ControlError as e:
        raise ControlError(f"{name} was stopped with savepoint {savepoint}, but starting it from there failed: {e}\n"
                           f"Cancel what started (`rendezvous job list`), then deploy it from that savepoint "
                           f"(`rendezvous deploy ... --from-savepoint {savepoint}`), with the old code if the new "
                           f"one cannot run.") from e
    t2 = time.monotonic()
    if progress:
        progress(f"{name} runs as job {new} ({t2 - t1:.1f} s after the savepoint)")
    pinned.reap(s, progress)  # the old job's own TaskManagers, once the new one runs
    if isinstance(rec.settings, ModelJobSettings):  # the registry names the job of a registered model
        moved = registry.job_moved(registry.Plane(s, registry_topics or TopicNames()), rec.job_id, new)
        if moved and progress:
            progress(f"registry: {moved.model_id}@{moved.version} runs as job {new} now")
    return Restarted(new, rec.job_id, savepoint, t1 - t0, t2 - t1)


def check(job_id: str, code: Path | None = None, s: RuntimeSettings | None = None) -> Recorded:
    """Everything an upgrade checks before stopping anything: the job runs and recorded how it was deployed and
    the encodings of its state; `code` holds the project's packages and the job's entry point; the new code
    accepts the job's settings and reads every encoding the job's savepoint may hold. Raises ControlError with
    what differs and what to do."""
    s = s or RuntimeSettings()
    rec = recorded(job_id, s)
    root = jobs_lib.check_code(s, deploy.ENTRY_POINTS[type(rec.settings)], code)
    if rec.state is None:
        raise ControlError(f"job {job_id} does not record the encodings of its state (deployed by an older version): "
                           f"its upgrade cannot be checked. Stop it with `rendezvous job stop {job_id}` and deploy the "
                           f"new code from the savepoint it prints (--from-savepoint).")
    found = probe(root, rec, s)
    rec = dataclasses.replace(rec, target_fields=frozenset(found["fields"]))
    problems = state_problems(rec.state, found["state"])
    if problems:
        raise ControlError(f"upgrade of {rec.settings.job_name} ({job_id}) refused, the job keeps running: the new "
                           f"code at {root} cannot read its state.\n  " + "\n  ".join(problems) + "\nKeep the new code "
                           "reading those encodings (each job's state_encodings names its reader, e.g. "
                           "jobs/rendezvous/mailbox.py MAILBOX_READS), or deploy it as a new job without the "
                           "savepoint (its state starts empty).")
    return rec


def upgrade(job_id: str, code: Path | None = None, s: RuntimeSettings | None = None,
            progress: Callable[[str], None] | None = None, registry_topics: TopicNames | None = None,
            lifecycle_topic: str = LIFECYCLE) -> Restarted:
    """Run a job's code from `code` (a checkout of the project; default: this one) with its state: `check`, then
    stop it with a savepoint and submit the new code from there, at the same parallelism, with the settings and
    execution mode it recorded and the runtime's current Kafka connection. Records `upgrade` in lifecycle."""
    s = s or RuntimeSettings()
    rec = check(job_id, code, s)
    root = jobs_lib.check_code(s, deploy.ENTRY_POINTS[type(rec.settings)], code)
    new_code = jobs_lib.sources_digest(root)
    if progress:
        progress(f"state check passed: {', '.join(sorted(rec.state)) or 'no state of its own'}; code "
                 f"{(rec.code or '?')[:12]} -> {new_code[:12]}")
    done = restart_from_savepoint(rec, s, code=root, progress=progress, registry_topics=registry_topics)
    card = rec.settings.card if isinstance(rec.settings, ModelJobSettings) else None
    deploy._record(s, LifecycleEvent(
        kind="upgrade", job_id=done.job_id, at_ms=now_ms(), model_id=card.model_id if card else None,
        model_version=card.version if card else None,
        detail={"name": rec.settings.job_name, "from_job_id": job_id, "savepoint": done.savepoint,
                "from_code": rec.code, "to_code": new_code, "code_dir": str(root), "state": rec.state,
                "execution_mode": rec.execution_mode, "stop_s": round(done.stop_s, 3),
                "start_s": round(done.start_s, 3)}), lifecycle_topic)
    return done
