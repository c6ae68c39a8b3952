"""The embedded runtime: a single-node KRaft Kafka broker and a Flink standalone session cluster.

`up` starts what is not running, waits for health and creates the topics; `down` stops exactly the
processes `up` started (tracked by pid files under run/pids), and the demo's model servers; `status`
reports each component.
"""

from __future__ import annotations

import time
import urllib.error
from dataclasses import dataclass

from control.errors import RuntimeStartError
from control.kafka_io import ensure_topics
from control.runtime import gateway, mlserver, pinned, priority, supervisor
from control.runtime.flink import (
    ensure_taskmanagers,
    flink_healthy,
    flink_overview,
    flink_pid_files,
    flink_rest,
    live_taskmanagers,
    start_flink,
    stop_flink,
    taskmanager_pids,
    wanted_taskmanagers,
)
from control.runtime.kafka import (
    KAFKA_PID,
    kafka_alive_and_healthy,
    kafka_healthy,
    last_mode,
    secure_broker,
    start_kafka,
    stop_kafka,
)
from control.runtime.process import (
    Progress,
    pid_alive,
    port_in_use,
    read_pid,
    say,
    wait_for,
)
from control.settings import RuntimeSettings, java_executable


def check_prerequisites(s: RuntimeSettings) -> str:
    java = java_executable()
    if not java:
        raise RuntimeStartError("Java was not found. Install Java 17 (e.g. `apt install openjdk-17-jdk`) "
                                "or set JAVA_HOME, then run `rendezvous up` again.")
    if not list(s.kafka_jar_dir.glob("kafka_2.13-*.jar")) or not s.connector_jars:
        raise RuntimeStartError(f"The Kafka and Flink connector jars are missing under {s.home / 'build/jars'}. "
                                "Run `make setup` first.")
    if not s.beam_loopback_jar.exists():
        raise RuntimeStartError(f"{s.beam_loopback_jar} is missing (without it the Python workers' gRPC servers "
                                "listen on every interface). Run `make setup` first.")
    if not s.prometheus_reporter_jar.exists():
        raise RuntimeStartError(f"{s.prometheus_reporter_jar} is missing (the Prometheus metrics reporter). "
                                "Run `make setup` first.")
    return java


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


def _use_credentials(s: RuntimeSettings) -> None:
    """Clients of this runtime's broker authenticate as its settings say (a secure embedded broker: with the
    credentials `up --secure` made)."""
    from control.kafka_io import use_credentials

    if s.kafka_secured:
        use_credentials(s.bootstrap_servers, s.credentials_dir)


def status(s: RuntimeSettings | None = None) -> list[Component]:
    s = s or RuntimeSettings()
    _use_credentials(s)
    kpid = read_pid(s.pid_dir / KAFKA_PID)
    k_alive = bool(kpid and pid_alive(kpid))
    secure = last_mode(s) == "secure"
    comps = [Component("kafka broker", k_alive and kafka_healthy(s.bootstrap_servers), kpid if k_alive else None,
                       s.bootstrap_servers, "KRaft, single node" + (", SASL/SCRAM + ACLs" if secure else ""))]
    ov = flink_overview(s)
    pids = flink_pid_files(s)
    jpid = read_pid(pids["jobmanager"])
    tms, wanted = live_taskmanagers(s), wanted_taskmanagers(s)
    own = [p for pin in pinned.pins(s) for p in pinned.pids(s, pin) if pid_alive(p)]
    comps.append(Component("flink jobmanager", bool(jpid and pid_alive(jpid) and ov), jpid,
                           f"http://{s.flink_address}",
                           f"{ov.get('jobs-running', 0)} jobs running" if ov else "REST not answering"))
    comps.append(Component("flink taskmanager", bool(len(tms) >= wanted and ov and ov.get("taskmanagers", 0) >= wanted),
                           tms[0] if tms else None, f"{s.host}",
                           ", ".join(x for x in (
                               f"{len(tms)}/{wanted} running" if wanted > 1 or len(tms) != wanted else "",
                               f"{ov.get('slots-available', 0)}/{ov.get('slots-total', 0)} slots free" if ov else "",
                               f"+{len(own)} of thread-mode jobs" if own else "")
                               if x)))
    for c in comps:
        n = supervisor.restarts_of(s, c.name)
        if n:
            c.detail = f"{c.detail}; restarted {n}x by the supervisor".lstrip("; ")
    spid = supervisor.running(s)
    comps.append(Component("supervisor", bool(spid), spid, str(s.log_dir / "supervisor.log"),
                           "restarts what dies" if spid else "not running: nothing restarts what dies"))
    for gw in gateway.recorded(s):
        up_ = gateway.ready(gw)
        comps.append(Component("gateway", up_, gw.pid if gw.running() else None, gw.url,
                               "Open Inference Protocol (V2 REST)" if up_ else f"not ready: see {gw.log_file}"))
    return comps


