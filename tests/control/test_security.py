"""Security without a JVM: the secure broker's config, the roles' ACLs, the credentials files and how each
kind of client gets its principal's settings (README, "Security")."""

import json
import stat

import pytest

from control import kafka_io
from control.ops import deploy
from control.runtime.kafka import render_kafka_config
from control.security import (
    BROKER,
    GROUP_PREFIXES,
    ROLES,
    ensure_credentials,
    grants,
    principal,
    to_acls,
)
from control.settings import RuntimeSettings
from jobs.common.security import (
    FILE_PROVIDER,
    client_config,
    flink_properties,
    librdkafka_config,
    read_properties,
    resolve,
)
from jobs.external_state.settings import ExternalStateSettings
from jobs.models.settings import ModelJobSettings
from jobs.quality.settings import QualitySettings
from jobs.rendezvous.settings import RendezvousSettings
from schemas.topics import TopicNames


@pytest.fixture
def secure_settings(tmp_path, monkeypatch):
    for k in ("RENDEZVOUS_SECURE", "RENDEZVOUS_KAFKA_CREDENTIALS_DIR", "RENDEZVOUS_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(k, raising=False)
    return RuntimeSettings().model_copy(update={"run_dir_override": tmp_path / "run", "secure": True,
                                                "kafka_port": 19092, "kafka_controller_port": 19093})


def allowed(gs, role):
    return {(g.operation, g.name) for g in gs if g.principal == principal(role) and g.resource == "TOPIC"}


def test_each_role_may_do_what_its_job_does_and_nothing_else():
    t = TopicNames()
    gs = grants(t)
    assert allowed(gs, "external_state") == {("READ", "requests"), ("WRITE", "requests.augmented"),
                                             ("WRITE", "requests.quarantine"), ("READ", "transitions"),
                                             ("WRITE", "requests.augmented-shadow")}
    assert allowed(gs, "model") == {("READ", "requests.augmented"), ("WRITE", "scores")}
    assert allowed(gs, "rendezvous") == {("READ", "requests.augmented"), ("READ", "scores"), ("READ", "schedules"),
                                         ("READ", "answers"), ("WRITE", "answers"), ("WRITE", "scores.late"),
                                         ("WRITE", "requests.quarantine"), ("WRITE", "answers."),
                                         ("READ", "transitions"), ("WRITE", "answers-shadow")}
    assert allowed(gs, "quality") == {("READ", "requests"), ("WRITE", "quality")}
    assert allowed(gs, "client") == {("WRITE", "requests"), ("WRITE", "labels"), ("READ", "answers"),
                                     ("READ", "schedules"), ("CREATE", "answers."), ("READ", "answers.")}
    # the gateways' reply topics go by prefix: every `answers.<gateway id>`, and only those
    assert {(g.principal, g.operation) for g in gs if g.name == "answers."} == {
        (principal("client"), "CREATE"), (principal("client"), "READ"), (principal("rendezvous"), "WRITE")}
    assert all(g.pattern == "PREFIXED" for g in gs if g.name == "answers.")
    # the operators read and manage everything but write only the control topics, and a hand-over's transition
    # tokens into the thread-mode jobs' inputs; they are no super user
    op = allowed(gs, "operator")
    assert {n for o, n in op if o == "WRITE"} == {"schedules", "lifecycle", "models", "transitions", "requests",
                                                  "requests.augmented"}
    assert ("READ", "*") in op and ("CREATE", "*") in op and ("ALTER", "*") in op
    assert {g.principal for g in gs if g.operation == "WRITE" and g.name == "answers"} == {principal("rendezvous")}
    # a new version's shadow output (a hand-over): its job's principal only, and no reply topic's name
    assert {g.principal for g in gs if g.operation == "WRITE" and g.name == "answers-shadow"} \
        == {principal("rendezvous")} and not "answers-shadow".startswith("answers.")
    assert {g.principal for g in gs if g.operation == "WRITE" and g.name == "requests.augmented-shadow"} \
        == {principal("external_state")}
    assert {g.principal for g in gs if g.operation == "WRITE" and g.name in ("schedules", "lifecycle", "models")} \
        == {principal("operator")}
    # topics by literal name (a prefix `requests` would also match requests.augmented), groups by prefix; the
    # one topic prefix is the reply topics' `answers.`, which names no topic of the system
    assert all(g.pattern == "LITERAL" for g in gs if g.resource == "TOPIC" and g.name != "answers.")
    assert not [n for n in TopicNames().__dict__.values() if n.startswith("answers.")]
    assert {g.name for g in gs if g.resource == "TOPIC" and g.name == "*"} == {"*"}  # the operators' wildcard only
    assert {g.principal for g in gs if g.name == "*"} == {principal("operator")}
    assert {(g.principal, g.name) for g in gs if g.resource == "GROUP" and g.pattern == "PREFIXED"} == \
        {(principal(r), p) for r, p in GROUP_PREFIXES.items()}


def test_suffixed_topics_get_their_own_literal_acls_and_acl_objects_are_made():
    t = TopicNames.suffixed("ab12")
    gs = grants(t)
    assert ("READ", "answers-ab12") in allowed(gs, "client")
    assert ("WRITE", "answers-ab12.") in allowed(gs, "rendezvous")
    acls = to_acls(gs)
    assert len(acls) == len(gs) and all(a.host == "*" for a in acls)


def test_the_job_groups_start_with_their_roles_prefix():
    from schemas.model_card import ModelCard

    card = ModelCard(model_id="m", version="1", runner="model_udfs.python_runners:ConstantRunner")
    assert ExternalStateSettings().group_id.startswith(GROUP_PREFIXES["external_state"])
    assert ModelJobSettings(card=card).group_id.startswith(GROUP_PREFIXES["model"])
    rv = RendezvousSettings().group_id
    assert rv.startswith(GROUP_PREFIXES["rendezvous"]) and f"{rv}-schedules".startswith(GROUP_PREFIXES["rendezvous"])
    assert QualitySettings.model_fields["group_id"].default.startswith(GROUP_PREFIXES["quality"])


def test_credentials_are_generated_once_and_readable_only_by_their_owner(tmp_path):
    d = tmp_path / "creds"
    assert sorted(ensure_credentials(d)) == sorted([*ROLES, BROKER])
    first = read_properties(d / "model.properties")
    assert ensure_credentials(d) == []
    assert read_properties(d / "model.properties") == first
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in d.iterdir())
    assert first["sasl.mechanism"] == "SCRAM-SHA-512" and first["username"] == "model" and len(first["password"]) >= 24
    assert len({read_properties(d / f"{r}.properties")["password"] for r in ROLES}) == len(ROLES)


