"""A cascade's join (pure, no PyFlink): a model whose card declares `inputs` (upstream deployments) scores a
request only with those models' scores beside it. The model job keys the augmented requests and the upstream
scores by request id; `InputsJoin` decides, per event, what the keyed function keeps, emits and times.

- A request waits (in keyed state) until every declared input has a score for it, then goes to the model
  as the augmented request plus `inputs`: {name: {model, output, error}} (the runner sees them as
  `features['inputs']`, part of its external state).
- An input is `id@version` (only that deployment's scores) or a bare `id` (the first score of any version:
  a downstream model follows its upstream through upgrades, which is how an upstream change reaches it).
- Whatever comes first (the request or an input) starts the clock: `timeout_ms` later a request still
  missing inputs goes on with `inputs_missing` (the model UDF turns it into an error score naming them),
  and upstream scores whose request never came are dropped and counted (`orphans`). State is cleared
  either way, so it is bounded by the rate times the timeout.
- A second request with the id of a pending one is counted (`duplicates`) and not scored twice.

State: one JSON string per request id, `{"v": 1, "request", "inputs", "deadline_ms"}` (`Pending`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INPUTS_STATE_VERSION = 1
"""The encoding `Pending.to_state` writes."""
INPUTS_READS = (1,)
"""Every encoding `Pending.from_state` reads (declared for upgrades: `ModelJobSettings.state_encodings`)."""


@dataclass
class Pending:
    """A request id's wait: the augmented request (JSON) once it came, the inputs seen, the deadline."""

    request: str | None
    inputs: dict[str, dict[str, Any]]
    deadline_ms: int

    def to_state(self) -> str:
        return json.dumps({"v": INPUTS_STATE_VERSION, "request": self.request, "inputs": self.inputs,
                           "deadline_ms": self.deadline_ms}, separators=(",", ":"))

    @classmethod
    def from_state(cls, raw: str | None) -> "Pending | None":
        if raw is None:
            return None
        data = json.loads(raw)
        if data.get("v") not in INPUTS_READS:
            raise ValueError(f"inputs state encoding {data.get('v')!r} is not one this code reads {INPUTS_READS}")
        return cls(request=data["request"], inputs=data["inputs"], deadline_ms=int(data["deadline_ms"]))


@dataclass
class Step:
    """What one event does: the state after it (None: cleared), a record for the model (JSON), a timer."""

    pending: Pending | None
    emit: str | None = None
    timer_ms: int | None = None
    orphans: int = 0
    duplicates: int = 0
    timed_out: list[str] = field(default_factory=list)


def request_id_of_request(raw: str | None) -> str:
    """The key of an augmented request ('' when unreadable: it then passes at once, and the model UDF makes
    its error score)."""
    try:
        return str(json.loads(raw)["request"]["request_id"])
    except Exception:  # noqa: BLE001
        return ""


def request_id_of_score(raw: str | None) -> str:
    try:
        return str(json.loads(raw)["request_id"])
    except Exception:  # noqa: BLE001
        return ""


class InputsJoin:
    def __init__(self, inputs: list[str], timeout_ms: int):
        if not inputs:
            raise ValueError("a join needs at least one input")
        self.inputs = list(inputs)
        self.timeout_ms = timeout_ms
        self._by_id = {name.partition("@")[0]: name for name in inputs}

    def input_of(self, model_id: str, version: str) -> str | None:
        """The declared input a score of `model_id@version` fills, or None (not one of this model's inputs)."""
        name = self._by_id.get(model_id)
        if name is None:
            return None
        _, _, want = name.partition("@")
        return name if not want or want == version else None

    def wanted(self, raw_score: str | None) -> bool:
        """Whether a record of the scores topic is an input of this model (unreadable records are not)."""
        try:
            s = json.loads(raw_score)
            return self.input_of(str(s["model_id"]), str(s["model_version"])) is not None
        except Exception:  # noqa: BLE001
            return False

    def _ready(self, p: Pending) -> str:
        aug = json.loads(p.request)
        aug["inputs"] = {name: p.inputs[name] for name in self.inputs}
        return json.dumps(aug, separators=(",", ":"))

    def on_request(self, p: Pending | None, raw: str, now_ms: int) -> Step:
        try:
            json.loads(raw)["request"]["request_id"]
        except Exception:  # noqa: BLE001 - unreadable: the UDF's error score says why
            return Step(p, emit=raw)
        if p is not None and p.request is not None:
            return Step(p, duplicates=1)
        if p is None:
            p = Pending(request=raw, inputs={}, deadline_ms=now_ms + self.timeout_ms)
            timer = p.deadline_ms
        else:
            p = Pending(request=raw, inputs=p.inputs, deadline_ms=p.deadline_ms)
            timer = None
        if len(p.inputs) == len(self.inputs):
            return Step(None, emit=self._ready(p))
        return Step(p, timer_ms=timer)

    def on_score(self, p: Pending | None, raw: str, now_ms: int) -> Step:
        try:
            s = json.loads(raw)
            name = self.input_of(str(s["model_id"]), str(s["model_version"]))
        except Exception:  # noqa: BLE001 - not an input (filtered before; kept safe)
            return Step(p)
        if name is None or (p is not None and name in p.inputs):
            return Step(p)  # not an input, or a second version's score of an input already filled
        got = {"model": f"{s['model_id']}@{s['model_version']}", "output": s.get("output"), "error": s.get("error")}
        timer = None
        if p is None:
            p = Pending(request=None, inputs={}, deadline_ms=now_ms + self.timeout_ms)
            timer = p.deadline_ms
        p = Pending(request=p.request, inputs={**p.inputs, name: got}, deadline_ms=p.deadline_ms)
        if p.request is not None and len(p.inputs) == len(self.inputs):
            return Step(None, emit=self._ready(p))
        return Step(p, timer_ms=timer)

    def on_timer(self, p: Pending | None, now_ms: int) -> Step:
        if p is None or now_ms < p.deadline_ms:
            return Step(p)  # an older wait's timer
        if p.request is None:
            return Step(None, orphans=len(p.inputs))
        missing = [n for n in self.inputs if n not in p.inputs]
        aug = json.loads(p.request)
        aug["inputs"] = dict(p.inputs)
        aug["inputs_missing"] = missing
        return Step(None, emit=json.dumps(aug, separators=(",", ":")), timed_out=missing)
