"""Supervisor of the embedded Flink standalone session cluster (the `bin/` scripts of the apache-flink
wheel), and the small REST client the control plane uses to talk to any Flink cluster."""

from __future__ import annotations

import json
import os
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from control.errors import RuntimeStartError
from control.runtime.process import Progress, pid_alive, say, terminate_tree
from control.settings import RuntimeSettings, java_executable


def write_if_changed(path: Path, text: str) -> None:
    """Replace the file's content atomically, and only when it changes: `flink run`s submitted side by side read
    the rendered config while another submission renders it again."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)  # as a plain write made it (mkstemp's is 0600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def link(path: Path, target: Path) -> None:
    """`path` a symlink to `target`, made atomically (submissions side by side prepare the same directories): a
    link to anything else is replaced, the right one left as it is."""
    try:
        if path.is_symlink() and path.resolve() == target.resolve():
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.symlink_to(target)
    os.replace(tmp, path)


def prune(directory: Path, wanted: dict[str, Path], keep: tuple[str, ...] = ()) -> None:
    """Remove the entries of `directory` that are not links to what `wanted` names (another submission may have
    removed one already)."""
    for existing in directory.iterdir():
        if existing.name in keep or existing.name.startswith("."):
            continue
        if existing.name not in wanted or existing.resolve() != wanted[existing.name].resolve():
            existing.unlink(missing_ok=True)


def render_flink_conf(s: RuntimeSettings) -> Path:
    out = s.rendered_flink_conf_dir
    out.mkdir(parents=True, exist_ok=True)
    values = {
        "REPO": str(s.home),
        "RUN_DIR": str(s.run_dir),
        "PYTHON": str(s.venv_python if s.venv_python.exists() else Path(sys.executable)),
        "FLINK_REST_PORT": str(s.flink_rest_port),
        "JOBMANAGER_RPC_PORT": str(s.jobmanager_rpc_port),
        "BLOB_PORT": str(s.blob_port),
        "HOST": s.host,
        "BIND_HOST": s.listen_host,
        "PROMETHEUS_PORTS": s.prometheus_ports,
        "JOBMANAGER_JVM_ARGS": json.dumps(s.jobmanager_jvm_args),  # a JSON string is a YAML one, quotes and all
    }
    for src in s.flink_conf_template_dir.iterdir():
        if src.is_file():
            write_if_changed(out / src.name, string.Template(src.read_text()).safe_substitute(values))
    for d in ("checkpoints", "flink-tmp", "flink-web-upload"):
        (s.run_dir / d).mkdir(parents=True, exist_ok=True)
    s.savepoint_dir.mkdir(parents=True, exist_ok=True)
    return out


BEAM_LOOPBACK_LINK = "0-rendezvous-beam-loopback.jar"
"""Its name in the cluster's lib/: sorts before flink-python-*.jar (and every other jar there)."""


def flink_lib_dir(s: RuntimeSettings) -> Path:
    """The cluster's lib/: the wheel's lib/ jars, flink-python from opt/, and the Kafka connector.

    With flink-python (and its embedded interpreter, pemja) on the cluster classpath, pemja's native
    library is loaded once per TaskManager JVM. Loaded from each job's own classloader instead, the
    second job in thread mode fails on Java 17 (`NoSuchFieldException: loadedLibraryNames`).
    The Kafka connector there too (loaded parent-first, see flink-conf/config.yaml): every job's Kafka
    clients share one copy of the classes, so the JIT compiles them once per TaskManager instead of
    once per deployed job (measured: the compiler used 15-18 % of a core for 30 s and more after each
    deployment), and Metaspace does not grow with each submission.
    And the project's loopback gRPC server factory for process-mode Python workers (`jvm/beam/`), linked
    under a name that sorts before flink-python's jar: Flink's scripts put lib/ jars on the classpath in
    name order, so its ServerFactory replaces the one shipped in flink-python (which binds every
    interface); see README, "Listeners"."""
    out = s.run_dir / "flink-lib"
    out.mkdir(parents=True, exist_ok=True)
    wanted = {j.name: j for j in (s.flink_home / "lib").glob("*.jar")}
    wanted.update({j.name: j for j in (s.flink_home / "opt").glob("flink-python-*.jar")})
    wanted.update({j.name: j for j in s.connector_jars})
    if s.beam_loopback_jar.exists():
        wanted[BEAM_LOOPBACK_LINK] = s.beam_loopback_jar
    prune(out, wanted)
    for name, target in wanted.items():
        link(out / name, target)
    return out


PROMETHEUS_PLUGIN = "metrics-prometheus"


