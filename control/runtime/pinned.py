"""TaskManagers of their own for thread-mode jobs: one Python interpreter per job, started with its code.

A thread-mode job runs its Python in the TaskManager's one CPython (pemja), which imports a module once:
two versions of a job on one TaskManager would both run the code imported first. So every thread-mode job
submitted to the embedded cluster gets TaskManagers started for it (one per subtask, one slot each), and
only its slots fit there, by Flink's fine-grained resource management (the only slot manager in Flink 2):

- each of its TaskManagers declares an external resource named after the job's pin
  (`external-resources: <pin>`, `external-resource.<pin>.amount: 1`) and 1 CPU;
- the job asks, for its slot-sharing group, 1 CPU and 1 unit of that resource per slot
  (`jobs.common.entry.run` registers the group when `rendezvous.taskmanager-resource` names the pin).

No other TaskManager declares the resource, so the job's slots land only on its own TaskManagers; once a
slot holds the TaskManager's one CPU, no slot of unknown profile (every other job's) fits there either.
The TaskManagers are started while `flink run` compiles the job, so they register about when the job asks
for slots; a slot of another job that is requested in between can still land on an idle one (the pin is
then retired only once that job has left it).

Each pin is a directory `run/pids/pinned/<pin>/` with `pin.json` (its job id once known, its size) and
one pid file per TaskManager (Flink's daemon script, FLINK_PID_DIR pointed there). `reap` retires the
TaskManagers of pins whose job has ended (cancel, stop-with-savepoint and the supervisor call it); the
supervisor also restarts a pinned TaskManager that died while its job runs (`tend`). `down` stops all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
import urllib.error
from pathlib import Path

from control.errors import RuntimeStartError
from control.runtime import priority
from control.runtime.process import Progress, pid_alive, say, terminate_trees
from control.settings import RuntimeSettings
from jobs.common.entry import TASKMANAGER_RESOURCE

RESOURCE_CONF = TASKMANAGER_RESOURCE
"""The `flink run -D` key naming the pin whose TaskManagers the job's slots must use (read by
`jobs.common.entry.run`)."""

ID_PREFIX = "pinned-"
"""`taskmanager.resource-id` of a pinned TaskManager: pinned-<pin>-<i> (how REST readers tell them apart)."""

TERMINAL = ("FINISHED", "CANCELED", "FAILED")
RUNS_ON = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "FAILING", "RECONCILING")
"""Job states in which a pinned TaskManager that died is started again (not CANCELLING: the job is ending)."""
ABANDONED_AFTER_S = 600.0
"""A pin whose submission never recorded a job id (the submitting process died) is retired after this."""
MAX_RESTARTS, RESTART_WINDOW_S = 5, 600.0
"""A pinned TaskManager that died is started again at most this often within the window (as the supervisor's
`RestartPolicy` bounds the shared ones)."""


def pins_dir(s: RuntimeSettings) -> Path:
    return s.pid_dir / "pinned"


def new_pin() -> str:
    """A fresh pin name: lowercase letters and digits (it is a Flink config key segment)."""
    return "tm" + os.urandom(5).hex()


def resource_id(pin: str, i: int) -> str:
    return f"{ID_PREFIX}{pin}-{i}"


def is_pinned(taskmanager_id: str) -> bool:
    return taskmanager_id.startswith(ID_PREFIX)


def taskmanager_args(s: RuntimeSettings, pin: str, i: int) -> list[str]:
    """Dynamic properties of pinned TaskManager `i`: one slot, one CPU, one unit of the pin's resource, its own
    resource id, and a smaller memory budget than a shared TaskManager (it runs one subtask of one job)."""
    conf = {
        "taskmanager.numberOfTaskSlots": "1",
        "taskmanager.cpu.cores": "1",
        "external-resources": pin,
        f"external-resource.{pin}.amount": "1",
        "taskmanager.resource-id": resource_id(pin, i),
        "taskmanager.memory.process.size": s.pinned_taskmanager_memory,
        "taskmanager.memory.jvm-metaspace.size": "384m",
        "taskmanager.memory.managed.size": "64m",
    }
    return [a for k, v in conf.items() for a in ("-D", f"{k}={v}")]


def _pid_file(s: RuntimeSettings, pin: str, i: int) -> Path:
    return pins_dir(s) / pin / f"flink-{resource_id(pin, i)}-taskexecutor.pid"


def taskmanager_env(s: RuntimeSettings, pin: str, i: int) -> dict[str, str]:
    """The environment of Flink's start script for pinned TaskManager `i`: its own pid file and log names, and its
    JVM options (`pinned_taskmanager_jvm_args`)."""
    from control.runtime.flink import flink_env

    env = flink_env(s)
    env["FLINK_PID_DIR"] = str(_pid_file(s, pin, i).parent)
    env["FLINK_IDENT_STRING"] = resource_id(pin, i)  # its own pid file and log file names
    env["JVM_ARGS"] = f"{env.get('JVM_ARGS', '')} {s.pinned_taskmanager_jvm_args}".strip()
    return env


def _launch_one(s: RuntimeSettings, pin: str, i: int) -> subprocess.Popen:
    """Run Flink's start script of TaskManager `i` of the pin, without waiting for it (`_started`); it starts at the
    calling thread's CPU priority (control.runtime.priority)."""
    from control.runtime.flink import taskmanager_cwd

    _pid_file(s, pin, i).unlink(missing_ok=True)  # Flink's script appends; this file names one TaskManager
    return subprocess.Popen(["bash", str(s.flink_home / "bin" / "taskmanager.sh"), "start",
                             *taskmanager_args(s, pin, i)], env=taskmanager_env(s, pin, i), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, cwd=taskmanager_cwd(s))


