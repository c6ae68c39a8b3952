"""The supervisor's round over pinned TaskManagers (`control.runtime.pinned.tend`), without a JVM: a TaskManager
that died is started again only while its pin exists and its job runs."""

from __future__ import annotations

import json

import pytest

from control.runtime import pinned
from control.settings import RuntimeSettings


@pytest.fixture
def pin(tmp_path, monkeypatch):
    s = RuntimeSettings(RENDEZVOUS_RUN_DIR=tmp_path)
    name = "tmabc"
    d = pinned.pins_dir(s) / name
    d.mkdir(parents=True)
    (d / "pin.json").write_text(json.dumps({"job_id": "j1", "slots": 1, "created_at": 0}))
    (d / f"flink-{pinned.resource_id(name, 0)}-taskexecutor.pid").write_text("999999\n")  # a pid that is gone
    started: list[int] = []
    monkeypatch.setattr(pinned, "pid_alive", lambda pid: False)
    monkeypatch.setattr(pinned, "reap", lambda s, log=None: [])
    monkeypatch.setattr(pinned, "_start_one", lambda s, p, i: started.append(i) or 4242)
    return s, name, started


def test_a_dead_taskmanager_of_a_running_job_is_started_again(pin, monkeypatch):
    s, name, started = pin
    monkeypatch.setattr(pinned, "_job_states", lambda s: {"j1": "RESTARTING"})
    said: list[str] = []
    pinned.tend(s, said.append)
    assert started == [0] and len(pinned.read(s, name)["restarts"]) == 1
    assert any("restarting it" in m for m in said)


@pytest.mark.parametrize("state", ["CANCELLING", "CANCELED", "FINISHED", None])
def test_not_when_its_job_is_ending_ended_or_unknown(pin, monkeypatch, state):
    s, name, started = pin
    monkeypatch.setattr(pinned, "_job_states", lambda s: {"j1": state} if state else {})
    said: list[str] = []
    pinned.tend(s, said.append)
    assert started == [] and "restarts" not in pinned.read(s, name)
    assert any("not restarted" in m for m in said), said


def test_not_when_the_pin_was_retired_meanwhile(pin, monkeypatch):
    s, name, started = pin
    real = pinned.read
    calls = {"n": 0}

    def read(s_, p):  # the round's first look finds the pin; by the restart another process has retired it
        calls["n"] += 1
        return real(s_, p) if calls["n"] == 1 else None

    monkeypatch.setattr(pinned, "read", read)
    monkeypatch.setattr(pinned, "_job_states", lambda s: {"j1": "RUNNING"})
    pinned.tend(s, lambda m: None)
    assert started == []
