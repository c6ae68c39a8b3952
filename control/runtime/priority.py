"""CPU priorities for work that must not slow the version serving: a hand-over's new version starting and catching
up (control.ops.handover), the old version's last savepoint.

Linux gives each thread a nice value, but where the kernel groups tasks by session
(`/proc/sys/kernel/sched_autogroup_enabled` = 1, as on this machine's kernel) it first shares the CPU equally between
sessions, then ranks threads by nice only within a session: a process at nice 19 in a session of its own takes as
much CPU from a busy serving thread as one at nice 0 (`python -m bench.wakeups`), and one in the serving session at
nice 19 leaves it alone. The session a process runs in is where it was started (a hand-over's new version: the
session of `rendezvous upgrade`), so the nice value alone promises nothing.

A CPU control group does: a thread moved into one is scheduled as part of that group, whatever its session, and the
group competes with the rest of the machine with the weight of its nice value (cgroup v1 `cpu.shares`, the kernel's
nice-to-weight table). So, where this process may write the cgroup v1 `cpu` hierarchy (root, `CPU_CGROUPS`) and its
thread is in that hierarchy's root group, the lowered thread itself joins the group `rendezvous-nice<N>`: every
process it starts is born there (no window in which a child runs outside it), and a process given its priority back
goes to the root group (its session's share again, as if never moved). Elsewhere only the nice value changes.

`lowered(nice)` lowers the calling thread and what it starts; `set_process` changes a running process's priority."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")
CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")
"""The cgroup v1 `cpu` hierarchy (cgroup v2 is not handled: there only the nice value changes)."""
GROUP_PREFIX = "rendezvous-nice"

NICE_WEIGHT = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15)
"""The kernel's CPU weight of nice 0..19 (sched_prio_to_weight): a group at `NICE_WEIGHT[n]` competes with a session
at nice 0 as a thread at nice n competes with one at nice 0."""


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
    return (CPU_CGROUPS / "cpu.shares").is_file() and os.access(CPU_CGROUPS, os.W_OK)


@contextlib.contextmanager
def lowered(nice: int):
    """Run the block with the calling thread's CPU priority lowered by `nice` (Linux: per thread), in the CPU group of
    that priority where it may (`join`); the threads and processes it starts inherit both. Then give the thread its
    priority back (which needs `can_renice`) and take it out of the group. 0: unchanged.

    What was started in the block keeps both until it is given its priority back (`set_process`): a thread of this
    process started there (a client's I/O thread) stays in the group while the process lives. A block within a block
    keeps the outer one's group."""
    if not nice:
        yield
        return
    tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, tid)
    joined = False
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, before + nice))
        joined = in_root_group(tid) and join(tid, min(19, before + nice), "tasks")
        yield
    finally:
        if joined:
            join(tid, 0, "tasks")
        os.setpriority(os.PRIO_PROCESS, tid, before)


def _ids(path: Path) -> set[int]:
    try:
        return {int(x) for x in path.read_text().split()}
    except (OSError, ValueError):
        return set()


def in_root_group(id_: int, what: str = "tasks") -> bool:
    """Whether the thread (or, `what` = "cgroup.procs", the process) is in the root group of the `cpu` hierarchy
    this process sees (`CPU_CGROUPS`)."""
    return cpu_groups() and id_ in _ids(CPU_CGROUPS / what)


def in_our_group(id_: int, what: str = "cgroup.procs") -> bool:
    """Whether the process (or, `what` = "tasks", the thread; a process is in a group when any of its threads is) is
    in one of the groups `join` makes."""
    return any(id_ in _ids(g / what) for g in CPU_CGROUPS.glob(f"{GROUP_PREFIX}*"))


def join(id_: int, nice: int, what: str = "cgroup.procs") -> bool:
    """Move a process (`what` = "cgroup.procs": all its threads) or one thread ("tasks") into the CPU group of `nice`
    (`rendezvous-nice<N>`, weight `NICE_WEIGHT[N]`), or for 0 to the root group; whether it was moved. What it starts
    from then on is born in the same group."""
    if not cpu_groups():
        return False
    group = CPU_CGROUPS if nice <= 0 else CPU_CGROUPS / f"{GROUP_PREFIX}{min(19, nice)}"
    for _ in range(2):  # a second time if another stack's `remove_groups` took the group away in between
        try:
            if nice > 0:
                group.mkdir(exist_ok=True)
                (group / "cpu.shares").write_text(str(NICE_WEIGHT[min(19, nice)]))
            (group / what).write_text(str(id_))
            return True
        except FileNotFoundError:
            continue
        except OSError:
            return False  # ended meanwhile, or not ours to move
    return False


def move(pid: int, nice: int) -> bool:
    """Move a running process into the CPU group of `nice`, from the root group or one of ours; for 0, out of ours
    back to the root group. A process elsewhere (placed by someone else) is left where it is. Whether it moved."""
    if not (in_our_group(pid) or (nice > 0 and in_root_group(pid, "cgroup.procs"))):
        return False
    return join(pid, nice)


def remove_groups() -> None:
    """Remove the CPU groups of `move` that nothing is in any more (`rendezvous down`); one in use stays."""
    if cpu_groups():
        for group in CPU_CGROUPS.glob(f"{GROUP_PREFIX}*"):
            try:
                group.rmdir()
            except OSError:
                continue


def set_process(pid: int, nice: int) -> int:
    """Set the CPU priority of every thread of `pid`, and its CPU group (`move`: the group of `nice`, or for 0 out of
    ours); returns the threads changed. The threads are listed again until none is new: one started meanwhile by a
    thread not yet changed has the old priority (a busy JVM starts threads all the time)."""
    done: set[str] = set()
    seen: set[str] = set()
    for i in range(3):
        try:
            tids = set(os.listdir(f"/proc/{pid}/task")) - seen
        except OSError:
            if i == 0:
                return 0  # no such process
            break
        if not tids:
            break
        seen |= tids
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
                done.add(tid)
            except (OSError, ValueError):
                continue  # a thread that ended meanwhile
    move(pid, nice)
    return len(done)
