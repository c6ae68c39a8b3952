"""The embedded runtime's process manager: restarts the Kafka broker, the Flink JobManager or the
TaskManager when one dies, as systemd or Kubernetes would, so that Flink's own recovery can do its work.

`rendezvous up` starts it (`control.runtime.supervisor.main`, detached, pid file
`run/pids/supervisor.pid`, log `run/logs/supervisor.log`); `rendezvous down` stops it first, so
nothing it stops is brought back. Every second it checks each component's pid file; a component whose
process is gone is restarted under a bounded policy (`RestartPolicy`: at most `max_restarts` within
`window_s`, waiting `backoff_s` before each, doubling to `max_backoff_s`); past the bound it gives up
on that component and says so. Restarts are recorded in `run/pids/supervisor.json`, which
`rendezvous status` shows.

Each round it also tends the TaskManagers started for thread-mode jobs (`control.runtime.pinned.tend`):
those of ended jobs are stopped, a dead one whose job still runs is started again (its job restarts there).
A restarted JobManager has lost the jobs of the session cluster (no high availability here): they
must be deployed again from their savepoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from control.runtime import pinned
from control.runtime.process import pid_alive, read_pid
from control.settings import RuntimeSettings

SUPERVISOR_PID = "supervisor.pid"
STATE_FILE = "supervisor.json"
COMPONENTS = ("kafka broker", "flink jobmanager", "flink taskmanager")


@dataclass
class RestartPolicy:
    """Bounded restarts with backoff (pure: times are passed in)."""

    max_restarts: int = 5
    window_s: float = 600.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    restarts: list[float] = field(default_factory=list)  # when each restart happened

    def recent(self, now: float) -> list[float]:
        return [t for t in self.restarts if now - t < self.window_s]

    def delay(self, now: float) -> float | None:
        """Seconds to wait before the next restart, or None when the bound is reached (give up)."""
        n = len(self.recent(now))
        if n >= self.max_restarts:
            return None
        return min(self.max_backoff_s, self.backoff_s * (2 ** n))

    def record(self, now: float) -> None:
        self.restarts = self.recent(now) + [now]


def state_path(s: RuntimeSettings) -> Path:
    return s.pid_dir / STATE_FILE


def read_state(s: RuntimeSettings) -> dict:
    try:
        return json.loads(state_path(s).read_text())
    except (OSError, ValueError):
        return {}


def restarts_of(s: RuntimeSettings, component: str) -> int:
    return len(read_state(s).get(component, {}).get("restarts", []))


def _pid_of(s: RuntimeSettings, component: str) -> int | None:
    """The component's pid; for the TaskManagers, the first live one, or None when fewer run than wanted."""
    from control.runtime.flink import (
        flink_pid_files,
        live_taskmanagers,
        taskmanagers_changing,
        wanted_taskmanagers,
    )
    from control.runtime.kafka import KAFKA_PID

    if component == "kafka broker":
        return read_pid(s.pid_dir / KAFKA_PID)
    if component == "flink taskmanager":
        live = live_taskmanagers(s)
        if live and (len(live) >= wanted_taskmanagers(s) or taskmanagers_changing(s)):
            return live[0]  # all there, or `up` is starting or stopping some right now
        return None
    return read_pid(flink_pid_files(s)["jobmanager"])


UNCHANGED = -1
"""`_restart`'s answer when nothing needed starting after all (another process had started it)."""


