"""Start and stop an MLServer serving a directory of models (for the remote runner, `model_udfs.remote`).

MLServer's dependencies clash with PyFlink's, so it runs from its own virtualenv, `.venv-mlserver/`
(made by `make setup` from `requirements-mlserver.lock`), as it would run in its own container.

`start` writes the server's `settings.json` into a work directory (`run/mlserver/<http port>/` by
default) that links to the models directory, so the server binds only to `settings.listen_host`
(`RENDEZVOUS_BIND_HOST`, else `RENDEZVOUS_HOST`: 127.0.0.1 by default) on the ports asked for, whatever the models directory holds. Every model is found by its
`model-settings.json` (anywhere below the directory). `start` returns once `/v2/health/ready` and
each model's `/v2/models/{name}/versions/{version}/ready` answer 200; `stop` ends the server's whole
process group, inference workers included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from control.errors import MLServerError
from control.runtime.process import (
    Progress,
    cmdline_contains,
    group_members,
    http_status,
    pid_alive,
    port_in_use,
    read_pid,
    say,
)
from control.settings import RuntimeSettings


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str | None

    @property
    def path(self) -> str:
        """The model's path in the V2 REST API, e.g. /v2/models/fraud-champion/versions/1.0.0."""
        base = f"/v2/models/{self.name}"
        return f"{base}/versions/{self.version}" if self.version else base


@dataclass
class MLServerProcess:
    """A running MLServer started by `start`."""

    pid: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int | None
    models_dir: Path
    work_dir: Path
    log_file: Path
    models: list[ServedModel]
    startup_s: float
    pid_file: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    _log_offset: int = field(default=0, repr=False, compare=False)

    @property
    def url(self) -> str:
        """Base URL of the REST API (the `url` param of a KServeV2Runner card)."""
        return f"http://{self.host}:{self.http_port}"

    base_url = url

    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        stop(self, timeout=timeout)

    def __enter__(self) -> "MLServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def mlserver_executable(s: RuntimeSettings) -> Path:
    exe = s.mlserver_venv / "bin" / "mlserver"
    if not exe.exists():
        raise MLServerError(f"MLServer is not installed: {exe} does not exist. Run `make setup` (it creates "
                            f"{s.mlserver_venv.name}/ from requirements-mlserver.lock).")
    return exe


def served_models(models_dir: Path) -> list[ServedModel]:
    """The models MLServer will load from models_dir: one per model-settings.json below it."""
    out = []
    for root, _dirs, files in os.walk(models_dir, followlinks=True):
        if "model-settings.json" not in files:
            continue
        path = Path(root) / "model-settings.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise MLServerError(f"{path} is not valid JSON ({e}); fix or remove it.") from None
        name = data.get("name") or Path(root).name  # MLServer's default: the folder's name
        version = (data.get("parameters") or {}).get("version")
        out.append(ServedModel(str(name), str(version) if version is not None else None))
    if not out:
        raise MLServerError(f"no model-settings.json below {models_dir}: nothing to serve. Train the demo "
                            f"models with `.venv/bin/python -m training.train --out DIR` and serve "
                            f"DIR/<model_id>/<version> (or DIR).")
    return sorted(out, key=lambda m: (m.name, m.version or ""))


