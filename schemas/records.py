"""The records on the wire: one pydantic v2 model per record type, the single definition of each.

JSON on the wire (`to_json` / `parse`). Flink row types are derived from these models in
`schemas.flink_types`. Models are strict (no coercion of "12" into 12) and forbid unknown fields.
This package imports nothing else of the project (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.features import FEATURE_VERSION

MAX_AMOUNT = 1_000_000.0
"""Largest transaction amount accepted; larger ones are quarantined as out of range."""


REPLY_TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"
"""Characters of a Kafka topic name: what a request's return address (`Request.reply_to`) may hold."""


def now_ms() -> int:
    return int(time.time() * 1000)


class Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)

    @classmethod
    def parse(cls, raw: str | bytes):
        return cls.model_validate_json(raw)


# --------------------------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------------------------
class Request(Record):
    """A caller's request: score this transaction of this entity."""

    request_id: str = Field(min_length=1, max_length=128)
    entity_id: str = Field(min_length=1, max_length=128, description="the key features are kept by (e.g. a card)")
    event_time_ms: int = Field(ge=0, description="when the caller made the request (epoch ms)")
    amount: float = Field(ge=0.0, le=MAX_AMOUNT)
    merchant_category: str = Field(min_length=1, max_length=64)
    country: str = Field(min_length=2, max_length=2)
    payload: dict[str, Any] = Field(default_factory=dict, description="free-form extra fields passed to models")
    reply_to: str | None = Field(default=None, min_length=1, max_length=249, pattern=REPLY_TOPIC_PATTERN,
                                 description="return address: a topic named `<answers topic>.<gateway id>` that "
                                 "exists, where the rendezvous writes a copy of the answer for the caller waiting on "
                                 "it (the gateway); the answer goes to the answers topic either way")


class Features(Record):
    """Per-entity features at the time of a request (computed before this request is added)."""

    entity_count: int = Field(ge=0, description="requests of this entity seen before this one")
    window_count: int = Field(ge=0, description="requests of this entity in the sliding window, this one included")
    window_sum: float = Field(ge=0.0, description="sum of amounts in the sliding window, this one included")
    window_ms: int = Field(gt=0)
    ms_since_prev: int | None = Field(default=None, description="ms since the entity's previous request")
    amount_mean: float = Field(description="running mean of the entity's amounts before this one")
    amount_std: float = Field(ge=0.0, description="running standard deviation before this one")
    amount_zscore: float = Field(description="(amount - mean) / std, 0 when undefined")


class AugmentedRequest(Record):
    request: Request
    features: Features
    feature_version: str = FEATURE_VERSION
    entity_seq: int = Field(ge=1, description="the entity's sequence number of this request (state version)")
    augmented_at_ms: int


# --------------------------------------------------------------------------------------------
# quarantine
# --------------------------------------------------------------------------------------------
MAX_RECORD_BYTES = 1_000_000
"""Largest request (UTF-8 bytes) the system accepts: what it writes for it (an augmented request adds about
a kilobyte) stays under the Kafka producer's default 1 MiB `max.request.size`. Larger ones are quarantined."""

MAX_QUARANTINED_RAW_CHARS = 65_536
"""A quarantine record keeps at most this many characters of the original record (`raw_truncated` then
says so, `raw_bytes` gives the original size): a quarantine record never outgrows the producer's limit."""


class Reason(Record):
    code: Literal["malformed_json", "not_an_object", "missing", "wrong_type", "out_of_range", "unknown_field",
                  "invalid", "duplicate", "too_large", "null_value"]
    field: str | None = None
    message: str


class Label(Record):
    """An outcome that became known after the request was answered (e.g. a chargeback: the transaction was
    fraud), on the `labels` topic, keyed by request id. Joined with scores and answers on `request_id`, it
    gives each model's precision and recall."""

    request_id: str
    outcome: str = Field(description="what turned out to be true, e.g. 'fraud' or 'legit'")
    positive: bool = Field(description="whether the outcome is the class the models flag (e.g. fraud)")
    event_time_ms: int = Field(description="event time of the request it labels")
    known_at_ms: int = Field(description="when the outcome became known")


