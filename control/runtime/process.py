"""Process supervision shared by the Kafka, Flink and MLServer supervisors (psutil, pid files, ports)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable

import psutil

from control.errors import RuntimeStartError

Progress = Callable[[str], None]


def say(progress: Progress | None, msg: str) -> None:
    if progress:
        progress(msg)


def pid_alive(pid: int) -> bool:
    """A running (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def cmdline_contains(pid: int, needle: str) -> bool:
    try:
        return any(needle in part for part in psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status a GET of `url` answers with; None when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeStartError(f"timed out after {timeout:.0f}s waiting for {what}")


def descendants(pid: int) -> list[int]:
    """All descendants of pid, e.g. the Python workers a TaskManager started."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def terminate_tree(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process and its descendants, wait up to timeout, then SIGKILL what is left."""
    terminate_trees([pid], timeout)


def terminate_trees(pids: list[int], timeout: float = 15.0) -> None:
    """`terminate_tree` of several processes at once: all are sent SIGTERM first and shut down side by side (a
    JVM takes seconds to), then waited for together, up to timeout; what is left is SIGKILLed."""
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    if not procs:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (a server started with start_new_session and its workers)."""
    import os

    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return out
