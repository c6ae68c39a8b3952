"""The runtime's supervisor: bounded restarts with backoff (pure), and a TaskManager killed with -9
under a running job comes back on its own and the job delivers every record (e2e)."""

import json
import os
import signal
import time

import pytest

from control.runtime.supervisor import RestartPolicy


def test_restarts_back_off_then_stop_at_the_bound_and_the_window_forgets():
    p = RestartPolicy(max_restarts=3, window_s=100, backoff_s=1, max_backoff_s=3)
    delays = []
    for t in (0, 10, 20):
        delays.append(p.delay(t))
        p.record(t)
    assert delays == [1, 2, 3]  # doubling, capped
    assert p.delay(30) is None  # three restarts within 100 s: give up
    assert p.delay(111) == 2  # the first restart left the window


@pytest.mark.e2e
def test_a_killed_taskmanager_comes_back_and_its_job_delivers_every_record(stack, unique, job_cleanup):
    from control import kafka_io
    from control.kafka_io import ensure_topics
    from control.ops import deploy, jobs
    from control.runtime import status, supervisor
    from control.runtime.flink import (
        flink_healthy,
        flink_pid_files,
        orphaned_python_workers,
    )
    from control.runtime.process import pid_alive, read_pid
    from schemas.topics import TopicSpec

    assert supervisor.running(stack), "rendezvous up starts the supervisor"
    src, dst = f"sv-in-{unique}", f"sv-out-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(src), TopicSpec(dst)])
    jid = deploy.deploy_passthrough(stack, source_topic=src, sink_topic=dst, group_id=f"sv-{unique}",
                                    job_name=f"supervisor {unique}", start="earliest", checkpoint_interval_ms=1000)
    job_cleanup.append(jid)
    kafka_io.produce(stack.bootstrap_servers, src, [{"id": i} for i in range(50)])
    assert len(kafka_io.consume(stack.bootstrap_servers, dst, count=50, timeout=90)) >= 50

    before = supervisor.restarts_of(stack, "flink taskmanager")
    old = read_pid(flink_pid_files(stack)["taskmanager"])
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()
    deadline = t0 + 120
    while time.monotonic() < deadline:
        new = read_pid(flink_pid_files(stack)["taskmanager"])
        if (supervisor.restarts_of(stack, "flink taskmanager") > before and new and new != old and pid_alive(new)
                and flink_healthy(stack)):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the TaskManager was not restarted within 120 s; see {stack.log_dir / 'supervisor.log'}")
    assert orphaned_python_workers(stack) == []  # the dead TaskManager's Python workers were stopped
    kafka_io.produce(stack.bootstrap_servers, src, [{"id": i} for i in range(50, 100)])
    # at least once: every record arrives (a replay after the restore may repeat some)
    def ids_of(values):
        return {json.loads(v).get("id") for v in values}

    out = kafka_io.consume(stack.bootstrap_servers, dst, timeout=180, until=lambda vs: ids_of(vs) >= set(range(100)))
    ids = ids_of(out)
    assert set(range(100)) <= ids, sorted(set(range(100)) - ids)[:10]
    assert jobs.job_state(jid, stack) == "RUNNING"
    tm = next(c for c in status(stack) if c.name == "flink taskmanager")
    assert "restarted" in tm.detail
    print(f"TaskManager back and job delivering within {time.monotonic() - t0:.0f} s of the kill")
