"""The mailbox of one request id, and its encoding in Flink keyed state.

A `Mailbox` holds what the rendezvous knows of one request: when it arrived, under which schedule
version, the stage reached, the first score of each model, and when it was answered. The rules
(core.py) change it; the Flink function stores it with `to_state` / `from_state`.

State encoding (deliberate and versioned, so savepoints survive upgrades): a plain tuple
`(MAILBOX_STATE_VERSION, first_seen_ms, request_time_ms, received_at_ms, schedule_version, stage,
answered_at_ms, expires_at_ms, scores)` with `scores` a tuple of `(model_key, model_version,
output_json, error, started_at_ms, finished_at_ms, arrived_at_ms, request_time_ms, received_at_ms)`,
stored as `Types.PICKLED_BYTE_ARRAY()`. In thread mode PyFlink pickles typed Row state anyway; a
tuple of primitives pickles 5-10x faster than Rows and is as stable (docs/architecture.md, "State").
A reader of a newer version than it knows fails loudly instead of guessing.

Versions: 1 keyed scores by model id (one score per model); 2 keys them by `id@version` (two versions of
one model side by side). Version 1 state is read (its keys become `id@version`) and written back as 2.
Version 3 (`REPLY_STATE_VERSION`) is version 2 plus one last element, `reply_to`: the request's return address
(a gateway's reply topic) until it is answered. It is written only for a mailbox that holds one, so a mailbox
without one is still written as version 2, byte for byte as before: a savepoint taken while no gateway sent
requests restores into the release before return addresses too.
Version 4 (`HANDED_OVER_STATE_VERSION`) is version 3 plus one last element, `True`: the mailbox belongs to another
version of the rendezvous (a request on the other side of a transition token, or a mailbox a version taking over
restored from the one handing over; jobs/common/transition.py). Written only for such a mailbox.
A shadow mailbox (a request a version taking over answers into its shadow topic before a token names it, see
core.py `on_shadow_request`) is written as version 4 with the last element `"shadow"` instead of `True`: a reader
from before shadows, which checks only that it is true, takes it for another version's mailbox, which is what
that reader would have made of the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from schemas.records import Score

MAILBOX_STATE_VERSION = 2
"""Version of the tuple layout written by `to_state` for a mailbox without a return address; bump it (and keep
reading the old one) on change."""

REPLY_STATE_VERSION = 3
"""Version 2 plus the return address as a last element: written for a mailbox that holds one."""

HANDED_OVER_STATE_VERSION = 4
"""Version 3 plus a last element, True: the mailbox is another version's (written only for such a mailbox), or
`SHADOW`: a shadow mailbox."""

SHADOW = "shadow"

_LENGTHS = {1: 9, MAILBOX_STATE_VERSION: 9, REPLY_STATE_VERSION: 10, HANDED_OVER_STATE_VERSION: 11}
"""Elements of the state tuple of each encoding this code reads."""

MAILBOX_READS = tuple(sorted(_LENGTHS))
"""Every encoding `from_state` reads. Declared for upgrades (`RendezvousSettings.state_encodings`): a savepoint
holding an encoding the new code does not read is refused before the running job is stopped."""

MAILBOX_UID = "rendezvous-mailbox"
"""The uid of the operator that keeps the mailboxes (jobs/rendezvous/pipeline.py)."""


class StateVersionError(ValueError):
    """State written by a newer (or unknown) encoding than this code reads."""


@dataclass
class HeldScore:
    model_version: str
    output: dict[str, Any] | None
    error: str | None
    started_at_ms: int
    finished_at_ms: int
    arrived_at_ms: int  # rendezvous clock
    request_time_ms: int
    received_at_ms: int  # model job clock

    @property
    def ok(self) -> bool:
        return self.error is None and self.output is not None

    @classmethod
    def of(cls, score: Score, now: int) -> "HeldScore":
        return cls(score.model_version, score.output, score.error, score.started_at_ms, score.finished_at_ms,
                   now, score.request_time_ms, score.received_at_ms)

    def to_score(self, request_id: str, model_id: str) -> Score:
        return Score(request_id=request_id, model_id=model_id, model_version=self.model_version, output=self.output,
                     error=self.error, request_time_ms=self.request_time_ms, received_at_ms=self.received_at_ms,
                     started_at_ms=self.started_at_ms, finished_at_ms=self.finished_at_ms)


@dataclass
class Mailbox:
    """Everything kept per request id."""

    request_id: str
    first_seen_ms: int
    request_time_ms: int | None = None
    received_at_ms: int | None = None  # when the request reached the rendezvous
    schedule_version: int | None = None
    stage: int = 0
    answered_at_ms: int | None = None
    expires_at_ms: int | None = None  # when this mailbox is cleared (orphan timeout or retention)
    scores: dict[str, HeldScore] = field(default_factory=dict)  # first score per model `id@version`
    reply_to: str | None = None  # the request's return address until it is answered (a gateway's reply topic)
    foreign: bool = False  # another version of the rendezvous owns this request (a hand-over): nothing goes out
    shadow: bool = False  # another version owns it, and this one answers it into its shadow topic (a warm-up)

    @property
    def has_request(self) -> bool:
        return self.received_at_ms is not None

    @property
    def answered(self) -> bool:
        return self.answered_at_ms is not None


def to_state(mb: Mailbox) -> tuple:
    """The mailbox as the versioned state tuple (the request id is the state's key, not stored)."""
    scores = tuple(
        (key, h.model_version, json.dumps(h.output, separators=(",", ":")) if h.output is not None else None,
         h.error, h.started_at_ms, h.finished_at_ms, h.arrived_at_ms, h.request_time_ms, h.received_at_ms)
        for key, h in mb.scores.items())
    base = (mb.first_seen_ms, mb.request_time_ms, mb.received_at_ms, mb.schedule_version, mb.stage,
            mb.answered_at_ms, mb.expires_at_ms, scores)
    if mb.foreign or mb.shadow:
        return (HANDED_OVER_STATE_VERSION, *base, mb.reply_to, True if mb.foreign else SHADOW)
    if mb.reply_to is None:
        return (MAILBOX_STATE_VERSION, *base)
    return (REPLY_STATE_VERSION, *base, mb.reply_to)


def from_state(request_id: str, value: tuple) -> Mailbox:
    """The mailbox stored by `to_state`."""
    if not (isinstance(value, tuple) and value and isinstance(value[0], int) and _LENGTHS.get(value[0]) == len(value)):
        found = (f"{value[0]!r} with {len(value)} elements" if isinstance(value, tuple) and value
                 else type(value).__name__)
        raise StateVersionError(f"mailbox state of {request_id!r} has encoding {found}; this code reads versions "
                                f"{sorted(_LENGTHS)} ({_LENGTHS} elements). Restore the savepoint with the version "
                                "that wrote it.")
    encoding, first_seen, request_time, received, schedule_version, stage, answered, expires, scores = value[:9]
    other = value[10] if encoding == HANDED_OVER_STATE_VERSION else False  # True: foreign; SHADOW: a shadow
    mb = Mailbox(request_id=request_id, first_seen_ms=first_seen, request_time_ms=request_time,
                 received_at_ms=received, schedule_version=schedule_version, stage=stage, answered_at_ms=answered,
                 expires_at_ms=expires, reply_to=value[9] if encoding >= REPLY_STATE_VERSION else None,
                 foreign=bool(other) and other != SHADOW, shadow=other == SHADOW)
    for key, version, output_json, error, started, finished, arrived, req_time, rcv in scores:
        if encoding == 1:  # keyed by model id then
            key = f"{key}@{version}"
        mb.scores[key] = HeldScore(version, json.loads(output_json) if output_json is not None else None, error,
                                        started, finished, arrived, req_time, rcv)
    return mb
