"""The model registry: model deployments (`id@version`) and their life-cycle stage, kept as events in a
compacted Kafka topic (`models`, keyed by `id@version`). The registry's state is the fold of those
records (the latest per key); there is nothing else to run. Every change is also written to the
lifecycle topic (the audit log).

Stages drive what happens (README, "Model life cycle"):
- development: registered, not deployed;
- preproduction: its model job runs, its scores are recorded (answers' timings, live figures), it is
  never chosen (publishing a schedule that names it is refused);
- production: schedules may name it; a bare model id in a schedule means the version in production;
- postproduction: kept running as a fallback, schedules may still name it;
- retired: its job is stopped with a savepoint; refused while the active schedule names it.
A canary (a simple reference model) is never promoted and never retired (unless forced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from control.errors import RegistryError
from control.ops import jobs as jobs_lib
from control.ops import lifecycle
from control.settings import RuntimeSettings
from schemas.model_card import ModelCard
from schemas.records import (
    MODEL_KEY_SEP,
    LifecycleEvent,
    ModelEntry,
    Schedule,
    now_ms,
    split_key,
)
from schemas.topics import TopicNames

STAGES = ("development", "preproduction", "production", "postproduction", "retired")
SCHEDULABLE = ("production", "postproduction")
RUNNING = ("preproduction", "production", "postproduction")
LIVE_JOB_STATES = ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING", "FAILING", "RECONCILING")


@dataclass(frozen=True)
class Plane:
    """One installation of the system: the runtime it runs on and the topics it uses."""

    s: RuntimeSettings = field(default_factory=RuntimeSettings)
    topics: TopicNames = field(default_factory=TopicNames)

    @property
    def bootstrap(self) -> str:
        return self.s.bootstrap_servers

    def record(self, event: LifecycleEvent, strict: bool = True) -> None:
        lifecycle.record(self.bootstrap, event, self.topics.lifecycle, strict=strict)


# ------------------------------------------------------------------------------------------------ reading
def entries(plane: Plane) -> dict[str, ModelEntry]:
    """The registry: the latest record of every model deployment."""
    from control import kafka_io

    out: dict[str, ModelEntry] = {}
    for key, value in kafka_io.read_to_end(plane.bootstrap, plane.topics.registry):
        if value is None:  # a tombstone: forgotten (see `forget`)
            out.pop(key.decode() if key else "", None)
            continue
        try:
            e = ModelEntry.parse(value)
        except Exception:  # noqa: BLE001 - not a registry record: ignored
            continue
        out[e.key] = e
    return out


def get(plane: Plane, key: str, known: dict[str, ModelEntry] | None = None) -> ModelEntry:
    known = entries(plane) if known is None else known
    if key not in known:
        listed = ", ".join(sorted(known)) or "none yet"
        raise RegistryError(f"{key!r} is not registered (registered: {listed}); register it with "
                            "`rendezvous model register CARD`, and name it as id@version")
    return known[key]


def in_production(known: dict[str, ModelEntry], model_id: str) -> list[ModelEntry]:
    return [e for e in known.values() if e.model_id == model_id and e.stage == "production"]


def names(schedule: Schedule, entry: ModelEntry) -> bool:
    """Does `schedule` name this deployment (by `id@version`, or by its bare id)?"""
    return any(m in (entry.key, entry.model_id) for st in schedule.stages for m in st.models)


# ------------------------------------------------------------------------------------------------ writing
def _write(plane: Plane, entry: ModelEntry) -> None:
    from control import kafka_io

    kafka_io.produce(plane.bootstrap, plane.topics.registry, [entry.to_json()], key=lambda _: entry.key.encode())


def register(plane: Plane, card: ModelCard, canary: bool = False) -> ModelEntry:
    """Add a deployment in stage development. Registering the same card again is a no-op; another card
    under the same `id@version` is refused (a version is immutable: give the new one a new version)."""
    known = entries(plane)
    card_data = card.model_dump(mode="json")
    if card.key in known:
        e = known[card.key]
        if e.card == card_data and e.canary == canary:
            return e
        if e.card == card_data:
            raise RegistryError(f"{card.key} is already registered {'as' if e.canary else 'not as'} the canary; "
                                "a deployment's role does not change: register a new version")
        raise RegistryError(f"{card.key} is already registered with another card; a version is immutable: "
                            "register the new one under a new version")
    t = now_ms()
    e = ModelEntry(model_id=card.model_id, version=card.version, card=card_data, canary=canary,
                   registered_at_ms=t, stage_since_ms=t)
    _write(plane, e)
    plane.record(LifecycleEvent(kind="model_registered", model_id=e.model_id, model_version=e.version,
                                to_stage=e.stage, at_ms=t, detail={"runner": card.runner, "canary": canary}))
    return e


def put_decoy(plane: Plane, version: str, job_id: str | None, detail: dict) -> ModelEntry:
    """Record the decoy (the archive job) as a deployment that never answers: in production while its job runs
    (`job_id`), retired when it stops (`job_id` None)."""

    t = now_ms()
    known = entries(plane)
    key = f"decoy@{version}"
    stage = "production" if job_id else "retired"
    prev = known.get(key)
    e = ModelEntry(model_id="decoy", version=version, stage=stage, decoy=True, job_id=job_id,
                   card={"model_id": "decoy", "version": version, "description": "archives every input, score "
                         "and answer; never answers", **detail},
                   registered_at_ms=prev.registered_at_ms if prev else t, stage_since_ms=t)
    _write(plane, e)
    plane.record(LifecycleEvent(kind="stage_changed" if prev else "model_registered", model_id="decoy",
                                model_version=version, from_stage=prev.stage if prev else None, to_stage=stage,
                                job_id=job_id, at_ms=t, detail={"decoy": True, **detail}))
    return e


def forget(plane: Plane, key: str) -> None:
    """Remove a deployment from the registry (a tombstone: compaction drops its history). For a demo that
    starts over; its job must be gone (refused while it runs)."""
    from control import kafka_io

    e = entries(plane).get(key)
    if e is None:
        return
    if job_alive(plane, e):
        raise RegistryError(f"{key}'s job {e.job_id} is running: retire it (or cancel the job) first")
    p = kafka_io.producer(plane.bootstrap)
    try:
        p.send(plane.topics.registry, None, key=key.encode()).get(timeout=30)
    finally:
        p.close()


def job_moved(plane: Plane, old_job_id: str, new_job_id: str) -> ModelEntry | None:
    """The deployment whose job was `old_job_id` runs as `new_job_id` now (e.g. after `job rescale`): record
    it, so its stage moves act on the running job. Returns the updated entry (None: no deployment ran it)."""
    for e in entries(plane).values():
        if e.job_id == old_job_id:
            new = e.model_copy(update={"job_id": new_job_id})
            _write(plane, new)
            return new
    return None


def job_alive(plane: Plane, entry: ModelEntry) -> bool:
    if not entry.job_id:
        return False
    try:
        return jobs_lib.job_state(entry.job_id, plane.s) in LIVE_JOB_STATES
    except Exception:  # noqa: BLE001 - a job the cluster no longer knows is not alive
        return False


def set_stage(plane: Plane, key: str, stage: str, force: bool = False, reason: str = "",
              progress: Callable[[str], None] | None = None, **deploy_fields) -> ModelEntry:
    """Move a deployment to `stage`, doing what the stage means: deploy its job (preproduction, production,
    postproduction), or stop it with a savepoint (retired). Refused, with the reason and what to do, when
    the move would change answers unannounced (retiring or demoting a scheduled model, promoting a canary)
    unless `force`. `deploy_fields`: ModelJobSettings fields for a job it deploys."""
    from control.ops import deploy, schedules

    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    e = get(plane, key)
    if e.decoy:
        raise RegistryError(f"{key} is the decoy: it archives, it never answers; start or stop it with "
                            "`rendezvous archive start|stop`")
    if e.stage == stage:
        return e
    if stage == "development":
        raise RegistryError(f"{key} cannot go back to development; retire it, or register a new version")
    if e.canary and stage != "preproduction" and not force:
        raise RegistryError(f"{key} is the canary: a reference model is never scheduled or retired "
                            "(use --force if you mean it)")
    active = schedules.active(plane.bootstrap, plane.topics.schedules)
    if stage not in SCHEDULABLE and active is not None and names(active, e) and not force:
        raise RegistryError(
            f"the active schedule v{active.version} '{active.name}' still names {key}: moving it to {stage} "
            f"would shift its answers to other models or the default. Roll traffic off it first "
            f"(`rendezvous roll OTHER@VERSION --replace {key}`, or publish a schedule without it), then "
            f"move it (or use --force)")
    t = now_ms()
    update: dict = {"stage": stage, "stage_since_ms": t}
    if stage in RUNNING and not job_alive(plane, e):
        if progress:
            progress(f"deploying the model job of {key}")
        card = ModelCard.model_validate(e.card)
        # from the end of its input: a redeployed version (same consumer group) must not re-score what came
        # while it was away into the production scores
        deploy_fields.setdefault("start", "latest")
        jid = deploy.deploy_model(card, plane.s, source_topic=plane.topics.augmented,
                                  sink_topic=plane.topics.scores, lifecycle_topic=plane.topics.lifecycle,
                                  **deploy_fields)
        update["job_id"] = jid
    if stage == "retired" and job_alive(plane, e):
        if progress:
            progress(f"stopping the model job of {key} ({e.job_id}) with a savepoint")
        assert e.job_id is not None
        path = jobs_lib.stop_with_savepoint(e.job_id, plane.s, progress=progress)
        update["savepoint"] = path
        plane.record(LifecycleEvent(kind="job_stopped", model_id=e.model_id, model_version=e.version,
                                    job_id=e.job_id, at_ms=now_ms(), detail={"savepoint": path}))
    new = e.model_copy(update=update)
    _write(plane, new)
    plane.record(LifecycleEvent(kind="stage_changed", model_id=e.model_id, model_version=e.version,
                                from_stage=e.stage, to_stage=stage, job_id=new.job_id, at_ms=t,
                                detail={"forced": force, **({"reason": reason} if reason else {})}))
    return new


def resolve(data: dict, known: dict[str, ModelEntry], allow: set[str] | frozenset[str] = frozenset()) -> dict:
    """The schedule body `data` made explicit against the registry `known`: bare ids of registered models
    become the version in production; a registered model outside production/postproduction is refused
    (unless in `allow`). Models the registry does not know stay as written (a bare id then takes any
    version's score)."""
    ids = {e.model_id for e in known.values()}

    def one(m):
        if not isinstance(m, str):
            return m
        if MODEL_KEY_SEP not in m:
            if m not in ids:
                return m
            prod = in_production(known, m)
            if len(prod) == 1:
                return prod[0].key
            if not prod:
                staged = ", ".join(f"{e.key} ({e.stage})" for e in known.values() if e.model_id == m)
                raise RegistryError(f"no version of {m} is in production ({staged}); name one as id@version "
                                    f"or move one to production")
            raise RegistryError(f"{len(prod)} versions of {m} are in production "
                                f"({', '.join(e.key for e in prod)}); name one as id@version")
        e = known.get(m)
        if e is None and split_key(m)[0] in ids:
            versions = ", ".join(sorted(k for k in known if split_key(k)[0] == split_key(m)[0]))
            raise RegistryError(f"{m} is not registered (registered versions: {versions})")
        if e is not None and (e.decoy or (m not in allow and (e.stage not in SCHEDULABLE or e.canary))):
            what = ("the decoy, which never answers" if e.decoy else "the canary, never scheduled" if e.canary
                    else f"in {e.stage}")
            raise RegistryError(f"{m} is {what}: only production and postproduction models are "
                                f"scheduled (`rendezvous model stage {m} production`, or `rendezvous roll {m}`)")
        return m

    stages = []
    for st in data.get("stages", []):
        if not isinstance(st, dict):
            stages.append(st)
            continue
        new = {**st, "models": [one(m) for m in st.get("models", [])]}
        if isinstance(st.get("split"), dict):
            new["split"] = {one(m): w for m, w in st["split"].items()}
        stages.append(new)
    return {**data, "stages": stages}


def resolver(plane: Plane, allow: set[str] | frozenset[str] = frozenset()) -> Callable[[dict], dict]:
    """`resolve` against the registry as it is when the schedule is published (for `schedules.publish`)."""
    return lambda data: resolve(data, entries(plane), allow)