def flink_plugins_dir(s: RuntimeSettings) -> Path:
    """The cluster's plugins/: the apache-flink wheel's plugin folders, except that metrics-prometheus/ holds the
    wheel's flink-metrics-prometheus jar and the project's reporter factory (`jvm/metrics/`), which must share
    one plugin class loader. flink-conf/config.yaml names that factory: the same reporter as Flink's, bound to
    RENDEZVOUS_BIND_HOST instead of every interface (README, "Exported metrics")."""
    out = s.run_dir / "flink-plugins"
    out.mkdir(parents=True, exist_ok=True)
    wanted = {d.name: d for d in (s.flink_home / "plugins").iterdir() if d.is_dir() and d.name != PROMETHEUS_PLUGIN}
    prune(out, wanted, keep=(PROMETHEUS_PLUGIN,))
    for name, target in wanted.items():
        link(out / name, target)
    prom = out / PROMETHEUS_PLUGIN
    prom.mkdir(exist_ok=True)
    jars = {j.name: j for j in (s.flink_home / "plugins" / PROMETHEUS_PLUGIN).glob("*.jar")}
    if s.prometheus_reporter_jar.exists():
        jars[s.prometheus_reporter_jar.name] = s.prometheus_reporter_jar
    prune(prom, jars)
    for name, target in jars.items():
        link(prom / name, target)
    return out


