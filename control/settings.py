"""Settings of the embedded runtime: one frozen class, overridable with RENDEZVOUS_* variables."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    """The checkout this package lives in (the project is installed editable by `make setup`)."""
    return Path(__file__).resolve().parent.parent


class RuntimeSettings(BaseSettings):
    """Where the embedded Kafka broker and Flink session cluster live and listen."""

    model_config = SettingsConfigDict(env_prefix="RENDEZVOUS_", frozen=True)

    home: Path = Field(default_factory=_default_home)
    """The repository root: holds flink-conf/, savepoints/, build/jars/ and run/."""

    host: str = "127.0.0.1"
    """Address every embedded component advertises and clients connect to; also the one they bind to unless
    `bind_host` says otherwise. Loopback by default: nothing listens beyond this machine. For multi-host use
    set it to an address of this machine the others reach (README, "Listeners")."""

    bind_host: str | None = None
    """Address the embedded components listen on, if not `host` (e.g. 0.0.0.0 with `host` = this machine's
    name in the network). Python workers' gRPC servers stay on loopback whatever it says."""

    kafka_port: int = 9092
    """Kafka broker listener."""

    kafka_controller_port: int = 9093
    """KRaft controller listener."""

    flink_rest_port: int = 8081
    """Flink REST API and web UI."""

    jobmanager_rpc_port: int = 6123
    """Flink JobManager RPC."""

    blob_port: int = 6124
    """Flink blob server."""

    prometheus_ports: str = Field(default="9249-9258", pattern=r"^\d{1,5}(-\d{1,5})?$")
    """Ports of the Prometheus metrics endpoints (`http://HOST:PORT/metrics`), a port or a range "A-B": the
    JobManager and each TaskManager take the first free one (`rendezvous metrics endpoints` lists who took
    which). Bound to `bind_host` like the rest. Keep the range below the ephemeral ports (32768+ on Linux)."""

    topic_partitions: int = Field(default=1, ge=1)
    """Partitions of each data topic created by `up` (`up --partitions N`): a job reads a topic with at most
    this many parallel source subtasks. Control topics (schedules, lifecycle, models) keep one."""

    taskmanagers: int | None = Field(default=None, ge=1)
    """Shared Flink TaskManagers `up` runs on this machine (`up --taskmanagers N`), each with its own JVM, for
    the process-mode jobs. Unset: as many as run now (1 on a fresh start). Thread-mode jobs get TaskManagers
    of their own (control/runtime/pinned.py)."""

    pinned_taskmanager_memory: str = "1536m"
    """`taskmanager.memory.process.size` of each TaskManager started for a thread-mode job (one per subtask:
    one slot, one Python interpreter). Its keyed state lives on this heap (hashmap state backend)."""

    pinned_taskmanager_jvm_args: str = ""
    """JVM options of each TaskManager started for a thread-mode job (Flink's start script reads them from
    `JVM_ARGS`); "" for the JVM's defaults. `-XX:TieredStopAtLevel=1` (the quick JIT compiler, C1, only) took the
    rendezvous's p99 during a hand-over's transition from 2.48 to 1.29 times the minute before on a 2-core machine,
    where a new version otherwise spends a quarter of a CPU on its optimizing compiler (C2) for the better part of a
    minute; it costs 30 % of the rendezvous's capacity and 22 % of the external state's (README, "Latency through a
    hand-over")."""

    jobmanager_jvm_args: str = "-XX:TieredStopAtLevel=1"
    """JVM options of the JobManager (flink-conf's `env.java.opts.jobmanager`; read when `up` starts it). By default
    the quick JIT compiler (C1) only: the JobManager coordinates and carries no record, and its JIT compilers worked
    again at each job stop (0.33 of 1.26 CPU s, `python -m bench.jobstop`), at the normal priority, as the slow answers
    of hand-overs were sent (README, "Latency through a hand-over", section 11). "" for the JVM's defaults."""

    startup_timeout_s: float = 90.0
    """How long `up` waits for each component to become healthy."""

    mlserver_http_port: int = 18080
    """HTTP (REST, Open Inference Protocol / KServe V2) port of an MLServer started by `control.mlserver`."""

    mlserver_grpc_port: int = 18081
    """gRPC port of that MLServer (MLServer always opens one)."""

    mlserver_metrics_port: int | None = None
    """Prometheus metrics port of that MLServer; unset (the default) disables its metrics server."""

    mlserver_parallel_workers: int = 0
    """MLServer inference worker processes; 0 runs inference in the server process (fastest for small models)."""

    gateway_port: int = 8000
    """HTTP port of the gateway (`rendezvous serve`, `up --gateway`): the Open Inference Protocol endpoint of the
    whole system, on the listen host."""

    start_gateway: bool = False
    """`up` also starts a gateway (`up --gateway`, or RENDEZVOUS_START_GATEWAY=1) serving the default topics."""

    bootstrap_servers_override: str | None = Field(default=None, alias="RENDEZVOUS_BOOTSTRAP_SERVERS")
    """Point clients at another Kafka cluster instead of the embedded broker."""

    kafka_properties: dict[str, str] = Field(default_factory=dict)
    """Kafka client properties passed to every job's sources and sinks (e.g. security.protocol, sasl.*,
    ssl.*), as JSON: RENDEZVOUS_KAFKA_PROPERTIES='{"security.protocol": "SASL_SSL", ...}'."""

    jobs_bootstrap_servers_override: str | None = Field(default=None, alias="RENDEZVOUS_JOBS_BOOTSTRAP_SERVERS")
    """The Kafka address the deployed jobs use, when the cluster reaches the brokers by another name than this
    machine does (docker-compose.yml: kafka:19092 inside, localhost:9092 from the host). Default: bootstrap_servers."""

    secure: bool | None = None
    """Run the embedded broker with SASL/SCRAM authentication and ACLs (one principal per job role): True is
    `rendezvous up --secure`, False `--no-secure`; unset, `up` starts the broker as it was last started
    (secure stays secure). Credentials are generated into `credentials_dir` on the first secure `up`."""

    kafka_credentials_dir_override: Path | None = Field(default=None, alias="RENDEZVOUS_KAFKA_CREDENTIALS_DIR")
    """A directory of one Kafka client properties file per principal (operator.properties,
    external_state.properties, model.properties, rendezvous.properties, quality.properties,
    client.properties): how every client of the project authenticates to a secured broker (README,
    "Security"). Default: run/credentials when the embedded broker runs secure, else none."""

    run_dir_override: Path | None = Field(default=None, alias="RENDEZVOUS_RUN_DIR")
    """Where the runtime's pid files, logs, configs and Kafka data go (default: <home>/run); a second
    embedded broker (e.g. the secure one of tests/e2e/test_security.py) needs its own."""

    archive_override: str | None = Field(default=None, alias="RENDEZVOUS_ARCHIVE")
    """The decoy's archive (README, "The decoy archive"); default <run dir>/archive."""

    flink_address_override: str | None = Field(default=None, alias="RENDEZVOUS_FLINK_ADDRESS")
    """Point submissions at another Flink cluster (HOST:PORT of its REST endpoint)."""

    @field_validator("prometheus_ports")
    @classmethod
    def _port_range(cls, v: str) -> str:
        lo, _, hi = v.partition("-")
        if not 1 <= int(lo) <= int(hi or lo) <= 65535:
            raise ValueError(f"not a port range A-B with 1 <= A <= B <= 65535: {v!r}")
        return v

    @property
    def prometheus_port_range(self) -> range:
        lo, _, hi = self.prometheus_ports.partition("-")
        return range(int(lo), int(hi or lo) + 1)

    # ---- derived paths -------------------------------------------------------------------
    @property
    def listen_host(self) -> str:
        return self.bind_host or self.host

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap_servers_override or f"{self.host}:{self.kafka_port}"

    @property
    def jobs_bootstrap_servers(self) -> str:
        return self.jobs_bootstrap_servers_override or self.bootstrap_servers

    @property
    def flink_address(self) -> str:
        return self.flink_address_override or f"{self.host}:{self.flink_rest_port}"

    @property
    def run_dir(self) -> Path:
        return self.run_dir_override or self.home / "run"

    @property
    def credentials_dir(self) -> Path:
        """Where `up --secure` keeps the principals' files (or the directory the user named)."""
        return self.kafka_credentials_dir_override or self.run_dir / "credentials"

    @property
    def kafka_mode_file(self) -> Path:
        """`secure` or `plaintext`: how the embedded broker was last started (written by `up`)."""
        return self.run_dir / "kafka-mode"

    @property
    def kafka_last_mode(self) -> str | None:
        """How the embedded broker was last started: 'secure', 'plaintext', or None (never, or before modes)."""
        try:
            return self.kafka_mode_file.read_text().strip() or None
        except OSError:
            return None

    @property
    def kafka_secured(self) -> bool:
        """Whether clients must authenticate: credentials were named, `secure` is set, or the embedded broker
        was last started secure (so every command after `up --secure` authenticates without the flag)."""
        if self.kafka_credentials_dir_override is not None or self.secure:
            return True
        return not self.bootstrap_servers_override and self.kafka_last_mode == "secure"

    def kafka_client_properties(self, role: str) -> dict[str, str]:
        """The Java client properties file of `role`'s principal (empty when the broker is not secured)."""
        from jobs.common.security import read_properties

        if not self.kafka_secured:
            return {}
        path = self.credentials_dir / f"{role}.properties"
        if not path.exists():
            raise FileNotFoundError(f"no Kafka credentials for the {role} principal: {path} is missing "
                                    f"(`rendezvous up --secure` writes them; see README, \"Security\")")
        return read_properties(path)

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pid_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def kafka_data_dir(self) -> Path:
        return self.run_dir / "kafka-data"

    @property
    def rendered_flink_conf_dir(self) -> Path:
        return self.run_dir / "flink-conf"

    @property
    def flink_conf_template_dir(self) -> Path:
        return self.home / "flink-conf"

    @property
    def savepoint_dir(self) -> Path:
        return self.home / "savepoints"

    @property
    def kafka_jar_dir(self) -> Path:
        return self.home / "build" / "jars" / "kafka"

    @property
    def flink_jar_dir(self) -> Path:
        return self.home / "build" / "jars" / "flink"

    @property
    def parquet_jars(self) -> list[Path]:
        """The Parquet format and the Hadoop classes it writes with (build/jars/parquet, `make setup`): shipped
        with the archive job only."""
        return sorted((self.home / "build" / "jars" / "parquet").glob("*.jar"))

    @property
    def archive(self) -> str:
        """Where the decoy archives (a directory, or a URL of a file system Flink has a plugin for)."""
        return self.archive_override or str(self.run_dir / "archive")

    @property
    def beam_loopback_jar(self) -> Path:
        """The project's gRPC server factory for PyFlink's Python workers (jvm/beam/), built by `make setup`."""
        return self.home / "build" / "jars" / "beam" / "rendezvous-beam-loopback.jar"

    @property
    def prometheus_reporter_jar(self) -> Path:
        """The project's Prometheus reporter factory that binds `bind_host` (jvm/metrics/), built by `make setup`."""
        return self.home / "build" / "jars" / "metrics" / "rendezvous-metrics-prometheus.jar"

    @property
    def venv_python(self) -> Path:
        return self.home / ".venv" / "bin" / "python"

    @property
    def mlserver_venv(self) -> Path:
        """MLServer's own virtualenv (its dependencies clash with PyFlink's), made by `make setup`."""
        return self.home / ".venv-mlserver"

    @property
    def mlserver_dir(self) -> Path:
        """Work directories of started MLServers (settings.json, the model repository link), one per port."""
        return self.run_dir / "mlserver"

    @cached_property
    def flink_home(self) -> Path:
        import pyflink

        return Path(pyflink.__file__).resolve().parent

    @property
    def connector_jars(self) -> list[Path]:
        return sorted(self.flink_jar_dir.glob("*.jar"))


def settings() -> RuntimeSettings:
    return RuntimeSettings()


def java_executable() -> str | None:
    """The `java` to use: $JAVA_HOME/bin/java if set, else the one on PATH."""
    import shutil

    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")
