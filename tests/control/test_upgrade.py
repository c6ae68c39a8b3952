"""The upgrade's state check (pure) and the code it submits (no JVM)."""

import pytest

from control.errors import ControlError
from control.ops import jobs
from control.ops.upgrade import state_problems
from control.settings import RuntimeSettings

MAILBOX = {"rendezvous-mailbox": {"writes": 2, "reads": [1, 2]}}


def test_the_same_or_a_wider_reader_takes_the_state_over():
    assert state_problems(MAILBOX, MAILBOX) == []
    assert state_problems(MAILBOX, {"rendezvous-mailbox": {"writes": 3, "reads": [1, 2, 3]}}) == []
    assert state_problems({}, {"x": {"writes": 1, "reads": [1]}}) == []  # new state starts empty
    assert state_problems({}, {}) == []  # a model job: no state of its own


def test_an_encoding_the_new_code_does_not_read_is_named():
    [problem] = state_problems(MAILBOX, {"rendezvous-mailbox": {"writes": 3, "reads": [3]}})
    assert problem.startswith("rendezvous-mailbox:") and "not 1, 2" in problem
    # versions the running job only reads may still be in its savepoint (entities not seen since)
    [problem] = state_problems(MAILBOX, {"rendezvous-mailbox": {"writes": 2, "reads": [2]}})
    assert "not 1" in problem


def test_a_state_the_new_code_no_longer_keeps_or_an_undeclared_one_is_refused():
    [problem] = state_problems(MAILBOX, {"rendezvous-mailboxes": {"writes": 2, "reads": [1, 2]}})
    assert "removed or renamed" in problem
    [problem] = state_problems(MAILBOX, None)
    assert "does not declare" in problem


def test_code_from_another_checkout_is_submitted_from_there(tmp_path):
    s = RuntimeSettings()
    if not s.connector_jars:
        pytest.skip("jars not resolved")
    for pkg in jobs.SOURCE_PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "jobs" / "smoke").mkdir()
    (tmp_path / "jobs" / "smoke" / "main.py").write_text("VERSION = 'other'\n")
    cmd = jobs.flink_run_command(s, "jobs.smoke.main", code=tmp_path)
    import zipfile

    bundle = zipfile.ZipFile(cmd[cmd.index("-pyfs") + 1])
    assert bundle.read("jobs/smoke/main.py") == b"VERSION = 'other'\n"
    assert f"-D{jobs.CODE_CONF}={jobs.sources_digest(tmp_path)}" in cmd
    assert jobs.sources_digest(tmp_path) != jobs.sources_digest(s.home)
    with pytest.raises(ControlError, match="not a copy of this project's code"):
        jobs.flink_run_command(s, "jobs.smoke.main", code=tmp_path / "jobs")
    with pytest.raises(ControlError, match="no job entry point"):
        jobs.flink_run_command(s, "jobs.rendezvous.main", code=tmp_path)


def test_a_new_version_keeps_up_in_rounds_to_the_inputs_ends_of_each_round(monkeypatch):
    from control.ops import handover

    ends = iter([{("in", 0): 100}, {("in", 0): 900}, {("in", 0): 950}, {("in", 0): 960}])
    took = iter([30.0, 5.0, 0.4, 0.3])  # the first rounds read what was written while it started; then it keeps up
    asked = []
    monkeypatch.setattr(handover, "end_offsets", lambda s, topics: next(ends))
    monkeypatch.setattr(handover, "wait_committed",
                        lambda jid, s, group, at_least, timeout, what: asked.append(at_least) or next(took))
    handover.keep_up("j", None, "g", ["in"], 300.0, "keeping up")
    assert asked == [{("in", 0): 100}, {("in", 0): 900}, {("in", 0): 950}]  # stopped at the first quick round

    slow = iter([9.0] * 10)  # never under KEPT_UP_S: bounded, the hand-over goes on
    asked.clear()
    monkeypatch.setattr(handover, "end_offsets", lambda s, topics: {("in", 0): 1})
    monkeypatch.setattr(handover, "wait_committed",
                        lambda jid, s, group, at_least, timeout, what: asked.append(at_least) or next(slow))
    handover.keep_up("j", None, "g", ["in"], 300.0, "keeping up")
    assert len(asked) == handover.KEEP_UP_ROUNDS


def test_an_empty_partition_does_not_hold_a_catch_up_back(monkeypatch):
    """The source commits no offset (-1) for a partition it never read a record from: a hand-over whose input had
    one partition still empty (CI: every entity's key hashed to the other one) waited for it until it timed out."""
    from control.ops import handover

    checkpoints = []
    monkeypatch.setattr(handover, "checkpoint", lambda jid, s: checkpoints.append(jid))
    monkeypatch.setattr(handover, "committed", lambda s, group, positions: {("in", 0): -1, ("in", 1): 1512})
    handover.wait_committed("j", None, "g", {("in", 0): 0, ("in", 1): 1512}, 5.0, "catching up")
    assert checkpoints == ["j"]
    monkeypatch.setattr(handover, "committed", lambda s, group, positions: {("in", 0): -1, ("in", 1): 1512})
    with pytest.raises(ControlError, match="not yet"):  # a partition with records to read still counts
        handover.wait_committed("j", None, "g", {("in", 0): 3, ("in", 1): 1512}, 0.0, "catching up")


def test_a_restored_rendezvous_gets_the_savepoints_time_as_its_scans_bound_where_its_code_knows_it():
    import json

    from control.ops.upgrade import Recorded, restore_bound
    from jobs.external_state.settings import ExternalStateSettings
    from jobs.rendezvous.settings import RendezvousSettings

    def rec(settings, fields=None):  # what restore_bound takes of a Recorded
        r = Recorded(job_id="j", settings=settings, settings_class="x", execution_mode="thread", state={},
                     code=None, parallelism=1, target_fields=fields)
        return r.settings, r.target_fields

    rv = RendezvousSettings()
    assert restore_bound(*rec(rv), 1234).recover_from_ms == 1234  # this checkout's code
    assert restore_bound(*rec(rv, frozenset(RendezvousSettings.model_fields)), 1234).recover_from_ms == 1234
    older = frozenset(RendezvousSettings.model_fields) - {"recover_from_ms"}
    assert restore_bound(*rec(rv, older), 1234) is rv  # code from before the setting would refuse it
    es = ExternalStateSettings()
    assert restore_bound(*rec(es), 1234) is es
    # unset, it is left out of the job's parameters: code from before it takes the job's settings (a rollback)
    assert "recover_from_ms" not in json.loads(rv.model_dump_json())
    assert json.loads(restore_bound(*rec(rv), 1234).model_dump_json())["recover_from_ms"] == 1234
    # a version that shadowed before its tokens restarts without its shadow topic, into any code
    shadowed = RendezvousSettings(shadow_topic="answers-shadow")
    for fields in (None, frozenset(RendezvousSettings.model_fields), older - {"shadow_topic"}):
        assert "shadow_topic" not in json.loads(restore_bound(*rec(shadowed, fields), 1234).model_dump_json())
    es_shadowed = ExternalStateSettings(shadow_topic="requests.augmented-shadow")
    for fields in (None, frozenset(ExternalStateSettings.model_fields),
                   frozenset(ExternalStateSettings.model_fields) - {"shadow_topic"}):
        assert "shadow_topic" not in json.loads(restore_bound(*rec(es_shadowed, fields), 1234).model_dump_json())
