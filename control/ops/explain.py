"""`rendezvous explain REQUEST_ID`: the whole story of one request, from the live topics while they still hold it
and from the decoy's archive after.

The story: the request and its features (feature version, the entity's sequence number), every model's score
with its latency and when it reached the rendezvous (scores after the answer included), the answer, the schedule
version that applied and its stages, why the answer won (trigger, stage, deadline), and the label when known.
`story_of` gathers (I/O), `render` turns a story into text (pure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from control.errors import ControlError
from control.settings import RuntimeSettings
from schemas.records import (
    Answer,
    AugmentedRequest,
    Label,
    QuarantineRecord,
    Schedule,
    Score,
)
from schemas.topics import TopicNames


class ExplainError(ControlError):
    pass


@dataclass
class Story:
    request_id: str
    source: str
    """Where it was found: "live topics" or "archive (PATH)"."""
    augmented: AugmentedRequest | None = None
    scores: list[Score] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    """Normally one; more would be a broken contract, and is shown as such."""
    schedule: Schedule | None = None
    labels: list[Label] = field(default_factory=list)
    quarantined: list[QuarantineRecord] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.augmented or self.scores or self.answers or self.quarantined)

    def as_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "source": self.source,
                "augmented": self.augmented.model_dump() if self.augmented else None,
                "scores": [s.model_dump() for s in self.scores], "answers": [a.model_dump() for a in self.answers],
                "schedule": self.schedule.model_dump() if self.schedule else None,
                "labels": [x.model_dump() for x in self.labels],
                "quarantined": [q.model_dump() for q in self.quarantined], "why": why(self)}


# ------------------------------------------------------------------------------------------------ gathering
def _match(request_id: str) -> bytes:
    return f'"request_id":{json.dumps(request_id)}'.encode()


def from_topics(request_id: str, s: RuntimeSettings, topics: TopicNames = TopicNames()) -> Story:
    from control import kafka_io

    def scan(topic: str, contains: bytes | None = None) -> list[bytes]:
        return [r.value for r in kafka_io.records_to_end(s.bootstrap_servers, topic, timeout=30,
                                                         contains=contains or _match(request_id))]

    st = Story(request_id, "live topics")
    aug = [AugmentedRequest.parse(v) for v in scan(topics.augmented)]
    st.augmented = next((a for a in aug if a.request.request_id == request_id), None)
    st.scores = [x for x in map(Score.parse, scan(topics.scores)) if x.request_id == request_id]
    st.answers = [a for a in map(Answer.parse, scan(topics.answers)) if a.request_id == request_id]
    st.labels = [x for x in map(Label.parse, scan(topics.labels)) if x.request_id == request_id]
    st.quarantined = [q for q in map(QuarantineRecord.parse, scan(topics.quarantine, json.dumps(request_id)
                                                                   .encode().replace(b'"', b'\\"')))
                      if _raw_id(q.raw) == request_id]
    st.schedule = _schedule(st, s, topics)
    return st


def _raw_id(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return str(value.get("request_id")) if isinstance(value, dict) else None


def from_archive(request_id: str, s: RuntimeSettings, archive: str | None = None,
                 topics: TopicNames = TopicNames()) -> Story:
    from control.ops import archive as arch

    where = archive or s.archive
    st = Story(request_id, f"archive ({where})")
    ids = {request_id}

    def rows(table: str) -> list[dict]:
        try:
            return arch.read(table, where, ids).to_pylist()
        except arch.ArchiveError:
            return []

    reqs = rows("requests")
    if reqs:
        st.augmented = AugmentedRequest.parse(reqs[0]["augmented_json"])
    st.scores = [Score.model_validate({k: _unmap(v) if k == "output" else v for k, v in r.items()
                                       if k in Score.model_fields}) for r in rows("scores")]
    st.answers = [Answer.model_validate({k: _unmap(v) if k == "output" else dict(v) if k == "timings" else v
                                         for k, v in r.items() if k in Answer.model_fields})
                  for r in rows("answers")]
    st.labels = [Label.model_validate({k: v for k, v in r.items() if k in Label.model_fields})
                 for r in rows("labels")]
    st.schedule = _schedule(st, s, topics)
    return st


def _unmap(value):
    """A free-shape object archived as MAP<STRING, STRING> (pyarrow: a list of (key, text) pairs) back to a dict:
    each text back to the JSON value it was written from (numbers as numbers)."""
    if value is None:
        return None

    def back(text):
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            return text
    return {k: back(v) for k, v in value}


def _schedule(st: Story, s: RuntimeSettings, topics: TopicNames) -> Schedule | None:
    """The schedule version the answer was given under (the schedules topic keeps every version)."""
    if not st.answers:
        return None
    from control.ops import schedules

    version = st.answers[0].schedule_version
    try:
        return next((x for x in schedules.history(s.bootstrap_servers, topics.schedules) if x.version == version),
                    None)
    except Exception:  # noqa: BLE001 - the story goes on without the schedule's stages
        return None


def story_of(request_id: str, s: RuntimeSettings | None = None, topics: TopicNames = TopicNames(),
             archive: str | None = None, source: str = "auto") -> Story:
    """The story from the live topics, else (`auto`) from the archive; `source`: live, archive or auto."""
    s = s or RuntimeSettings()
    if source not in ("auto", "live", "archive"):
        raise ExplainError(f"source is live, archive or auto, not {source!r}")
    st = None
    if source in ("auto", "live"):
        st = from_topics(request_id, s, topics)
        if st.found or source == "live":
            return st
    st = from_archive(request_id, s, archive, topics)
    return st


# ------------------------------------------------------------------------------------------------ rendering
def _t(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def why(st: Story) -> str | None:
    """Why the answer is what it is, in one sentence."""
    if not st.answers:
        return None
    a = st.answers[0]
    stage = f"stage {a.stage}" if a.stage is not None else "no stage"
    deadline = f" (deadline {_t(a.deadline_at_ms)})" if a.deadline_at_ms else ""
    text = {
        "preferred": f"{a.model}, the most preferred model of {stage}, answered before the stage's deadline",
        "all_answered": f"every model of {stage} had answered or failed; {a.model} was the most preferred usable "
                        "score",
        "deadline": f"{stage}'s deadline passed{deadline}; {a.model} was its most preferred usable score then",
        "default": f"no stage had a usable score by the last deadline{deadline}: the schedule's default answer",
    }[a.trigger]
    if a.explored:
        text += "; its first choice was picked at random for this request (exploration)"
    if a.budget_spent:
        text += "; the request reached the rendezvous after its last deadline had passed (budget spent upstream)"
    return text


def render(st: Story) -> str:
    if not st.found:
        return (f"request {st.request_id}: not found in the {st.source}. It may be older than the topics' retention "
                "and not archived (is the decoy running? `rendezvous archive start`), or the id is wrong.")
    out = [f"request {st.request_id}  (from the {st.source})"]
    if st.augmented:
        r, f = st.augmented.request, st.augmented.features
        out.append(f"  entity {r.entity_id}, event time {_t(r.event_time_ms)}, amount {r.amount:.2f}, merchant "
                   f"{r.merchant_category}, country {r.country}" + (f", payload {r.payload}" if r.payload else ""))
        out.append(f"  features {st.augmented.feature_version}, entity's request #{st.augmented.entity_seq}, "
                   f"augmented {st.augmented.augmented_at_ms - r.event_time_ms} ms after the request: "
                   + ", ".join(f"{k}={v}" for k, v in f.model_dump().items()))
    for q in st.quarantined:
        out.append(f"  quarantined at {_t(q.quarantined_at_ms)} by {q.stage}: "
                   + "; ".join(f"{x.code} {x.field or ''}: {x.message}" for x in q.reasons))
    if len(st.answers) > 1:
        out.append(f"  !! {len(st.answers)} answers for one request (the contract is one)")
    for a in st.answers:
        out.append(f"answer at {_t(a.answered_at_ms)}, {a.answered_at_ms - a.request_time_ms} ms after the request: "
                   f"{a.model or 'default'}  stage {a.stage}  trigger {a.trigger}  schedule v{a.schedule_version}")
        out.append(f"  output {json.dumps(a.output)}")
        out.append(f"  why: {why(st)}")
    if st.schedule:
        out.append(f"  schedule v{st.schedule.version} '{st.schedule.name}' (deadlines from the {st.schedule.deadline_from}): "
                   + " | ".join(f"stage {i} {x.deadline_ms} ms: {', '.join(x.models)}"
                                for i, x in enumerate(st.schedule.stages)))
    answered = st.answers[0].answered_at_ms if st.answers else None
    received = st.answers[0].received_at_ms if st.answers else None
    timings = st.answers[0].timings if st.answers else {}
    out.append(f"scores ({len(st.scores)}):")
    for x in sorted(st.scores, key=lambda x: x.finished_at_ms):
        what = json.dumps(x.output) if x.output is not None else f"error: {x.error}"
        seen = timings.get(x.key)
        at = (f"reached the rendezvous +{seen.arrived_after_ms} ms" if seen and seen.arrived_after_ms is not None
              else "after the answer" if answered is not None and x.finished_at_ms > answered else "")
        chosen = "  <- chosen" if st.answers and x.key == st.answers[0].model else ""
        out.append(f"  {x.key:<28} {what:<36} model {x.model_latency_ms} ms, queued "
                   f"{x.started_at_ms - x.received_at_ms} ms  {at}{chosen}")
    if received is not None and not st.scores:
        out.append("  (none)")
    for lab in st.labels:
        out.append(f"label: {lab.outcome} ({'positive' if lab.positive else 'negative'}), known at "
                   f"{_t(lab.known_at_ms)}")
    return "\n".join(out)