def _restart(s: RuntimeSettings, component: str, log) -> int | None:
    from control.runtime.flink import flink_env, flink_pid_files
    from control.runtime.kafka import start_kafka
    from control.settings import java_executable

    if component == "kafka broker":
        try:
            start_kafka(s, java_executable() or "java", log)
        except Exception as e:  # noqa: BLE001 - logged; the policy bounds the retries
            log(f"starting {component} failed: {e}")
            return None
        return _pid_of(s, component)
    if component == "flink taskmanager":
        from control.runtime.flink import ensure_taskmanagers, orphaned_python_workers
        from control.runtime.process import terminate_tree

        for pid in orphaned_python_workers(s):  # the dead TaskManager's Python workers
            terminate_tree(pid, timeout=5)
        try:
            _, started = ensure_taskmanagers(s, None, log)  # the count recorded when it holds the lock
        except Exception as e:  # noqa: BLE001 - logged; the policy bounds the retries
            log(f"starting {component} failed: {e}")
            return None
        return _pid_of(s, component) if started else UNCHANGED
    pid_file = flink_pid_files(s)["jobmanager"]
    pid_file.unlink(missing_ok=True)  # it names the dead process; Flink's script appends the new one
    out = subprocess.run(["bash", str(s.flink_home / "bin" / "jobmanager.sh"), "start"], env=flink_env(s),
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        log(f"starting {component} failed: {out.stdout}{out.stderr}")
        return None
    return _pid_of(s, component)


def watch(s: RuntimeSettings, interval_s: float = 1.0, policy: RestartPolicy | None = None) -> None:
    """Run until SIGTERM: check the components, restart the dead ones (bounded)."""
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    logf = open(s.log_dir / "supervisor.log", "a", buffering=1)

    def log(msg: str) -> None:
        logf.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    policies = {c: replace(policy, restarts=[]) if policy else RestartPolicy() for c in COMPONENTS}
    known = {c: _pid_of(s, c) for c in COMPONENTS}
    given_up: set[str] = set()
    state = read_state(s)
    log(f"supervising {', '.join(f'{c} (pid {p})' for c, p in known.items())}")
    while not stop["now"]:
        for c in COMPONENTS:
            pid = _pid_of(s, c)
            if pid and pid_alive(pid):
                known[c] = pid
                continue
            if c in given_up or stop["now"]:
                continue
            now = time.monotonic()
            delay = policies[c].delay(now)
            if delay is None:
                given_up.add(c)
                log(f"{c} died again: {policies[c].max_restarts} restarts within {policies[c].window_s:.0f} s, "
                    f"giving up; see the logs in {s.log_dir} and run `rendezvous down && rendezvous up`")
                continue
            log(f"{c} (pid {known[c]}) is gone; restarting it in {delay:.0f} s")
            time.sleep(delay)
            if stop["now"]:
                break
            back = _pid_of(s, c)
            if back and pid_alive(back):  # `up` brought it back meanwhile (e.g. changing the TaskManager count)
                known[c] = back
                continue
            new = _restart(s, c, log)
            if new == UNCHANGED:  # `up` had started what was missing: nothing was restarted
                known[c] = _pid_of(s, c)
                continue
            policies[c].record(time.monotonic())
            entry = state.setdefault(c, {"restarts": []})
            entry["restarts"].append({"at_ms": int(time.time() * 1000), "old_pid": known[c], "new_pid": new})
            state_path(s).write_text(json.dumps(state, indent=1))
            log(f"restarted {c}: pid {known[c]} -> {new} (restart {len(policies[c].recent(time.monotonic()))}"
                f"/{policies[c].max_restarts} within {policies[c].window_s:.0f} s)")
            known[c] = new
        if not stop["now"]:
            try:  # the thread-mode jobs' own TaskManagers: retire those of ended jobs, restart dead ones
                pinned.tend(s, log)
            except Exception as e:  # noqa: BLE001 - logged; tried again next round
                log(f"tending the thread-mode jobs' TaskManagers failed: {e}")
        time.sleep(interval_s)
    log("stopped")


def start(s: RuntimeSettings) -> int:
    """Start the supervisor (detached) unless one runs; returns its pid."""
    pid = read_pid(s.pid_dir / SUPERVISOR_PID)
    if pid and pid_alive(pid):
        return pid
    state_path(s).unlink(missing_ok=True)  # restarts are counted per `up`
    proc = subprocess.Popen([sys.executable, "-c", "from control.runtime.supervisor import main; main()"],
                            cwd=s.home,
                            stdout=subprocess.DEVNULL, stderr=open(s.log_dir / "supervisor.log", "ab"),
                            stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    (s.pid_dir / SUPERVISOR_PID).write_text(str(proc.pid))
    return proc.pid


def stop(s: RuntimeSettings) -> None:
    """Stop the supervisor only (what it restarted may be its child: `down` stops those itself)."""
    import psutil

    path = s.pid_dir / SUPERVISOR_PID
    pid = read_pid(path)
    if pid and pid_alive(pid):
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            proc.wait(timeout=40)  # it may be sleeping out a backoff (at most max_backoff_s)
        except psutil.TimeoutExpired:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    path.unlink(missing_ok=True)


def running(s: RuntimeSettings) -> int | None:
    pid = read_pid(s.pid_dir / SUPERVISOR_PID)
    return pid if pid and pid_alive(pid) else None


def main() -> None:
    watch(RuntimeSettings())


if __name__ == "__main__":
    main()
