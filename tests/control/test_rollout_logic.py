"""The pure parts of the model life cycle: schedule resolution against the registry, roll steps, guards,
live figures (no JVM, no broker)."""

from __future__ import annotations

import json

import pytest

from control.errors import RegistryError, RollError
from control.ops.live import ScoreSample, disagreement, sample_of, stats_of
from control.ops.registry import resolve
from control.ops.rollout import Guards, check_guards, split_schedule
from jobs.models.settings import ModelJobSettings
from schemas.model_card import ModelCard
from schemas.records import ModelEntry, Schedule, Stage
from schemas.topics import TopicNames

DEFAULT = {"fraud_probability": 0.0}


def entry(key: str, stage: str, canary: bool = False) -> ModelEntry:
    mid, version = key.split("@")
    return ModelEntry(model_id=mid, version=version, stage=stage, card={}, canary=canary, registered_at_ms=1,
                      stage_since_ms=1)


def known(*es: ModelEntry) -> dict[str, ModelEntry]:
    return {e.key: e for e in es}


BASE = Schedule(version=4, stages=[Stage(deadline_ms=250, models=["champ@1"]),
                                   Stage(deadline_ms=600, models=["champ@1", "chall@2", "slow@1"])],
                default_output=DEFAULT)


# ------------------------------------------------------------------------------------------------ resolve
def test_a_bare_id_becomes_the_version_in_production():
    reg = known(entry("champ@1", "postproduction"), entry("champ@2", "production"), entry("canary@1", "preproduction"))
    out = resolve({"stages": [{"deadline_ms": 10, "models": ["champ", "other"]}], "default_output": DEFAULT}, reg)
    assert out["stages"][0]["models"] == ["champ@2", "other"]  # an unregistered model stays as written


def test_a_bare_id_without_a_production_version_is_refused():
    reg = known(entry("champ@1", "preproduction"))
    with pytest.raises(RegistryError, match="no version of champ is in production"):
        resolve({"stages": [{"deadline_ms": 10, "models": ["champ"]}]}, reg)


def test_two_versions_in_production_make_a_bare_id_ambiguous():
    reg = known(entry("champ@1", "production"), entry("champ@2", "production"))
    with pytest.raises(RegistryError, match="name one as id@version"):
        resolve({"stages": [{"deadline_ms": 10, "models": ["champ"]}]}, reg)


@pytest.mark.parametrize("stage", ["development", "preproduction", "retired"])
def test_a_model_outside_production_is_never_scheduled(stage):
    reg = known(entry("champ@1", stage))
    with pytest.raises(RegistryError, match=f"champ@1 is in {stage}"):
        resolve({"stages": [{"deadline_ms": 10, "models": ["champ@1"]}]}, reg)
    assert resolve({"stages": [{"deadline_ms": 10, "models": ["champ@1"]}]}, reg, allow={"champ@1"})


def test_an_unregistered_version_of_a_registered_model_is_refused():
    reg = known(entry("champ@1", "production"))
    with pytest.raises(RegistryError, match="champ@1.1 is not registered"):
        resolve({"stages": [{"deadline_ms": 10, "models": ["champ@1.1"]}]}, reg)


def test_the_canary_is_never_scheduled():
    reg = known(entry("canary@1", "postproduction", canary=True))
    with pytest.raises(RegistryError, match="the canary"):
        resolve({"stages": [{"deadline_ms": 10, "models": ["canary@1"]}]}, reg)


def test_split_keys_are_resolved_too():
    reg = known(entry("a@1", "production"), entry("b@3", "production"))
    out = resolve({"stages": [{"deadline_ms": 10, "models": ["a", "b"], "split": {"a": 70, "b": 30}}]}, reg)
    assert out["stages"][0]["split"] == {"a@1": 70, "b@3": 30}


# ------------------------------------------------------------------------------------------------ roll steps
def test_a_step_splits_the_first_choice_and_keeps_the_other_arm_as_fallback():
    body = split_schedule(BASE, "champ@2", "champ@1", 10)
    s0, s1 = (Stage.model_validate(st) for st in body["stages"])
    assert s0.models == ["champ@1", "champ@2"] and s0.split == {"champ@2": 10, "champ@1": 90}
    assert s1.models == ["champ@1", "champ@2", "chall@2", "slow@1"] and s1.split == s0.split  # first choice there too
    assert body["default_output"] == DEFAULT and "version" not in body and "roll" not in body


def test_the_last_step_puts_the_new_model_in_place_and_the_old_one_after_it():
    body = split_schedule(BASE, "champ@2", "champ@1", 100)
    assert [st["models"] for st in body["stages"]] == [["champ@2", "champ@1"],
                                                        ["champ@2", "champ@1", "chall@2", "slow@1"]]
    assert all(st.get("split") is None for st in body["stages"])


