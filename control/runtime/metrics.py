"""The Prometheus scrape endpoints of the embedded Flink cluster (README, "Exported metrics (Prometheus)").

`rendezvous up` configures Flink's Prometheus reporter (flink-conf/config.yaml, `metrics.reporter.prom`) with a
port range, RENDEZVOUS_PROMETHEUS_PORTS: the JobManager and each TaskManager take the first free port of it,
so which process serves which port is only known at run time. `endpoints` finds out from the processes
themselves: the socket each one listens on within the range (psutil, like `tests/e2e/test_listeners.py`).
`parse` reads what an endpoint serves (the Prometheus text format), for the tests and quick looks.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

from control.runtime.flink import flink_pid_files, live_taskmanagers
from control.runtime.process import pid_alive, read_pid
from control.settings import RuntimeSettings


@dataclass(frozen=True)
class Endpoint:
    role: str
    """`jobmanager` or `taskmanager`."""
    pid: int
    url: str | None
    """`http://HOST:PORT/metrics`, or None: the process serves no metrics (e.g. no port of the range was free
    when it started; its log says so)."""


def reporter_ports(listening: Iterable[tuple[str, int]], ports: range) -> list[tuple[str, int]]:
    """The (address, port) pairs among a process's listening sockets that are in the reporter's port range."""
    return sorted({(ip, port) for ip, port in listening if port in ports}, key=lambda a: a[1])


def endpoint_url(ip: str, port: int, host: str) -> str:
    """The scrape URL of a reporter listening on ip:port: `host` (the advertised address) if it listens on
    every interface, else the address it listens on (an IPv4-mapped IPv6 address as IPv4)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified:
        shown = host
    else:
        shown = str(addr)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/metrics"


def _listening(pid: int) -> list[tuple[str, int]]:
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []
    return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]


def endpoints(s: RuntimeSettings | None = None) -> list[Endpoint]:
    """The scrape endpoint of the JobManager and of each TaskManager this machine runs (`rendezvous up`'s, then
    those started for thread-mode jobs), in that order; a process without one has `url` None."""
    s = s or RuntimeSettings()
    procs = []
    jpid = read_pid(flink_pid_files(s)["jobmanager"])
    if jpid and pid_alive(jpid):
        procs.append(("jobmanager", jpid))
    procs += [("taskmanager", pid) for pid in live_taskmanagers(s)]
    from control.runtime import (
        pinned,  # a thread-mode job's own TaskManagers (the rendezvous's counters are there)
    )

    procs += [("taskmanager", pid) for pin in pinned.pins(s) for pid in pinned.pids(s, pin) if pid_alive(pid)]
    out = []
    for role, pid in procs:
        found = reporter_ports(_listening(pid), s.prometheus_port_range)
        out += [Endpoint(role, pid, endpoint_url(ip, port, s.host)) for ip, port in found] or \
            [Endpoint(role, pid, None)]
    return out


# ---------------------------------------------------------------------------------------------
# the Prometheus text format
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _labels(text: str) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            if text[pos:].strip(" ,"):
                raise ValueError(f"unreadable labels: {text!r}")
            break
        out[m.group(1)] = re.sub(r'\\[\\"n]', lambda e: _ESCAPES[e.group(0)], m.group(2))
        pos = m.end()
    return out


def parse(text: str) -> list[Sample]:
    """The samples of a scrape in the Prometheus text exposition format (comments and blank lines skipped)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        out.append(Sample(m.group(1), float(m.group(3)), _labels(m.group(2) or "")))
    return out


def scrape(url: str, timeout: float = 10.0) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode("utf-8"))
