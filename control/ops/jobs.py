"""Submitting jobs to a Flink cluster with `flink run -py`, and managing them through its REST API."""

from __future__ import annotations

import re
import subprocess
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from control.errors import JobError, SubmissionError
from control.runtime.flink import flink_env, flink_rest, render_flink_conf
from control.settings import RuntimeSettings

JOB_ID_RE = re.compile(r"JobID\s+([0-9a-f]{32})")
MAX_PARALLELISM = 128
"""flink-conf/config.yaml `pipeline.max-parallelism`: the key groups of keyed state, the highest parallelism a
job (and its savepoints) can run at."""


@dataclass
class JobInfo:
    job_id: str
    name: str
    state: str
    start_time: int


def parse_job_id(output: str) -> str:
    m = JOB_ID_RE.search(output)
    if not m:
        raise SubmissionError(f"`flink run` did not report a job id. Its output was:\n{output[-4000:]}")
    return m.group(1)


def module_path(s: RuntimeSettings, module: str) -> Path:
    """`jobs.smoke.main` -> <home>/jobs/smoke/main.py (a path is returned as is)."""
    p = Path(module)
    if p.suffix == ".py":
        return p if p.is_absolute() else (s.home / p)
    return s.home / (module.replace(".", "/") + ".py")


SOURCE_PACKAGES = ("schemas", "jobs", "model_udfs")
"""What the cluster imports (shipped with `flink run -pyfs`, and counted by the thread-mode code check);
the control plane, tools and training never run inside Flink."""


def package_sources(s: RuntimeSettings) -> Path:
    """Zip the project's packages for `-pyfs`, so the cluster's Python workers import the code
    that was submitted (wherever the cluster runs), not whatever happens to be installed there."""
    out = s.run_dir / "pyfiles" / "rendezvous_src.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for pkg in SOURCE_PACKAGES:
            for f in sorted((s.home / pkg).rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".json", ".yaml", ".yml"):
                    zf.write(f, f.relative_to(s.home).as_posix())
    tmp.replace(out)
    return out


def sources_digest(s: RuntimeSettings) -> str:
    """sha256 over the project's Python sources (what a thread-mode TaskManager imports once)."""
    import hashlib

    h = hashlib.sha256()
    for pkg in SOURCE_PACKAGES:
        for f in sorted((s.home / pkg).rglob("*.py")):
            if "__pycache__" not in f.parts:
                h.update(f.relative_to(s.home).as_posix().encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def thread_mode_marker(s: RuntimeSettings) -> Path:
    """Digest of the code the embedded TaskManager's CPython has imported; removed when Flink stops."""
    return s.pid_dir / "thread-mode-code.sha256"


def check_thread_mode_code(s: RuntimeSettings) -> None:
    """Thread-mode jobs share one CPython per TaskManager, and modules are imported once: a changed
    job submitted in thread mode would silently run the code imported earlier. Refuse instead."""
    if s.flink_address_override:  # a remote cluster: its TaskManagers are not ours to track
        return
    marker = thread_mode_marker(s)
    digest = sources_digest(s)
    if marker.exists():
        if marker.read_text().strip() != digest:
            raise SubmissionError(
                "the TaskManager already runs thread-mode Python code of an older version of this project, "
                "and thread mode imports modules once per TaskManager: the new code would not run. Cancel the "
                "thread-mode jobs and restart the cluster (`rendezvous down && rendezvous up`), or deploy "
                "this job with execution_mode='process'.")
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest)