class QuarantineRecord(Record):
    raw: str = Field(description="the original bytes, decoded as UTF-8 (undecodable bytes replaced); at most "
                                 "MAX_QUARANTINED_RAW_CHARS characters")
    reasons: list[Reason] = Field(min_length=1)
    source_topic: str
    stage: str = "external_state"
    quarantined_at_ms: int
    raw_bytes: int | None = Field(default=None, description="size of the original record in UTF-8 bytes")
    raw_truncated: bool = Field(default=False, description="raw holds only the first MAX_QUARANTINED_RAW_CHARS")

    @classmethod
    def of(cls, raw: str | None, reasons: list["Reason"], source_topic: str, stage: str = "external_state",
           at_ms: int | None = None) -> "QuarantineRecord":
        """A bounded quarantine record of any input, including a null record value (raw None)."""
        text = raw or ""
        size = len(text.encode("utf-8", errors="replace"))
        return cls(raw=text[:MAX_QUARANTINED_RAW_CHARS], reasons=reasons, source_topic=source_topic, stage=stage,
                   quarantined_at_ms=at_ms if at_ms is not None else now_ms(), raw_bytes=size,
                   raw_truncated=len(text) > MAX_QUARANTINED_RAW_CHARS)


# --------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------
class Score(Record):
    request_id: str
    model_id: str
    model_version: str
    output: dict[str, Any] | None = Field(default=None, description="the model's answer; None when error is set")
    error: str | None = None
    request_time_ms: int = Field(description="event time of the request")
    received_at_ms: int = Field(description="when the model job received the augmented request")
    started_at_ms: int
    finished_at_ms: int

    @property
    def ok(self) -> bool:
        return self.error is None and self.output is not None

    @property
    def key(self) -> str:
        """`id@version`: the model deployment that produced this score."""
        return f"{self.model_id}@{self.model_version}"

    @property
    def model_latency_ms(self) -> int:
        return self.finished_at_ms - self.started_at_ms

    @model_validator(mode="after")
    def _output_xor_error(self):
        if (self.output is None) == (self.error is None):
            raise ValueError("a score has exactly one of output and error")
        return self


# --------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------
MODEL_KEY_SEP = "@"


def model_key(model_id: str, version: str) -> str:
    """`id@version`: a model deployment's identity in scores, mailboxes, answers and schedules."""
    return f"{model_id}{MODEL_KEY_SEP}{version}"


def split_key(key: str) -> tuple[str, str | None]:
    """(`id`, `version`) of `id@version`; (`id`, None) of a bare id."""
    mid, sep, version = key.partition(MODEL_KEY_SEP)
    return mid, (version if sep else None)


class Stage(Record):
    deadline_ms: int = Field(gt=0, le=600_000, description="ms after the schedule's deadline base (see Schedule.deadline_from)")
    models: list[str] = Field(min_length=1, description="models accepted in this stage, most preferred first: "
                              "`id@version`, or a bare `id` (any version of that model; published schedules "
                              "name the version the registry has in production)")
    split: dict[str, int] | None = Field(default=None, description="traffic split of the stage's first choice, in "
                                         "percent by model (sum 100, each one of `models`): a hash of the request "
                                         "id picks the arm (the same request always gets the same arm); the "
                                         "arm is most preferred, the stage's other models follow in order")
    explore: float = Field(default=0.0, ge=0.0, le=0.5, description="fraction of requests whose first choice is "
                           "a model of this stage picked at random (by a hash of the request id); the answer "
                           "says `explored`")

    @model_validator(mode="after")
    def _split_is_over_the_models(self):
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"a stage names a model twice: {self.models}")
        if self.split is not None:
            unknown = [m for m in self.split if m not in self.models]
            if unknown:
                raise ValueError(f"split names models the stage does not accept: {unknown}")
            if any(w < 0 for w in self.split.values()) or sum(self.split.values()) != 100:
                raise ValueError(f"split weights are percentages >= 0 that sum to 100, not {self.split}")
        return self


