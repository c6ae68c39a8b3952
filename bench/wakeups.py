"""`python -m bench.wakeups`: does a lower CPU priority keep CPU-bound work out of a serving thread's way on this
machine? A thread that sleeps 5 ms in a loop measures how late it wakes up: idle, beside one CPU-bound process per
core at nice 19 (as a hand-over's new version could be started), and beside as many at nice 0.

If the nice-19 column matches the idle one, the priority works for CPU time, and a slowdown the version serving sees
while another starts (bench.handover) is not for want of CPU time."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from tools.load import percentile

SPIN = "while True: pass"


def lateness(seconds: float, period_s: float = 0.005) -> list[float]:
    """How late (ms) each wake-up of a thread sleeping `period_s` came, for `seconds`."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        time.sleep(period_s)
        out.append((time.monotonic() - t - period_s) * 1000)
    return out


def beside(nice: int | None, seconds: float) -> list[float]:
    """`lateness` beside one spinning process per core at `nice` (None: none)."""
    hogs = [] if nice is None else [
        subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.nice(nice))
        for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.5 if hogs else 0)
        return lateness(seconds)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per condition")
    a = p.parse_args(argv)
    print(f"wake-up lateness of a nice-0 thread sleeping 5 ms, {os.cpu_count()} cores, {a.seconds:g} s each\n")
    print("| beside | wake-ups | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    for label, nice in (("nothing", None), ("a spinning process per core at nice 19", 19),
                        ("a spinning process per core at nice 0", 0)):
        lat = beside(nice, a.seconds)
        print(f"| {label} | {len(lat)} | {percentile(lat, 0.5)} | {percentile(lat, 0.99)} | {max(lat):.1f} |")


if __name__ == "__main__":
    main()