def processes_alive(s: RuntimeSettings | None = None) -> bool:
    """Whether every process `up` starts is alive (by pid file; says nothing of health)."""
    s = s or RuntimeSettings()
    pids = flink_pid_files(s)
    return all(p and pid_alive(p) for p in (read_pid(s.pid_dir / KAFKA_PID), read_pid(pids["jobmanager"]))) \
        and len(live_taskmanagers(s)) >= wanted_taskmanagers(s)


def up(s: RuntimeSettings | None = None, progress: Progress | None = print) -> list[Component]:
    s = s or RuntimeSettings()
    t0 = time.monotonic()
    java = check_prerequisites(s)
    for d in (s.run_dir, s.log_dir, s.pid_dir):
        d.mkdir(parents=True, exist_ok=True)

    kpid = read_pid(s.pid_dir / KAFKA_PID)
    # the broker's mode is sticky: once started secure it restarts secure until `up --no-secure`
    secure = s.secure if s.secure is not None else last_mode(s) == "secure"
    if secure and s.listen_host not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeStartError(f"the secure embedded broker has no TLS: SASL passwords would cross the network "
                                f"in the clear on {s.listen_host}. Keep it on loopback (unset RENDEZVOUS_BIND_HOST / "
                                f"RENDEZVOUS_HOST), or run a broker with SASL_SSL and point the project at it "
                                f"(README, \"Another secured broker\")")
    if kpid and pid_alive(kpid):
        if secure and last_mode(s) != "secure":
            raise RuntimeStartError(f"the Kafka broker (pid {kpid}) runs without security; to secure it, stop "
                                    f"the runtime (`rendezvous down`) and run `rendezvous up --secure` (the topics "
                                    f"and their data are kept)")
        if not secure and last_mode(s) == "secure":
            raise RuntimeStartError(f"the Kafka broker (pid {kpid}) runs with security; to run it without, stop "
                                    f"the runtime (`rendezvous down`) and run `rendezvous up --no-secure`")
        say(progress, f"Kafka broker already running (pid {kpid})"
                      + (", secured" if last_mode(s) == "secure" else ""))
    else:
        for port in (s.kafka_port, s.kafka_controller_port):
            if port_in_use(s.host, port):
                raise RuntimeStartError(f"port {s.host}:{port} is taken by a process this project did not start. "
                                    f"Stop it, or choose other ports with RENDEZVOUS_KAFKA_PORT / "
                                    f"RENDEZVOUS_KAFKA_CONTROLLER_PORT.")
        start_kafka(s, java, progress, secure=secure)

    pids = flink_pid_files(s)
    jpid, tpids = read_pid(pids["jobmanager"]), live_taskmanagers(s)
    tms = s.taskmanagers or wanted_taskmanagers(s)  # the count asked for last (1 after `down`)
    if jpid and pid_alive(jpid) and tpids:
        if len(tpids) != tms:
            ensure_taskmanagers(s, tms, progress)
        say(progress, f"Flink cluster running (JobManager pid {jpid}, {tms} TaskManager(s))")
    else:
        if jpid or taskmanager_pids(s):  # half a cluster: stop it and start cleanly
            pinned.stop_all(s, progress)
            stop_flink(s, progress)
        for port in (s.flink_rest_port, s.jobmanager_rpc_port, s.blob_port):
            if port_in_use(s.host, port):
                raise RuntimeStartError(f"port {s.host}:{port} is taken by a process this project did not start. "
                                    f"Stop it, or choose other ports with RENDEZVOUS_FLINK_REST_PORT / "
                                    f"RENDEZVOUS_JOBMANAGER_RPC_PORT / RENDEZVOUS_BLOB_PORT.")
        free = [p for p in s.prometheus_port_range if not port_in_use(s.host, p)]
        if len(free) < 1 + tms:
            say(progress, f"warning: {len(free)} of the Prometheus ports {s.prometheus_ports} are free, {1 + tms} "
                          f"Flink processes start: some will serve no metrics; choose other ports with "
                          f"RENDEZVOUS_PROMETHEUS_PORTS")
        start_flink(s, progress, tms)

    say(progress, "waiting for the Kafka broker to answer metadata requests")
    try:
        wait_for(lambda: kafka_alive_and_healthy(s), s.startup_timeout_s, "the Kafka broker")
    except RuntimeStartError as e:
        raise RuntimeStartError(f"{e}. See {s.log_dir / 'kafka.out'} and {s.log_dir / 'kafka.log'}.") from None
    if last_mode(s) == "secure":
        say(progress, f"creating the principals' SCRAM users and ACLs (credentials: {s.credentials_dir})")
        secure_broker(s)
    _use_credentials(s)
    created = ensure_topics(s.bootstrap_servers, partitions=s.topic_partitions, progress=progress)
    if created:
        say(progress, f"created topics: {', '.join(created)}")
    say(progress, f"waiting for {tms} Flink TaskManager(s) with free slots")
    try:
        wait_for(lambda: flink_healthy(s, tms), s.startup_timeout_s, "the Flink cluster")
    except RuntimeStartError as e:
        raise RuntimeStartError(f"{e}. See the flink-*.log files in {s.log_dir}.") from None
    spid = supervisor.start(s)
    say(progress, f"supervisor running (pid {spid}): restarts the broker, JobManager or TaskManager if one dies "
                  f"(log: {s.log_dir / 'supervisor.log'})")
    if s.start_gateway:
        running = [gw for gw in gateway.recorded(s) if gw.port == s.gateway_port and gw.running()]
        if running:
            say(progress, f"gateway already running on {running[0].url} (pid {running[0].pid})")
        else:
            gateway.start(s, progress=progress)
    say(progress, f"runtime up in {time.monotonic() - t0:.1f}s")
    return status(s)


