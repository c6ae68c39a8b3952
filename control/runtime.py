"""The embedded runtime: a single-node KRaft Kafka broker and a Flink standalone session cluster.

`up` starts what is not running, waits for health and creates the topics; `down` stops exactly the
processes `up` started (tracked by pid files under run/pids); `status` reports each component.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from control.settings import RuntimeSettings, java_executable
from control.topics import ensure_topics

Progress = Callable[[str], None]


class RuntimeError_(RuntimeError):
    """A runtime problem with a message that says what to do next."""


def _say(progress: Progress | None, msg: str) -> None:
    if progress:
        progress(msg)


# ---------------------------------------------------------------------------------------------
# pid files and processes
# ---------------------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError_(f"timed out after {timeout:.0f}s waiting for {what}")


def terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group (or the process), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.2)


def descendants(pid: int) -> list[int]:
    """All descendants of pid (from /proc), e.g. Python workers started by a TaskManager."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def check_prerequisites(s: RuntimeSettings) -> str:
    java = java_executable()
    if not java:
        raise RuntimeError_("Java was not found. Install Java 17 (e.g. `apt install openjdk-17-jdk`) "
                            "or set JAVA_HOME, then run `rendezvous up` again.")
    if not list(s.kafka_jar_dir.glob("kafka_2.13-*.jar")) or not s.connector_jars:
        raise RuntimeError_(f"The Kafka and Flink connector jars are missing under {s.home / 'build/jars'}. "
                            "Run `make setup` first.")
    return java


# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------
KAFKA_PID = "kafka.pid"


