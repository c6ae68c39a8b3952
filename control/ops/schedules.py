"""Schedules at run time: validate a file, publish it as the next version, show the active one."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import ValidationError

from control.errors import ScheduleError
from control.ops import lifecycle
from schemas.records import LifecycleEvent, Schedule, now_ms
from schemas.topics import SCHEDULES

SCHEDULE_KEY = b"active"  # one key: the compacted topic keeps the latest schedule


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
    body = {k: v for k, v in data.items() if k not in ("version", "created_at_ms")}
    try:
        return Schedule.model_validate({**body, "version": version, "created_at_ms": now_ms()})
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(schedule)'}: {err['msg']}" for err in e.errors()]
        raise ScheduleError("invalid schedule:\n" + "\n".join(lines) +
                            "\nA schedule looks like: {name: fast-champion, stages: [{deadline_ms: 20, models: "
                            "[fraud-champion]}, {deadline_ms: 50, models: [fraud-champion, fraud-challenger]}], "
                            "default_output: {fraud_probability: 0.0}}") from None


def history(bootstrap: str, topic: str = SCHEDULES, timeout: float = 10.0) -> list[Schedule]:
    """Every schedule still in the (compacted) topic, oldest first."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                      consumer_timeout_ms=int(timeout * 1000))
    try:
        parts = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or [])]
        if not parts:
            return []
        c.assign(parts)
        c.seek_to_beginning(*parts)
        end = c.end_offsets(parts)
        out: list[Schedule] = []
        deadline = time.monotonic() + timeout
        while any(c.position(p) < end[p] for p in parts) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                for r in recs:
                    try:
                        out.append(Schedule.parse(r.value))
                    except Exception:  # noqa: BLE001 - not ours; ignore
                        pass
        return sorted(out, key=lambda s: s.version)
    finally:
        c.close()


def active(bootstrap: str, topic: str = SCHEDULES) -> Schedule | None:
    h = history(bootstrap, topic)
    return h[-1] if h else None


def publish(bootstrap: str, data: dict, topic: str = SCHEDULES, lifecycle_topic: str | None = "lifecycle") -> Schedule:
    """Validate and publish as the next version; records the change in the lifecycle topic."""
    from control import kafka_io

    current = active(bootstrap, topic)
    sched = validate(data, (current.version if current else 0) + 1)
    kafka_io.produce(bootstrap, topic, [sched.to_json()], key=lambda _: SCHEDULE_KEY)
    if lifecycle_topic:
        ev = LifecycleEvent(kind="schedule_published", schedule_version=sched.version, at_ms=now_ms(),
                            detail={"name": sched.name, "models": sched.model_ids(),
                                    "previous_version": current.version if current else None})
        lifecycle.record(bootstrap, ev, lifecycle_topic, strict=True)
    return sched


def publish_file(bootstrap: str, path: str | Path, topic: str = SCHEDULES) -> Schedule:
    return publish(bootstrap, load_file(path), topic)


