"""Submitting jobs to a Flink cluster with `flink run -py`, and managing them through its REST API."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from control.errors import JobError, SubmissionError
from control.runtime.flink import flink_env, flink_rest, render_flink_conf
from control.settings import RuntimeSettings
from jobs.common.entry import CODE, SUBMISSION

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


def module_path(s: RuntimeSettings, module: str, code: Path | None = None) -> Path:
    """`jobs.smoke.main` -> <code>/jobs/smoke/main.py, <code> the project's root by default (a path is returned
    as is, or under <code> when relative)."""
    root = code or s.home
    p = Path(module)
    if p.suffix == ".py":
        return p if p.is_absolute() else (root / p)
    return root / (module.replace(".", "/") + ".py")


SOURCE_PACKAGES = ("schemas", "jobs", "model_udfs")
"""What the cluster imports (shipped with `flink run -pyfs`); the control plane, tools and training never run
inside Flink."""

CODE_CONF = CODE
"""The `flink run -D` key carrying the digest of the submitted code (`sources_digest`); the job records it in its
job parameters (`jobs.common.entry`)."""


def package_sources(s: RuntimeSettings, code: Path | None = None) -> Path:
    """Zip the packages of the code at `code` (default: this project's root) for `-pyfs`, so the cluster's Python
    workers import the code that was submitted (wherever the cluster runs), not whatever is installed there."""
    root = code or s.home
    out = s.run_dir / "pyfiles" / f"rendezvous_src-{sources_digest(root)[:16]}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".tmp")  # one per submission
    os.fchmod(fd, 0o644)  # as a plain write made it (mkstemp's is 0600)
    os.close(fd)
    tmp = Path(name)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for pkg in SOURCE_PACKAGES:
            for f in sorted((root / pkg).rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".json", ".yaml", ".yml"):
                    zf.write(f, f.relative_to(root).as_posix())
    tmp.replace(out)
    for old in out.parent.glob("rendezvous_src*.zip"):  # other versions' bundles, once no submission can use them
        try:
            if old != out and time.time() - old.stat().st_mtime > 3600:
                old.unlink()
        except OSError:
            pass
    return out


def sources_digest(root: Path) -> str:
    """sha256 over the Python sources of the packages shipped to the cluster, under the project root `root`."""
    import hashlib

    h = hashlib.sha256()
    for pkg in SOURCE_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def check_code(s: RuntimeSettings, module: str, code: Path | None) -> Path:
    """The code root to submit from: `code` must hold the shipped packages and the job's entry module."""
    root = (code or s.home).resolve()
    missing = [p for p in SOURCE_PACKAGES if not (root / p / "__init__.py").exists()]
    if missing:
        raise SubmissionError(f"{root} is not a copy of this project's code: it has no {', '.join(missing)} package "
                              f"(it needs {', '.join(SOURCE_PACKAGES)})")
    if not module_path(s, module, root).exists():
        raise SubmissionError(f"no job entry point at {module_path(s, module, root)}")
    return root


def flink_run_command(s: RuntimeSettings, module: str, job_args: Sequence[str] = (),
                      savepoint: str | None = None, allow_non_restored: bool = False,
                      parallelism: int | None = None, extra_conf: dict[str, str] | None = None,
                      code: Path | None = None, extra_jars: Sequence[Path] = ()) -> list[str]:
    """The `flink run` command of a job module. `extra_jars`: shipped with this job only (e.g. the Parquet
    format of the archive job), besides the connectors every job gets."""
    root = check_code(s, module, code)
    script = module_path(s, module, root)
    if not s.connector_jars:
        raise SubmissionError("the Flink Kafka connector jar is missing; run `make setup`.")
    missing = [str(j) for j in extra_jars if not Path(j).is_file()]
    if missing:
        raise SubmissionError(f"jars missing: {', '.join(missing)}; run `make setup`.")
    all_jars = [*s.connector_jars, *extra_jars]
    jars = ";".join(f"file://{j}" for j in all_jars)
    bundle = package_sources(s, root)
    entry = ["-pym", module] if not module.endswith(".py") else ["-py", str(script)]
    cmd = [str(s.flink_home / "bin" / "flink"), "run", "-d", "-m", s.flink_address,
           *entry, "-pyfs", str(bundle), f"-Dpipeline.jars={jars}", f"-D{CODE_CONF}={sources_digest(root)}"]
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


def pins_taskmanagers(s: RuntimeSettings, extra_conf: dict[str, str] | None) -> bool:
    """Whether a submission gets TaskManagers of its own: a thread-mode job on the embedded cluster (on a cluster
    named by RENDEZVOUS_FLINK_ADDRESS the TaskManagers are not ours to start)."""
    return (extra_conf or {}).get("python.execution-mode") == "thread" and not s.flink_address_override


def submit(module: str, job_args: Sequence[str] = (), savepoint: str | None = None,
           allow_non_restored: bool = False, s: RuntimeSettings | None = None,
           extra_conf: dict[str, str] | None = None, timeout: float = 180.0, parallelism: int | None = None,
           code: Path | None = None, extra_jars: Sequence[Path] = ()) -> str:
    """Submit a job module (e.g. `jobs.smoke.main`) detached; returns its Flink job id. `parallelism`: of every
    operator (`flink run -p`; default: the cluster's, 1). `code`: the root of the project's code to submit (its
    `schemas/`, `jobs/`, `model_udfs/`; default: this checkout's), e.g. a new version's checkout. `flink run` and the
    job's own TaskManagers start at the calling thread's CPU priority (a hand-over lowers it: control.ops.handover;
    control.runtime.priority).

    A thread-mode job gets TaskManagers of its own, one per subtask, started while `flink run` compiles it
    (control.runtime.pinned): its Python interpreter starts with its code, so another version of the same job
    can run beside it; they are stopped when the job ends."""
    from control.runtime import pinned

    if parallelism is not None and not 1 <= parallelism <= MAX_PARALLELISM:
        raise SubmissionError(f"parallelism must be between 1 and {MAX_PARALLELISM} (pipeline.max-parallelism in "
                              f"flink-conf/config.yaml), not {parallelism}")
    s = s or RuntimeSettings()
    render_flink_conf(s)
    conf = dict(extra_conf or {})
    cmd = flink_run_command(s, module, job_args, savepoint, allow_non_restored, parallelism=parallelism,
                            extra_conf=conf, code=code, extra_jars=extra_jars)  # checks the code first
    pin = None
    if pins_taskmanagers(s, conf):
        pin = pinned.start(s, parallelism or 1)
        cmd.insert(cmd.index("-pyfs"), f"-D{pinned.RESOURCE_CONF}={pin}")
    submission = uuid.uuid4().hex
    cmd.insert(cmd.index("-pyfs"), f"-D{SUBMISSION}={submission}")
    try:
        try:
            out = subprocess.run(cmd, env=flink_env(s), capture_output=True, text=True, timeout=timeout,
                                 cwd=check_code(s, module, code), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise SubmissionError(f"`flink run` of {module} did not finish within {timeout:.0f} s (a busy machine, or "
                                  "a cluster not answering: `rendezvous status`)") from e
        text = out.stdout + out.stderr
        if out.returncode != 0:
            raise SubmissionError(f"`flink run` failed (exit {out.returncode}) for {module}:\n{text[-6000:]}\n"
                                  f"Is the cluster up (`rendezvous status`)?")
        jid = parse_job_id(text)
    except BaseException:
        # a `flink run` killed (a timeout, Ctrl-C) may have submitted the job all the same: cancelled, it does not
        # wait forever for TaskManagers retired below
        cancel_submitted(s, submission)
        if pin:
            pinned.retire(s, pin)
        raise
    if pin:
        pinned.record_job(s, pin, jid)
    return jid


def cancel_submitted(s: RuntimeSettings, submission: str) -> list[str]:
    """Cancel the jobs, not ended, that the submission `submission` (`jobs.common.entry.SUBMISSION`) started; returns
    their ids. Best effort: a cluster that cannot be asked is left as it is."""
    found = []
    try:
        for j in list_jobs(s):
            if j.state not in ("CANCELED", "CANCELLING", "FAILED", "FINISHED") \
                    and job_parameters(j.job_id, s).get(SUBMISSION) == submission:
                found.append(j.job_id)
        if found:
            cancel_all(found, s)
    except Exception:  # noqa: BLE001 - the submission's own error is the one to raise
        pass
    return found


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


NO_RESOURCES = "NoResourceAvailableException"
"""The root cause of a job whose slots were asked for before there were TaskManagers to hold them."""


def _pinned(s: RuntimeSettings, job_id: str) -> bool:
    from control.runtime import pinned

    return pinned.of_job(s, job_id) is not None


def wait_running(job_id: str, s: RuntimeSettings | None = None, timeout: float = 120.0,
                 recovering: bool = False) -> None:
    """Wait until every vertex of the job is RUNNING (operators opened, the sources reading); raise JobError
    with the job's exception if it fails or restarts meanwhile. `recovering`: the job is expected to fail over
    (e.g. after a TaskManager was lost): restarts are waited out, not errors. A thread-mode job that restarts for
    want of slots while its own TaskManagers register (`NO_RESOURCES`) is waited for too."""
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
            cause = job_exceptions(job_id, s)
            if NO_RESOURCES in cause and _pinned(s, job_id):
                # its own TaskManagers registered after it asked for slots (a loaded machine): it restarts, and
                # runs once they have; if they never do, the timeout below says where they are
                time.sleep(0.5)
                continue
            raise JobError(f"job {job_id} failed while starting ({state}):\n{cause[-4000:]}")
        if state == "RUNNING" and all(v["status"] == "RUNNING" for v in info.get("vertices", [])):
            return
        time.sleep(0.5)
    from control.runtime import pinned

    raise JobError(f"job {job_id} not running after {timeout:.0f}s (state {state}){pinned.describe(s, job_id)}")


def wait_terminal(job_id: str, s: RuntimeSettings | None = None, timeout: float = 60.0) -> str:
    s = s or RuntimeSettings()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job_id, s)
        if state in ("CANCELED", "FAILED", "FINISHED"):
            return state
        time.sleep(0.2)
    raise JobError(f"job {job_id} did not end within {timeout:.0f}s")


def cancel(job_id: str, s: RuntimeSettings | None = None, wait: float = 60.0) -> None:
    """Cancel the job; its own TaskManagers (a thread-mode job's) are stopped once it has ended."""
    from control.runtime import pinned

    s = s or RuntimeSettings()
    flink_rest(s, f"/jobs/{job_id}?mode=cancel", method="PATCH")
    wait_terminal(job_id, s, wait)
    pinned.reap(s)


def cancel_all(job_ids: Sequence[str], s: RuntimeSettings | None = None, wait: float = 60.0) -> None:
    """`cancel` of several jobs at once: every cancellation is sent before any is waited for (a job takes seconds
    to end), and the thread-mode jobs' own TaskManagers are stopped together once all have ended. Each job is
    tried; the first error is raised afterwards."""
    from control.runtime import pinned

    if not job_ids:
        return
    s = s or RuntimeSettings()
    errors: list[Exception] = []
    sent = []
    for jid in job_ids:
        try:
            flink_rest(s, f"/jobs/{jid}?mode=cancel", method="PATCH")
            sent.append(jid)
        except Exception as e:  # noqa: BLE001 - raised below, once the others are cancelled
            errors.append(e)
    deadline = time.monotonic() + wait
    for jid in sent:
        try:
            wait_terminal(jid, s, max(1.0, deadline - time.monotonic()))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    pinned.reap(s)
    if errors:
        raise errors[0]


def stop_with_savepoint(job_id: str, s: RuntimeSettings | None = None, target_dir: str | None = None,
                        timeout: float = 180.0, progress: Callable[[str], None] | None = None,
                        retire: bool = True) -> str:
    """Stop the job, taking a savepoint (the seed's snapshot token); returns the savepoint path. With `retire`, a
    thread-mode job's own TaskManagers are stopped before returning (seconds: their JVMs shut down); without,
    later (the caller's `control.runtime.pinned.reap`, or the supervisor's next round)."""
    s = s or RuntimeSettings()
    target = target_dir or f"file://{s.savepoint_dir}"
    trig = flink_rest(s, f"/jobs/{job_id}/stop", method="POST",
                      body={"targetDirectory": target, "drain": False, "formatType": "CANONICAL"})
    deadline = time.monotonic() + timeout
    op = await_operation(s, f"/jobs/{job_id}/savepoints/{trig['request-id']}", timeout,
                         f"stop-with-savepoint of {job_id}", progress)
    if "location" not in op:
        raise JobError(f"stop-with-savepoint of {job_id} failed: {op.get('failure-cause')}")
    from control.runtime import pinned

    wait_terminal(job_id, s, timeout=max(10.0, deadline - time.monotonic()))
    if retire:
        pinned.reap(s)  # its own TaskManagers, if it had some
    return op["location"]


def await_operation(s: RuntimeSettings, path: str, timeout: float, what: str,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Poll one of Flink's asynchronous operations (a savepoint, a checkpoint: `path` is its status) until it
    completes; its `operation` (`location`, or `failure-cause`). JobError when it does not complete in time."""
    deadline = time.monotonic() + timeout
    said = False
    while time.monotonic() < deadline:
        st = flink_rest(s, path)
        if st["status"]["id"] == "COMPLETED":
            return st.get("operation", {})
        if progress and not said:
            progress(f"{what} in progress")
            said = True
        time.sleep(0.2)
    raise JobError(f"{what} did not finish within {timeout:.0f}s")