def flink_env(s: RuntimeSettings) -> dict[str, str]:
    env = dict(os.environ)
    env["FLINK_HOME"] = str(s.flink_home)
    env["FLINK_LIB_DIR"] = str(flink_lib_dir(s))
    env["FLINK_PLUGINS_DIR"] = str(flink_plugins_dir(s))
    env["FLINK_CONF_DIR"] = str(s.rendered_flink_conf_dir)
    env["FLINK_LOG_DIR"] = str(s.log_dir)
    env["FLINK_PID_DIR"] = str(s.pid_dir)
    java = java_executable()
    if java and "JAVA_HOME" not in env:
        env["JAVA_HOME"] = str(Path(java).resolve().parent.parent)
    # Flink's Python workers and the `flink run` client must use this project's interpreter.
    env["PYFLINK_CLIENT_EXECUTABLE"] = str(s.venv_python if s.venv_python.exists() else sys.executable)
    venv_bin = str(s.venv_python.parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def taskmanager_cwd(s: RuntimeSettings) -> Path:
    """The working directory TaskManagers are started in: an empty one. A process-mode Python worker runs
    `python -m ...` in the TaskManager's working directory, which Python puts first on `sys.path`: started in a
    checkout, every job's workers would import that checkout's `jobs`, `schemas` and `model_udfs` instead of the
    code submitted with the job (`-pyfs`)."""
    d = s.run_dir / "taskmanager-cwd"
    d.mkdir(parents=True, exist_ok=True)
    return d


def flink_pid_files(s: RuntimeSettings) -> dict[str, Path]:
    return {
        "jobmanager": next(iter(s.pid_dir.glob("flink-*-standalonesession.pid")), s.pid_dir / "flink-standalonesession.pid"),
        "taskmanager": next(iter(s.pid_dir.glob("flink-*-taskexecutor.pid")), s.pid_dir / "flink-taskexecutor.pid"),
    }


def flink_rest(s: RuntimeSettings, path: str, method: str = "GET", body: dict | None = None,
               timeout: float = 10.0, attempts: int | None = None) -> dict:
    """Call Flink's REST API. GETs are retried on timeouts (a busy 2-core JobManager can be slow)."""
    data = json.dumps(body).encode() if body is not None else None
    tries = attempts if attempts is not None else (3 if method == "GET" else 1)
    for attempt in range(tries):
        req = urllib.request.Request(f"http://{s.flink_address}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else {}
        except (TimeoutError, socket.timeout, ConnectionResetError):
            if attempt == tries - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def flink_overview(s: RuntimeSettings) -> dict | None:
    try:
        return flink_rest(s, "/overview", timeout=3.0, attempts=1)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def flink_healthy(s: RuntimeSettings, taskmanagers: int = 1) -> bool:
    """The JobManager answers, `taskmanagers` TaskManagers have registered, and slots are free."""
    ov = flink_overview(s)
    return bool(ov and ov.get("taskmanagers", 0) >= taskmanagers and ov.get("slots-available", 0) >= 1)


def taskmanager_pids(s: RuntimeSettings) -> list[int]:
    """The pids in the TaskManagers' pid file (Flink's script appends one per TaskManager it starts), dead or alive."""
    path = flink_pid_files(s)["taskmanager"]
    try:
        return [int(x) for x in path.read_text().split() if x.strip().isdigit()]
    except OSError:
        return []


def live_taskmanagers(s: RuntimeSettings) -> list[int]:
    return [p for p in taskmanager_pids(s) if pid_alive(p)]


def wanted_taskmanagers(s: RuntimeSettings) -> int:
    """How many TaskManagers the last `up` asked for (run/pids/taskmanagers; `down` forgets it), else 1."""
    try:
        return max(1, int((s.pid_dir / TASKMANAGERS_FILE).read_text()))
    except (OSError, ValueError):
        return 1


TASKMANAGERS_FILE = "taskmanagers"


def ensure_taskmanagers(s: RuntimeSettings, n: int | None, progress: Progress | None) -> tuple[list[int], int]:
    """Run exactly `n` TaskManagers on this machine (None: the recorded count): start the missing ones, stop
    the surplus (the newest first; their tasks fail over to the others, which need free slots). Records `n`
    for the supervisor. Returns the live pids and how many were started."""
    import fcntl

    if n is not None and n < 1:
        raise RuntimeStartError(f"at least one TaskManager is needed, not {n}")
    with open(s.pid_dir / TASKMANAGERS_LOCK, "w") as lock:  # `up` and the supervisor may both get here
        fcntl.flock(lock, fcntl.LOCK_EX)
        if n is None:
            n = wanted_taskmanagers(s)
        else:
            (s.pid_dir / TASKMANAGERS_FILE).write_text(str(n))
        return _ensure_taskmanagers(s, n, progress)


TASKMANAGERS_LOCK = "taskmanagers.lock"


def taskmanagers_changing(s: RuntimeSettings) -> bool:
    """Whether `ensure_taskmanagers` is starting or stopping TaskManagers right now (holds the lock)."""
    import fcntl

    try:
        with open(s.pid_dir / TASKMANAGERS_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def _ensure_taskmanagers(s: RuntimeSettings, n: int, progress: Progress | None) -> tuple[list[int], int]:
    path = flink_pid_files(s)["taskmanager"]
    alive = live_taskmanagers(s)
    if len(alive) > n:
        for pid in alive[n:]:
            say(progress, f"stopping Flink TaskManager (pid {pid}): {n} wanted")
            terminate_tree(pid)
        alive = alive[:n]
    env = flink_env(s)
    missing = n - len(alive)
    for i in range(missing):
        say(progress, f"starting Flink TaskManager {len(alive) + i + 1}/{n}")
        out = subprocess.run(["bash", str(s.flink_home / "bin" / "taskmanager.sh"), "start"], env=env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=taskmanager_cwd(s))
        if out.returncode != 0:
            raise RuntimeStartError(f"starting a Flink TaskManager failed:\n{out.stdout}{out.stderr}\n"
                                    f"See the logs in {s.log_dir}.")
    # the dead ones out of the pid file (replaced whole: its readers never see it half written). Flink's
    # script names a new TaskManager's log after the file's line count, so after a restart a new one may
    # share (and rotate) a live one's log file name; the processes are not affected.
    live = live_taskmanagers(s)
    if live:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{p}\n" for p in live))
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)
    return live, max(0, missing)


def start_flink(s: RuntimeSettings, progress: Progress | None, taskmanagers: int = 1) -> None:
    render_flink_conf(s)
    say(progress, "starting Flink JobManager")
    out = subprocess.run(["bash", str(s.flink_home / "bin" / "jobmanager.sh"), "start"], env=flink_env(s),
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeStartError(f"starting the Flink JobManager failed:\n{out.stdout}{out.stderr}\n"
                                f"See the logs in {s.log_dir}.")
    ensure_taskmanagers(s, taskmanagers, progress)


def orphaned_python_workers(s: RuntimeSettings) -> list[int]:
    """Python workers (and their runner scripts) of this checkout left behind by a TaskManager that died
    without stopping them (e.g. kill -9): reparented to init, they would run on."""
    import psutil

    venv = str(s.venv_python.parent.parent)
    out = []
    for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["ppid"] == 1 and venv in cmd and ("pyflink-udf-runner.sh" in cmd or "beam_boot" in cmd):
            out.append(p.info["pid"])
    return out


def stop_flink(s: RuntimeSettings, progress: Progress | None) -> None:
    """Stop the JobManager and the shared TaskManagers (those of thread-mode jobs: `control.runtime.pinned`)."""
    pids = flink_pid_files(s)
    for role in ("taskmanager", "jobmanager"):
        path = pids[role]
        for line in (path.read_text().split() if path.exists() else []):
            try:
                pid = int(line)
            except ValueError:
                continue
            if pid_alive(pid):
                say(progress, f"stopping Flink {role} (pid {pid})")
                terminate_tree(pid)  # with its Python workers
        path.unlink(missing_ok=True)
    (s.pid_dir / TASKMANAGERS_FILE).unlink(missing_ok=True)
    for pid in orphaned_python_workers(s):
        terminate_tree(pid, timeout=5)


