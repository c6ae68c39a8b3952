"""CPU used by each process of the system during a measurement (psutil), for ms of CPU per request.

Labels: the Flink TaskManager JVMs (the shared one, and those of the thread-mode jobs, whose Python runs
inside them: control.runtime.pinned), each process-mode Python worker (model jobs), the JobManager, the
Kafka broker, MLServer (with its workers), gateways, and this process (the load generator)."""

from __future__ import annotations

import os

import psutil

from control.runtime import gateway, pinned
from control.runtime.flink import flink_pid_files
from control.runtime.kafka import KAFKA_PID
from control.runtime.mlserver import recorded_ports
from control.runtime.process import read_pid
from control.settings import RuntimeSettings


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def snapshot(s: RuntimeSettings) -> dict[str, float]:
    """Seconds of CPU used so far by each labelled process."""
    out: dict[str, float] = {}
    pids = flink_pid_files(s)
    for label, path in (("taskmanager jvm", pids["taskmanager"]), ("jobmanager", pids["jobmanager"]),
                        ("kafka", s.pid_dir / KAFKA_PID)):
        pid = read_pid(path)
        if not pid or not psutil.pid_exists(pid):
            continue
        proc = psutil.Process(pid)
        out[label] = _cpu(proc)
        if label == "taskmanager jvm":
            for child in proc.children(recursive=True):
                name = " ".join(child.cmdline()[:3]) if child.is_running() else ""
                if "python" in name or "beam" in name or "pyflink" in name:
                    out[f"python worker {child.pid}"] = _cpu(child)
    for pin in pinned.pins(s):  # a thread-mode job's own TaskManagers (its Python runs in their JVMs)
        for pid in pinned.pids(s, pin):
            if psutil.pid_exists(pid):
                out["taskmanager jvm"] = out.get("taskmanager jvm", 0.0) + _cpu(psutil.Process(pid))
    for port in recorded_ports(s):
        pid = read_pid(s.pid_dir / f"mlserver-{port}.pid")
        if pid and psutil.pid_exists(pid):
            proc = psutil.Process(pid)
            out["mlserver"] = _cpu(proc) + sum(_cpu(c) for c in proc.children(recursive=True))
    for gw in gateway.recorded(s):  # gateways (the benchmark's own, `up --gateway`'s)
        if psutil.pid_exists(gw.pid):
            out["gateway"] = out.get("gateway", 0.0) + _cpu(psutil.Process(gw.pid))
    out["load generator"] = _cpu(psutil.Process(os.getpid()))
    return out


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """ms of CPU per request by process between two snapshots, and the total."""
    if requests <= 0:
        return {}
    out = {k: round(1000 * (after[k] - before.get(k, 0.0)) / requests, 3) for k in after}
    out = {k: v for k, v in out.items() if v > 0}
    out["total"] = round(sum(out.values()), 3)
    return out
