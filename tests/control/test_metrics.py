"""The Prometheus reporter's configuration and the pure helpers of control.runtime.metrics (no JVM). The live
check is tests/e2e/test_metrics.py."""

import shutil

import pytest
import yaml
from pydantic import ValidationError

from control.runtime.flink import (
    PROMETHEUS_PLUGIN,
    flink_plugins_dir,
    render_flink_conf,
)
from control.runtime.metrics import endpoint_url, parse, reporter_ports
from control.settings import RuntimeSettings

REPO = RuntimeSettings().home

# lines of a real scrape of a TaskManager (a model job), and of the JobManager
SCRAPE = '''# HELP flink_taskmanager_job_task_operator_model_skipped_stale skipped_stale (scope: taskmanager_job_task_operator_model)
# TYPE flink_taskmanager_job_task_operator_model_skipped_stale gauge
flink_taskmanager_job_task_operator_model_skipped_stale{model="shedder@1",job_id="7bf4744e5cabcfecb133271f98d692ca",task_id="2a74f74619c137a5e2e66d2438ea813c",task_attempt_id="fb1b7e1878f0ba8d7ed6247eb5375478_2a74f74619c137a5e2e66d2438ea813c_0_0",host="127.0.0.1",operator_id="4bab6d802e6f96fb6265e68c1dc4735f",operator_name="predict shedder@1",task_name="Source: x-aug-3af7c0 (shedder@1) -> predict shedder@1 -> x-sc-3af7c0: Writer -> x-sc-3af7c0: Committer",task_attempt_num="0",job_name="exp 3af7c0",tm_id="127.0.0.1:34139-0095a5",subtask_index="0",} 5.0
flink_taskmanager_Status_JVM_Memory_Heap_Committed{host="127.0.0.1",tm_id="127.0.0.1:34139-0095a5",} 2.053111808E9
flink_taskmanager_job_task_operator_KafkaProducer_reauthentication_latency_avg{job_name="j",} NaN

flink_jobmanager_numRunningJobs{host="127.0.0.1",} 0.0
'''


def test_parse_reads_names_labels_and_values():
    samples = parse(SCRAPE)
    assert [s.name for s in samples] == [
        "flink_taskmanager_job_task_operator_model_skipped_stale", "flink_taskmanager_Status_JVM_Memory_Heap_Committed",
        "flink_taskmanager_job_task_operator_KafkaProducer_reauthentication_latency_avg",
        "flink_jobmanager_numRunningJobs"]
    stale = samples[0]
    assert stale.value == 5.0 and stale.labels["model"] == "shedder@1" and stale.labels["job_name"] == "exp 3af7c0"
    assert stale.labels["task_name"].startswith("Source: x-aug-3af7c0 (shedder@1) -> predict")
    assert samples[1].value == 2.053111808e9 and samples[1].labels == {"host": "127.0.0.1",
                                                                       "tm_id": "127.0.0.1:34139-0095a5"}
    assert samples[2].value != samples[2].value  # NaN


def test_parse_unescapes_label_values_and_takes_lines_without_labels():
    [a, b] = parse('m{job_name="say \\"hi\\" \\\\ o}k",x="a,b"} -1.5 1700000000000\nplain_total +Inf\n')
    assert (a.name, a.value, a.labels) == ("m", -1.5, {"job_name": 'say "hi" \\ o}k', "x": "a,b"})
    assert (b.name, b.value, b.labels) == ("plain_total", float("inf"), {})
    with pytest.raises(ValueError):
        parse("not a sample\n")


def test_reporter_ports_are_the_listening_ports_in_the_range():
    listening = [("::ffff:127.0.0.1", 6123), ("::ffff:127.0.0.1", 9250), ("127.0.0.1", 41234), ("::", 9249)]
    assert reporter_ports(listening, range(9249, 9259)) == [("::", 9249), ("::ffff:127.0.0.1", 9250)]
    assert reporter_ports(listening, range(19460, 19470)) == []


def test_endpoint_url():
    assert endpoint_url("::ffff:127.0.0.1", 9250, "127.0.0.1") == "http://127.0.0.1:9250/metrics"
    assert endpoint_url("0.0.0.0", 9249, "10.0.0.5") == "http://10.0.0.5:9249/metrics"
    assert endpoint_url("::", 9249, "flink.example") == "http://flink.example:9249/metrics"
    assert endpoint_url("::1", 9249, "127.0.0.1") == "http://[::1]:9249/metrics"


def test_prometheus_ports_setting(monkeypatch):
    monkeypatch.delenv("RENDEZVOUS_PROMETHEUS_PORTS", raising=False)
    assert RuntimeSettings().prometheus_port_range == range(9249, 9259)
    monkeypatch.setenv("RENDEZVOUS_PROMETHEUS_PORTS", "19460-19479")
    assert RuntimeSettings().prometheus_port_range == range(19460, 19480)
    assert RuntimeSettings(prometheus_ports="9300").prometheus_port_range == range(9300, 9301)
    for bad in ("9300-9200", "0", "70000", "a-b", "9249,9250"):
        with pytest.raises(ValidationError):
            RuntimeSettings(prometheus_ports=bad)


def settings(tmp_path, **kw) -> RuntimeSettings:
    shutil.copytree(REPO / "flink-conf", tmp_path / "flink-conf")
    return RuntimeSettings(home=tmp_path, **kw)


def test_the_reporter_is_configured_on_the_bind_host_and_the_port_range(tmp_path, monkeypatch):
    monkeypatch.setenv("RENDEZVOUS_PROMETHEUS_PORTS", "19460-19479")
    conf = yaml.safe_load((render_flink_conf(settings(tmp_path)) / "config.yaml").read_text())
    prom = conf["metrics"]["reporter"]["prom"]
    assert prom["factory"]["class"] == "org.apache.flink.metrics.prometheus.BoundPrometheusReporterFactory"
    assert (prom["host"], prom["port"], prom["filterLabelValueCharacters"]) == ("127.0.0.1", "19460-19479", False)
    monkeypatch.setenv("RENDEZVOUS_BIND_HOST", "0.0.0.0")
    conf = yaml.safe_load((render_flink_conf(settings(tmp_path / "b")) / "config.yaml").read_text())
    assert conf["metrics"]["reporter"]["prom"]["host"] == "0.0.0.0"


def test_the_project_factory_shares_the_wheels_prometheus_plugin_folder(tmp_path):
    s = settings(tmp_path)
    s.prometheus_reporter_jar.parent.mkdir(parents=True)
    s.prometheus_reporter_jar.write_text("")
    plugins = flink_plugins_dir(s)
    jars = sorted(p.name for p in (plugins / PROMETHEUS_PLUGIN).iterdir())
    assert jars == sorted(["rendezvous-metrics-prometheus.jar",
                           *(j.name for j in (s.flink_home / "plugins" / PROMETHEUS_PLUGIN).glob("*.jar"))])
    assert any(j.startswith("flink-metrics-prometheus-") for j in jars)
    # the wheel's other plugins stay available
    others = {d.name for d in (s.flink_home / "plugins").iterdir() if d.is_dir()} - {PROMETHEUS_PLUGIN}
    assert others and others <= {p.name for p in plugins.iterdir()}
    assert flink_plugins_dir(s) == plugins  # idempotent
