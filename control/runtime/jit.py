"""How busy a JVM's just-in-time compilers are, from /proc (Linux): the CPU its compiler threads ("C1 CompilerThre",
"C2 CompilerThre") used, and a wait until they are quiet.

A hand-over's new version (control/ops/handover.py) starts at a lower CPU priority; its JVM compiles the code it
runs hot for tens of seconds after it starts (measured with bench.handover --timeline: a median 0.23 CPU s per
second on C2 for about 40 s, more than its task's own thread). Waiting for that to end before the version gets the
normal priority back keeps the compilation at the low priority, instead of beside the answers after the tokens.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterable

COMPILER_THREAD = "CompilerThre"
"""What the names of HotSpot's compiler threads hold (Linux cuts a thread's name to 15 characters)."""


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _tasks(pids: Iterable[int], proc: Path):
    """(pid, the thread's /proc directory, its name) of every thread of these processes that can be read, and
    whether any process could (a process gone yields nothing; a thread that ended while read is skipped)."""
    seen = [False]

    def gen():
        for pid in pids:
            try:
                tasks = list((proc / str(pid) / "task").iterdir())
            except OSError:
                continue
            seen[0] = True
            for task in tasks:
                try:
                    yield pid, task, (task / "comm").read_text()
                except OSError:
                    continue
    return gen(), seen


def compiler_threads(pids: Iterable[int], proc: Path = Path("/proc")) -> dict[tuple[int, int], float] | None:
    """CPU seconds each compiler thread of these processes has used so far, by (pid, thread id); None when none of
    the processes can be read (no /proc, or every one gone). HotSpot starts and ends compiler threads as it needs
    them: compare two readings thread by thread (`compiler_rate`), not by their sums."""
    out: dict[tuple[int, int], float] = {}
    ticks = _ticks()
    threads, seen = _tasks(pids, proc)
    for pid, task, name in threads:
        if COMPILER_THREAD not in name:
            continue
        try:  # after the name, which is in parentheses and may hold either: state, ..., utime (14th), stime (15th)
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[(pid, int(task.name))] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            continue  # the thread ended while read
    return out if seen[0] else None


def compiler_rate(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float], seconds: float) -> float:
    """CPU s per second the compiler threads used between two readings: each thread alive at the second against
    itself at the first (a thread started in between: all of its time); a thread that ended in between is not
    counted (its last moments are lost, not its whole life subtracted)."""
    used = sum(max(0.0, t - before.get(k, 0.0)) for k, t in after.items())
    return used / seconds if seconds > 0 else 0.0


def wait_quiet(pids: list[int], timeout_s: float, below: float = 0.05, for_s: float = 3.0,
               progress: Callable[[str], None] | None = None, clock=time.monotonic, sleep=time.sleep,
               read: Callable[[list[int]], dict | None] = compiler_threads) -> tuple[float, bool]:
    """Wait until the compiler threads of `pids` used less than `below` CPU s per second over the last `for_s`
    (> 0) seconds, at most `timeout_s`; (seconds waited, quiet). Not quiet when they cannot be read."""
    if for_s <= 0:
        raise ValueError(f"for_s must be positive, not {for_s}")
    t0 = clock()
    samples: list[tuple[float, dict]] = []  # (when, CPU s used so far by thread)
    said = t0
    while True:
        used = read(pids)
        now = clock()
        if used is None:
            return now - t0, False
        samples.append((now, used))
        window = [x for x in samples if x[0] <= now - for_s]
        if window:  # the rate over the last for_s seconds (or a little more)
            since, was = window[-1]
            rate = compiler_rate(was, used, now - since)
            if rate < below:
                return now - t0, True
            if progress and now - said >= 10:
                progress(f"the new version's JIT compilers use {rate:.2f} CPU s per second; waiting for less than "
                         f"{below} ({now - t0:.0f} s, at most {timeout_s:.0f})")
                said = now
        if now - t0 >= timeout_s:
            return now - t0, False
        sleep(1.0)


C2_THREAD = "C2 CompilerThre"
"""HotSpot's optimizing compiler's threads (C1's, the quick compiler's, are "C1 CompilerThre")."""


def compiler_tids(pids: Iterable[int], kind: str = C2_THREAD, proc: Path = Path("/proc")) -> list[int]:
    """The thread ids of these processes' compiler threads of one kind (by their name's start)."""
    return [int(task.name) for _, task, name in _tasks(pids, proc)[0] if name.startswith(kind)]


class HeldCompilers:
    """The optimizing (C2) compiler threads of a new version's JVMs at a low CPU priority while it takes over: they
    then yield the CPU to the threads that answer, instead of competing with them (in the transition's slow seconds
    of one run, a new version's C2 thread used 0.17-0.44 CPU s per second: bench.handover --timeline). Its quick
    compiler (C1) keeps the normal priority.

    Each second until `release`, every C2 thread of `pids` gets `nice` and, where this process may place threads in
    CPU groups, the group of that nice (control.runtime.priority): HotSpot starts and ends compiler threads as it
    needs them, so the set is read again each time. `release` gives every thread of `pids` the normal priority back
    and takes them out of the groups (a thread a held one started inherited its priority and group, whatever its
    kind); that needs root (`priority.can_renice`)."""

    def __init__(self, pids: list[int], nice: int, kind: str = C2_THREAD,
                 apply: Callable[[int, int], None] | None = None, tids: Callable[[list[int]], list[int]] | None = None,
                 give_back: Callable[[int], object] | None = None):
        import threading

        from control.runtime import priority

        self.pids, self.nice, self.kind = pids, nice, kind
        self._apply = apply or _set_thread
        self._tids = tids or (lambda p: compiler_tids(p, kind))
        self._give_back = give_back or (lambda pid: priority.set_process(pid, 0))
        self.held: set[int] = set()
        self._released = False
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="held-compilers")
        self._hold()
        self._thread.start()

    def _hold(self) -> None:
        with self._lock:
            if self._halt.is_set():
                return
            for tid in self._tids(self.pids):
                if tid not in self.held:
                    self._apply(tid, self.nice)
                    self.held.add(tid)

    def _run(self) -> None:
        while not self._halt.wait(1.0):
            self._hold()

    def release(self) -> int:
        """Give every thread of the processes the normal priority back, out of the groups; how many compiler
        threads were held in all. A second call does nothing, unless the first was interrupted."""
        with self._lock:
            self._halt.set()  # nothing is lowered from now on
            if not self._released:
                for pid in self.pids:
                    self._give_back(pid)
                self._released = True
        self._thread.join(5)
        return len(self.held)


def _set_thread(tid: int, nice: int) -> None:
    from control.runtime import priority

    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:
        return  # ended meanwhile
    if priority.in_root_group(tid):
        priority.join(tid, nice, "tasks")