def test_the_secure_broker_config(secure_settings):
    s = secure_settings
    path = render_kafka_config(s, secure=True)
    props = read_properties(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the broker's password
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["auto.create.topics.enable"] == "false"
    assert props["super.users"] == "User:broker"  # the operators are not: only the rendezvous writes answers
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "SCRAM-SHA-512,PLAIN"
    broker_pw = read_properties(s.credentials_dir / "broker.properties")["password"]
    assert f'user_broker="{broker_pw}"' in props["listener.name.controller.plain.sasl.jaas.config"]
    plain = read_properties(render_kafka_config(s, secure=False))
    assert plain["auto.create.topics.enable"] == "true" and "authorizer.class.name" not in plain


def test_a_jobs_properties_refer_to_its_file_and_hold_no_password(tmp_path):
    ensure_credentials(tmp_path)
    f = tmp_path / "model.properties"
    pw = read_properties(f)["password"]
    props = flink_properties(f)
    assert pw not in json.dumps(props)
    assert props["config.providers"] == "file" and props["config.providers.file.class"] == FILE_PROVIDER
    assert props["sasl.jaas.config"] == (
        "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="${{file:{f}:username}}" password="${{file:{f}:password}}";')
    assert props["security.protocol"] == "SASL_PLAINTEXT" and props["sasl.mechanism"] == "SCRAM-SHA-512"
    # what the job's own kafka-python client (the recovery scan) makes of them: the file's credentials
    assert client_config(props) == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                    "sasl_plain_username": "model", "sasl_plain_password": pw}
    assert resolve({"x": f"a ${{file:{f}:username}} b"}) == {"x": "a model b"}


def test_librdkafka_settings_of_a_principal(tmp_path):
    ensure_credentials(tmp_path)
    props = read_properties(tmp_path / "client.properties")
    assert librdkafka_config(props) == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                        "sasl.username": "client", "sasl.password": props["password"]}


def test_deployed_jobs_authenticate_as_their_role_with_no_password_on_argv(secure_settings):
    s = secure_settings
    ensure_credentials(s.credentials_dir)
    for cls, role in ((ExternalStateSettings, "external_state"), (RendezvousSettings, "rendezvous")):
        argv = deploy.job_settings(cls, s).to_argv()
        pw = read_properties(s.credentials_dir / f"{role}.properties")["password"]
        assert pw not in " ".join(argv)
        kafka = json.loads(argv[1])["kafka"]
        assert f"{s.credentials_dir / role}.properties:password" in kafka["properties"]["sasl.jaas.config"]
        assert kafka["bootstrap_servers"] == "127.0.0.1:19092"


def test_clients_find_their_principal_by_settings_or_registration(secure_settings, tmp_path, monkeypatch):
    ensure_credentials(tmp_path / "c")
    kafka_io.use_credentials("h:1", tmp_path / "c")
    try:
        op = kafka_io.client_kwargs("h:1")
        assert op["sasl_plain_username"] == "operator" and op["bootstrap_servers"] == "h:1"
        assert kafka_io.librdkafka_config("h:1", "client", **{"acks": 1})["sasl.username"] == "client"
    finally:
        kafka_io.use_credentials("h:1", None)
    monkeypatch.setenv("RENDEZVOUS_KAFKA_CREDENTIALS_DIR", str(tmp_path / "c"))
    assert kafka_io.client_kwargs("h:2", "model")["sasl_plain_username"] == "model"
    monkeypatch.delenv("RENDEZVOUS_KAFKA_CREDENTIALS_DIR")
    monkeypatch.setenv("RENDEZVOUS_RUN_DIR", str(tmp_path / "plain"))
    assert kafka_io.client_kwargs("h:3") == {"bootstrap_servers": "h:3"}  # not secured: no settings


def test_the_mode_the_broker_was_started_in_decides_for_later_commands(tmp_path, monkeypatch):
    for k in ("RENDEZVOUS_SECURE", "RENDEZVOUS_KAFKA_CREDENTIALS_DIR", "RENDEZVOUS_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(k, raising=False)
    s = RuntimeSettings().model_copy(update={"run_dir_override": tmp_path})
    assert not s.kafka_secured
    s.kafka_mode_file.write_text("secure")
    assert s.kafka_secured and s.credentials_dir == tmp_path / "credentials"
    with pytest.raises(FileNotFoundError, match="up --secure"):
        s.kafka_client_properties("model")
    s.kafka_mode_file.write_text("plaintext")
    assert not s.kafka_secured and s.kafka_client_properties("model") == {}
