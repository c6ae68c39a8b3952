"""`flink run` that fails or times out leaves no job behind, and the upgrade finds the job it hands over (every call
to Flink replaced: no JVM)."""

from __future__ import annotations

import subprocess

import pytest

from control.errors import ControlError, SubmissionError
from control.ops import handover
from control.ops import jobs as jobs_lib
from control.ops.jobs import JobInfo
from control.settings import RuntimeSettings
from jobs.common.entry import SUBMISSION


@pytest.fixture
def cluster(monkeypatch):
    """A cluster where `flink run` times out after submitting its job (a busy machine, seen on 2 cores): the job
    waits for TaskManagers that the failed submission retires."""
    from control.runtime import pinned

    log: list[str] = []
    seen: dict = {}
    monkeypatch.setattr(jobs_lib, "render_flink_conf", lambda s: None)
    monkeypatch.setattr(jobs_lib, "flink_run_command", lambda s, module, *a, **k: ["flink", "run", "-pyfs", "b.zip"])
    monkeypatch.setattr(jobs_lib, "check_code", lambda s, module, code: None)
    monkeypatch.setattr(jobs_lib, "pins_taskmanagers", lambda s, conf: True)
    monkeypatch.setattr(pinned, "start", lambda s, n: "tm-pin")
    monkeypatch.setattr(pinned, "retire", lambda s, pin: log.append(f"retire {pin}"))

    def run(cmd, **kw):
        seen["submission"] = next(c.split("=", 1)[1] for c in cmd if c.startswith(f"-D{SUBMISSION}="))
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(jobs_lib.subprocess, "run", run)
    monkeypatch.setattr(jobs_lib, "list_jobs", lambda s: [JobInfo("mine", "rz", "RESTARTING", 0),
                                                          JobInfo("other", "rz", "RUNNING", 0),
                                                          JobInfo("old-mine", "rz", "CANCELED", 0)])
    monkeypatch.setattr(jobs_lib, "job_parameters", lambda jid, s: {
        SUBMISSION: {"mine": seen.get("submission"), "old-mine": seen.get("submission")}.get(jid, "another")})
    monkeypatch.setattr(jobs_lib, "cancel_all", lambda ids, s: log.append(f"cancel {','.join(ids)}"))
    return log


def test_a_timed_out_flink_run_cancels_the_job_it_submitted_before_retiring_its_taskmanagers(cluster):
    with pytest.raises(SubmissionError, match="did not finish within 5 s"):
        jobs_lib.submit("jobs.rendezvous.main", timeout=5.0, s=RuntimeSettings(),
                        extra_conf={"python.execution-mode": "thread"})
    # only the job of this submission, not ended, and before its TaskManagers go (else it restarts forever)
    assert cluster == ["cancel mine", "retire tm-pin"]


def test_the_upgrade_finds_the_one_running_job_of_its_kind(monkeypatch):
    monkeypatch.setattr(jobs_lib, "list_jobs", lambda s: [JobInfo("j1", "rendezvous", "RUNNING", 0),
                                                          JobInfo("j0", "rendezvous", "FINISHED", 0),
                                                          JobInfo("j2", "external-state", "RUNNING", 0)])
    assert handover.running_job("rendezvous", RuntimeSettings()) == "j1"
    assert handover.running_job("external-state", RuntimeSettings()) == "j2"
    monkeypatch.setattr(jobs_lib, "list_jobs", lambda s: [JobInfo("j1", "rendezvous", "RUNNING", 0),
                                                          JobInfo("j3", "rendezvous", "RUNNING", 0)])
    with pytest.raises(ControlError, match="2 running job named 'rendezvous' \\(j1, j3\\)"):
        handover.running_job("rendezvous", RuntimeSettings())