def set_taskmanagers(n: int, s: RuntimeSettings | None = None, progress: Progress | None = print) -> None:
    """Run `n` TaskManagers on the running cluster (start or stop some) and wait until the JobManager counts
    exactly `n`. A stopped TaskManager's tasks fail over to the others."""
    s = s or RuntimeSettings()
    ensure_taskmanagers(s, n, progress)
    wait_for(lambda: shared_taskmanagers_registered(s) == n, s.startup_timeout_s, f"{n} registered TaskManagers")


def shared_taskmanagers_registered(s: RuntimeSettings) -> int | None:
    """How many TaskManagers the JobManager counts, without those of thread-mode jobs (control.runtime.pinned);
    None when it does not answer."""
    try:
        tms = flink_rest(s, "/taskmanagers", timeout=3.0, attempts=1).get("taskmanagers", [])
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return sum(1 for tm in tms if not pinned.is_pinned(tm["id"]))


def down(s: RuntimeSettings | None = None, progress: Progress | None = print) -> None:
    s = s or RuntimeSettings()
    if supervisor.running(s):  # first, or it would bring back what is stopped next
        say(progress, "stopping the supervisor")
    supervisor.stop(s)
    for gw in gateway.recorded(s):  # before Kafka: its callers get answers or errors, not hangs
        if gw.running():
            say(progress, f"stopping the gateway on port {gw.port}")
        gateway.stop(gw)
    pinned.stop_all(s, progress)  # the thread-mode jobs' own TaskManagers
    priority.remove_groups()  # the CPU groups hand-overs placed them in, once empty
    stop_flink(s, progress)
    stop_kafka(s, progress)
    for port in mlserver.recorded_ports(s):  # model servers started by the demo
        if mlserver.stop_recorded(port, s):
            say(progress, f"stopped MLServer on port {port}")
    say(progress, "runtime down")
