"""Where the embedded components listen: loopback by default, RENDEZVOUS_BIND_HOST / RENDEZVOUS_HOST otherwise
(README, "Listeners"). The live check is tests/e2e/test_listeners.py."""

import shutil

import yaml

from control.runtime.flink import BEAM_LOOPBACK_LINK, flink_lib_dir, render_flink_conf
from control.runtime.kafka import render_kafka_config
from control.settings import RuntimeSettings

REPO = RuntimeSettings().home


def settings(tmp_path, **kw) -> RuntimeSettings:
    shutil.copytree(REPO / "flink-conf", tmp_path / "flink-conf")
    return RuntimeSettings(home=tmp_path, **kw)


def rendered(s: RuntimeSettings) -> tuple[dict, dict]:
    flink = yaml.safe_load((render_flink_conf(s) / "config.yaml").read_text())
    kafka = dict(line.split("=", 1) for line in render_kafka_config(s).read_text().splitlines())
    return flink, kafka


def test_everything_binds_loopback_by_default(tmp_path):
    s = settings(tmp_path)
    assert (s.host, s.listen_host) == ("127.0.0.1", "127.0.0.1")
    flink, kafka = rendered(s)
    assert flink["jobmanager"]["bind-host"] == flink["taskmanager"]["bind-host"] == "127.0.0.1"
    assert flink["rest"]["bind-address"] == flink["rest"]["address"] == "127.0.0.1"
    assert flink["jobmanager"]["rpc"]["address"] == flink["taskmanager"]["host"] == "127.0.0.1"
    assert kafka["listeners"] == f"PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}"


def test_bind_host_and_host_switch_listeners_and_advertised_addresses(tmp_path, monkeypatch):
    monkeypatch.setenv("RENDEZVOUS_HOST", "10.0.0.5")
    monkeypatch.setenv("RENDEZVOUS_BIND_HOST", "0.0.0.0")
    s = settings(tmp_path)
    flink, kafka = rendered(s)
    assert flink["jobmanager"]["bind-host"] == flink["taskmanager"]["bind-host"] == flink["rest"]["bind-address"] == "0.0.0.0"
    assert flink["jobmanager"]["rpc"]["address"] == flink["taskmanager"]["host"] == flink["rest"]["address"] == "10.0.0.5"
    assert kafka["listeners"].startswith("PLAINTEXT://0.0.0.0:")
    assert kafka["advertised.listeners"] == f"PLAINTEXT://10.0.0.5:{s.kafka_port}"
    assert s.bootstrap_servers == f"10.0.0.5:{s.kafka_port}" and s.flink_address == f"10.0.0.5:{s.flink_rest_port}"


def test_the_loopback_grpc_factory_comes_first_on_the_cluster_classpath(tmp_path):
    s = settings(tmp_path)
    s.beam_loopback_jar.parent.mkdir(parents=True)
    s.beam_loopback_jar.write_text("")
    names = sorted(p.name for p in flink_lib_dir(s).iterdir())
    assert names[0] == BEAM_LOOPBACK_LINK and any(n.startswith("flink-python-") for n in names)
    assert (tmp_path / "run/flink-lib" / BEAM_LOOPBACK_LINK).resolve() == s.beam_loopback_jar.resolve()


def test_jobs_bootstrap_servers_default_and_override(monkeypatch):
    from control.ops.deploy import job_settings
    from jobs.smoke.settings import SmokeSettings

    assert RuntimeSettings().jobs_bootstrap_servers == RuntimeSettings().bootstrap_servers
    monkeypatch.setenv("RENDEZVOUS_BOOTSTRAP_SERVERS", "localhost:9092")
    monkeypatch.setenv("RENDEZVOUS_JOBS_BOOTSTRAP_SERVERS", "kafka:19092")
    s = RuntimeSettings()
    assert s.bootstrap_servers == "localhost:9092"
    built = job_settings(SmokeSettings, s, source_topic="a", sink_topic="b")
    assert built.kafka.bootstrap_servers == "kafka:19092"
