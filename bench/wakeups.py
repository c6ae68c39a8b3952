"""`python -m bench.wakeups`: does a lower CPU priority keep CPU-bound work out of a serving thread's way on this
machine? A "serving" thread works 5 ms of CPU every 20 ms (as a job handles a batch) and measures how long each
5 ms took end to end (the wait for a CPU included): idle, and beside one spinning process per core, at nice 19 or 0,
started in this process's session or in a session of its own.

The session matters where the kernel groups tasks by session (`/proc/sys/kernel/sched_autogroup_enabled` = 1): each
session then gets an equal share of the CPU, and a nice value ranks threads only within their own session. A hand-over
therefore also moves its new version into a CPU group with the weight of its lower priority, where it may
(control.runtime.priority): the last condition here."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from control.runtime import priority
from tools.load import percentile

SPIN = "while True: pass"
WORK_S, PERIOD_S = 0.005, 0.020


def serving(seconds: float) -> list[float]:
    """How long (ms) each WORK_S of CPU work took, every PERIOD_S, for `seconds`."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        c = time.thread_time()
        while time.thread_time() - c < WORK_S:
            pass
        out.append((time.monotonic() - t) * 1000)
        time.sleep(max(0.0, PERIOD_S - (time.monotonic() - t)))
    return out


def beside(nice: int | None, own_session: bool, seconds: float, grouped: bool = False) -> list[float]:
    """`serving` beside one spinning process per core at `nice` (None: none); `grouped`: moved into the CPU group of
    that priority too (control.runtime.priority, as a hand-over's new version is)."""
    hogs = [] if nice is None else [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.nice(nice), start_new_session=own_session)
        for _ in range(os.cpu_count() or 1)]
    try:
        if grouped and not all(priority.move(h.pid, nice) for h in hogs):
            raise SystemExit(f"could not move the spinning processes into a CPU group ({priority.CPU_CGROUPS})")
        time.sleep(0.5 if hogs else 0)
        return serving(seconds)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        priority.remove_groups()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per condition")
    a = p.parse_args(argv)
    grouped = priority.sessions_grouped()
    print(f"{WORK_S * 1000:g} ms of CPU work every {PERIOD_S * 1000:g} ms, how long it took; {os.cpu_count()} cores, "
          f"{a.seconds:g} s each; tasks grouped by session: {'yes' if grouped else 'no'}\n")
    print("| beside | samples | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    conditions = [("nothing", None, False, False),
                  ("a spinning process per core, nice 19, this session", 19, False, False),
                  ("a spinning process per core, nice 19, a session of its own", 19, True, False),
                  ("a spinning process per core, nice 0, a session of its own", 0, True, False)]
    if priority.cpu_groups():
        conditions.append(("a spinning process per core, nice 19, a session of its own, in the CPU group of nice 19",
                           19, True, True))
    for label, nice, own, in_group in conditions:
        took = beside(nice, own, a.seconds, in_group)
        print(f"| {label} | {len(took)} | {percentile(took, 0.5)} | {percentile(took, 0.99)} | {max(took):.1f} |")


if __name__ == "__main__":
    main()
