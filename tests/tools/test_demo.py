"""A short demo through the CLI, as a new user runs it (e2e)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_a_short_demo_answers_every_request_mostly_with_models(stack, tmp_path):
    from control.ops import deploy
    from control.runtime import mlserver

    report_path = tmp_path / "demo.json"  # not run/demo/latest.json: that is the user's last demo
    try:
        out = subprocess.run([sys.executable, "-m", "tools.cli", "demo", "--rate", "50", "--duration", "10",
                              "--report", str(report_path)],
                             cwd=stack.home, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "== summary" in out.stdout and "answers by trigger" in out.stdout
        report = json.loads(report_path.read_text())
        assert report["sent"] >= 400 and report["unanswered"] == 0 and report["duplicate_answers"] == 0
        models = report["answered"] - report["by_model"].get("(default)", 0)
        assert models > report["answered"] / 2, report["by_model"]  # models answer, not the default
        assert len(report["by_schedule"]) == 2  # the challenger was promoted mid-run by a new schedule
    finally:
        deploy.stop_jobs_named("demo: ", stack)
        mlserver.stop_recorded(stack.mlserver_http_port, stack)
