"""Records flow Kafka -> PyFlink job (submitted with `flink run`) -> Kafka."""

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs
from schemas.topics import TopicSpec

pytestmark = pytest.mark.e2e


def test_records_flow_through_a_flink_run_job(stack, unique, job_cleanup):
    src, dst = f"smoke-in-{unique}", f"smoke-out-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(src), TopicSpec(dst)])
    jid = deploy.deploy_passthrough(stack, source_topic=src, sink_topic=dst, group_id=f"smoke-{unique}",
                                    job_name=f"smoke-{unique}")
    job_cleanup.append(jid)
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
    jid = deploy.deploy_passthrough(stack, source_topic=src, sink_topic=dst, group_id=f"sp-{unique}",
                                    job_name=f"sp-{unique}")
    job_cleanup.append(jid)
    path = jobs.stop_with_savepoint(jid, stack)
    assert path.startswith(f"file:{stack.savepoint_dir}") or path.startswith(f"file://{stack.savepoint_dir}")
    assert jobs.job_state(jid, stack) == "FINISHED"
    # the job resumes from its snapshot token
    jid2 = deploy.deploy_passthrough(stack, savepoint=path, source_topic=src, sink_topic=dst,
                                     group_id=f"sp-{unique}", job_name=f"sp2-{unique}")
    job_cleanup.append(jid2)
    kafka_io.produce(stack.bootstrap_servers, src, [{"id": 1, "value": 2}])
    out = kafka_io.consume_json(stack.bootstrap_servers, dst, count=1, timeout=90)
    assert out[0]["doubled"] == 4