def render_kafka_config(s: RuntimeSettings) -> Path:
    conf_dir = s.run_dir / "kafka-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
        "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
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
        _say(progress, f"formatting KRaft storage in {s.kafka_data_dir}")
        s.kafka_data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = uuid.uuid4().hex[:22]
        out = subprocess.run([java, *jvm, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                              "-c", str(server_props), "--ignore-formatted"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError_(f"formatting Kafka storage failed:\n{out.stdout}{out.stderr}\n"
                                f"Delete {s.kafka_data_dir} and run `rendezvous up` again.")
    _say(progress, f"starting Kafka broker on {s.host}:{s.kafka_port}")
    log = open(s.log_dir / "kafka.out", "ab")
    proc = subprocess.Popen([java, *jvm, "-cp", cp, "kafka.Kafka", str(server_props)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=s.run_dir)
    (s.pid_dir / KAFKA_PID).write_text(str(proc.pid))


# ---------------------------------------------------------------------------------------------
# Flink
# ---------------------------------------------------------------------------------------------
def render_flink_conf(s: RuntimeSettings) -> Path:
    out = s.rendered_flink_conf_dir
    out.mkdir(parents=True, exist_ok=True)
    values = {
        "REPO": str(s.home),
        "RUN_DIR": str(s.run_dir),
        "PYTHON": str(s.venv_python if s.venv_python.exists() else Path(sys.executable)),
        "FLINK_REST_PORT": str(s.flink_rest_port),
        "JOBMANAGER_RPC_PORT": str(s.jobmanager_rpc_port),
        "BLOB_PORT": str(s.blob_port),
        "HOST": s.host,
    }
    for src in s.flink_conf_template_dir.iterdir():
        if src.is_file():
            (out / src.name).write_text(string.Template(src.read_text()).safe_substitute(values))
    for d in ("checkpoints", "flink-tmp", "flink-web-upload"):
        (s.run_dir / d).mkdir(parents=True, exist_ok=True)
    s.savepoint_dir.mkdir(parents=True, exist_ok=True)
    return out


def flink_lib_dir(s: RuntimeSettings) -> Path:
    """The cluster's lib/: the wheel's lib/ jars plus flink-python from opt/.

    With flink-python (and its embedded interpreter, pemja) on the cluster classpath, pemja's native
    library is loaded once per TaskManager JVM. Loaded from each job's own classloader instead, the
    second job in thread mode fails on Java 17 (`NoSuchFieldException: loadedLibraryNames`)."""
    out = s.run_dir / "flink-lib"
    out.mkdir(parents=True, exist_ok=True)
    wanted = {j.name: j for j in (s.flink_home / "lib").glob("*.jar")}
    wanted.update({j.name: j for j in (s.flink_home / "opt").glob("flink-python-*.jar")})
    for existing in out.iterdir():
        if existing.name not in wanted or existing.resolve() != wanted[existing.name].resolve():
            existing.unlink()
    for name, target in wanted.items():
        link = out / name
        if not link.exists():
            link.symlink_to(target)
    return out


def flink_env(s: RuntimeSettings) -> dict[str, str]:
    env = dict(os.environ)
    env["FLINK_HOME"] = str(s.flink_home)
    env["FLINK_LIB_DIR"] = str(flink_lib_dir(s))
    env["FLINK_CONF_DIR"] = str(s.rendered_flink_conf_dir)
    env["FLINK_LOG_DIR"] = str(s.log_dir)
    env["FLINK_PID_DIR"] = str(s.pid_dir)
    java = java_executable()
    if java and "JAVA_HOME" not in env:
        env["JAVA_HOME"] = str(Path(java).resolve().parent.parent)
    # Flink's Python workers and the `flink run` client must use this project's interpreter.
    env["PYFLINK_CLIENT_EXECUTABLE"] = str(s.venv_python if s.venv_python.exists() else sys.executable)
    venv_bin = str(s.venv_python.parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def flink_pid_files(s: RuntimeSettings) -> dict[str, Path]:
    return {
        "jobmanager": next(iter(s.pid_dir.glob("flink-*-standalonesession.pid")), s.pid_dir / "flink-standalonesession.pid"),
        "taskmanager": next(iter(s.pid_dir.glob("flink-*-taskexecutor.pid")), s.pid_dir / "flink-taskexecutor.pid"),
    }


def flink_rest(s: RuntimeSettings, path: str, method: str = "GET", body: dict | None = None,
               timeout: float = 10.0, attempts: int | None = None) -> dict:
    """Call Flink's REST API. GETs are retried on timeouts (a busy 2-core JobManager can be slow)."""
    data = json.dumps(body).encode() if body is not None else None
    tries = attempts if attempts is not None else (3 if method == "GET" else 1)
    for attempt in range(tries):
        req = urllib.request.Request(f"http://{s.flink_address}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else {}
        except (TimeoutError, socket.timeout, ConnectionResetError):
            if attempt == tries - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def flink_overview(s: RuntimeSettings) -> dict | None:
    try:
        return flink_rest(s, "/overview", timeout=3.0, attempts=1)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def flink_healthy(s: RuntimeSettings) -> bool:
    ov = flink_overview(s)
    return bool(ov and ov.get("taskmanagers", 0) >= 1 and ov.get("slots-available", 0) >= 1)


def start_flink(s: RuntimeSettings, progress: Progress | None) -> None:
    render_flink_conf(s)
    env = flink_env(s)
    bin_dir = s.flink_home / "bin"
    for script, what in (("jobmanager.sh", "JobManager"), ("taskmanager.sh", "TaskManager")):
        _say(progress, f"starting Flink {what}")
        out = subprocess.run(["bash", str(bin_dir / script), "start"], env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError_(f"starting the Flink {what} failed:\n{out.stdout}{out.stderr}\n"
                                f"See the logs in {s.log_dir}.")


# ---------------------------------------------------------------------------------------------
# up / down / status
# ---------------------------------------------------------------------------------------------
@dataclass
class Component:
    name: str
    running: bool
    pid: int | None
    address: str
    detail: str = ""


def status(s: RuntimeSettings | None = None) -> list[Component]:
    s = s or RuntimeSettings()
    kpid = read_pid(s.pid_dir / KAFKA_PID)
    k_alive = bool(kpid and pid_alive(kpid))
    comps = [Component("kafka broker", k_alive and kafka_healthy(s.bootstrap_servers), kpid if k_alive else None,
                       s.bootstrap_servers, "KRaft, single node")]
    ov = flink_overview(s)
    pids = flink_pid_files(s)
    jpid = read_pid(pids["jobmanager"])
    tpid = read_pid(pids["taskmanager"])
    comps.append(Component("flink jobmanager", bool(jpid and pid_alive(jpid) and ov), jpid,
                           f"http://{s.flink_address}",
                           f"{ov.get('jobs-running', 0)} jobs running" if ov else "REST not answering"))
    comps.append(Component("flink taskmanager", bool(tpid and pid_alive(tpid) and ov and ov.get("taskmanagers")),
                           tpid, f"{s.host}",
                           f"{ov.get('slots-available', 0)}/{ov.get('slots-total', 0)} slots free" if ov else ""))
    return comps


def processes_alive(s: RuntimeSettings | None = None) -> bool:
    """Whether every process `up` starts is alive (by pid file; says nothing of health)."""
    s = s or RuntimeSettings()
    pids = flink_pid_files(s)
    return all(p and pid_alive(p) for p in (read_pid(s.pid_dir / KAFKA_PID), read_pid(pids["jobmanager"]),
                                             read_pid(pids["taskmanager"])))


def up(s: RuntimeSettings | None = None, progress: Progress | None = print) -> list[Component]:
    s = s or RuntimeSettings()
    t0 = time.monotonic()
    java = check_prerequisites(s)
    for d in (s.run_dir, s.log_dir, s.pid_dir):
        d.mkdir(parents=True, exist_ok=True)

    kpid = read_pid(s.pid_dir / KAFKA_PID)
    if kpid and pid_alive(kpid):
        _say(progress, f"Kafka broker already running (pid {kpid})")
    else:
        for port in (s.kafka_port, s.kafka_controller_port):
            if port_in_use(s.host, port):
                raise RuntimeError_(f"port {s.host}:{port} is taken by a process this project did not start. "
                                    f"Stop it, or choose other ports with RENDEZVOUS_KAFKA_PORT / "
                                    f"RENDEZVOUS_KAFKA_CONTROLLER_PORT.")
        start_kafka(s, java, progress)

    pids = flink_pid_files(s)
    jpid, tpid = read_pid(pids["jobmanager"]), read_pid(pids["taskmanager"])
    if jpid and pid_alive(jpid) and tpid and pid_alive(tpid):
        _say(progress, f"Flink cluster already running (pids {jpid}, {tpid})")
    else:
        if jpid or tpid:  # half a cluster: stop it and start cleanly
            stop_flink(s, progress)
        for port in (s.flink_rest_port, s.jobmanager_rpc_port, s.blob_port):
            if port_in_use(s.host, port):
                raise RuntimeError_(f"port {s.host}:{port} is taken by a process this project did not start. "
                                    f"Stop it, or choose other ports with RENDEZVOUS_FLINK_REST_PORT / "
                                    f"RENDEZVOUS_JOBMANAGER_RPC_PORT / RENDEZVOUS_BLOB_PORT.")
        start_flink(s, progress)

    _say(progress, "waiting for the Kafka broker to answer metadata requests")
    try:
        wait_for(lambda: _kafka_or_die(s), s.startup_timeout_s, "the Kafka broker")
    except RuntimeError_ as e:
        raise RuntimeError_(f"{e}. See {s.log_dir / 'kafka.out'} and {s.log_dir / 'kafka.log'}.") from None
    created = ensure_topics(s.bootstrap_servers, partitions=s.topic_partitions)
    if created:
        _say(progress, f"created topics: {', '.join(created)}")
    _say(progress, "waiting for a Flink TaskManager with free slots")
    try:
        wait_for(lambda: flink_healthy(s), s.startup_timeout_s, "the Flink cluster")
    except RuntimeError_ as e:
        raise RuntimeError_(f"{e}. See the flink-*.log files in {s.log_dir}.") from None
    _say(progress, f"runtime up in {time.monotonic() - t0:.1f}s")
    return status(s)


def _kafka_or_die(s: RuntimeSettings) -> bool:
    kpid = read_pid(s.pid_dir / KAFKA_PID)
    if not (kpid and pid_alive(kpid)):
        tail = ""
        try:
            tail = (s.log_dir / "kafka.out").read_text()[-2000:]
        except OSError:
            pass
        raise RuntimeError_(f"the Kafka broker exited during startup:\n{tail}")
    return kafka_healthy(s.bootstrap_servers)


def stop_flink(s: RuntimeSettings, progress: Progress | None) -> None:
    pids = flink_pid_files(s)
    for role in ("taskmanager", "jobmanager"):
        path = pids[role]
        for line in (path.read_text().split() if path.exists() else []):
            try:
                pid = int(line)
            except ValueError:
                continue
            if pid_alive(pid):
                _say(progress, f"stopping Flink {role} (pid {pid})")
                kids = descendants(pid)
                terminate(pid)
                for k in kids:
                    if pid_alive(k):
                        terminate(k, timeout=5)
        path.unlink(missing_ok=True)
    # a new TaskManager has imported no thread-mode code yet (see control.jobs.check_thread_mode_code)
    (s.pid_dir / "thread-mode-code.sha256").unlink(missing_ok=True)


def down(s: RuntimeSettings | None = None, progress: Progress | None = print) -> None:
    s = s or RuntimeSettings()
    stop_flink(s, progress)
    kpid_path = s.pid_dir / KAFKA_PID
    kpid = read_pid(kpid_path)
    if kpid and pid_alive(kpid):
        _say(progress, f"stopping Kafka broker (pid {kpid})")
        terminate(kpid, timeout=30)
    kpid_path.unlink(missing_ok=True)
    for pid_file in s.pid_dir.glob("mlserver-*.pid") if s.pid_dir.exists() else []:  # model servers of the demo
        from control import mlserver

        try:
            port = int(pid_file.stem.split("-", 1)[1])
        except ValueError:
            continue
        if mlserver.stop_recorded(port, s):
            _say(progress, f"stopped MLServer on port {port}")
    _say(progress, "runtime down")
