"""Unit tests of the runtime helpers (no JVM, no broker)."""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from control import runtime
from control.errors import RuntimeStartError, SubmissionError
from control.ops import jobs
from control.runtime import flink, kafka, process
from control.settings import RuntimeSettings
from schemas.topics import TOPICS

REPO = Path(__file__).resolve().parents[2]


def test_parse_job_id_from_flink_run_output():
    out = "Job has been submitted with JobID 0123456789abcdef0123456789abcdef\n"
    assert jobs.parse_job_id(out) == "0123456789abcdef0123456789abcdef"
    with pytest.raises(SubmissionError, match="did not report a job id"):
        jobs.parse_job_id("Python process exits with code: 1")


def home_with_flink_conf(tmp_path: Path) -> Path:
    """A project home holding a copy of the repository's flink-conf/ templates."""
    home = tmp_path / "home"
    (home / "flink-conf").mkdir(parents=True)
    for f in (REPO / "flink-conf").iterdir():
        (home / "flink-conf" / f.name).write_text(f.read_text())
    return home


def test_flink_conf_rendering_replaces_every_placeholder(tmp_path):
    home = home_with_flink_conf(tmp_path)
    s = RuntimeSettings(home=home, flink_rest_port=18081)
    out = flink.render_flink_conf(s)
    text = (out / "config.yaml").read_text()
    assert "${" not in text
    assert "port: 18081" in text
    assert f"file://{home}/savepoints" in text
    assert (home / "savepoints").is_dir()
    import yaml

    opts = yaml.safe_load(text)["env"]["java"]["opts"]
    # the JobManager carries no record: the quick JIT compiler only (its C2 bursts as a job stopped competed with the
    # jobs answering); the TaskManagers keep the JVM's defaults
    assert opts["jobmanager"].split() == ["-XX:TieredStopAtLevel=1"] and "taskmanager" not in opts
    # the JVM's defaults; then spaces, quotes and backslashes
    for args in ("", '-Xlog:gc:file=gc log.txt:time -Dx="a\\b"'):
        s = RuntimeSettings(home=home, jobmanager_jvm_args=args)
        assert yaml.safe_load((flink.render_flink_conf(s) / "config.yaml").read_text())["env"]["java"]["opts"][
            "jobmanager"] == args


def test_submissions_side_by_side_prepare_the_same_config_links_and_bundle_without_tripping_on_each_other(
        tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    home = home_with_flink_conf(tmp_path)
    for pkg in jobs.SOURCE_PACKAGES:
        (home / pkg).mkdir()
        (home / pkg / "__init__.py").write_text(f"# {pkg}\n")
    flink_home = tmp_path / "flink"
    for d in ("lib", "opt", "plugins/metrics-prometheus", "plugins/metrics-jmx"):
        (flink_home / d).mkdir(parents=True)
    for jar in ("lib/flink-dist.jar", "lib/log4j.jar", "opt/flink-python-2.3.jar",
                "plugins/metrics-prometheus/flink-metrics-prometheus.jar"):
        (flink_home / jar).write_text("jar")
    monkeypatch.setattr(RuntimeSettings, "flink_home", property(lambda self: flink_home))
    s = RuntimeSettings(home=home)
    stale = s.run_dir / "flink-lib" / "gone.jar"
    stale.parent.mkdir(parents=True)
    stale.symlink_to(tmp_path / "nowhere.jar")  # a link to a jar no longer wanted, broken

    def prepare(_):
        return flink.render_flink_conf(s), flink.flink_lib_dir(s), flink.flink_plugins_dir(s), \
            jobs.package_sources(s)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(prepare, range(32)))
    assert len({r[3] for r in results}) == 1 and results[0][3].exists()
    assert sorted(p.name for p in (s.run_dir / "flink-lib").iterdir()) == ["flink-dist.jar", "flink-python-2.3.jar",
                                                                            "log4j.jar"]
    assert all(p.resolve().exists() for p in (s.run_dir / "flink-lib").iterdir())
    assert (s.run_dir / "flink-plugins" / "metrics-jmx").resolve() == flink_home / "plugins" / "metrics-jmx"
    assert "${" not in (results[0][0] / "config.yaml").read_text()
    assert not list(results[0][3].parent.glob(".*.tmp"))  # every temporary bundle was renamed into place
    assert (results[0][0] / "config.yaml").stat().st_mode & 0o777 == 0o644


def test_side_by_side_keeps_the_order_and_cancels_the_others_when_one_fails(monkeypatch):
    from control.ops import deploy

    cancelled = []
    monkeypatch.setattr(jobs, "cancel_all", lambda ids, s=None: cancelled.extend(ids))
    assert deploy.side_by_side([lambda i=i: f"job{i}" for i in range(5)], workers=3) == [f"job{i}" for i in range(5)]

    def fails():
        raise SubmissionError("`flink run` failed")

    with pytest.raises(SubmissionError, match="flink run"):
        deploy.side_by_side([lambda: "a", fails, lambda: "b"])
    assert sorted(cancelled) == ["a", "b"]


