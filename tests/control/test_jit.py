"""control.runtime.jit: the CPU of a JVM's compiler threads from /proc, and the wait until they are quiet."""

from __future__ import annotations

import os

import pytest

from control.runtime import jit


def fake_proc(root, threads: dict[int, dict[int, tuple[str, int, int]]]):
    """A /proc with threads {pid: {tid: (name, utime ticks, stime ticks)}}."""
    for pid, tasks in threads.items():
        for tid, (name, utime, stime) in tasks.items():
            d = root / str(pid) / "task" / str(tid)
            d.mkdir(parents=True)
            (d / "comm").write_text(name + "\n")
            rest = " ".join(["S"] + ["0"] * 10 + [str(utime), str(stime)] + ["0"] * 30)
            (d / "stat").write_text(f"{tid} ({name}) {rest}\n")  # the name has spaces: fields count from ")"


def test_only_the_compiler_threads_of_the_given_processes_count(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    fake_proc(tmp_path, {10: {10: ("java", 500, 500), 11: ("C2 CompilerThre", 2 * tick, tick),
                              12: ("C1 CompilerThre", tick, 0), 13: ("GC Thread#0", 7 * tick, 0)},
                         20: {21: ("C2 CompilerThre", 100 * tick, 0)}})
    assert jit.compiler_threads([10], proc=tmp_path) == {(10, 11): 3.0, (10, 12): 1.0}
    assert jit.compiler_threads([10, 20], proc=tmp_path) == {(10, 11): 3.0, (10, 12): 1.0, (20, 21): 100.0}
    assert jit.compiler_threads([99], proc=tmp_path) is None  # gone: nothing to read
    assert jit.compiler_threads([99, 10], proc=tmp_path) == {(10, 11): 3.0, (10, 12): 1.0}


def test_a_thread_that_ends_while_read_is_skipped(tmp_path):
    fake_proc(tmp_path, {10: {11: ("C2 CompilerThre", 5, 5), 12: ("C1 CompilerThre", 5, 5)}})
    (tmp_path / "10" / "task" / "11" / "stat").unlink()
    assert list(jit.compiler_threads([10], proc=tmp_path)) == [(10, 12)]


def test_this_machines_proc_reads_as_a_process_without_compiler_threads():
    # this Python process has no thread named like HotSpot's compilers: read, and empty (a JVM's: tests/e2e)
    assert jit.compiler_threads([os.getpid()]) == {}


def test_the_rate_compares_each_thread_with_itself():
    before = {(1, 1): 10.0, (1, 2): 50.0}
    # thread 2 ended (its 50 s are not subtracted), thread 3 started (all of its 1 s counts), thread 1 used 2 s
    assert jit.compiler_rate(before, {(1, 1): 12.0, (1, 3): 1.0}, 3.0) == 1.0
    assert jit.compiler_rate(before, before, 0.0) == 0.0


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def run(rates: list[float], timeout: float, ends_at: int | None = None, **kw) -> tuple[float, bool]:
    """wait_quiet against a compiler thread using rates[i] CPU s in second i (then the last rate), beside an idle
    one with 3 s of CPU that ends at second `ends_at`."""
    clock = Clock()

    def read(_pids):
        whole = int(clock.t)
        busy = {(1, 1): sum(rates[min(i, len(rates) - 1)] for i in range(whole))}
        return busy if ends_at is not None and whole >= ends_at else {**busy, (1, 2): 3.0}

    return jit.wait_quiet([1], timeout, clock=clock, sleep=clock.sleep, read=read, **kw)


def test_it_waits_until_the_rate_over_the_last_seconds_is_low():
    # busy for 10 s, then quiet: the 3 s window holds only quiet seconds at 13 s
    assert run([0.3] * 10 + [0.0], timeout=60) == (13.0, True)


def test_an_idle_compiler_thread_that_ends_does_not_hide_a_busy_one():
    assert run([0.3], timeout=20, ends_at=5) == (20.0, False)


def test_quiet_from_the_start_returns_after_one_window():
    assert run([0.0], timeout=60) == (3.0, True)


def test_it_gives_up_at_the_timeout():
    assert run([0.3], timeout=20) == (20.0, False)


def test_unreadable_is_not_quiet_and_a_window_must_be_positive():
    clock = Clock()
    assert jit.wait_quiet([1], 60, clock=clock, sleep=clock.sleep, read=lambda _p: None) == (0.0, False)
    with pytest.raises(ValueError):
        jit.wait_quiet([1], 60, for_s=0)


def test_progress_every_ten_seconds():
    said: list[str] = []
    run([0.3], timeout=25, progress=said.append)
    assert len(said) == 2 and "0.30 CPU s per second" in said[0]


def test_the_optimizing_compilers_threads_are_found_by_name(tmp_path):
    fake_proc(tmp_path, {10: {10: ("java", 1, 1), 11: ("C2 CompilerThre", 1, 1), 12: ("C1 CompilerThre", 1, 1)},
                         20: {21: ("C2 CompilerThre", 1, 1)}})
    assert sorted(jit.compiler_tids([10, 20, 99], proc=tmp_path)) == [11, 21]
    assert jit.compiler_tids([10], kind="C1", proc=tmp_path) == [12]


def test_held_compilers_are_lowered_as_they_appear_and_given_back_once():
    threads = [[11]]
    calls = []
    held = jit.HeldCompilers([10, 20], 19, apply=lambda tid, nice: calls.append((tid, nice)),
                             tids=lambda pids: threads[0], give_back=lambda pid: calls.append(("process", pid)))
    assert calls == [(11, 19)]  # at once, not a second later
    threads[0] = [11, 12]  # HotSpot started another
    held._hold()
    assert calls == [(11, 19), (12, 19)]  # each thread lowered once
    threads[0] = [12]  # and ended one
    assert held.release() == 2
    assert calls[2:] == [("process", 10), ("process", 20)]  # every thread given back (what the held ones started)
    held._hold()  # a round after the release changes nothing, nor does a second release
    held.release()
    assert calls[2:] == [("process", 10), ("process", 20)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_a_real_thread_named_as_a_c2_compiler_is_lowered_and_given_back():
    import threading

    from control.runtime import priority

    ready, done = threading.Event(), threading.Event()
    tid = []

    def compiler():
        tid.append(threading.get_native_id())
        with open(f"/proc/self/task/{tid[0]}/comm", "w") as f:
            f.write("C2 CompilerThread0")  # as HotSpot names it (cut to 15 characters)
        ready.set()
        done.wait(30)

    t = threading.Thread(target=compiler, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        assert jit.compiler_tids([os.getpid()]) == tid
        me = threading.get_native_id()
        was = os.getpriority(os.PRIO_PROCESS, me)
        movable = priority.in_root_group(tid[0])  # placed in a group only from the root group
        held = jit.HeldCompilers([os.getpid()], 19)
        assert os.getpriority(os.PRIO_PROCESS, tid[0]) == 19
        assert os.getpriority(os.PRIO_PROCESS, me) == was  # only that thread
        if movable:
            assert priority.in_our_group(tid[0], "tasks") and not priority.in_our_group(me, "tasks")
        held.release()
        if priority.can_renice() and was == 0:
            assert os.getpriority(os.PRIO_PROCESS, tid[0]) == 0
            assert not priority.in_our_group(tid[0], "tasks")
    finally:
        done.set()
        t.join(10)
