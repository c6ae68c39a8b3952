"""Supervisor of the embedded Kafka broker: a single KRaft node run with plain `java` from build/jars."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from control.errors import RuntimeStartError
from control.runtime.process import Progress, pid_alive, read_pid, say, terminate_tree
from control.settings import RuntimeSettings

KAFKA_PID = "kafka.pid"


def render_kafka_config(s: RuntimeSettings) -> Path:
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
    path = conf_dir / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
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


def kafka_healthy(bootstrap: str) -> bool:
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
 client_id="rendezvous-health")
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()
    except Exception:
        return False


def start_kafka(s: RuntimeSettings, java: str, progress: Progress | None) -> None:
    server_props = render_kafka_config(s)
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
    say(progress, f"starting Kafka broker on {s.host}:{s.kafka_port}")
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
    return kafka_healthy(s.bootstrap_servers)




def stop_kafka(s: RuntimeSettings, progress: Progress | None) -> None:
    path = s.pid_dir / KAFKA_PID
    pid = read_pid(path)
    if pid and pid_alive(pid):
        say(progress, f"stopping Kafka broker (pid {pid})")
        terminate_tree(pid, timeout=30)
    path.unlink(missing_ok=True)
