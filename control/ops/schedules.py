"""Schedules at run time: validate a file, publish it as the next version, show the active one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from control.errors import ScheduleError
from control.ops import lifecycle
from schemas.records import LifecycleEvent, Schedule, now_ms
from schemas.topics import SCHEDULES


def schedule_key(version: int) -> bytes:
    """One key per version: the compacted topic keeps every version (a few KB each), so rollback can
    restore any of them."""
    return f"v{version}".encode()


def load_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ScheduleError(f"schedule file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001
        raise ScheduleError(f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {e}")
    if not isinstance(data, dict):
        raise ScheduleError(f"{path}: a schedule is a mapping with 'stages' and 'default_output'")
    return data


def validate(data: dict, version: int) -> Schedule:
    fields = {k: v for k, v in data.items() if k not in ("version", "created_at_ms")}
    try:
        return Schedule.model_validate({**fields, "version": version, "created_at_ms": now_ms()})
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(schedule)'}: {err['msg']}" for err in e.errors()]
        raise ScheduleError("invalid schedule:\n" + "\n".join(lines) +
                            "\nA schedule looks like: {name: fast-champion, stages: [{deadline_ms: 20, models: "
                            "[fraud-champion]}, {deadline_ms: 50, models: [fraud-champion, fraud-challenger]}], "
                            "default_output: {fraud_probability: 0.0}}") from None


def history(bootstrap: str, topic: str = SCHEDULES, timeout: float = 10.0) -> list[Schedule]:
    """Every schedule still in the (compacted, keyed by version) topic, oldest first."""
    from control import kafka_io

    out: list[Schedule] = []
    for _, value in kafka_io.read_to_end(bootstrap, topic, timeout):
        try:
            out.append(Schedule.parse(value))
        except Exception:  # noqa: BLE001 - not ours; ignore
            pass
    return sorted({s.version: s for s in out}.values(), key=lambda s: s.version)


def active(bootstrap: str, topic: str = SCHEDULES) -> Schedule | None:
    h = history(bootstrap, topic)
    return h[-1] if h else None


def publish(bootstrap: str, data: dict, topic: str = SCHEDULES, lifecycle_topic: str | None = "lifecycle",
            resolve: Callable[[dict], dict] | None = None, **fields) -> Schedule:
    """Validate and publish as the next version; records the change in the lifecycle topic.

    `resolve` (the registry's, `control.ops.registry.resolver`) makes the schedule explicit before it is
    validated: bare model ids become the `id@version` in production, and models not in production or
    postproduction are refused. `fields`: Schedule fields set by the caller (roll, rollback_of)."""
    from control import kafka_io

    current = active(bootstrap, topic)
    if resolve is not None:
        data = resolve(data)
    sched = validate({**data, **fields}, (current.version if current else 0) + 1)
    kafka_io.produce(bootstrap, topic, [sched.to_json()], key=lambda _: schedule_key(sched.version))
    if lifecycle_topic:
        ev = LifecycleEvent(kind="schedule_published", schedule_version=sched.version, at_ms=now_ms(),
                            detail={"name": sched.name, "models": sched.model_ids(),
                                    "previous_version": current.version if current else None,
                                    **({"roll": sched.roll.model_dump()} if sched.roll else {}),
                                    **({"rollback_of": sched.rollback_of} if sched.rollback_of is not None else {})})
        lifecycle.record(bootstrap, ev, lifecycle_topic, strict=True)
    return sched


def publish_file(bootstrap: str, path: str | Path, topic: str = SCHEDULES,
                 resolve: Callable[[dict], dict] | None = None) -> Schedule:
    return publish(bootstrap, load_file(path), topic, resolve=resolve)


def body(schedule: Schedule) -> dict:
    """What to publish again to restore `schedule` (without its version and roll marks)."""
    return schedule.model_dump(exclude={"version", "created_at_ms", "roll", "rollback_of"})