def test_kafka_config_listens_on_configured_ports(tmp_path):
    s = RuntimeSettings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093)
    props = dict(l.split("=", 1) for l in kafka.render_kafka_config(s).read_text().splitlines())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path / "run" / "kafka-data")


def test_settings_env_override(monkeypatch):
    monkeypatch.setenv("RENDEZVOUS_KAFKA_PORT", "29092")
    monkeypatch.setenv("RENDEZVOUS_FLINK_ADDRESS", "flink.example:8081")
    s = RuntimeSettings()
    assert s.bootstrap_servers == "127.0.0.1:29092"
    assert s.flink_address == "flink.example:8081"


def test_topics_of_the_architecture_exist_and_schedules_is_compacted():
    names = {t.name: t for t in TOPICS}
    for required in ("requests", "requests.quarantine", "requests.augmented", "scores", "schedules",
                     "answers", "lifecycle"):
        assert required in names
    assert names["schedules"].topic_config() == {"cleanup.policy": "compact"}


def test_port_in_use_detects_a_listener():
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        assert process.port_in_use("127.0.0.1", port)
    finally:
        srv.close()
    assert not process.port_in_use("127.0.0.1", port)


def test_up_refuses_a_taken_port_with_advice(tmp_path, monkeypatch):
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    home = tmp_path
    (home / "build/jars/kafka").mkdir(parents=True)
    (home / "build/jars/kafka/kafka_2.13-4.1.1.jar").write_text("")
    (home / "build/jars/flink").mkdir(parents=True)
    (home / "build/jars/flink/x.jar").write_text("")
    (home / "build/jars/beam").mkdir(parents=True)
    (home / "build/jars/beam/rendezvous-beam-loopback.jar").write_text("")
    (home / "build/jars/metrics").mkdir(parents=True)
    (home / "build/jars/metrics/rendezvous-metrics-prometheus.jar").write_text("")
    s = RuntimeSettings(home=home, kafka_port=port)
    try:
        with pytest.raises(RuntimeStartError, match=f"port 127.0.0.1:{port} is taken.*RENDEZVOUS_KAFKA_PORT"):
            runtime.up(s, progress=None)
    finally:
        srv.close()


def test_up_without_setup_says_run_make_setup(tmp_path):
    with pytest.raises(RuntimeStartError, match="make setup"):
        runtime.up(RuntimeSettings(home=tmp_path), progress=None)


def test_pid_tracking_and_terminate():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert process.pid_alive(p.pid)
    assert p.pid in process.descendants(os.getpid())
    process.terminate_tree(p.pid, timeout=5)
    p.wait(timeout=5)
    assert not process.pid_alive(p.pid)


def test_flink_version_pinned_once_and_matches_pyflink():
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(REPO / "pom.xml").getroot().find("m:properties", ns)
    pom_flink = props.find("m:flink.version", ns).text
    import pyflink.version

    assert pyflink.version.__version__ == pom_flink
    lock = (REPO / "requirements.lock").read_text()
    assert re.search(rf"^apache-flink=={re.escape(pom_flink)}$", lock, re.M)
    connector = props.find("m:flink.kafka.connector.version", ns).text
    assert connector.startswith("5.")


def test_flink_run_command_ships_sources_and_connector(tmp_path):
    s = RuntimeSettings()
    if not s.connector_jars:
        pytest.skip("jars not resolved")
    cmd = jobs.flink_run_command(s, "jobs.smoke.main", ["--x", "1"], savepoint="file:///sp/1")
    assert cmd[1:3] == ["run", "-d"]
    assert "-pym" in cmd and cmd[cmd.index("-pym") + 1] == "jobs.smoke.main"
    bundle = cmd[cmd.index("-pyfs") + 1]
    import zipfile

    names = zipfile.ZipFile(bundle).namelist()
    assert "jobs/smoke/pipeline.py" in names and "schemas/records.py" in names
    assert not any(n.startswith(("control/", "tools/", "training/")) for n in names)  # never run in the cluster
    assert any(a.startswith("-Dpipeline.jars=file://") for a in cmd)
    assert cmd[cmd.index("-s") + 1] == "file:///sp/1"
    assert cmd[-2:] == ["--x", "1"]


