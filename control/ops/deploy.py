"""Deploying the data plane's jobs: external state, one job per model deployment, the rendezvous.

Each deployment builds the job's settings object (jobs.<job>.settings), with the runtime's Kafka
address and client properties, and submits it whole with `flink run`. Every deployment is recorded
in the `lifecycle` topic (the audit log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from control import kafka_io
from control.errors import ControlError, JobError, ModelNotReadyError
from control.ops import jobs as jobs_lib
from control.ops import lifecycle
from control.settings import RuntimeSettings
from jobs.common.settings import JobSettings, KafkaSettings
from jobs.external_state.settings import ExternalStateSettings
from jobs.models.settings import ModelJobSettings
from jobs.quality.settings import QualitySettings
from jobs.rendezvous.settings import RendezvousSettings
from jobs.smoke.settings import SmokeSettings
from jobs.sql.settings import SqlSettings
from schemas.model_card import ModelCard
from schemas.records import LifecycleEvent, now_ms
from schemas.topics import LIFECYCLE

ENTRY_POINTS: dict[type[JobSettings], str] = {
    ExternalStateSettings: "jobs.external_state.main",
    ModelJobSettings: "jobs.models.main",
    RendezvousSettings: "jobs.rendezvous.main",
    SmokeSettings: "jobs.smoke.main",
    QualitySettings: "jobs.quality.main",
    SqlSettings: "jobs.sql.main",
}


def _record(s: RuntimeSettings, event: LifecycleEvent, topic: str = LIFECYCLE) -> None:
    lifecycle.record(s.bootstrap_servers, event, topic)


ROLES: dict[type[JobSettings], str] = {
    ExternalStateSettings: "external_state",
    ModelJobSettings: "model",
    RendezvousSettings: "rendezvous",
    QualitySettings: "quality",
    SmokeSettings: "operator",  # a test job between any two topics
    SqlSettings: "operator",  # reads any stream, writes the topics its script names
}
"""The Kafka principal each job authenticates as on a secured broker (control.security)."""


def kafka_settings(cls: type[JobSettings], s: RuntimeSettings) -> KafkaSettings:
    """How a job of `cls` reaches Kafka: the runtime's address and client properties and, on a secured broker,
    its role's principal: the properties from its credentials file, with the password left in the file
    (`jobs.common.security.flink_properties`: read by the job's Kafka clients, never on argv)."""
    from jobs.common.security import flink_properties

    props = dict(s.kafka_properties)
    if s.kafka_secured:
        path = s.credentials_dir / f"{ROLES[cls]}.properties"
        if not path.exists():
            raise ControlError(f"no Kafka credentials for the {ROLES[cls]} principal: {path} is missing "
                               f"(`rendezvous up --secure` writes them; README, \"Security\")")
        props.update(flink_properties(path))
    return KafkaSettings(bootstrap_servers=s.jobs_bootstrap_servers, properties=props)


def job_settings(cls: type[JobSettings], s: RuntimeSettings, **fields: Any) -> JobSettings:
    """The job's settings: the Kafka address the cluster reaches (`RENDEZVOUS_JOBS_BOOTSTRAP_SERVERS`, else the
    runtime's) and its Kafka properties (its role's principal on a secured broker), the environment (the
    job's prefix), then `fields`. An unknown field is an error that names it."""
    fields = {k: v for k, v in fields.items() if v is not None}
    fields.setdefault("kafka", kafka_settings(cls, s))
    return cls(**fields)


def submit_job(settings: JobSettings, s: RuntimeSettings, savepoint: str | None = None, wait: bool = True,
               execution_mode: str = "process", allow_non_restored: bool = False,
               parallelism: int | None = None, code: Path | None = None,
               extra_jars: Sequence[Path] = ()) -> str:
    """Submit the job that `settings` configures; returns its Flink job id.
    `parallelism`: of every operator
    (default 1); a source reads at most as many partitions as its topic has, so give the topics at least as
    many (`rendezvous up --partitions N`). `code`: the root of the code to submit (default: this checkout).
    A thread-mode job runs on TaskManagers of its own (`control.ops.jobs.submit`)."""
    jid = jobs_lib.submit(ENTRY_POINTS[type(settings)], settings.to_argv(), savepoint=savepoint, s=s,
                          allow_non_restored=allow_non_restored, parallelism=parallelism,
                          extra_conf={"python.execution-mode": execution_mode}, code=code,
                          extra_jars=extra_jars)
    if wait:
        jobs_lib.wait_running(jid, s)
    return jid


def side_by_side(submissions: Sequence[Callable[[], str]], s: RuntimeSettings | None = None,
                 workers: int = 3) -> list[str]:
    """Run job submissions (callables returning a job id, e.g. `[lambda c=c: deploy_model(c, s, wait=False, ...)
    for c in cards]`: bind each one's arguments, a closure over the loop variable would submit the last one) at
    once, `workers` at a time; their job ids, in order. Each `flink run` spends seconds in its own client JVM and
    interpreter compiling the job, so a set of jobs is up sooner than one after the other. When one fails, the
    others' jobs are cancelled and its error raised.

    Meant for process-mode jobs (models): a thread-mode job (external state, rendezvous) gets TaskManagers of its
    own that another job's slots could land on while it is being submitted (`control.runtime.pinned`), so submit
    those one at a time, before or after."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="submit") as pool:
        futures = [pool.submit(f) for f in submissions]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        try:
            jobs_lib.cancel_all([f.result() for f in futures if f.exception() is None], s or RuntimeSettings())
        except Exception:  # noqa: BLE001 - best effort: the submission's error is the one to see
            pass
        raise errors[0]
    return [f.result() for f in futures]


def registry_records(s: RuntimeSettings, registry_topic: str) -> dict:
    """The transitions registry's current record of each input topic (`schemas.records.Transitions`, by topic)."""
    from schemas.records import Transitions

    out = {}
    for key, value in kafka_io.read_to_end(s.bootstrap_servers, registry_topic) if registry_topic else ():
        if key is not None and value:
            out[key.decode()] = Transitions.parse(value)
    return out


def current_owner(s: RuntimeSettings, registry_topic: str, topic: str) -> str | None:
    """The version that owns `topic`'s records now, by the transitions registry (the owner named by the last token
    of each partition; None: no hand-over of the topic yet)."""
    found = registry_records(s, registry_topic).get(topic)
    if found is None or not found.tokens:
        return None
    last = {t.partition: t.owner for t in found.tokens}
    owners = set(last.values())
    if len(owners) != 1:
        raise ControlError(f"the partitions of {topic} are owned by different versions ({last}): a hand-over did not "
                           "finish. Finish it (`rendezvous upgrade`) or name the owner (RENDEZVOUS_*_OWNER)")
    return owners.pop()


def _adopt_owner(cls: type[JobSettings], s: RuntimeSettings, fields: dict) -> None:
    """A fresh external state or rendezvous deployed after a hand-over takes the name of the version that owns its
    input now: otherwise it would own none of the records after the last token."""
    if fields.get("owner") or fields.get("takes_over"):
        return
    probe = job_settings(cls, s, **fields)
    owner = current_owner(s, probe.transitions_topic, probe.handed_over_topic)
    if owner is not None:
        fields["owner"] = owner


def deploy_external_state(s: RuntimeSettings | None = None, savepoint: str | None = None, wait: bool = True,
                          execution_mode: str = "thread", parallelism: int | None = None, code: Path | None = None,
                          **fields) -> str:
    """Thread mode by default: keyed state access is in-process (measured ~4x the records/s of process mode
    here); see docs/architecture.md, "Execution modes". `fields`: ExternalStateSettings fields. `code`: the root
    of the code to deploy (default: this checkout)."""
    s = s or RuntimeSettings()
    _adopt_owner(ExternalStateSettings, s, fields)
    settings = job_settings(ExternalStateSettings, s, **fields)
    jid = submit_job(settings, s, savepoint, wait, execution_mode, parallelism=parallelism, code=code)
    _record(s, LifecycleEvent(kind="job_submitted", job_id=jid, at_ms=now_ms(),
                              detail={"job": "external_state", "name": settings.job_name, "savepoint": savepoint}))
    return jid


def check_model_ready(card: ModelCard) -> None:
    """Pre-flight: the card's runner prepares here as it will in the job (artifact sha256 and file, model
    server reachable and serving this model, feature version). Raises ModelNotReadyError saying why."""
    from model_udfs.base import make_runner

    try:
        make_runner(card).prepare()
    except Exception as e:  # noqa: BLE001 - whatever stops the model from serving is reported
        raise ModelNotReadyError(f"{card.key} cannot serve, nothing was deployed: {e}") from e


def deploy_model(card: ModelCard | str | Path, s: RuntimeSettings | None = None, savepoint: str | None = None,
                 wait: bool = True, preflight: bool = True, lifecycle_topic: str = LIFECYCLE,
                 parallelism: int | None = None, code: Path | None = None, **fields) -> str:
    """Start the model job of one deployment (model id + version) from its card. `fields`: ModelJobSettings
    fields. Process mode: PyFlink's Python AsyncFunction runs only there.

    Ready before serving: with `preflight` the model is prepared here first (`check_model_ready`; turn it
    off when this machine cannot see the artifact or the model server the cluster sees). In the job the
    runner prepares in the operator's open(), before its first record: a model that cannot serve there
    makes the job fail and restart with the reason (`job_exceptions`), never answer with error scores.
    PyFlink opens a process-mode operator when its first bundle arrives, after the job is RUNNING, so
    only the pre-flight can refuse a deployment up front. With `wait`, a job that fails before it is
    RUNNING is cancelled and its cause raised (JobError)."""
    s = s or RuntimeSettings()
    card_obj = card if isinstance(card, ModelCard) else ModelCard.load(card)
    settings = job_settings(ModelJobSettings, s, card=card_obj, **fields)
    if preflight:
        check_model_ready(card_obj)
    jid = submit_job(settings, s, savepoint, False, "process", parallelism=parallelism, code=code)
    if wait:
        try:
            jobs_lib.wait_running(jid, s)
        except JobError as e:
            try:
                jobs_lib.cancel(jid, s)
            except ControlError:
                pass
            raise JobError(f"model job {card_obj.key} ({jid}) failed to start and was cancelled: {e}") from e
    _record(s, LifecycleEvent(kind="job_submitted", model_id=card_obj.model_id, model_version=card_obj.version,
                              job_id=jid, at_ms=now_ms(), detail={"job": "model", "name": settings.job_name,
                                                                   "runner": card_obj.runner}), lifecycle_topic)
    return jid


def rendezvous_answering_on(answers_topic: str, s: RuntimeSettings | None = None) -> list[str]:
    """Ids of the running (or starting) jobs whose rendezvous writes answers to `answers_topic`, found by the
    name its sink gets in `jobs.rendezvous.pipeline.build` ("<answers> | <late> | <invalid>")."""
    s = s or RuntimeSettings()
    found = []
    for j in jobs_lib.list_jobs(s):
        if j.state in ("CANCELED", "CANCELLING", "FAILED", "FINISHED"):
            continue
        info = jobs_lib.flink_rest(s, f"/jobs/{j.job_id}")
        if any(v["name"].startswith("rendezvous") and f"-> {answers_topic} | " in v["name"]
               for v in info.get("vertices", [])):
            found.append(j.job_id)
    return found


def deploy_rendezvous(s: RuntimeSettings | None = None, savepoint: str | None = None, wait: bool = True,
                      execution_mode: str = "thread", parallelism: int | None = None, code: Path | None = None,
                      **fields) -> str:
    """`fields`: RendezvousSettings fields. Refused while another rendezvous answers on the same answers
    topic: two would give every request two answers (possibly different ones). `code`: the root of the code to
    deploy (default: this checkout)."""
    s = s or RuntimeSettings()
    if savepoint:
        fields.setdefault("restored", True)
    _adopt_owner(RendezvousSettings, s, fields)
    settings = job_settings(RendezvousSettings, s, **fields)
    running = rendezvous_answering_on(settings.answers_topic, s)
    if running:
        raise ControlError(f"a rendezvous already answers on topic {settings.answers_topic!r} (job "
                           f"{', '.join(running)}); a second one would answer every request again. Stop it first "
                           f"(`rendezvous job stop {running[0]}` takes a savepoint to deploy the new one from), or "
                           f"give the new one other topics.")
    jid = submit_job(settings, s, savepoint, wait, execution_mode, parallelism=parallelism, code=code)
    _record(s, LifecycleEvent(kind="job_submitted", job_id=jid, at_ms=now_ms(),
                              detail={"job": "rendezvous", "name": settings.job_name,
                                      "execution_mode": execution_mode}))
    return jid


def load_suite(suite: dict | str | Path | None = None) -> dict:
    """An expectation suite: given (a dict, or a JSON file in Great Expectations' suite form), else the one
    derived from the training data's profile (`training.quality_profile.requests_suite`, deterministic)."""
    import json

    if isinstance(suite, dict):
        return suite
    if suite is not None:
        try:
            return json.loads(Path(suite).read_text())
        except (OSError, ValueError) as e:
            raise ControlError(f"cannot read the expectation suite {suite}: {e}. Write one with "
                               f"`rendezvous quality suite --out FILE`") from e
    from training.quality_profile import requests_suite

    return requests_suite()


def deploy_quality(s: RuntimeSettings | None = None, savepoint: str | None = None, wait: bool = True,
                   suite: dict | str | Path | None = None, parallelism: int | None = None, **fields) -> str:
    """The quality job: micro-batches of `source_topic` validated against an expectation suite (default:
    derived from the training data), one QualityResult per batch to `sink_topic`, a `quality_alert` to
    `lifecycle_topic` per failing batch (none on a secured broker, where only the operators write lifecycle).
    `fields`: QualitySettings fields. Process mode. Creates the sink
    topics if missing."""
    from control.kafka_io import ensure_topics
    from schemas.topics import TopicSpec

    s = s or RuntimeSettings()
    suite_obj = load_suite(suite)
    if s.kafka_secured:  # its principal writes `quality` only: alerts stay there (README, "Security")
        fields.setdefault("lifecycle_topic", "")
    try:
        settings = job_settings(QualitySettings, s, suite=suite_obj, **fields)
    except ValueError as e:
        raise ControlError(f"invalid quality job settings: {e}") from e
    sinks = [TopicSpec(settings.sink_topic)] + (  # lifecycle is a control topic: one partition, never grown
        [TopicSpec(settings.lifecycle_topic, single_partition=True)] if settings.lifecycle_topic else [])
    ensure_topics(s.bootstrap_servers, sinks, partitions=s.topic_partitions)
    jid = submit_job(settings, s, savepoint, wait, "process", parallelism=parallelism)
    _record(s, LifecycleEvent(kind="job_submitted", job_id=jid, at_ms=now_ms(),
                              detail={"job": "quality", "name": settings.job_name, "source_topic": settings.source_topic,
                                      "suite": settings.suite["name"],
                                      "suite_version": settings.suite.get("meta", {}).get("version")}))
    return jid


def deploy_passthrough(s: RuntimeSettings | None = None, savepoint: str | None = None, wait: bool = True,
                       parallelism: int | None = None, **fields) -> str:
    """The bare pass-through job (jobs.smoke): the smoke test's job and the benchmark's baseline.
    `fields`: SmokeSettings fields (source_topic and sink_topic are required)."""
    s = s or RuntimeSettings()
    return submit_job(job_settings(SmokeSettings, s, **fields), s, savepoint, wait, "process",
                      parallelism=parallelism)


def stop_jobs_named(prefix: str, s: RuntimeSettings | None = None, progress=None) -> list[str]:
    """Cancel the running jobs whose name starts with prefix (e.g. a previous demo's)."""
    s = s or RuntimeSettings()
    stopped = []
    for j in jobs_lib.list_jobs(s):
        if j.name.startswith(prefix) and j.state in ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING"):
            if progress:
                progress(f"cancelling {j.name} ({j.job_id})")
            stopped.append(j.job_id)
    jobs_lib.cancel_all(stopped, s)  # side by side: each job takes seconds to end, its TaskManagers to stop
    return stopped