class RollInfo(Record):
    """Set on the schedules a roll publishes: which step of which roll this schedule is."""

    model: str = Field(description="`id@version` being rolled in")
    replaces: str = Field(description="`id@version` it takes traffic from")
    weight: int = Field(ge=0, le=100, description="percent of the replaced model's traffic this step gives it")
    base_version: int = Field(ge=0, description="the schedule version the roll started from (what rollback restores)")


class Schedule(Record):
    version: int = Field(ge=0, description="increases with every published schedule; 0 is the job's built-in one")
    name: str = "schedule"
    stages: list[Stage] = Field(min_length=1)
    default_output: dict[str, Any] = Field(description="the answer when no stage produced one")
    deadline_from: Literal["request", "arrival"] = Field(
        default="request", description="request: deadlines count from the request's own timestamp (time spent "
        "upstream counts against the budget; a request whose budget is spent is answered at once); arrival: "
        "from when the request reached the rendezvous")
    created_at_ms: int = 0
    roll: RollInfo | None = Field(default=None, description="set when this schedule is a step of a roll")
    rollback_of: int | None = Field(default=None, description="set when this schedule restores an earlier one "
                                    "(the version that was rolled back)")

    @field_validator("stages")
    @classmethod
    def _deadlines_increase(cls, stages: list[Stage]) -> list[Stage]:
        for a, b in zip(stages, stages[1:]):
            if b.deadline_ms <= a.deadline_ms:
                raise ValueError(f"stage deadlines must increase: {a.deadline_ms} then {b.deadline_ms}")
        return stages

    def model_ids(self) -> list[str]:
        seen: list[str] = []
        for st in self.stages:
            seen += [m for m in st.models if m not in seen]
        return seen


# --------------------------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------------------------
class ModelTiming(Record):
    model_version: str
    latency_ms: int = Field(description="model's own latency (finished - started)")
    finished_at_ms: int = Field(description="when the model finished (model job clock)")
    received_at_ms: int | None = Field(default=None, description="when the model job received the augmented "
                                       "request (model job clock; None in answers written before it was kept)")
    started_at_ms: int | None = Field(default=None, description="when the model started on it (model job clock)")
    arrived_after_ms: int = Field(description="ms after the request reached the rendezvous that the score arrived "
                                              "(negative when the score came first)")
    error: str | None = None


class Answer(Record):
    request_id: str
    model_id: str | None = Field(description="the chosen model; None for the default answer")
    model_version: str | None
    model: str | None = Field(default=None, description="the chosen model's `id@version`; None for the default")
    output: dict[str, Any]
    stage: int | None = Field(description="index of the schedule stage that answered; None for the default")
    trigger: Literal["preferred", "all_answered", "deadline", "default"] = Field(
        description="preferred: the stage's most preferred model answered; all_answered: every model of the "
                    "stage answered; deadline: the stage's deadline passed; default: no stage had an answer")
    is_default: bool
    schedule_version: int
    request_time_ms: int
    received_at_ms: int = Field(description="when the request reached the rendezvous")
    deadline_at_ms: int | None = Field(default=None, description="the deadline whose passing triggered the answer "
                                                                 "(also set when a later stage answered at once "
                                                                 "because an earlier stage's deadline passed)")
    budget_spent: bool = Field(default=False, description="the request reached the rendezvous after its last "
                                                      "deadline had passed and was answered at once")
    answered_at_ms: int
    explored: bool = Field(default=False, description="the stage's first choice for this request was picked at "
                                                      "random (Stage.explore)")
    timings: dict[str, ModelTiming] = Field(default_factory=dict, description="every model seen so far, by "
                                                                             "`id@version`")


class LateScore(Record):
    score: Score
    reason: Literal["after_answer", "orphan_expired", "unknown_request"]
    answered_at_ms: int | None = None
    observed_at_ms: int


# --------------------------------------------------------------------------------------------
# data quality (micro-batches of an input stream against an expectation suite)
# --------------------------------------------------------------------------------------------
MAX_QUALITY_EXAMPLES = 20
"""At most this many example values per expectation in a QualityResult (each at most 200 characters)."""