def test_a_thread_mode_job_gets_taskmanagers_only_its_slots_fit():
    from control.runtime import pinned

    s = RuntimeSettings()
    pin = pinned.new_pin()
    assert pin.isalnum() and pin.islower()  # a segment of Flink config keys
    conf = dict(a.split("=", 1) for a in pinned.taskmanager_args(s, pin, 1) if a != "-D")
    assert conf["taskmanager.numberOfTaskSlots"] == "1" and conf["taskmanager.cpu.cores"] == "1"
    assert conf["external-resources"] == pin and conf[f"external-resource.{pin}.amount"] == "1"
    assert conf["taskmanager.resource-id"] == pinned.resource_id(pin, 1)
    assert pinned.is_pinned(pinned.resource_id(pin, 1))
    assert conf["taskmanager.memory.process.size"] == s.pinned_taskmanager_memory
    env = pinned.taskmanager_env(s, pin, 1)
    assert env["FLINK_IDENT_STRING"] == pinned.resource_id(pin, 1) and env["FLINK_PID_DIR"].endswith(pin)
    quick = pinned.taskmanager_env(RuntimeSettings(pinned_taskmanager_jvm_args="-XX:TieredStopAtLevel=1"), pin, 1)
    assert "-XX:TieredStopAtLevel=1" in quick["JVM_ARGS"].split()  # the quick JIT compiler only (settings)
    assert pinned.taskmanager_env(RuntimeSettings(pinned_taskmanager_jvm_args=""), pin, 1)["JVM_ARGS"] == \
        os.environ.get("JVM_ARGS", "").strip()
    assert jobs.pins_taskmanagers(s, {"python.execution-mode": "thread"})
    assert not jobs.pins_taskmanagers(s, {"python.execution-mode": "process"})
    assert not jobs.pins_taskmanagers(RuntimeSettings(RENDEZVOUS_FLINK_ADDRESS="elsewhere:8081"),
                                      {"python.execution-mode": "thread"})  # not our TaskManagers to start


def test_taskmanagers_start_outside_any_checkout(tmp_path):
    """A process-mode worker runs `python -m` in its TaskManager's working directory, first on its sys.path."""
    s = RuntimeSettings(RENDEZVOUS_RUN_DIR=tmp_path)
    cwd = flink.taskmanager_cwd(s)
    assert cwd.is_dir() and not any(cwd.iterdir())



@pytest.fixture
def no_cpu_groups_left():
    """The CPU groups a test made are removed once empty (as `rendezvous down` does)."""
    from control.runtime import priority

    yield
    priority.remove_groups()


@pytest.mark.skipif(not __import__("control.runtime.priority", fromlist=["x"]).can_renice(),
                    reason="giving a priority back needs root")
def test_a_hand_over_thread_works_at_a_lower_priority_that_what_it_starts_inherits_and_gets_its_own_back(
        no_cpu_groups_left):
    import threading

    from control.runtime import priority

    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice_of_this_thread()
    seen, ask, told = {}, threading.Event(), threading.Event()

    def bystander():  # another thread of the process (a test's load generator, a client): not lowered
        ask.wait(10)
        seen["bystander"] = nice_of_this_thread()
        told.set()

    other = threading.Thread(target=bystander)
    other.start()
    probe = [sys.executable, "-c", "import os; print(os.nice(0))"]
    grouped = priority.in_root_group(threading.get_native_id())  # where the machine lets it place processes
    with priority.lowered(10):
        assert nice_of_this_thread() == min(19, before + 10)
        child = subprocess.run(probe, capture_output=True, text=True)  # `flink run`
        assert int(child.stdout) == min(19, before + 10)
        started = subprocess.Popen([*probe[:2], "import os, time; print(os.nice(0), flush=True); time.sleep(60)"],
                                   stdout=subprocess.PIPE, text=True)  # a TaskManager
        try:
            assert int(started.stdout.readline()) == min(19, before + 10)
            if grouped:  # born in the CPU group of the lower priority, with its weight
                assert priority.in_our_group(started.pid)
                group = priority.CPU_CGROUPS / f"{priority.GROUP_PREFIX}{min(19, before + 10)}"
                assert started.pid in priority._ids(group / "cgroup.procs")
                assert int((group / "cpu.shares").read_text()) == priority.NICE_WEIGHT[min(19, before + 10)]
                priority.set_process(started.pid, 0)  # given its priority back: out of the group
                assert not priority.in_our_group(started.pid)
                assert os.getpriority(os.PRIO_PROCESS, started.pid) == 0
        finally:
            started.kill()
            started.wait()
        started = threading.Thread(target=lambda: seen.setdefault("started", nice_of_this_thread()))
        started.start()
        started.join()
        ask.set()
        told.wait(10)
    other.join()
    assert nice_of_this_thread() == before
    assert seen == {"started": min(19, before + 10), "bystander": before}
    after = subprocess.run(probe, capture_output=True, text=True)  # its own priority back: what it starts is not lowered
    assert int(after.stdout) == before
    assert not grouped or threading.get_native_id() in priority._ids(priority.CPU_CGROUPS / "tasks")


@pytest.mark.skipif(not __import__("control.runtime.priority", fromlist=["x"]).can_renice(),
                    reason="giving a priority back needs root")
