"""A secure broker (SASL/SCRAM, the KRaft StandardAuthorizer, one principal per job role) of this module's
own, on other ports and its own run directory, next to the session's plaintext one: strangers and wrong
passwords are refused, a model job's principal can neither read answers nor write schedules, and the whole
pipeline, deployed on the session's Flink cluster with per-role credentials, answers every request."""

import socket
import time

import pytest

from control import kafka_io
from control.ops import deploy, jobs, schedules
from control.runtime.kafka import (
    kafka_alive_and_healthy,
    secure_broker,
    start_kafka,
    stop_kafka,
)
from control.runtime.process import wait_for
from control.settings import java_executable
from jobs.common.security import client_config, read_properties
from schemas.model_card import ModelCard
from schemas.records import Answer
from schemas.topics import TopicNames
from training.synthetic import TransactionGenerator

pytestmark = pytest.mark.e2e

T = TopicNames()  # the broker is this module's own: the default names, with the default ACLs
SCHEDULE = {"name": "secure", "stages": [{"deadline_ms": 5000, "models": ["const"]}],
            "default_output": {"fraud_probability": 0.0, "decision": "review"}}
CARD = ModelCard(model_id="const", version="1", runner="model_udfs.python_runners:ConstantRunner",
                 params={"delay_ms": 1, "output": {"fraud_probability": 0.1}}, timeout_ms=3000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def secure(stack, tmp_path_factory):
    """Runtime settings of a secure broker of this module (the session's Flink cluster)."""
    s = stack.model_copy(update={"run_dir_override": tmp_path_factory.mktemp("secure-run"), "secure": True,
                                 "kafka_port": free_port(), "kafka_controller_port": free_port()})
    for d in (s.run_dir, s.log_dir, s.pid_dir):
        d.mkdir(parents=True, exist_ok=True)
    try:
        start_kafka(s, java_executable(), lambda m: print(f"[secure] {m}"), secure=True)
        wait_for(lambda: kafka_alive_and_healthy(s), s.startup_timeout_s, "the secure broker")
        secure_broker(s)  # SCRAM users, ACLs; its clients use the operators' principal from here on
        kafka_io.ensure_topics(s.bootstrap_servers)
        yield s
    finally:
        stop_kafka(s, None)
        kafka_io.use_credentials(s.bootstrap_servers, None)


def role(s, name: str) -> dict:
    return read_properties(s.credentials_dir / f"{name}.properties")


def authentication_refused(bootstrap: str, user: str, password: str) -> str:
    """The error librdkafka reports for these credentials (waits until it reports one)."""
    from confluent_kafka import KafkaError, Producer

    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
                  "error_cb": errors.append, "log_level": 0})
    deadline = time.monotonic() + 60
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors) and time.monotonic() < deadline:
        p.poll(0.2)
    return next((e.str() for e in errors if e.code() == KafkaError._AUTHENTICATION), f"no refusal: {errors}")


def test_unknown_user_and_wrong_password_are_refused(secure):
    assert "invalid credentials" in authentication_refused(secure.bootstrap_servers, "stranger", "guess")
    model = role(secure, "model")
    assert "invalid credentials" in authentication_refused(secure.bootstrap_servers, model["username"],
                                                           model["password"] + "x")
    # and the right password gets in (so the refusals above are about the credentials)
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=secure.bootstrap_servers, **client_config(model))
    try:
        assert T.scores in c.topics()
    finally:
        c.close()


def test_a_model_principal_cannot_read_answers_nor_write_schedules(secure):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    cfg = client_config(role(secure, "model"))
    c = KafkaConsumer(bootstrap_servers=secure.bootstrap_servers, group_id=None, **cfg)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            c.end_offsets([TopicPartition(T.answers, 0)])
        assert c.end_offsets([TopicPartition(T.augmented, 0)])  # its input it may read
    finally:
        c.close()
    p = KafkaProducer(bootstrap_servers=secure.bootstrap_servers, max_block_ms=30_000, **cfg)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(T.schedules, b"{}", key=b"k").get(timeout=30)
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(T.answers, b"{}").get(timeout=30)
        assert p.send(T.scores, b"not a score").get(timeout=30)  # its output it may write
    finally:
        p.close()


def test_the_whole_pipeline_answers_every_request_with_per_role_principals(secure, stack, unique):
    from tools.load import run_load

    s = secure
    schedules.publish(s.bootstrap_servers, SCHEDULE, topic=T.schedules, lifecycle_topic=T.lifecycle)
    started: list[str] = []
    # external state and rendezvous from the earliest offsets (the topics are this module's own): a source at
    # "latest" can resolve its offsets after the first records were written
    try:
        started.append(deploy.deploy_external_state(s, job_name=f"sec-es-{unique}", start="earliest",
                                                    group_id=f"external-state-{unique}", wait=False))
        # a new model deployment starts at the end of its input (a replay into `scores` is refused); the
        # warm-up's answers may then be defaults, the load's below are the model's
        started.append(deploy.deploy_model(CARD, s, job_name=f"sec-model-{unique}",
                                           group_id=f"model-const-{unique}", wait=False))
        started.append(deploy.deploy_rendezvous(s, job_name=f"sec-rv-{unique}", start="earliest",
                                                group_id=f"rendezvous-{unique}", wait=False))
        for jid in started:
            jobs.wait_running(jid, s, timeout=180)

        # warm up as the clients' principal until the model answers (the first records through fresh Python
        # workers take seconds, and the model job starts at the end of its input: early ones get the default)
        gen = TransactionGenerator(seed=5, prefix=f"sec-{unique}")
        deadline = time.monotonic() + 240
        while True:
            warm = [gen.next(int(time.time() * 1000)).request for _ in range(3)]
            ids = {r["request_id"] for r in warm}
            kafka_io.produce(s.bootstrap_servers, T.requests, warm, role="client")
            got = [Answer.parse(v) for v in kafka_io.consume(
                s.bootstrap_servers, T.answers, timeout=60, role="client",
                until=lambda vs: {Answer.parse(v).request_id for v in vs} >= ids)]
            if any(a.request_id in ids and a.model == "const@1" for a in got):
                break
            assert time.monotonic() < deadline, ("no answer from the model", [jobs.job_exceptions(j, s) for j in started])

        # a small load with the load generator (confluent-kafka), as the clients' principal
        report = run_load(s.bootstrap_servers, rate=10, duration_s=5, requests_topic=T.requests,
                          answers_topic=T.answers, seed=7, drain_s=120, progress=None)
        assert report.sent == 50
        assert report.answered == report.sent and report.unanswered == 0, report
        assert report.by_model == {"const@1": 50}, report.by_model  # every answer from the model, none default

        # no password in Flink's logs (the jobs' clients read them from the credentials files)
        passwords = [role(s, r)["password"] for r in ("external_state", "model", "rendezvous", "operator")]
        for log in stack.log_dir.glob("flink-*"):
            text = log.read_text(errors="replace")
            assert not [p for p in passwords if p in text], f"a password is in {log}"
    finally:
        for jid in started:
            try:
                jobs.cancel(jid, s)
            except Exception:
                pass
