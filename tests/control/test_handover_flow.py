"""control.ops.handover's steps without a cluster (every call to Flink and Kafka replaced): when the new version's
held JIT compilers are given back, whatever happens (the real protocol: tests/e2e/test_handover.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from control.errors import ControlError
from control.ops import handover
from jobs.common.entry import SETTINGS
from jobs.external_state.settings import ExternalStateSettings


class FakeHeld:
    made: list["FakeHeld"] = []
    log: list[str] = []  # the steps recorded, the waits and the releases, in order

    def __init__(self, pids, nice):
        self.pids, self.nice, self.released = pids, nice, 0
        FakeHeld.made.append(self)

    def release(self):
        self.released += 1
        FakeHeld.log.append("release")
        return 1


@pytest.fixture
def flow(monkeypatch, tmp_path):
    """A hand-over of an external state whose every outside call succeeds; returns what it recorded."""
    from control.ops import deploy, upgrade
    from control.ops import jobs as jobs_lib
    from control.runtime import jit, pinned

    FakeHeld.made, FakeHeld.log = [], []
    seen = {"steps": [], "renice": []}
    old = ExternalStateSettings()
    rec = SimpleNamespace(settings=old, code="c0de", target_fields=set(ExternalStateSettings.model_fields),
                          execution_mode="thread", parallelism=1, state={})
    monkeypatch.setattr(upgrade, "check", lambda job_id, code, s: rec)
    monkeypatch.setattr(jobs_lib, "job_parameters", lambda job_id, s: {SETTINGS: json.dumps({"takes_over": True})})
    monkeypatch.setattr(jobs_lib, "check_code", lambda s, entry, code: tmp_path)
    monkeypatch.setattr(jobs_lib, "sources_digest", lambda root: "n3w")
    monkeypatch.setattr(jobs_lib, "wait_running", lambda jid, s, timeout: seen.setdefault("running_timeout", timeout))
    monkeypatch.setattr(jobs_lib, "stop_with_savepoint", lambda jid, s, retire: "file:///sp-old")
    monkeypatch.setattr(handover, "savepoint", lambda jid, s: "file:///sp")
    monkeypatch.setattr(handover, "end_offsets", lambda s, topics: {("requests", 0): 5})
    monkeypatch.setattr(deploy, "submit_job", lambda *a, **k: "new-job")

    def record(s, e, topic):
        seen["steps"].append(e.detail["step"])
        FakeHeld.log.append(e.detail["step"])

    monkeypatch.setattr(deploy, "_record", record)
    monkeypatch.setattr(handover, "wait_committed", lambda *a, **k: 0.1)
    monkeypatch.setattr(handover, "keep_up", lambda *a, **k: 0.1)
    monkeypatch.setattr(handover, "write_tokens", lambda *a, **k: {"requests": [SimpleNamespace(partition=0, offset=7)]})
    monkeypatch.setattr(handover, "abandon", lambda jid, s: seen.setdefault("abandoned", jid))
    monkeypatch.setattr(pinned, "of_job", lambda s, jid: {"old-job": "pin-old", "new-job": "pin-new"}[jid])
    monkeypatch.setattr(pinned, "pids", lambda s, pin: [{"pin-old": 100, "pin-new": 200}[pin]])
    monkeypatch.setattr(pinned, "renice", lambda s, pin, nice: seen["renice"].append((pin, nice)))
    monkeypatch.setattr(jit, "HeldCompilers", FakeHeld)

    def wait_quiet(pids, timeout, progress=None):
        FakeHeld.log.append("wait")
        return 2.0, True

    monkeypatch.setattr(jit, "wait_quiet", wait_quiet)

    def run(**kw):
        return handover._hand_over("old-job", None, None, None, "lifecycle", None, 10.0, False, 10, **kw)

    seen["run"] = run
    return seen


def test_held_compilers_are_given_back_once_after_the_old_version_stopped(flow):
    ho = flow["run"](hold_compilers_s=30.0)
    assert flow["steps"] == ["started", "snapshot", "quiescent", "snapshot_complete", "transition", "completed"]
    assert flow["running_timeout"] == 10.0  # the hand-over's own: started at the lowest priority, it may be slow
    [held] = FakeHeld.made
    assert held.pids == [200] and held.nice == handover.RETIRING_NICE and held.released == 1
    assert ho.timings_s["compilers_held_s"] == 2.0
    # held through the transition, waited for once the old version stopped, then given back
    log = FakeHeld.log
    assert log[log.index("snapshot_complete"):] == ["snapshot_complete", "transition", "completed", "wait", "release"]
    # a leftover of an interrupted hand-over to the old version is undone first; the new version's TaskManagers get
    # the normal priority back, the old one's the lowest once it serves nothing
    assert flow["renice"] == [("pin-old", 0), ("pin-new", 0), ("pin-old", handover.RETIRING_NICE)]


def test_nothing_is_held_when_not_asked(flow):
    ho = flow["run"](hold_compilers_s=0.0)
    assert FakeHeld.made == [] and "compilers_held_s" not in ho.timings_s


def test_held_compilers_are_given_back_when_the_old_version_does_not_pass_its_tokens(flow, monkeypatch):
    calls = []

    def wait_committed(job_id, s, group, at_least, timeout, what):
        calls.append(job_id)
        if job_id == "old-job":
            raise ControlError("not past its tokens")
        return 0.1

    monkeypatch.setattr(handover, "wait_committed", wait_committed)
    with pytest.raises(ControlError, match="owns every record after the tokens"):
        flow["run"](hold_compilers_s=30.0)
    assert [h.released for h in FakeHeld.made] == [1] and flow["steps"][-1] == "failed"


def test_held_compilers_are_given_back_when_interrupted_before_the_tokens(flow, monkeypatch):
    def step_fails(s, e, topic):
        flow["steps"].append(e.detail["step"])
        if e.detail["step"] == "snapshot_complete":
            raise KeyboardInterrupt  # Ctrl-C just after the compilers were held

    from control.ops import deploy

    monkeypatch.setattr(deploy, "_record", step_fails)
    with pytest.raises(KeyboardInterrupt):
        flow["run"](hold_compilers_s=30.0)
    assert [h.released for h in FakeHeld.made] == [1] and flow["abandoned"] == "new-job"


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])  # Ctrl-C; SIGTERM, SIGHUP (the CLI)
def test_a_hand_over_interrupted_while_waiting_for_its_compilers_is_complete_all_the_same(flow, monkeypatch,
                                                                                          interruption):
    from control.runtime import jit

    def interrupted(pids, timeout, progress=None):
        raise interruption(143)

    monkeypatch.setattr(jit, "wait_quiet", interrupted)
    ho = flow["run"](hold_compilers_s=30.0)
    assert ho.job_id == "new-job" and flow["steps"][-1] == "completed"
    assert [h.released for h in FakeHeld.made] == [1]


def test_an_interruption_after_the_tokens_is_recorded_and_gives_the_compilers_back(flow, monkeypatch):
    from control.ops import jobs as jobs_lib

    def killed(jid, s, retire):
        raise SystemExit(143)  # the CLI's SIGTERM, while the old version stops

    monkeypatch.setattr(jobs_lib, "stop_with_savepoint", killed)
    with pytest.raises(SystemExit):
        flow["run"](hold_compilers_s=30.0)
    assert flow["steps"][-2:] == ["transition", "failed"]
    assert [h.released for h in FakeHeld.made] == [1] and "abandoned" not in flow  # the new version owns the rest


@pytest.mark.parametrize("kind", ["rendezvous", "external-state"])
@pytest.mark.parametrize("shadow_s, target_knows, shadowed", [(0.01, True, True), (0.0, True, False),
                                                              (0.01, False, False)])
def test_a_new_version_shadows_when_asked_and_its_code_knows_how(flow, monkeypatch, kind, shadow_s, target_knows,
                                                                 shadowed):
    from control import kafka_io
    from control.ops import deploy, upgrade
    from jobs.rendezvous.settings import RendezvousSettings

    cls, out, into = {"rendezvous": (RendezvousSettings, "answers", "requests.augmented"),
                      "external-state": (ExternalStateSettings, "requests.augmented", "requests")}[kind]
    shadow = f"{out}-shadow"
    old = cls(shadow_topic=shadow)  # it shadowed before its own tokens
    fields = set(cls.model_fields) - (set() if target_knows else {"shadow_topic"})
    rec = SimpleNamespace(settings=old, code="c0de", target_fields=frozenset(fields), execution_mode="thread",
                          parallelism=1, state={})
    monkeypatch.setattr(upgrade, "check", lambda job_id, code, s: rec)
    created, submitted, sized, granted = [], [], [], []
    monkeypatch.setattr(kafka_io, "ensure_topics", lambda b, specs, partitions: created.extend(t.name for t in specs))
    monkeypatch.setattr(handover, "last_mode", lambda s: "secure")  # a secure broker: the shadow's ACL is granted
    monkeypatch.setattr(handover, "grant", lambda s, gs: granted.extend(gs))
    monkeypatch.setattr(kafka_io, "partition_count", lambda b, t: sized.append(t) or 2)
    monkeypatch.setattr(handover, "longest_deadline_ms", lambda s, settings: -990)  # no drain to sleep through
    monkeypatch.setattr(deploy, "submit_job", lambda settings, *a, **k: submitted.append(settings) or "new-job")
    ends = iter([3, 40])  # the shadow topic's size before the new version and once it has shadowed
    monkeypatch.setattr(handover, "end_offsets", lambda s, topics: {(topics[0], 0): next(ends)}
                        if topics == [shadow] else {(into, 0): 5})
    said: list[str] = []
    done = handover._hand_over("old-job", None, None, said.append, "lifecycle", None, 10.0, False, 10,
                               shadow_s=shadow_s)
    new = submitted[0]
    if shadowed:  # as many partitions as the topic it mirrors
        assert new.shadow_topic == shadow and created == [shadow] and sized == [out] and done.shadow_records == 37
        assert any(f"37 shadow records in {shadow}" in m for m in said)
        from control.security import Grant, principal

        assert granted == [Grant(principal(kind.replace("-", "_")), "WRITE", "TOPIC", shadow)]
    else:  # not the running version's either: it shadowed before its tokens, its successor does not
        assert "shadow_topic" not in json.loads(new.model_dump_json())  # the job's parameters, as submitted
        assert not created and not granted and done.shadow_records is None
    assert new.takes_over and flow["steps"][-1] == "completed"


def test_priorities_change_places_when_the_tokens_are_written(flow, monkeypatch):
    from control.runtime import pinned

    order: list = []
    monkeypatch.setattr(pinned, "renice", lambda s, pin, nice: order.append((pin, nice)))
    monkeypatch.setattr(handover, "write_tokens", lambda *a, **k: order.append("tokens") or {
        "requests": [SimpleNamespace(partition=0, offset=7)]})
    monkeypatch.setattr(handover, "wait_committed", lambda job_id, *a, **k: order.append(f"passed {job_id}") or 0.1)
    flow["run"](hold_compilers_s=30.0, promote_at_tokens=True)
    # the new version at its starting priority until its tokens; then at once the normal one for it and the lowest
    # for the old version, before the old one has even passed them
    assert order == [("pin-old", 0), "passed new-job", "tokens", ("pin-new", 0), ("pin-old", handover.RETIRING_NICE),
                     "passed old-job"]
    [held] = FakeHeld.made  # its optimizing compilers held from then on, and given back once
    assert held.pids == [200] and held.released == 1


def test_a_new_version_is_promoted_even_when_writing_its_tokens_fails(flow, monkeypatch):
    def fails(*a, **k):
        raise ControlError("broker gone")

    monkeypatch.setattr(handover, "write_tokens", fails)
    with pytest.raises(ControlError, match="broker gone"):
        flow["run"](hold_compilers_s=30.0, promote_at_tokens=True)
    # some tokens may have been written: the new version may own records, so it serves at the normal priority; the
    # old version keeps the normal one too (it may own the rest)
    assert flow["renice"] == [("pin-old", 0), ("pin-new", 0)]
    assert [h.released for h in FakeHeld.made] == [1]