def _log_tail(path: Path, since: int = 0, n: int = 3000) -> str:
    """The last n bytes of the log written after offset `since` (this start's output, not older runs')."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(since, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _is_mlserver(pid: int) -> bool:
    return cmdline_contains(pid, "mlserver")


def _kill_group(pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    """Stop the process group led by pid: SIGTERM the leader (MLServer then stops its servers and
    inference workers) and wait up to timeout s; then SIGTERM and finally SIGKILL whatever is left."""

    def leader_alive() -> bool:
        return proc.poll() is None if proc is not None else pid_alive(pid)

    def wait(done, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    if leader_alive():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait(lambda: not leader_alive(), timeout)
    for sig, seconds in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        if not group_members(pid):
            break
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        wait(lambda: not group_members(pid), seconds)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    left = group_members(pid)
    if left:
        raise MLServerError(f"MLServer processes {left} (process group {pid}) did not exit after SIGKILL")


def _pid_file(s: RuntimeSettings, http_port: int) -> Path:
    return s.pid_dir / f"mlserver-{http_port}.pid"


# ---------------------------------------------------------------------------------------------
# start / stop
# ---------------------------------------------------------------------------------------------
def start(models_dir: str | Path, s: RuntimeSettings | None = None, *, http_port: int | None = None,
          grpc_port: int | None = None, metrics_port: int | None = None, metrics: bool | None = None,
          parallel_workers: int | None = None, log_file: str | Path | None = None,
          work_dir: str | Path | None = None, timeout: float | None = None,
          progress: Progress | None = None) -> MLServerProcess:
    """Start `mlserver start` on models_dir and wait until it and each of its models are ready.

    Ports default to the settings (`RENDEZVOUS_MLSERVER_HTTP_PORT`, ...). Metrics are served only if a
    metrics port is given (argument or `RENDEZVOUS_MLSERVER_METRICS_PORT`); `metrics=False` disables them.
    The server's output goes to log_file (default run/logs/mlserver-<http port>.log).
    """
    s = s or RuntimeSettings()
    exe = mlserver_executable(s)
    models_dir = Path(models_dir).resolve()
    if not models_dir.is_dir():
        raise MLServerError(f"models directory {models_dir} does not exist. Train the demo models with "
                            f"`.venv/bin/python -m training.train --out DIR`.")
    models = served_models(models_dir)

    host = s.host
    http_port = http_port if http_port is not None else s.mlserver_http_port
    grpc_port = grpc_port if grpc_port is not None else s.mlserver_grpc_port
    if metrics is False:
        metrics_port = None
    elif metrics_port is None:
        metrics_port = s.mlserver_metrics_port
    if metrics and metrics_port is None:
        raise MLServerError("metrics=True needs a metrics port (metrics_port= or RENDEZVOUS_MLSERVER_METRICS_PORT)")
    workers = parallel_workers if parallel_workers is not None else s.mlserver_parallel_workers
    timeout = timeout if timeout is not None else s.startup_timeout_s

    ports = {"HTTP": (http_port, "RENDEZVOUS_MLSERVER_HTTP_PORT"), "gRPC": (grpc_port, "RENDEZVOUS_MLSERVER_GRPC_PORT")}
    if metrics_port is not None:
        ports["metrics"] = (metrics_port, "RENDEZVOUS_MLSERVER_METRICS_PORT")
    if len({p for p, _ in ports.values()}) != len(ports):
        given = ", ".join(f"{k} {p}" for k, (p, _) in ports.items())
        raise MLServerError(f"MLServer needs distinct ports, got {given}")

    pid_file = _pid_file(s, http_port)
    old = read_pid(pid_file)
    if old and pid_alive(old) and _is_mlserver(old):
        raise MLServerError(f"an MLServer started by this project is already running on {host}:{http_port} "
                            f"(pid {old}, {pid_file}). Stop it with `control.runtime.mlserver.stop_recorded({http_port})` "
                            f"or use another port.")
    pid_file.unlink(missing_ok=True)
    for what, (port, env) in ports.items():
        if port_in_use(host, port):
            raise MLServerError(f"MLServer {what} port {host}:{port} is taken by another process. Stop it, or "
                                f"choose another port (argument, or {env}).")

    work_dir = Path(work_dir) if work_dir else s.mlserver_dir / str(http_port)
    work_dir.mkdir(parents=True, exist_ok=True)
    repo_root = work_dir / "repository"
    repo_root.mkdir(exist_ok=True)
    for link in repo_root.iterdir():  # exactly one link: to the models being served now
        if link.is_symlink():
            link.unlink()
    # named like the directory so MLServer's "name differs from folder" check sees the real folder name
    (repo_root / models_dir.name).symlink_to(models_dir, target_is_directory=True)
    server_settings = {
        "host": s.listen_host,  # HTTP and metrics; MLServer binds gRPC to the same host (README, "Listeners")
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_endpoint": "/metrics" if metrics_port is not None else None,  # None: no metrics server
        "parallel_workers": workers,
        "debug": False,
        "load_models_at_startup": True,
        "environments_dir": str(work_dir / ".envs"),
        "metrics_dir": str(work_dir / ".metrics"),
    }
    if metrics_port is not None:
        server_settings["metrics_port"] = metrics_port
    (repo_root / "settings.json").write_text(json.dumps(server_settings, indent=2) + "\n")

    log_file = Path(log_file) if log_file else s.log_dir / f"mlserver-{http_port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    s.pid_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = str(exe.parent) + os.pathsep + env.get("PATH", "")

    say(progress, f"starting MLServer on http://{host}:{http_port} (gRPC {grpc_port}) serving "
                   f"{', '.join(m.name + (f'@{m.version}' if m.version else '') for m in models)}")
    t0 = time.monotonic()
    with open(log_file, "ab") as log:
        log_offset = log.tell()
        proc = subprocess.Popen([str(exe), "start", str(repo_root)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=work_dir, env=env, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    server = MLServerProcess(pid=proc.pid, host=host, http_port=http_port, grpc_port=grpc_port,
                             metrics_port=metrics_port, models_dir=models_dir, work_dir=work_dir, log_file=log_file,
                             models=models, startup_s=0.0, pid_file=pid_file, _proc=proc, _log_offset=log_offset)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        try:
            _kill_group(proc.pid, proc, timeout=5.0)
        finally:
            pid_file.unlink(missing_ok=True)
        raise
    server.startup_s = time.monotonic() - t0
    say(progress, f"MLServer ready in {server.startup_s:.1f}s (pid {proc.pid}, log {log_file})")
    return server


def _wait_ready(server: MLServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = ["/v2/health/ready", *(m.path + "/ready" for m in server.models)]
    last: dict[str, int | None] = {}
    while True:
        if server._proc is not None and server._proc.poll() is not None:
            tail = _log_tail(server.log_file, server._log_offset)
            hint = ""
            if "address already in use" in tail:
                hint = (" One of its ports was taken meanwhile: choose other ports (arguments, or RENDEZVOUS_"
                        "MLSERVER_HTTP_PORT / RENDEZVOUS_MLSERVER_GRPC_PORT / RENDEZVOUS_MLSERVER_METRICS_PORT).")
            raise MLServerError(f"MLServer exited during startup (exit code {server._proc.returncode}).{hint} "
                                f"End of {server.log_file}:\n{tail}")
        while pending:
            code = http_status(server.url + pending[0])
            last[pending[0]] = code
            if code != 200:
                break
            pending.pop(0)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise MLServerError(f"MLServer did not become ready within {timeout:g}s ({pending[0]} answered "
                                f"{last.get(pending[0]) or 'nothing'}). End of {server.log_file}:\n"
                                f"{_log_tail(server.log_file, server._log_offset)}")
        time.sleep(0.1)


def stop(server: MLServerProcess, timeout: float = 15.0) -> None:
    """Stop the server and every process of its group (no orphans). Idempotent."""
    if server.running() or group_members(server.pid):
        _kill_group(server.pid, server._proc, timeout)
    elif server._proc is not None:
        server._proc.poll()
    if server.pid_file is not None and read_pid(server.pid_file) == server.pid:
        server.pid_file.unlink(missing_ok=True)


def stop_recorded(http_port: int | None = None, s: RuntimeSettings | None = None, timeout: float = 15.0) -> bool:
    """Stop an MLServer started by `start` (e.g. by a process that died) from its pid file. True if one ran."""
    s = s or RuntimeSettings()
    http_port = http_port if http_port is not None else s.mlserver_http_port
    pid_file = _pid_file(s, http_port)
    pid = read_pid(pid_file)
    ran = bool(pid and pid_alive(pid) and _is_mlserver(pid))
    if ran:
        _kill_group(pid, None, timeout)
    pid_file.unlink(missing_ok=True)
    return ran


def recorded_ports(s: RuntimeSettings) -> list[int]:
    """HTTP ports of the MLServers whose pid files `start` wrote."""
    out = []
    for pid_file in s.pid_dir.glob("mlserver-*.pid") if s.pid_dir.exists() else []:
        try:
            out.append(int(pid_file.stem.split("-", 1)[1]))
        except ValueError:
            continue
    return sorted(out)
