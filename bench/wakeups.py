"""`python -m bench.wakeups`: does a lower CPU priority keep CPU-bound work out of a serving thread's way on this
machine? A "serving" thread works 5 ms of CPU every 20 ms (as a job handles a batch) and measures how long each
5 ms took end to end (the wait for a CPU included): idle, and beside one spinning process per core, at nice 19 or 0,
started in this process's session or in a session of its own.

The session matters where the kernel groups tasks by session (`/proc/sys/kernel/sched_autogroup_enabled` = 1): each
session then gets an equal share of the CPU, and a nice value ranks threads only within their own session. A new
version started by a hand-over runs in the session of the process that started it, the version serving in others
(bench.handover)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

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


def beside(nice: int | None, own_session: bool, seconds: float) -> list[float]:
    """`serving` beside one spinning process per core at `nice` (None: none)."""
    hogs = [] if nice is None else [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.nice(nice), start_new_session=own_session)
        for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5 if hogs else 0)
        return serving(seconds)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per condition")
    a = p.parse_args(argv)
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    grouped = autogroup.exists() and autogroup.read_text().strip() == "1"
    print(f"{WORK_S * 1000:g} ms of CPU work every {PERIOD_S * 1000:g} ms, how long it took; {os.cpu_count()} cores, "
          f"{a.seconds:g} s each; tasks grouped by session: {'yes' if grouped else 'no'}\n")
    print("| beside | samples | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    for label, nice, own in (("nothing", None, False),
                             ("a spinning process per core, nice 19, this session", 19, False),
                             ("a spinning process per core, nice 19, a session of its own", 19, True),
                             ("a spinning process per core, nice 0, a session of its own", 0, True)):
        took = beside(nice, own, a.seconds)
        print(f"| {label} | {len(took)} | {percentile(took, 0.5)} | {percentile(took, 0.99)} | {max(took):.1f} |")


if __name__ == "__main__":
    main()
