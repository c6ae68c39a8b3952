"""Ready before serving: a model that cannot serve is refused before anything is deployed (no JVM),
and a model job whose model fails to load in the cluster restarts with the reason instead of
answering with error scores (e2e)."""

import pickle
import socket

import pytest

from control.errors import ModelNotReadyError
from control.ops import deploy
from model_udfs.base import sha256_of
from schemas.model_card import ModelCard

SKLEARN = "model_udfs.sklearn_runner:SklearnRunner"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def artifact(tmp_path):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit([[0.0] * 10, [1.0] * 10], [0, 1])
    path = tmp_path / "model.joblib"
    import joblib

    joblib.dump(model, path)
    return path


def card(path, sha256):
    return ModelCard(model_id="ready-test", version="1", runner=SKLEARN, artifact=str(path), sha256=sha256)


def test_a_good_card_is_ready(artifact):
    deploy.check_model_ready(card(artifact, sha256_of(artifact)))


def test_wrong_checksum_missing_artifact_and_unreachable_server_are_refused_with_the_reason(artifact, tmp_path):
    with pytest.raises(ModelNotReadyError, match=r"ready-test@1 cannot serve, nothing was deployed: .*sha256"):
        deploy.check_model_ready(card(artifact, "0" * 64))
    with pytest.raises(ModelNotReadyError, match="does not exist"):
        deploy.check_model_ready(card(tmp_path / "nope.joblib", None))
    remote = ModelCard(model_id="remote", version="1", runner="model_udfs.remote:KServeV2Runner",
                       params={"url": f"http://127.0.0.1:{free_port()}", "model_name": "m"}, timeout_ms=500)
    with pytest.raises(ModelNotReadyError, match="cannot reach the model server"):
        deploy.check_model_ready(remote)


def test_deploy_refuses_before_submitting(artifact):
    """No cluster is needed to be refused: the pre-flight runs before `flink run`."""
    with pytest.raises(ModelNotReadyError, match="sha256"):
        deploy.deploy_model(card(artifact, "1" * 64), job_name="never submitted")


def test_the_udf_ships_without_a_loaded_model(artifact):
    """What is pickled into the job is the card, not a model loaded on this machine."""
    from model_udfs.async_udf import ModelAsyncFunction

    fn = ModelAsyncFunction(card(artifact, sha256_of(artifact)))
    assert pickle.loads(pickle.dumps(fn))._prepared is None


@pytest.mark.e2e
def test_a_model_job_that_cannot_load_restarts_with_the_reason_and_writes_no_score(stack, unique, artifact):
    """Pre-flight off (as when this machine cannot see what the cluster sees): the operator's open()
    refuses the artifact. PyFlink opens a process-mode operator when its first bundle arrives, so the
    job is RUNNING first; then it fails and restarts with the reason, and never writes an error score."""
    import time

    from control import kafka_io
    from control.kafka_io import ensure_topics
    from control.ops import jobs
    from schemas.topics import TopicSpec

    src, dst = f"ready-in-{unique}", f"ready-out-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(src), TopicSpec(dst)])
    jid = deploy.deploy_model(card(artifact, "2" * 64), stack, preflight=False, job_name=f"ready {unique}",
                              source_topic=src, sink_topic=dst, start="earliest", group_id=f"ready-{unique}")
    try:
        # the record comes after the job is RUNNING: its first bundle opens the operator, which refuses
        kafka_io.produce(stack.bootstrap_servers, src, ['{"request": {"request_id": "r1", "event_time_ms": 1}, '
                                                        '"features": {}}'])
        deadline = time.monotonic() + 120
        while jobs.job_state(jid, stack) == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert jobs.job_state(jid, stack) in ("RESTARTING", "FAILING", "FAILED")
        assert "refusing to serve a model that is not the registered one" in jobs.job_exceptions(jid, stack)
    finally:
        jobs.cancel(jid, stack)
    assert kafka_io.consume(stack.bootstrap_servers, dst, timeout=3) == []


def test_a_job_waiting_for_its_own_taskmanagers_is_waited_for_and_any_other_restart_is_an_error(monkeypatch):
    """`wait_running` (no JVM: the REST answers are scripted): a thread-mode job that restarted because its own
    TaskManagers registered after it asked for slots runs once they have; a restart for any other cause is the
    error it says."""
    from control.errors import JobError
    from control.ops import jobs
    from control.settings import RuntimeSettings

    def script(states, cause, pinned=True):
        answers = iter(states)
        monkeypatch.setattr(jobs, "flink_rest", lambda s, path: {"state": next(answers), "vertices": [
            {"status": "RUNNING"}]})
        monkeypatch.setattr(jobs, "job_exceptions", lambda jid, s: cause)
        monkeypatch.setattr(jobs, "_pinned", lambda s, jid: pinned)
        monkeypatch.setattr(jobs.time, "sleep", lambda x: None)

    no_slots = "org.apache.flink.runtime.jobmanager.scheduler.NoResourceAvailableException: Could not acquire ..."
    script(["RESTARTING", "RESTARTING", "RUNNING"], no_slots)
    jobs.wait_running("j", RuntimeSettings())
    script(["RESTARTING", "RUNNING"], "java.lang.RuntimeException: the model failed to load")
    with pytest.raises(JobError, match=r"failed while starting(.|\n)*the model failed to load"):
        jobs.wait_running("j", RuntimeSettings())
    script(["RESTARTING", "RUNNING"], no_slots, pinned=False)  # a job of the shared TaskManagers: no slots is an error
    with pytest.raises(JobError, match="NoResourceAvailable"):
        jobs.wait_running("j", RuntimeSettings())
