"""CPU priorities for work that must not slow the version serving: a hand-over's new version starting and catching
up (control.ops.handover), the old version's last savepoint.

Linux gives each thread a nice value, but where the kernel groups tasks by session
(`/proc/sys/kernel/sched_autogroup_enabled` = 1, as on this machine's kernel) it first shares the CPU equally between
sessions, then ranks threads by nice only within a session: a process at nice 19 in a session of its own takes as
much CPU from a busy serving thread as one at nice 0 (`python -m bench.wakeups`), and one in the serving session at
nice 19 leaves it alone. The session a process runs in is where it was started (a hand-over's new version: the
session of `rendezvous upgrade`), so the nice value alone promises nothing.

A CPU control group does: a process moved into one is scheduled as part of that group, whatever its session, and the
group competes with the rest of the machine with the weight of its nice value (cgroup v1 `cpu.shares`, the kernel's
nice-to-weight table). So, where this process may write the cgroup v1 `cpu` hierarchy (root, `CPU_CGROUPS`), a process
started at a lowered priority is also moved into the group `rendezvous-nice<N>`, and a process given its priority back
is moved back to the root group (its session's share again, as if never moved). Elsewhere only the nice value
changes (what was measured in `bench.handover` before this module).

`lowered(nice)` lowers the calling thread; `spawn`/`run` start processes at the thread's priority; `set_process`
changes a running process's."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path

AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")
"""The cgroup v1 `cpu` hierarchy (cgroup v2 is not handled: there only the nice value changes)."""
GROUP_PREFIX = "rendezvous-nice"

NICE_WEIGHT = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15)
"""The kernel's CPU weight of nice 0..19 (sched_prio_to_weight): a group at `NICE_WEIGHT[n]` competes with a session
at nice 0 as a thread at nice n competes with one at nice 0."""

_thread = threading.local()


def can_renice() -> bool:
    """Whether this process may give a process it started at a lower CPU priority its normal one back (raising a
    priority needs root or CAP_SYS_NICE)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def sessions_grouped() -> bool:
    """Whether the kernel shares the CPU between sessions first (autogroup), nice ranking only within one."""
    try:
        return AUTOGROUP_SWITCH.read_text().strip() == "1"
    except OSError:
        return False


def cpu_groups() -> bool:
    """Whether this process can place processes in CPU control groups of its own (cgroup v1 `cpu`, writable)."""
    return (CPU_CGROUPS / "cgroup.procs").is_file() and os.access(CPU_CGROUPS, os.W_OK)


def current() -> int:
    """How much the calling thread's priority was lowered by `lowered` (0: not)."""
    return getattr(_thread, "nice", 0)


@contextlib.contextmanager
def lowered(nice: int):
    """Run the block with the calling thread's CPU priority lowered by `nice` (Linux: per thread; the threads it
    starts inherit it, the processes it starts with `spawn`/`run` get it and its CPU group), then give the thread its
    priority back (which needs `can_renice`). 0: unchanged."""
    if not nice:
        yield
        return
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    os.setpriority(os.PRIO_PROCESS, tid, min(19, before + nice))
    outer = current()
    _thread.nice = nice
    try:
        yield
    finally:
        _thread.nice = outer
        os.setpriority(os.PRIO_PROCESS, tid, before)


def group_of(pid: int) -> str | None:
    """The cgroup v1 `cpu` group `pid` is in ("/" for the root one), None where there is none to read."""
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(","):
                return path
    except (OSError, ValueError):
        pass
    return None


def move(pid: int, nice: int) -> bool:
    """Move the process (all its threads; what it starts later follows) into the CPU group of `nice`
    (`rendezvous-nice<N>`, weight `NICE_WEIGHT[N]`), or back to the root group for 0; whether it was moved."""
    if not cpu_groups():
        return False
    group = CPU_CGROUPS
    if nice > 0:
        group = CPU_CGROUPS / f"{GROUP_PREFIX}{min(19, nice)}"
        try:
            group.mkdir(exist_ok=True)
            (group / "cpu.shares").write_text(str(NICE_WEIGHT[min(19, nice)]))
        except OSError:
            return False
    elif not (group_of(pid) or "/").startswith(f"/{GROUP_PREFIX}"):
        return False  # not in a group of ours: where it was started, leave it there
    try:
        (group / "cgroup.procs").write_text(str(pid))
        return True
    except OSError:
        return False  # ended meanwhile


def spawn(cmd: list[str], **popen) -> subprocess.Popen:
    """`subprocess.Popen` at the calling thread's priority: when `lowered`, its threads' nice value and (`move`) its
    CPU group, so that it yields the CPU to the version serving whatever session each runs in."""
    proc = subprocess.Popen(cmd, **popen)
    if current():
        move(proc.pid, current())  # what it starts from now on is in the group too
    return proc


def run(cmd: list[str], timeout: float | None = None, **popen) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True, timeout=...)` through `spawn`; killed on timeout or on
    any interruption of the caller."""
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def set_process(pid: int, nice: int) -> int:
    """Set the CPU priority of every thread of `pid`, and its CPU group (`move`: the group of `nice`, or for 0 out of
    ours); returns the threads changed."""
    n = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            n += 1
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    move(pid, nice)
    return n