def flink_run_command(s: RuntimeSettings, module: str, job_args: Sequence[str] = (),
                      savepoint: str | None = None, allow_non_restored: bool = False,
                      parallelism: int | None = None, extra_conf: dict[str, str] | None = None,
                      extra_jars: Sequence[Path] = ()) -> list[str]:
    """The `flink run` command of a job module. `extra_jars`: shipped with this job only (e.g. the Parquet
    format of the archive job), besides the connectors every job gets."""
    script = module_path(s, module)
    if not script.exists():
        raise SubmissionError(f"no job entry point at {script}")
    if not s.connector_jars:
        raise SubmissionError("the Flink Kafka connector jar is missing; run `make setup`.")
    missing = [str(j) for j in extra_jars if not Path(j).is_file()]
    if missing:
        raise SubmissionError(f"jars missing: {', '.join(missing)}; run `make setup`.")
    all_jars = [*s.connector_jars, *extra_jars]
    jars = ";".join(f"file://{j}" for j in all_jars)
    bundle = package_sources(s)
    entry = ["-pym", module] if not module.endswith(".py") else ["-py", str(script)]
    cmd = [str(s.flink_home / "bin" / "flink"), "run", "-d", "-m", s.flink_address,
           *entry, "-pyfs", str(bundle), f"-Dpipeline.jars={jars}"]
    for j in all_jars:  # the client JVM that compiles the Python program needs them too
        cmd += ["-C", f"file://{j}"]
    for k, v in (extra_conf or {}).items():
        cmd.append(f"-D{k}={v}")
    if parallelism:
        cmd += ["-p", str(parallelism)]
    if savepoint:
        cmd += ["-s", savepoint]
        if allow_non_restored:
            cmd.append("-n")
    return cmd + list(job_args)


def submit(module: str, job_args: Sequence[str] = (), savepoint: str | None = None,
           allow_non_restored: bool = False, s: RuntimeSettings | None = None,
           extra_conf: dict[str, str] | None = None, timeout: float = 180.0, parallelism: int | None = None,
           extra_jars: Sequence[Path] = ()) -> str:
    """Submit a job module (e.g. `jobs.smoke.main`) detached; returns its Flink job id. `parallelism`: of every
    operator (`flink run -p`; default: the cluster's, 1)."""
    if parallelism is not None and not 1 <= parallelism <= MAX_PARALLELISM:
        raise SubmissionError(f"parallelism must be between 1 and {MAX_PARALLELISM} (pipeline.max-parallelism in "
                              f"flink-conf/config.yaml), not {parallelism}")
    s = s or RuntimeSettings()
    render_flink_conf(s)
    if (extra_conf or {}).get("python.execution-mode") == "thread":
        check_thread_mode_code(s)
    cmd = flink_run_command(s, module, job_args, savepoint, allow_non_restored, parallelism=parallelism,
                            extra_conf=extra_conf, extra_jars=extra_jars)
    out = subprocess.run(cmd, env=flink_env(s), capture_output=True, text=True, timeout=timeout,
                         cwd=s.home, stdin=subprocess.DEVNULL)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise SubmissionError(f"`flink run` failed (exit {out.returncode}) for {module}:\n{text[-6000:]}\n"
                            f"Is the cluster up (`rendezvous status`)?")
    return parse_job_id(text)


def list_jobs(s: RuntimeSettings | None = None) -> list[JobInfo]:
    s = s or RuntimeSettings()
    data = flink_rest(s, "/jobs/overview")
    return [JobInfo(j["jid"], j["name"], j["state"], j.get("start-time", 0)) for j in data.get("jobs", [])]


def job_parallelism(job_id: str, s: RuntimeSettings | None = None) -> dict[str, int]:
    """Each vertex's parallelism, by vertex name."""
    s = s or RuntimeSettings()
    return {v["name"]: v["parallelism"] for v in flink_rest(s, f"/jobs/{job_id}").get("vertices", [])}


def job_parameters(job_id: str, s: RuntimeSettings | None = None) -> dict[str, str]:
    """The job's global job parameters (what `jobs.common.entry.job_parameters` recorded)."""
    s = s or RuntimeSettings()
    return flink_rest(s, f"/jobs/{job_id}/config").get("execution-config", {}).get("user-config", {}) or {}


