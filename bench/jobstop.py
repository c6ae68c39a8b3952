"""`python -m bench.jobstop`: what stopping a job costs the JobManager, by kind of thread.

Each round deploys a rendezvous on fresh topics (its own TaskManager, no load), lets it run --settle s, then stops it
with a savepoint as a hand-over stops its old version (`jobs.stop_with_savepoint`, its TaskManager retired), and reads
the CPU each thread of the JobManager used from just before the stop to --after s after it returned (/proc, by thread
name without its number: "C2 CompilerThre", "flink-pekko.act", ...). The JobManager runs with the runtime's
`jobmanager_jvm_args` (RENDEZVOUS_JOBMANAGER_JVM_ARGS, read when `up` starts it: compare two with `rendezvous down`
between runs). Prints one line per stop and the medians; --out writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from bench.handover import thread_kind, thread_name
from control import kafka_io, runtime
from control.ops import deploy, jobs
from control.runtime.flink import flink_pid_files
from control.runtime.process import read_pid
from control.settings import RuntimeSettings
from schemas.topics import TopicNames

COMPILERS = ("C1 CompilerThre", "C2 CompilerThre")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of the process: its kind (`thread_kind` of its name) and the CPU seconds it used so far."""
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for th in psutil.Process(pid).threads():
        name = thread_name(pid, th.id)
        if name is not None:  # else ended since listed
            out[th.id] = (thread_kind(name), th.user_time + th.system_time)
    return out


def used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by kind of thread between two `thread_cpu` readings, most first: thread by thread (HotSpot starts
    and ends compiler threads as it needs them; one that ended in between is not counted)."""
    d: dict[str, float] = {}
    for tid, (kind, cpu) in after.items():
        delta = cpu - (before[tid][1] if tid in before else 0.0)
        if delta > 0:
            d[kind] = d.get(kind, 0.0) + delta
    return {k: round(v, 3) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}


def summary(stop: dict[str, float]) -> dict[str, float]:
    """Total, compilers (C1 and C2) and the rest of one stop's `used`."""
    total = sum(stop.values())
    compilers = sum(v for k, v in stop.items() if k in COMPILERS)
    return {"total": round(total, 3), "compilers": round(compilers, 3), "c2": round(stop.get(COMPILERS[1], 0.0), 3),
            "rest": round(total - compilers, 3)}


def run(a) -> dict:
    s = RuntimeSettings()
    runtime.up(s, progress=print)
    jm = read_pid(flink_pid_files(s)["jobmanager"])
    if not jm:
        raise SystemExit("no JobManager pid file: is the runtime up (`rendezvous up`)?")
    import psutil

    # what the running JobManager was started with (`up` leaves a running one as it is)
    options = [o for o in psutil.Process(jm).cmdline() if o.startswith("-XX:") and "Tiered" in o]
    out = {"jobmanager_jvm_args": " ".join(options), "stops": []}
    for i in range(a.rounds):
        u = uuid.uuid4().hex[:8]
        t = TopicNames.suffixed(f"bench-stop-{u}")
        kafka_io.ensure_topics(s.bootstrap_servers, t.specs(), partitions=2)
        try:
            out["stops"].append(stop_one(s, jm, t, u, a, i))
        finally:
            kafka_io.delete_topics(s.bootstrap_servers, [spec.name for spec in t.specs()])
        print(line(out["stops"][-1]))
    return out


def stop_one(s: RuntimeSettings, jm: int, t: TopicNames, u: str, a, i: int) -> dict:
    """Deploy a rendezvous on `t`, let it run, stop it with a savepoint: the JobManager's CPU by kind of thread. A
    round that fails cancels its job."""
    jid = None
    try:
        jid = deploy.deploy_rendezvous(s, job_name=f"bench-stop: rendezvous {u}", augmented_topic=t.augmented,
                                       scores_topic=t.scores, schedules_topic=t.schedules, answers_topic=t.answers,
                                       late_topic=t.late, invalid_topic=t.quarantine, group_id=f"bench-stop-{u}",
                                       transitions_topic=t.transitions, start="latest", wait=False)
        jobs.wait_running(jid, s, timeout=300)
        print(f"stop {i + 1}/{a.rounds}: job {jid} running; {a.settle:.0f} s, then stopped with a savepoint")
        time.sleep(a.settle)
        before = thread_cpu(jm)
        t0 = time.monotonic()
        jobs.stop_with_savepoint(jid, s, retire=True)
        took = time.monotonic() - t0
        stopped, jid = jid, None
        time.sleep(a.after)
        stop = used(before, thread_cpu(jm))
        return {"job_id": stopped, "stop_s": round(took, 2), "threads": stop, **summary(stop)}
    finally:
        if jid is not None:  # deployed, not stopped: the round failed
            try:
                jobs.cancel(jid, s)
            except Exception:  # noqa: BLE001 - cleanup; the error that ended the round is what is reported
                pass


def line(stop: dict) -> str:
    top = ", ".join(f"{k} {v:.2f}" for k, v in list(stop["threads"].items())[:4])
    return (f"  the JobManager used {stop['total']:.2f} CPU s (JIT compilers {stop['compilers']:.2f}, of them C2 "
            f"{stop['c2']:.2f}; the rest {stop['rest']:.2f}) over the stop ({stop['stop_s']:.1f} s) and after; most: "
            f"{top}")


def medians(r: dict) -> str:
    """The medians over the stops after the first (a fresh JobManager compiles what a stop runs the first time)."""
    later = r["stops"][1:] or r["stops"]
    m = {k: statistics.median(x[k] for x in later) for k in ("total", "compilers", "c2", "rest")}
    return (f"JobManager JVM options {r['jobmanager_jvm_args'] or '(the defaults)'!r}: median of {len(later)} stops "
            f"after the first: {m['total']:.2f} CPU s, JIT compilers {m['compilers']:.2f} (C2 {m['c2']:.2f}), the "
            f"rest {m['rest']:.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="jobs deployed and stopped, one after the other")
    p.add_argument("--settle", type=float, default=20.0, help="seconds each job runs before it is stopped")
    p.add_argument("--after", type=float, default=1.0, help="seconds after the stop returned still counted")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    r = run(a)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(r, indent=1))
    print(medians(r))


if __name__ == "__main__":
    main()