class ExpectationOutcome(Record):
    """One Great Expectations expectation's result on one batch (JSON-plain values: no numpy, no NaN)."""

    expectation: str = Field(description="the expectation type, e.g. expect_column_mean_to_be_between")
    column: str | None = None
    success: bool
    kwargs: dict[str, Any] = Field(default_factory=dict, description="the expectation's arguments (bounds, sets)")
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = Field(default_factory=list, description="some unexpected values (at most "
                                                                   "MAX_QUALITY_EXAMPLES)")

    @property
    def label(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation


class QualityResult(Record):
    """One micro-batch of an input topic validated against an expectation suite (the `quality` topic).

    After a restore a batch can be reported twice (at-least-once sink): de-duplicate by
    (source_topic, batch_start_ms)."""

    source_topic: str
    suite_name: str
    suite_version: str
    batch_start_ms: int = Field(description="processing time of the batch's first record")
    batch_end_ms: int = Field(description="processing time the batch was closed (count or time reached)")
    records: int = Field(ge=0)
    unparseable: int = Field(default=0, ge=0, description="records that were not JSON objects: null rows")
    success: bool
    failed: list[ExpectationOutcome] = Field(default_factory=list)
    passed: list[ExpectationOutcome] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="distribution expectations not evaluated: the "
                                                                 "batch had fewer rows than the suite's min_rows")
    error: str | None = Field(default=None, description="validation itself failed (then success is False)")
    validation_ms: float = Field(ge=0.0, description="time Great Expectations took for this batch")
    validated_at_ms: int


# --------------------------------------------------------------------------------------------
# lifecycle (audit log)
# --------------------------------------------------------------------------------------------
class TransitionInfo(Record):
    """What a transition token says: from it on, its partition's records belong to `owner`."""

    upgrade_id: str = Field(min_length=1, max_length=128)
    topic: str = Field(min_length=1, description="the input topic of the jobs handing over")
    partition: int = Field(ge=0)
    owner: str = Field(min_length=1, max_length=128, description="the job version that takes the partition over")
    previous: str = Field(min_length=1, max_length=128, description="the job version that hands it over")
    written_at_ms: int


TRANSITION_TOKEN_PREFIX = '{"transition":'
"""How every transition token's JSON starts (pydantic's compact output): the cheap test readers of an input topic
use to pass tokens by without parsing every record."""


class TransitionToken(Record):
    """A transition token (the seed's "Upgrading the Rendezvous System"), written by `rendezvous upgrade` into one
    partition of a thread-mode job's input topic: the records before it in that partition belong to the version
    handing over, the ones after it to the one taking over. Every reader of the topic passes it by: it is not a
    request (jobs/common/transition.py)."""

    transition: TransitionInfo


class TokenPosition(Record):
    """Where a transition token landed: its partition and offset, and who owns the records after it."""

    upgrade_id: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    owner: str
    written_at_ms: int


class Transitions(Record):
    """The transitions registry's record of one input topic (the `transitions` topic is compacted by topic): every
    token written into it, oldest first. A job restored past a token learns the partition's owner from here."""

    topic: str
    tokens: list[TokenPosition] = Field(default_factory=list)


class LifecycleEvent(Record):
    kind: Literal["model_registered", "stage_changed", "schedule_published", "job_submitted", "job_stopped",
                  "upgrade", "roll_started", "roll_step", "guard_passed", "guard_breached", "rollback",
                  "roll_completed", "quality_alert", "job_rescaled"]
    model_id: str | None = None
    model_version: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    schedule_version: int | None = None
    job_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    at_ms: int


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
ModelStageName = Literal["development", "preproduction", "production", "postproduction", "retired"]


class ModelEntry(Record):
    """The registry's record of one model deployment (`id@version`): the latest one per key is its state
    (the registry topic is compacted by key)."""

    model_id: str
    version: str
    stage: ModelStageName = "development"
    card: dict[str, Any] = Field(description="the model card (schemas.model_card.ModelCard) as registered")
    canary: bool = Field(default=False, description="a reference model: never promoted, never retired")
    decoy: bool = Field(default=False, description="the decoy: consumes the input like a model, archives it, "
                        "never answers (never scheduled)")
    job_id: str | None = Field(default=None, description="the Flink job scoring for this deployment")
    savepoint: str | None = Field(default=None, description="where its job's state went when it was retired")
    registered_at_ms: int
    stage_since_ms: int

    @property
    def key(self) -> str:
        return model_key(self.model_id, self.version)


