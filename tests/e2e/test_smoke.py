"""Records flow Kafka -> PyFlink job (submitted with `flink run`) -> Kafka."""

import pytest

from control import jobs, kafka_io
from control.topics import TopicSpec, ensure_topics

pytestmark = pytest.mark.e2e


def test_records_flow_through_a_flink_run_job(stack, unique, job_cleanup):
    src, dst = f"smoke-in-{unique}", f"smoke-out-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(src), TopicSpec(dst)])
    jid = jobs.submit("jobs.smoke.main", ["--source-topic", src, "--sink-topic", dst,
                                          "--group-id", f"smoke-{unique}", "--job-name", f"smoke-{unique}"], s=stack)
    job_cleanup.append(jid)
    jobs.wait_running(jid, stack)
    assert any(j.job_id == jid and j.state == "RUNNING" for j in jobs.list_jobs(stack))

    sent = [{"id": i, "value": i * 1.5} for i in range(200)] + ["not json"]
    kafka_io.produce(stack.bootstrap_servers, src, sent)
    out = kafka_io.consume_json(stack.bootstrap_servers, dst, count=len(sent), timeout=120)

    assert len(out) == len(sent)
    by_id = {r["id"]: r for r in out if "id" in r}
    assert sorted(by_id) == list(range(200))
    for i, r in by_id.items():
        assert r["seen_by"] == "smoke"
        assert r["doubled"] == pytest.approx(i * 3.0)
    errors = [r for r in out if "error" in r]
    assert errors == [{"error": "not json", "raw": "not json"}]

    jobs.cancel(jid, stack)
    assert jobs.job_state(jid, stack) == "CANCELED"


def test_stop_with_savepoint_writes_into_savepoints_dir(stack, unique, job_cleanup):
    src, dst = f"sp-in-{unique}", f"sp-out-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(src), TopicSpec(dst)])
    jid = jobs.submit("jobs.smoke.main", ["--source-topic", src, "--sink-topic", dst,
                                          "--job-name", f"sp-{unique}"], s=stack)
    job_cleanup.append(jid)
    jobs.wait_running(jid, stack)
    path = jobs.stop_with_savepoint(jid, stack)
    assert path.startswith(f"file:{stack.savepoint_dir}") or path.startswith(f"file://{stack.savepoint_dir}")
    assert jobs.job_state(jid, stack) == "FINISHED"
    # the job resumes from its snapshot token
    jid2 = jobs.submit("jobs.smoke.main", ["--source-topic", src, "--sink-topic", dst,
                                           "--job-name", f"sp2-{unique}"], savepoint=path, s=stack)
    job_cleanup.append(jid2)
    jobs.wait_running(jid2, stack)
    kafka_io.produce(stack.bootstrap_servers, src, [{"id": 1, "value": 2}])
    out = kafka_io.consume_json(stack.bootstrap_servers, dst, count=1, timeout=90)
    assert out[0]["doubled"] == 4