def _started(s: RuntimeSettings, pin: str, i: int, proc: subprocess.Popen) -> int | None:
    """Wait for the start script `_launch_one` ran (it computes the TaskManager's memory settings in a JVM of its
    own, seconds, then launches the TaskManager in the background); the TaskManager's pid."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeStartError(f"starting TaskManager {resource_id(pin, i)} failed:\n{out}{err}\n"
                                f"See the logs in {s.log_dir}.")
    return _pid(_pid_file(s, pin, i))


def _start_one(s: RuntimeSettings, pin: str, i: int) -> int | None:
    return _started(s, pin, i, _launch_one(s, pin, i))


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read(s: RuntimeSettings, pin: str) -> dict | None:
    try:
        return json.loads((pins_dir(s) / pin / "pin.json").read_text())
    except (OSError, ValueError):
        return None


def _write(s: RuntimeSettings, pin: str, record: dict) -> None:
    path = pins_dir(s) / pin / "pin.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def start(s: RuntimeSettings, slots: int, progress: Progress | None = None) -> str:
    """Start `slots` TaskManagers for one thread-mode job (returns once they are launched; they register with the
    JobManager within seconds). Returns the pin to submit the job with (`RESOURCE_CONF`). They start at the calling
    thread's CPU priority (a hand-over's lowered one: `priority.lowered`; `renice` once the version serves).

    Their start scripts run side by side (each computes its TaskManager's settings in a JVM of its own: seconds),
    and all are done before this returns: the job is submitted only then (`control.ops.jobs.submit`), so the
    TaskManagers register while `flink run` compiles it. (A job whose slots are asked for before its
    TaskManagers registered fails: "Could not acquire the minimum required resources", then restarts.)"""
    pin = new_pin()
    (pins_dir(s) / pin).mkdir(parents=True)
    _write(s, pin, {"pin": pin, "slots": slots, "job_id": None, "created_at": time.time(), "restarts": []})
    say(progress, f"starting {slots} TaskManager(s) of its own ({resource_id(pin, 0)}"
                  + (f"..{slots - 1}" if slots > 1 else "") + ")")
    procs: list[subprocess.Popen] = []
    error: Exception | None = None
    try:
        for i in range(slots):
            procs.append(_launch_one(s, pin, i))
    except Exception as e:  # noqa: BLE001 - raised below, once the scripts started are done
        error = e
    for i, proc in enumerate(procs):
        try:
            _started(s, pin, i, proc)
        except Exception as e:  # noqa: BLE001
            error = error or e
    if error:
        retire(s, pin)
        raise error
    return pin


def renice(s: RuntimeSettings, pin: str, nice: int = 0) -> int:
    """Set the CPU priority of the pin's TaskManagers (every thread's, and their CPU group where this process may
    place them: control.runtime.priority); returns the threads changed."""
    return sum(priority.set_process(pid, nice) for pid in pids(s, pin))


def record_job(s: RuntimeSettings, pin: str, job_id: str) -> None:
    rec = read(s, pin)
    if rec is not None:
        _write(s, pin, {**rec, "job_id": job_id})


def pins(s: RuntimeSettings) -> list[str]:
    d = pins_dir(s)
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []


def pids(s: RuntimeSettings, pin: str) -> list[int]:
    """The pin's TaskManager pids (alive or not)."""
    return [p for p in (_pid(f) for f in sorted((pins_dir(s) / pin).glob("*.pid"))) if p]


def of_job(s: RuntimeSettings, job_id: str) -> str | None:
    return next((p for p in pins(s) if (read(s, p) or {}).get("job_id") == job_id), None)


def retire(s: RuntimeSettings, pin: str, progress: Progress | None = None) -> None:
    """Stop the pin's TaskManagers (with whatever runs in them) and forget the pin."""
    retire_all(s, [pin], progress)


@contextlib.contextmanager
def _locked(s: RuntimeSettings):
    """The pins, for this process alone: retiring pins (a test's cleanup, `job cancel`, the hand-over) and the
    supervisor's restart of a pinned TaskManager (`tend`) run in different processes. Unserialized, a restart racing a
    retire left a TaskManager running whose pid file the retire had deleted: outside every pin, it took other jobs'
    slots for the rest of a CI run (and their metrics were on an endpoint nothing listed)."""
    d = pins_dir(s)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def retire_all(s: RuntimeSettings, pins_: list[str], progress: Progress | None = None) -> None:
    """`retire` of several pins; their TaskManagers shut down side by side (each JVM takes seconds to exit)."""
    with _locked(s):
        _retire_all(s, pins_, progress)