# --------------------------------------------------------------------------------------------
# metrics (live meta-analytics, jobs/metrics)
# --------------------------------------------------------------------------------------------
MetricsKind = Literal["model", "pair", "accuracy", "answers", "budget", "attribution"]


class Metrics(Record):
    """One row of the live meta-analytics (jobs/metrics, a Flink SQL job): the figures of one `kind` over one
    event-time window (the Kafka timestamps of the records it counts). Columns a kind does not fill are None.

    - `model`: per model deployment (`model`), its scores in the window: `count` scores, `errors` (failed,
      `timeouts` of them timed out), latency quantiles, score quantiles and mean, `positives` (scores at or
      above the decision threshold).
    - `pair`: per ordered pair (`model`, `versus`) of deployments that scored the same requests: `count`
      requests both scored, `disagreements` (one at or above the threshold, the other below), the mean
      absolute score difference. The champion and the canary are among the `versus` of every model.
    - `accuracy`: per model, over the labels that became known in the window (`count` labelled scores):
      the confusion counts at the threshold and `precision`, `recall`.
    - `answers`: per answering model (None: the default answer), `stage` and `trigger`: `count` answers,
      `share` of all the window's answers (`total`), `defaults` among them.
    - `budget`: per answering model, the median of each hop of a request's latency (see the *_ms fields),
      and the total's p50 and p99 (request time to answer).
    - `attribution` (control.ops.attribution, not the SQL job): a live `figure` of `model` moved from `before`
      to `after` in this window, and an upstream lifecycle event happened in the same span: `versus` names
      the deployment it concerns (or None: a schedule), `trigger` its kind, `event_at_ms` its time; `count`
      is the window's count of what the figure is over.
    """

    kind: MetricsKind
    window_start_ms: int
    window_end_ms: int
    model: str | None = Field(default=None, description="`id@version` (answers: the chosen model; None: default)")
    versus: str | None = Field(default=None, description="pair: the other model")
    stage: int | None = None
    trigger: str | None = None
    count: int = Field(ge=0, description="what the row counts (see the kinds)")
    total: int | None = Field(default=None, description="answers: all answers in the window")
    share: float | None = None
    defaults: int | None = None
    errors: int | None = None
    timeouts: int | None = None
    error_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    score_mean: float | None = None
    score_p10: float | None = None
    score_p50: float | None = None
    score_p90: float | None = None
    positives: int | None = None
    disagreements: int | None = None
    disagreement_rate: float | None = None
    score_abs_diff_mean: float | None = None
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None
    tn: int | None = None
    precision: float | None = None
    recall: float | None = None
    external_state_ms: float | None = Field(default=None, description="budget: request time to augmented")
    queue_ms: float | None = Field(default=None, description="budget: augmented to the model starting on it")
    model_ms: float | None = Field(default=None, description="budget: the model's own latency")
    transit_ms: float | None = Field(default=None, description="budget: the model finishing to its score "
                                     "reaching the rendezvous")
    wait_ms: float | None = Field(default=None, description="budget: the score reaching the rendezvous to the "
                                  "answer (waiting for a preferred model or a deadline)")
    total_p50_ms: float | None = None
    total_p99_ms: float | None = None
    threshold: float | None = Field(default=None, description="the decision threshold the job used")
    output_field: str | None = Field(default=None, description="the output field read as the score")
    figure: str | None = Field(default=None, description="attribution: the figure that moved (recall, "
                               "score_mean, share)")
    before: float | None = Field(default=None, description="attribution: the figure before (the mean of the "
                                 "windows before the shift)")
    after: float | None = Field(default=None, description="attribution: the figure in the shifted window")
    event_at_ms: int | None = Field(default=None, description="attribution: when the named event happened")
