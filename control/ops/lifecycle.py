"""The lifecycle topic: the audit log of deployments, schedule changes and (later) model stage changes
and upgrades, as `schemas.records.LifecycleEvent` records."""

from __future__ import annotations

from control import kafka_io
from schemas.records import LifecycleEvent
from schemas.topics import LIFECYCLE


def record(bootstrap: str, event: LifecycleEvent, topic: str | None = LIFECYCLE, strict: bool = False) -> None:
    """Append `event` to the audit log. A deployment must not fail because the audit log is unreachable
    (strict=False); a schedule change must be recorded (strict=True raises)."""
    if not topic:
        return
    try:
        kafka_io.produce(bootstrap, topic, [event.to_json()])
    except Exception:  # noqa: BLE001
        if strict:
            raise