def _retire_all(s: RuntimeSettings, pins_: list[str], progress: Progress | None) -> None:
    alive = []
    for pin in pins_:
        for pid in pids(s, pin):
            if pid_alive(pid):
                say(progress, f"stopping TaskManager pid {pid} of {pin}")
                alive.append(pid)
    terminate_trees(alive)
    for pin in pins_:
        d = pins_dir(s) / pin
        for f in d.glob("*"):
            f.unlink(missing_ok=True)
        try:
            d.rmdir()
        except OSError:
            pass


def _job_states(s: RuntimeSettings) -> dict[str, str] | None:
    """Every job's state by id, or None when the JobManager does not answer (then nothing is retired)."""
    from control.runtime.flink import flink_rest

    try:
        return {j["jid"]: j["state"] for j in flink_rest(s, "/jobs/overview", timeout=5.0).get("jobs", [])}
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _foreign_slots(s: RuntimeSettings, pin: str, job_id: str | None) -> list[str]:
    """Jobs other than the pin's own with slots on its TaskManagers (see the module's docstring)."""
    from control.runtime.flink import flink_rest

    out = []
    try:
        tms = flink_rest(s, "/taskmanagers", timeout=5.0).get("taskmanagers", [])
        for tm in tms:
            if tm["id"].startswith(f"{ID_PREFIX}{pin}-"):
                detail = flink_rest(s, f"/taskmanagers/{tm['id']}", timeout=5.0)
                out += [a["jobId"] for a in detail.get("allocatedSlots", []) if a.get("jobId") != job_id]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return []
    return out


def reap(s: RuntimeSettings, progress: Progress | None = None) -> list[str]:
    """Retire the pins whose job has ended or is unknown to the JobManager (e.g. a restarted one), and those
    abandoned before their job id was recorded; returns them. A pin that another job's slot landed on
    stays until that job leaves."""
    if not pins(s):
        return []
    states = _job_states(s)
    if states is None:
        return []
    retired = []
    for pin in pins(s):
        rec = read(s, pin) or {}
        jid = rec.get("job_id")
        if jid is None:
            if time.time() - rec.get("created_at", 0) < ABANDONED_AFTER_S:
                continue
        elif states.get(jid) not in TERMINAL and jid in states:
            continue
        foreign = _foreign_slots(s, pin, jid)
        if foreign:
            continue
        retired.append(pin)
    retire_all(s, retired, progress)
    return retired


def restarts(s: RuntimeSettings, pin: str) -> int:
    """How often the supervisor restarted the pin's TaskManagers."""
    return len((read(s, pin) or {}).get("restarts", []))


def tend(s: RuntimeSettings, log) -> None:
    """The supervisor's round: retire the pins of ended jobs, restart a pinned TaskManager that died while its
    job runs (at most MAX_RESTARTS per pin within RESTART_WINDOW_S); the job then restarts there. Each restart holds
    the pins' lock (`_locked`) and first checks again that the pin is still there and its job still runs (one
    cancelled since `reap` looked has its TaskManagers stopped by whoever cancelled it)."""
    reap(s, log)
    for pin in pins(s):
        rec = read(s, pin)
        if not rec or rec.get("job_id") is None:
            continue
        for i in range(rec["slots"]):
            pid = _pid(_pid_file(s, pin, i))
            if pid and pid_alive(pid):
                continue
            with _locked(s):
                rec = read(s, pin)
                if rec is None:
                    break  # retired meanwhile
                state = (_job_states(s) or {}).get(rec["job_id"])
                if state not in RUNS_ON:
                    log(f"TaskManager {resource_id(pin, i)} of job {rec['job_id']} is gone, and the job is "
                        f"{state or 'unknown to the JobManager'}: not restarted")
                    break
                recent = [t for t in rec.get("restarts", []) if time.time() - t < RESTART_WINDOW_S]
                if len(recent) >= MAX_RESTARTS:
                    continue
                log(f"TaskManager {resource_id(pin, i)} of job {rec['job_id']} (pid {pid}) is gone; restarting it")
                try:
                    new = _start_one(s, pin, i)
                    log(f"restarted TaskManager {resource_id(pin, i)}: pid {new}")
                except RuntimeStartError as e:
                    log(str(e))
                rec["restarts"] = recent + [time.time()]
                _write(s, pin, rec)


def stop_all(s: RuntimeSettings, progress: Progress | None = None) -> None:
    retire_all(s, pins(s), progress)


def describe(s: RuntimeSettings, job_id: str) -> str:
    """For error messages: the job's own TaskManagers, alive or not, and where their logs are."""
    pin = of_job(s, job_id)
    if not pin:
        return ""
    found = [(resource_id(pin, i), _pid(_pid_file(s, pin, i))) for i in range((read(s, pin) or {}).get("slots", 0))]
    shown = ", ".join(f"{rid} pid {p} ({'alive' if p and pid_alive(p) else 'dead'})" for rid, p in found)
    return (f"\nIts TaskManagers: {shown or 'none started'}; logs: "
            f"{s.log_dir}/flink-{ID_PREFIX}{pin}-*-taskexecutor-*.log")
