"""Test layers: unit tests need no JVM; tests marked `e2e` use the embedded Kafka broker and Flink
cluster, started once per session (an already running stack is reused and left running)."""

from __future__ import annotations

import uuid

import pytest

from control import runtime
from control.settings import RuntimeSettings


@pytest.fixture(scope="session")
def stack():
    """The embedded runtime. Started once; stopped at the end only if this session started it."""
    s = RuntimeSettings()
    was_running = runtime.processes_alive(s)
    runtime.up(s, progress=lambda m: print(f"[runtime] {m}"))
    yield s
    if not was_running:
        runtime.down(s, progress=lambda m: print(f"[runtime] {m}"))


@pytest.fixture
def unique():
    """A fresh suffix for topics and consumer groups of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def job_cleanup(stack):
    """Collects job ids started by a test and cancels the ones still running afterwards."""
    from control.ops import jobs

    ids: list[str] = []
    yield ids
    running = []
    for jid in ids:
        try:
            if jobs.job_state(jid, stack) in ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING"):
                running.append(jid)
        except Exception:
            pass
    try:
        jobs.cancel_all(running, stack)  # all at once: cancelled one by one they took 48 s for 8 jobs
    except Exception:
        pass
