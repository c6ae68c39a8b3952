"""Options of the CLI that are checked before anything is deployed or handed over (no JVM)."""

from click.testing import CliRunner

from tools.cli import main


def test_a_recovery_bound_without_a_savepoint_is_refused():
    res = CliRunner().invoke(main, ["deploy", "rendezvous", "--recover-from-ms", "1700000000000"])
    assert res.exit_code == 1 and "give the savepoint too (--from-savepoint)" in res.output


def test_the_upgrade_passes_its_jit_wait_to_the_hand_over(monkeypatch):
    from control.ops import handover

    got = {}

    class Done:
        job_id = "new-job"

    def hand_over(job_id, code, progress=None, rollback=False, compilers_quiet_timeout_s=0.0, hold_compilers_s=0.0,
                  shadow_s=0.0):
        got.update(job_id=job_id, wait=compilers_quiet_timeout_s, hold=hold_compilers_s, shadow=shadow_s)
        return Done()

    monkeypatch.setattr(handover, "hand_over", hand_over)
    import tools.cli

    monkeypatch.setattr(tools.cli, "_exit_on_signals", lambda: None)  # not this test process's handlers
    res = CliRunner().invoke(main, ["upgrade", "rendezvous", "--job", "old-job", "--wait-for-jit", "30"])
    assert res.exit_code == 0 and res.output.strip() == "new-job" and got["job_id"] == "old-job" and got["wait"] == 30.0
    res = CliRunner().invoke(main, ["upgrade", "rendezvous", "--job", "old-job"])
    assert res.exit_code == 0 and got["wait"] == 0.0  # no wait unless asked
    assert got["hold"] == handover.HOLD_COMPILERS_S > 0  # the compilers held by default
    res = CliRunner().invoke(main, ["upgrade", "rendezvous", "--job", "old-job", "--hold-jit", "0"])
    assert res.exit_code == 0 and got["hold"] == 0.0
    assert got["shadow"] == handover.SHADOW_S > 0  # a shadow by default
    res = CliRunner().invoke(main, ["upgrade", "rendezvous", "--job", "old-job", "--shadow", "0"])
    assert res.exit_code == 0 and got["shadow"] == 0.0
    res = CliRunner().invoke(main, ["upgrade", "external-state", "--job", "old-job"])
    assert res.exit_code == 0 and got["shadow"] == handover.SHADOW_S  # the external state's too


def test_a_sigterm_ends_an_upgrade_through_its_finally_blocks():
    import os
    import signal
    import time

    import pytest

    import tools.cli

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    unwound = []
    try:
        tools.cli._exit_on_signals()
        with pytest.raises(SystemExit) as e:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # the handler raises at once; without it the default action would end pytest
            finally:
                unwound.append(True)
        assert e.value.code == 128 + signal.SIGTERM and unwound == [True]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
