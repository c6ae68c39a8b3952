"""Start and stop a gateway process (`python -m gateway.server`, README "The gateway"): for `up --gateway`, the
benchmark and the tests. Its pid file is run/pids/gateway-<port>.pid, its log run/logs/gateway-<port>.log;
`down` stops every gateway whose pid file is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from control.errors import RuntimeStartError
from control.runtime.process import (
    Progress,
    cmdline_contains,
    http_status,
    pid_alive,
    port_in_use,
    read_pid,
    say,
    terminate_tree,
)
from control.settings import RuntimeSettings

MODULE = "gateway.server"


@dataclass
class GatewayProcess:
    pid: int
    url: str
    port: int
    log_file: Path
    pid_file: Path
    _proc: subprocess.Popen | None = field(default=None, repr=False)  # set when this process started it

    def running(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        stop(self, timeout)

    def __enter__(self) -> "GatewayProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _pid_file(s: RuntimeSettings, port: int) -> Path:
    return s.pid_dir / f"gateway-{port}.pid"


def _is_gateway(pid: int) -> bool:
    return cmdline_contains(pid, MODULE)


def start(s: RuntimeSettings | None = None, *, port: int | None = None, rendezvous: dict | None = None,
          env: dict[str, str] | None = None, timeout: float | None = None,
          progress: Progress | None = None) -> GatewayProcess:
    """Start a gateway and wait until it is ready. `rendezvous`: the served rendezvous by name, each a dict of
    its `requests`, `answers` and `schedules` topics (default: one, `rendezvous`, on the default topics); `env`:
    more RENDEZVOUS_GATEWAY_* settings."""
    s = s or RuntimeSettings()
    port = port if port is not None else s.gateway_port
    timeout = timeout if timeout is not None else s.startup_timeout_s
    pid_file = _pid_file(s, port)
    old = read_pid(pid_file)
    if old and pid_alive(old) and _is_gateway(old):
        raise RuntimeStartError(f"a gateway started by this project already runs on port {port} (pid {old}); "
                                f"stop it (`rendezvous down`) or choose another port (RENDEZVOUS_GATEWAY_PORT)")
    if port_in_use(s.host, port):
        raise RuntimeStartError(f"port {s.host}:{port} is taken by another process. Stop it, or choose another "
                                f"port with RENDEZVOUS_GATEWAY_PORT.")
    child_env = {**os.environ, "RENDEZVOUS_GATEWAY_PORT": str(port), **(env or {})}
    if rendezvous is not None:
        child_env["RENDEZVOUS_GATEWAY_RENDEZVOUS"] = json.dumps(rendezvous)
    s.log_dir.mkdir(parents=True, exist_ok=True)
    s.pid_dir.mkdir(parents=True, exist_ok=True)
    log_file = s.log_dir / f"gateway-{port}.log"
    url = f"http://{s.host}:{port}"
    say(progress, f"starting the gateway on {url} (log {log_file})")
    with open(log_file, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", MODULE], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=s.home, env=child_env, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    gw = GatewayProcess(pid=proc.pid, url=url, port=port, log_file=log_file, pid_file=pid_file, _proc=proc)
    deadline = time.monotonic() + timeout
    while http_status(f"{url}/v2/health/ready") != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_file.read_text(errors="replace")[-3000:]
            stop(gw, 5.0)
            raise RuntimeStartError(f"the gateway {'exited' if proc.returncode is not None else 'was not ready'} "
                                    f"(see {log_file}):\n{tail}")
        time.sleep(0.1)
    say(progress, f"gateway ready on {url} (pid {proc.pid})")
    return gw


def stop(gw: GatewayProcess, timeout: float = 15.0) -> None:
    if gw.running() and _is_gateway(gw.pid):
        terminate_tree(gw.pid, timeout)
    if gw._proc is not None:
        gw._proc.poll()  # reap it
    if read_pid(gw.pid_file) == gw.pid:
        gw.pid_file.unlink(missing_ok=True)


def recorded(s: RuntimeSettings) -> list[GatewayProcess]:
    """The gateways whose pid files are in run/pids (alive or not)."""
    out = []
    for pid_file in sorted(s.pid_dir.glob("gateway-*.pid")) if s.pid_dir.exists() else []:
        pid = read_pid(pid_file)
        try:
            port = int(pid_file.stem.split("-", 1)[1])
        except ValueError:
            continue
        if pid:
            out.append(GatewayProcess(pid=pid, url=f"http://{s.host}:{port}", port=port,
                                      log_file=s.log_dir / f"gateway-{port}.log", pid_file=pid_file))
        else:
            pid_file.unlink(missing_ok=True)
    return out


def ready(gw: GatewayProcess) -> bool:
    return gw.running() and http_status(f"{gw.url}/v2/health/ready") == 200
