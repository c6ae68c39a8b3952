"""The versioned schedule store of the rendezvous: which schedule is active, and the schedule of every
version a pending request may still refer to.

A request is decided by the schedule that was active when it arrived (its version is kept in the
mailbox), so a schedule published mid-flight changes only requests that arrive after it. The store
keeps the newest `keep` versions; a request whose version was evicted falls back to the active one.
Pure Python: the Flink function mirrors it into broadcast state (`versions`, `active_version`, each
schedule's JSON) and restores it from there after a savepoint.
"""

from __future__ import annotations

from typing import Callable

from schemas.records import Schedule, Stage

KEEP_VERSIONS = 32

BUILTIN_SCHEDULE = Schedule(version=0, name="builtin", stages=[Stage(deadline_ms=100, models=["fraud-champion"])],
                            default_output={"fraud_probability": 0.0, "decision": "review"})
"""Used until a schedule is published (version 0)."""


class ScheduleStore:
    def __init__(self, builtin: Schedule = BUILTIN_SCHEDULE, keep: int = KEEP_VERSIONS):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.builtin = builtin
        self.keep = keep
        self._by_version: dict[int, Schedule] = {}
        self._active: Schedule | None = None

    @property
    def active(self) -> Schedule:
        """The newest published schedule, else the built-in one."""
        return self._active or self.builtin

    @property
    def active_version(self) -> int | None:
        return self._active.version if self._active is not None else None

    def versions(self) -> list[int]:
        return sorted(self._by_version)

    def add(self, schedule: Schedule) -> list[int]:
        """Keep `schedule`; it becomes active unless an older version arrives late. Returns the versions
        evicted to stay within `keep`."""
        self._by_version[schedule.version] = schedule
        if self._active is None or schedule.version >= self._active.version:
            self._active = schedule
        evicted = self.versions()[:-self.keep]
        for v in evicted:
            del self._by_version[v]
        return evicted

    def get(self, version: int | None) -> Schedule:
        """The schedule of `version` (None: the active one); an unknown or evicted version gets the active one."""
        if version is None:
            return self.active
        if version == self.builtin.version:
            return self.builtin
        return self._by_version.get(version) or self.active

    def restore(self, versions: list[int], active_version: int | None, read: Callable[[int], str | None]) -> None:
        """Fill an empty store from what `add` left in (broadcast) state: `read(version)` gives a schedule's JSON."""
        for v in versions:
            raw = read(v)
            if raw is not None:
                self._by_version[v] = Schedule.parse(raw)
        if active_version is not None and active_version in self._by_version:
            self._active = self._by_version[active_version]