def test_rolling_a_model_that_is_already_in_the_schedule_moves_it():
    body = split_schedule(BASE, "chall@2", "champ@1", 50)
    assert body["stages"][1]["models"] == ["champ@1", "chall@2", "slow@1"]
    assert body["stages"][0]["split"] == {"chall@2": 50, "champ@1": 50}


def test_stages_without_the_old_model_or_already_preferring_the_new_one_are_left_alone():
    base = Schedule(version=4, stages=[Stage(deadline_ms=250, models=["old@1"]),
                                       Stage(deadline_ms=600, models=["new@2", "other@1"]),
                                       Stage(deadline_ms=900, models=["new@2", "old@1"])], default_output=DEFAULT)
    for weight in (10, 100):
        body = split_schedule(base, "new@2", "old@1", weight)
        assert body["stages"][1]["models"] == ["new@2", "other@1"] and body["stages"][1]["split"] is None
        assert body["stages"][2]["models"] == ["new@2", "old@1"] and body["stages"][2]["split"] is None


def test_a_roll_needs_the_replaced_model_in_the_schedule():
    with pytest.raises(RollError, match="not in the active schedule"):
        split_schedule(BASE, "x@1", "nobody@1", 10)


def test_a_roll_does_not_stack_on_another_split():
    split = Schedule(version=5, stages=[Stage(deadline_ms=100, models=["a@1", "b@1"], split={"a@1": 50, "b@1": 50})],
                     default_output=DEFAULT)
    with pytest.raises(RollError, match="already splits"):
        split_schedule(split, "c@1", "a@1", 10)


# ------------------------------------------------------------------------------------------------ guards
def samples(key: str, n: int, *, errors: int = 0, latency: int = 5, value: float = 0.1, t0: int = 1_000,
            prefix: str = "r") -> list[ScoreSample]:
    return [ScoreSample(t0 + i, key, f"{prefix}{i}", i >= errors, latency, value if i >= errors else None)
            for i in range(n)]


def test_a_healthy_new_model_crosses_no_guard():
    g = Guards(min_scores=10, max_p99_ms=100, canary="canary@1")
    s = samples("new@2", 50) + samples("old@1", 50) + samples("canary@1", 50)
    assert check_guards(g, s, "new@2", "old@1") == []


def test_errors_cross_the_error_guard():
    g = Guards(min_scores=10, max_error_rate=0.05)
    s = samples("new@2", 50, errors=5) + samples("old@1", 50)
    (breach,) = check_guards(g, s, "new@2", "old@1")
    assert "error rate 10.0%" in breach


def test_slowness_crosses_the_latency_guard():
    g = Guards(min_scores=10, max_p99_ms=100)
    assert "latency p99 400 ms" in check_guards(g, samples("new@2", 50, latency=400) + samples("old@1", 50),
                                                 "new@2", "old@1")[0]


def test_when_both_models_are_late_only_a_new_model_much_slower_than_the_old_one_crosses_the_latency_guard():
    g = Guards(min_scores=10, max_p99_ms=100, max_p99_ratio=1.5)
    busy = samples("old@1", 50, latency=300)  # a busy machine: the replaced model is late too
    assert check_guards(g, samples("new@2", 50, latency=400) + busy, "new@2", "old@1") == []
    (breach,) = check_guards(g, samples("new@2", 50, latency=500) + busy, "new@2", "old@1")
    assert "latency p99 500 ms > 100 ms, and > 1.5 x old@1's 300 ms" in breach
    # late where the replaced model is on time: crossed, whatever the ratio
    (breach,) = check_guards(g, samples("new@2", 50, latency=120) + samples("old@1", 50, latency=90),
                             "new@2", "old@1")
    assert "latency p99 120 ms > 100 ms (old@1: 90 ms)" in breach
    bound_alone = Guards(min_scores=10, max_p99_ms=100, max_p99_ratio=0)
    (breach,) = check_guards(bound_alone, samples("new@2", 50, latency=400) + busy, "new@2", "old@1")
    assert "latency p99 400 ms > 100 ms (old@1: 300 ms)" in breach


def test_a_model_that_stopped_scoring_crosses_the_volume_guard():
    g = Guards(min_scores=10)
    (breach,) = check_guards(g, samples("old@1", 50), "new@2", "old@1")
    assert "scored 0 requests" in breach


def test_disagreeing_with_the_canary_more_than_the_old_model_crosses_the_canary_guard():
    g = Guards(min_scores=10, canary="canary@1", threshold=0.5)
    s = samples("new@2", 50, value=0.9) + samples("old@1", 50, value=0.1) + samples("canary@1", 50, value=0.1)
    (breach,) = check_guards(g, s, "new@2", "old@1")
    assert "disagrees with the canary canary@1 on 100.0%" in breach


