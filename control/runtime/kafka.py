"""Supervisor of the embedded Kafka broker: a single KRaft node run with plain `java` from build/jars."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from pathlib import Path

from control.errors import RuntimeStartError
from control.runtime.process import Progress, pid_alive, read_pid, say, terminate_tree
from control.settings import RuntimeSettings

KAFKA_PID = "kafka.pid"


def secure_properties(s: RuntimeSettings, broker_password: str) -> dict[str, str]:
    """The broker settings that secure it: one SASL_PLAINTEXT listener for clients (SCRAM-SHA-512; PLAIN
    only for the broker's own principal, whose password only this config holds), the controller listener
    authenticated with PLAIN (SCRAM cannot be used there), the KRaft StandardAuthorizer with nothing allowed
    without an ACL, the broker its only super user, no automatic topic creation."""
    from control.security import BROKER, MECHANISM, principal, user_of

    user = user_of(BROKER)
    plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{user}" '
             f'password="{broker_password}" user_{user}="{broker_password}";')
    return {
        "listeners": f"SASL_PLAINTEXT://{s.listen_host}:{s.kafka_port},CONTROLLER://{s.listen_host}:{s.kafka_controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{s.host}:{s.kafka_port}",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": f"{MECHANISM},PLAIN",
        f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": principal(BROKER),
        "auto.create.topics.enable": "false",
    }


def render_kafka_config(s: RuntimeSettings, secure: bool = False) -> Path:
    """Write run/kafka-conf/server.properties (mode 0600: with `secure` it holds the broker's password)."""
    conf_dir = s.run_dir / "kafka-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
        "listeners": f"PLAINTEXT://{s.listen_host}:{s.kafka_port},CONTROLLER://{s.listen_host}:{s.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(s.kafka_data_dir),
        "num.partitions": str(s.topic_partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    if secure:
        from control.security import BROKER, ensure_credentials
        from jobs.common.security import read_properties

        ensure_credentials(s.credentials_dir)
        props.update(secure_properties(s, read_properties(s.credentials_dir / f"{BROKER}.properties")["password"]))
    path = conf_dir / "server.properties"
    from jobs.common.security import write_properties

    write_properties(path, props)
    (conf_dir / "log4j2.properties").write_text(
        "status = warn\n"
        "appender.file.type = File\n"
        "appender.file.name = file\n"
        f"appender.file.fileName = {s.log_dir / 'kafka.log'}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = info\n"
        "rootLogger.appenderRef.file.ref = file\n"
        "logger.kafka.name = kafka\nlogger.kafka.level = warn\n"
        "logger.apache.name = org.apache.kafka\nlogger.apache.level = warn\n"
    )
    return path


def last_mode(s: RuntimeSettings) -> str | None:
    """How the embedded broker was last started: 'secure', 'plaintext', or None (never, or before modes)."""
    return s.kafka_last_mode


def broker_client(s: RuntimeSettings) -> dict:
    """kafka-python settings of the broker's own principal (can act before any SCRAM user exists)."""
    from control.security import BROKER
    from jobs.common.security import client_config, read_properties

    return {"bootstrap_servers": s.bootstrap_servers,
            **client_config(read_properties(s.credentials_dir / f"{BROKER}.properties"))}


def kafka_healthy(bootstrap: str, client: dict | None = None) -> bool:
    """Whether the broker answers a metadata request (authenticated with `client`'s kafka-python settings;
    default: the operators' principal, as `control.kafka_io` finds it)."""
    try:
        from kafka import KafkaAdminClient

        if client is None:
            from control.kafka_io import client_kwargs

            client = client_kwargs(bootstrap)
        admin = KafkaAdminClient(**{"bootstrap_servers": bootstrap, **client}, request_timeout_ms=3000,
                                 client_id="rendezvous-health")
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()
    except Exception:
        return False


def start_kafka(s: RuntimeSettings, java: str, progress: Progress | None, secure: bool | None = None) -> None:
    """Start the broker; `secure` None: as it was last started (the supervisor's restart)."""
    if secure is None:
        secure = last_mode(s) == "secure"
    server_props = render_kafka_config(s, secure)
    cp = f"{s.kafka_jar_dir}/*"
    jvm = ["-Xms256m", "-Xmx768m", f"-Dlog4j2.configurationFile={s.run_dir / 'kafka-conf' / 'log4j2.properties'}"]
    if not (s.kafka_data_dir / "meta.properties").exists():
        say(progress, f"formatting KRaft storage in {s.kafka_data_dir}")
        s.kafka_data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = uuid.uuid4().hex[:22]
        out = subprocess.run([java, *jvm, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                              "-c", str(server_props), "--ignore-formatted"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeStartError(f"formatting Kafka storage failed:\n{out.stdout}{out.stderr}\n"
                                f"Delete {s.kafka_data_dir} and run `rendezvous up` again.")
    s.kafka_mode_file.write_text("secure" if secure else "plaintext")
    say(progress, f"starting Kafka broker on {s.host}:{s.kafka_port}"
                  + (" (SASL/SCRAM, ACLs)" if secure else ""))
    log = open(s.log_dir / "kafka.out", "ab")
    proc = subprocess.Popen([java, *jvm, "-cp", cp, "kafka.Kafka", str(server_props)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=s.run_dir)
    (s.pid_dir / KAFKA_PID).write_text(str(proc.pid))


def kafka_alive_and_healthy(s: RuntimeSettings) -> bool:
    kpid = read_pid(s.pid_dir / KAFKA_PID)
    if not (kpid and pid_alive(kpid)):
        tail = ""
        try:
            tail = (s.log_dir / "kafka.out").read_text()[-2000:]
        except OSError:
            pass
        raise RuntimeStartError(f"the Kafka broker exited during startup:\n{tail}")
    return kafka_healthy(s.bootstrap_servers, broker_client(s) if last_mode(s) == "secure" else {})


@contextlib.contextmanager
def _as_broker(s: RuntimeSettings):
    """An admin client of the broker's own principal (it may create users and ACLs)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**broker_client(s), client_id="rendezvous-security")
    try:
        yield admin
    finally:
        admin.close()


def grant(s: RuntimeSettings, gs) -> None:
    """Create these grants' ACLs (`control.security.Grant`s) on a secure embedded broker, as the broker's principal
    (creating one that exists is a no-op): e.g. a hand-over's shadow topic of topics named at run time."""
    from control.security import create_acls

    with _as_broker(s) as admin:
        create_acls(admin, list(gs))


def secure_broker(s: RuntimeSettings, topics=None) -> None:
    """On a secure embedded broker: the roles' SCRAM users (passwords from their files) and the ACLs of
    `topics` (default: the default topic names), created as the broker's principal; returns once the
    operators' principal can authenticate."""
    from control.runtime.process import wait_for
    from control.security import create_acls, create_users, grants
    from schemas.topics import TopicNames

    with _as_broker(s) as admin:
        create_users(admin, s.credentials_dir)
        create_acls(admin, grants(topics or TopicNames()))
    from control.kafka_io import client_kwargs, use_credentials

    use_credentials(s.bootstrap_servers, s.credentials_dir)
    wait_for(lambda: kafka_healthy(s.bootstrap_servers, client_kwargs(s.bootstrap_servers)), s.startup_timeout_s,
             "the operators' principal to authenticate")


def stop_kafka(s: RuntimeSettings, progress: Progress | None) -> None:
    path = s.pid_dir / KAFKA_PID
    pid = read_pid(path)
    if pid and pid_alive(pid):
        say(progress, f"stopping Kafka broker (pid {pid})")
        terminate_tree(pid, timeout=30)
    path.unlink(missing_ok=True)
