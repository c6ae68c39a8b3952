"""Nothing of the project listens beyond loopback by default (README, "Listeners"): with the stack up, a
process-mode model job scoring (so its Python worker and the TaskManager's gRPC servers for it exist) and
an MLServer started by the project, every LISTEN socket of the broker's, JobManager's, TaskManager's and
MLServer's process trees is on a loopback address, the Prometheus reporters' among them. Found with psutil
(no `ss` needed)."""

from __future__ import annotations

import ipaddress

import psutil
import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy
from control.runtime import mlserver
from control.runtime.flink import flink_pid_files, live_taskmanagers
from control.runtime.kafka import KAFKA_PID
from control.runtime.process import read_pid
from schemas.model_card import ModelCard
from schemas.records import Score
from schemas.topics import TopicSpec
from tests.e2e.test_model_jobs import augmented
from tests.model_udfs.test_remote import free_ports

pytestmark = pytest.mark.e2e


def is_loopback(host: str) -> bool:
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1, how a JVM's dual-stack socket bound to 127.0.0.1 shows
    return addr.is_loopback


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def listeners(procs: list[psutil.Process]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, command) of every TCP socket in LISTEN state the processes hold."""
    out = []
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
            name = " ".join(p.cmdline()[:3])[:120]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        out += [(c.laddr.ip, c.laddr.port, p.pid, name) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def test_nothing_of_the_project_listens_beyond_loopback(stack, unique, job_cleanup, tmp_path):
    assert stack.listen_host == "127.0.0.1", "this test checks the default: unset RENDEZVOUS_HOST/BIND_HOST"
    models = stack.home / "artifacts" / "models"
    champion = ModelCard.load(models / "fraud-champion" / "1.0.0" / "card.json")
    aug_topic, scores_topic = f"ls-aug-{unique}", f"ls-scores-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(aug_topic), TopicSpec(scores_topic)])
    http_port, grpc_port, metrics_port = free_ports(3)
    server = mlserver.start(models / "fraud-challenger" / "2.0.0", stack, http_port=http_port, grpc_port=grpc_port,
                            metrics_port=metrics_port, log_file=tmp_path / "mlserver.log",
                            work_dir=tmp_path / "mlserver")
    try:
        job_cleanup.append(deploy.deploy_model(champion, stack, job_name=f"listeners {unique}", source_topic=aug_topic,
                                               sink_topic=scores_topic, start="earliest", group_id=f"ls-{unique}"))
        reqs = augmented(3, seed=21)
        kafka_io.produce(stack.bootstrap_servers, aug_topic, [a.to_json() for a in reqs])
        scores = [Score.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, scores_topic, count=3,
                                                           timeout=180)]
        assert len(scores) == 3 and all(s.ok for s in scores)  # the Python worker is up and scoring

        roots = {"kafka": [read_pid(stack.pid_dir / KAFKA_PID)], "mlserver": [server.pid],
                 "jobmanager": [read_pid(flink_pid_files(stack)["jobmanager"])],
                 "taskmanager": live_taskmanagers(stack)}  # every TaskManager (`up --taskmanagers N`)
        found = {role: [s for pid in pids for s in listeners(tree(pid))] for role, pids in roots.items()}
        # the Python worker's gRPC servers (control, data, state, logging, retrieval, provisioning) live in the
        # TaskManager JVM; the worker itself, a child of it, connects to them
        workers = [p for pid in roots["taskmanager"] for p in tree(pid)[1:] if "beam_boot" in " ".join(p.cmdline())]
    finally:
        server.stop()

    # not vacuous: the sockets we know of are among the ones found
    ports = {role: {port for _, port, _, _ in socks} for role, socks in found.items()}
    assert {stack.kafka_port, stack.kafka_controller_port} <= ports["kafka"], found["kafka"]
    assert {stack.flink_rest_port, stack.jobmanager_rpc_port, stack.blob_port} <= ports["jobmanager"], found["jobmanager"]
    # the Prometheus reporter of the JobManager and of each TaskManager
    assert ports["jobmanager"] & set(stack.prometheus_port_range), found["jobmanager"]
    assert all(any(port in stack.prometheus_port_range for _, port, p, _ in found["taskmanager"] if p == pid)
               for pid in roots["taskmanager"]), found["taskmanager"]
    assert {http_port, grpc_port, metrics_port} <= ports["mlserver"], found["mlserver"]
    assert workers, "no Python worker under the TaskManager: the model job did not start one"
    # RPC, data exchange, metrics query service + the 6 gRPC servers of (at least) one Python worker environment
    assert len(ports["taskmanager"]) >= 3 + 6, found["taskmanager"]

    beyond = [(role, *sock) for role, socks in found.items() for sock in socks if not is_loopback(sock[0])]
    assert not beyond, f"listening beyond loopback: {beyond}"