def test_the_jobmanager_works_at_the_lowest_priority_while_the_old_version_stops_and_gets_its_own_back(
        tmp_path, no_cpu_groups_left):
    from control.ops.handover import (
        JOBMANAGER_LOWERED,
        RETIRING_NICE,
        _started,
        jobmanager_lowered,
        local_jobmanager,
    )
    from control.runtime import priority

    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("the stand-in JobManager would inherit this process's lowered priority")
    s = RuntimeSettings(RENDEZVOUS_RUN_DIR=tmp_path)
    pid_file = flink.flink_pid_files(s)["jobmanager"]
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    # a process that looks like the runtime's JobManager (its command line ends in a Flink cluster entrypoint)
    jm = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                           "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file.write_text(str(other.pid))  # a stale pid file naming another process: left alone
        assert local_jobmanager(s) is None
        with jobmanager_lowered(s, RETIRING_NICE) as lowered:
            assert not lowered
        assert os.getpriority(os.PRIO_PROCESS, other.pid) == 0

        pid_file.write_text(str(jm.pid))
        assert local_jobmanager(s) == jm.pid
        grouped = priority.in_root_group(jm.pid, "cgroup.procs")
        with jobmanager_lowered(s, RETIRING_NICE) as lowered:
            assert lowered and os.getpriority(os.PRIO_PROCESS, jm.pid) == RETIRING_NICE
            assert priority.in_our_group(jm.pid) == grouped
        assert os.getpriority(os.PRIO_PROCESS, jm.pid) == 0 and not priority.in_our_group(jm.pid)
        with jobmanager_lowered(s, 0) as lowered:  # `lower_jobmanager=False`
            assert not lowered and os.getpriority(os.PRIO_PROCESS, jm.pid) == 0
        with jobmanager_lowered(s, RETIRING_NICE):  # two hand-overs' stops at once: the second leaves it alone
            with jobmanager_lowered(s, RETIRING_NICE) as second:
                assert not second
            assert os.getpriority(os.PRIO_PROCESS, jm.pid) == RETIRING_NICE
        assert os.getpriority(os.PRIO_PROCESS, jm.pid) == 0 and not (s.pid_dir / JOBMANAGER_LOWERED).exists()
        # a hand-over killed while it held the JobManager lowered: the next one gives it its priority back first
        priority.set_process(jm.pid, RETIRING_NICE)
        (s.pid_dir / JOBMANAGER_LOWERED).write_text(f"{other.pid} {_started(other.pid)} 0")
        other.kill()
        other.wait()
        with jobmanager_lowered(s, RETIRING_NICE) as lowered:
            assert lowered and os.getpriority(os.PRIO_PROCESS, jm.pid) == RETIRING_NICE
        assert os.getpriority(os.PRIO_PROCESS, jm.pid) == 0 and not priority.in_our_group(jm.pid)
        # its pid taken by another process since (another start time): dead all the same
        priority.set_process(jm.pid, RETIRING_NICE)
        (s.pid_dir / JOBMANAGER_LOWERED).write_text(f"{os.getpid()} 1 0")
        with jobmanager_lowered(s, RETIRING_NICE) as lowered:
            assert lowered
        assert os.getpriority(os.PRIO_PROCESS, jm.pid) == 0 and not (s.pid_dir / JOBMANAGER_LOWERED).exists()
    finally:
        for p in (jm, other):
            p.kill()
            p.wait()


@pytest.mark.skipif(not __import__("control.runtime.priority", fromlist=["x"]).in_root_group(os.getpid()),
                    reason="no writable cgroup v1 cpu hierarchy here, or this process is placed in a group of it")
def test_cpu_groups_in_use_are_kept_empty_ones_removed(no_cpu_groups_left):
    from control.runtime import priority

    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert priority.move(busy.pid, 17)
        (priority.CPU_CGROUPS / f"{priority.GROUP_PREFIX}18").mkdir(exist_ok=True)
        priority.remove_groups()
        assert (priority.CPU_CGROUPS / f"{priority.GROUP_PREFIX}17").is_dir()  # in use (another stack's, maybe)
        assert not (priority.CPU_CGROUPS / f"{priority.GROUP_PREFIX}18").exists()
    finally:
        busy.kill()
        busy.wait()
    priority.remove_groups()
    assert not (priority.CPU_CGROUPS / f"{priority.GROUP_PREFIX}17").exists()


@pytest.mark.skipif(not __import__("control.runtime.priority", fromlist=["x"]).cpu_groups(),
                    reason="no writable cgroup v1 cpu hierarchy here")
def test_a_process_not_moved_into_a_cpu_group_stays_where_it_was_started():
    from control.runtime import priority

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert priority.move(other.pid, 0) is False and not priority.in_our_group(other.pid)
    finally:
        other.kill()
        other.wait()