def job_state(job_id: str, s: RuntimeSettings | None = None) -> str:
    s = s or RuntimeSettings()
    return flink_rest(s, f"/jobs/{job_id}")["state"]


def job_exceptions(job_id: str, s: RuntimeSettings | None = None) -> str:
    s = s or RuntimeSettings()
    try:
        data = flink_rest(s, f"/jobs/{job_id}/exceptions")
        root = data.get("root-exception") or ""
        hist = data.get("exceptionHistory", {}).get("entries", [])
        return root or (hist[0].get("stacktrace", "") if hist else "")
    except Exception as e:  # noqa: BLE001 - diagnostic only
        return f"(could not read exceptions: {e})"


def wait_running(job_id: str, s: RuntimeSettings | None = None, timeout: float = 120.0,
                 recovering: bool = False) -> None:
    """Wait until every vertex of the job is RUNNING (operators opened, the sources reading); raise JobError
    with the job's exception if it fails or restarts meanwhile. `recovering`: the job is expected to fail over
    (e.g. after a TaskManager was lost): restarts are waited out, not errors."""
    s = s or RuntimeSettings()
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        info = flink_rest(s, f"/jobs/{job_id}")
        state = info["state"]
        if state in ("FAILED", "CANCELED", "FINISHED"):
            raise JobError(f"job {job_id} is {state}:\n{job_exceptions(job_id, s)[-4000:]}")
        # a task that fails while starting (e.g. a model that cannot load in its operator's open()) makes the
        # job restart: report its cause now rather than waiting out the timeout
        if not recovering and (state in ("RESTARTING", "FAILING")
                               or any(v["status"] == "FAILED" for v in info.get("vertices", []))):
            raise JobError(f"job {job_id} failed while starting ({state}):\n{job_exceptions(job_id, s)[-4000:]}")
        if state == "RUNNING" and all(v["status"] == "RUNNING" for v in info.get("vertices", [])):
            return
        time.sleep(0.5)
    raise JobError(f"job {job_id} not running after {timeout:.0f}s (state {state})")


def wait_terminal(job_id: str, s: RuntimeSettings | None = None, timeout: float = 60.0) -> str:
    s = s or RuntimeSettings()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job_id, s)
        if state in ("CANCELED", "FAILED", "FINISHED"):
            return state
        time.sleep(0.3)
    raise JobError(f"job {job_id} did not end within {timeout:.0f}s")


def cancel(job_id: str, s: RuntimeSettings | None = None, wait: float = 60.0) -> None:
    s = s or RuntimeSettings()
    flink_rest(s, f"/jobs/{job_id}?mode=cancel", method="PATCH")
    wait_terminal(job_id, s, wait)


def stop_with_savepoint(job_id: str, s: RuntimeSettings | None = None, target_dir: str | None = None,
                        timeout: float = 180.0, progress: Callable[[str], None] | None = None) -> str:
    """Stop the job, taking a savepoint (the seed's snapshot token); returns the savepoint path."""
    s = s or RuntimeSettings()
    target = target_dir or f"file://{s.savepoint_dir}"
    trig = flink_rest(s, f"/jobs/{job_id}/stop", method="POST",
                      body={"targetDirectory": target, "drain": False, "formatType": "CANONICAL"})
    trigger_id = trig["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = flink_rest(s, f"/jobs/{job_id}/savepoints/{trigger_id}")
        if st["status"]["id"] == "COMPLETED":
            op = st.get("operation", {})
            if "location" in op:
                wait_terminal(job_id, s, timeout=max(10.0, deadline - time.monotonic()))
                return op["location"]
            raise JobError(f"stop-with-savepoint of {job_id} failed: {op.get('failure-cause')}")
        if progress:
            progress(f"savepoint of {job_id} in progress")
        time.sleep(0.5)
    raise JobError(f"stop-with-savepoint of {job_id} did not finish within {timeout:.0f}s")