def test_too_few_scores_are_not_judged():
    g = Guards(min_scores=30)
    assert check_guards(g, samples("new@2", 10, errors=10) + samples("old@1", 10), "new@2", "old@1") == []


def test_live_figures_of_score_records():
    raw = json.dumps({"request_id": "r1", "model_id": "m", "model_version": "3", "output": {"fraud_probability": 0.7},
                      "error": None, "request_time_ms": 1, "received_at_ms": 2, "started_at_ms": 3,
                      "finished_at_ms": 10})
    x = sample_of(raw, "fraud_probability")
    # timed when scored, not by the record's Kafka timestamp (the request's time: a late job's scores
    # would fall out of a short window before they were read)
    assert (x.key, x.ok, x.latency_ms, x.value, x.at_ms) == ("m@3", True, 7, 0.7, 10)
    assert sample_of(b"not json", "p") is None
    st = stats_of(samples("a@1", 100, errors=10, latency=20))["a@1"]
    assert (st.scores, st.errors, st.error_rate, st.p99_ms) == (100, 10, 0.1, 20.0)
    both, rate = disagreement(samples("a@1", 10, value=0.9) + samples("b@1", 10, value=0.2), "a@1", "b@1", 0.5)
    assert (both, rate) == (10, 1.0)


# ------------------------------------------------------------------------------------------------ replay
def test_a_replay_never_writes_into_the_production_scores():
    card = ModelCard(model_id="m", version="1", runner="model_udfs.python_runners:ConstantRunner")
    with pytest.raises(ValueError, match="scores.replay"):
        ModelJobSettings(card=card, start="earliest")
    assert ModelJobSettings(card=card, start="earliest", sink_topic="scores.replay").start == "earliest"
    assert ModelJobSettings(card=card).start == "committed"


def test_topic_names_keep_compaction_under_a_suffix():
    specs = {s.name: s for s in TopicNames.suffixed("t1").specs()}
    assert specs["models-t1"].compacted and specs["schedules-t1"].compacted and not specs["scores-t1"].compacted


# ------------------------------------------------------------------------------------------------ roll steps
class FakeWindow:
    """Scores of `new@2` and `champ@1` arrive from the `arrive_at`-th poll on."""

    def __init__(self, arrive_at: int | None):
        self.arrive_at, self.polls, self.samples = arrive_at, 0, []

    def poll(self) -> int:
        self.polls += 1
        if self.arrive_at is not None and self.polls == self.arrive_at:
            self.samples = samples("new@2", 30) + samples("champ@1", 30)
        return 0

    def stats(self):
        return stats_of(self.samples)


@pytest.fixture
def step_world(monkeypatch):
    from control.ops import rollout

    events, published = [], []
    monkeypatch.setattr(rollout.schedules, "publish", lambda *a, **k: published.append(a) or
                        Schedule(version=10 + len(published), stages=BASE.stages, default_output=DEFAULT))
    monkeypatch.setattr(rollout, "_event", lambda plane, kind, result, **d: events.append((kind, d)))
    monkeypatch.setattr(rollout, "rollback", lambda plane, reason, progress: events.append(("rollback", reason))
                        or Schedule(version=99, stages=BASE.stages, default_output=DEFAULT))
    monkeypatch.setattr(rollout.registry, "entries", lambda plane: {})
    plane = type("P", (), {"bootstrap": "-", "topics": TopicNames()})()

    def run(window: FakeWindow, steps=(10, 100)):
        from control.ops.rollout import RollResult, _steps

        result = RollResult(model="new@2", replaces="champ@1", base_version=BASE.version)
        g = Guards(min_scores=20, evidence_wait_s=0.3, max_p99_ms=100)
        said: list[str] = []
        _steps(plane, result, BASE, "new@2", "champ@1", list(steps), 0.05, g, window, 0.01, said.append)
        return result, events, said
    return run


def test_a_step_never_passes_on_no_evidence(step_world):
    result, events, said = step_world(FakeWindow(arrive_at=None))
    assert result.rolled_back and result.steps_done == [] and result.rollback_version == 99
    assert "no evidence: new@2 scored 0 requests" in result.breaches[0]
    assert [k for k, _ in events] == ["roll_step", "guard_breached", "rollback"]
    assert any("waiting up to 0.3 s more" in m for m in said)


def test_a_step_waits_for_late_scores_and_then_passes(step_world):
    result, events, said = step_world(FakeWindow(arrive_at=10))  # past the step's 0.05 s, within the wait
    assert result.completed and result.steps_done == [10, 100], result.breaches
    assert [k for k, _ in events] == ["roll_step", "guard_passed", "roll_step", "guard_passed", "roll_completed"]
    assert events[1][1]["window"]["new@2"]["scores"] == 30
