"""The model life cycle on the real stack, under steady load (one scenario, tests in order):
two versions side by side, a roll 0 -> 10 -> 50 -> 100 %, rollback by hand, a guard breach that rolls
back on its own, retirement refused while scheduled and accepted after, all in the lifecycle topic."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from control import kafka_io
from control.errors import RegistryError
from control.ops import deploy, jobs, registry, rollout, schedules
from control.ops.registry import Plane
from schemas.model_card import ModelCard
from schemas.records import LateScore
from schemas.topics import TopicNames
from tools.load import AnswerCollector

pytestmark = pytest.mark.e2e

RATE = 150  # requests/s of the steady load
DEADLINE_MS = 1000  # generous: a model job deployed under load makes the 2-core machine stutter for seconds
STEP_S = 10.0  # seconds per roll step: ~1,500 answers per step (a 50 % share's standard error is 1.3 points)


def card(mid: str, version: str, **params) -> ModelCard:
    return ModelCard(model_id=mid, version=version, runner="model_udfs.python_runners:ConstantRunner",
                     params={"output": {"fraud_probability": 0.1}, **params}, timeout_ms=1000)


class Load(threading.Thread):
    """Augmented requests at RATE/s into the plane's topic until stopped; remembers when each was sent."""

    def __init__(self, bootstrap: str, topic: str, prefix: str):
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.topic, self.prefix = topic, prefix
        self.sent: list[tuple[str, float]] = []
        self._p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
        self._halt = threading.Event()

    def run(self) -> None:
        i, start = 0, time.monotonic()
        while not self._halt.is_set():
            wait = start + i / RATE - time.monotonic()
            if wait > 0:  # one reading of the clock: two could straddle `due` and ask for a negative sleep
                time.sleep(wait)
            rid = f"{self.prefix}-{i}"
            now = int(time.time() * 1000)
            rec = {"request": {"request_id": rid, "entity_id": "e", "event_time_ms": now, "amount": 1.0,
                               "merchant_category": "grocery", "country": "DE", "payload": {}},
                   "features": {"entity_count": 0, "window_count": 1, "window_sum": 1.0, "window_ms": 1000,
                                "ms_since_prev": None, "amount_mean": 0.0, "amount_std": 0.0, "amount_zscore": 0.0},
                   "feature_version": "features-v1", "entity_seq": 1, "augmented_at_ms": now}
            self._p.produce(self.topic, json.dumps(rec).encode())
            self._p.poll(0)
            self.sent.append((rid, time.time()))
            i += 1
        self._p.flush(10)

    def ids_between(self, t0: float, t1: float) -> list[str]:
        return [rid for rid, t in list(self.sent) if t0 <= t < t1]

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def world(stack):
    u = uuid.uuid4().hex[:8]
    topics = TopicNames.suffixed(f"lc-{u}")
    kafka_io.ensure_topics(stack.bootstrap_servers, topics.specs())
    plane = Plane(stack, topics)
    mid = f"m-{u}"
    rv = deploy.deploy_rendezvous(
        stack, job_name=f"rendezvous lifecycle {u}", augmented_topic=topics.augmented, scores_topic=topics.scores,
        schedules_topic=topics.schedules, answers_topic=topics.answers, late_topic=topics.late,
        invalid_topic=topics.quarantine, group_id=f"rv-lc-{u}", start="latest")
    collector = AnswerCollector(stack.bootstrap_servers, topics.answers, prefix=f"lc{u}")
    collector.start()
    load = Load(stack.bootstrap_servers, topics.augmented, prefix=f"lc{u}")
    w = {"plane": plane, "mid": mid, "load": load, "answers": collector, "rv": rv, "jobs": [rv], "u": u}
    yield w
    load.stop()
    collector.stop()
    live = []
    for jid in w["jobs"]:
        try:
            if jobs.job_state(jid, stack) in registry.LIVE_JOB_STATES:
                live.append(jid)
        except Exception:
            pass
    try:
        jobs.cancel_all(live, stack)  # side by side: one by one, each took seconds to end, its TaskManagers to stop
    except Exception:
        pass


def answers_of(w, rids: list[str], timeout: float = 60) -> dict[str, dict]:
    c: AnswerCollector = w["answers"]
    wait_for(lambda: all(r in c.answers for r in rids), timeout, f"answers to {len(rids)} requests")
    with c.lock:
        return {r: c.answers[r] for r in rids}


def scoring(w, key: str) -> float:
    """Wait until `key` scores live traffic; returns the wall-clock time from which it does."""
    from control.ops.live import ScoreWindow

    with ScoreWindow(w["plane"].bootstrap, w["plane"].topics.scores, 60) as win:
        wait_for(lambda: win.poll() >= 0 and win.stats().get(key), 90, f"scores of {key}")
    return time.time()


def keeping_up(w, key: str, ref: str) -> None:
    """Wait until `key` scores at least 80 % as many requests as `ref` over 5 s: a fresh job warms up for
    seconds on this machine, and a roll's volume guard would (rightly) stop a model that lags."""
    from control.ops.live import ScoreWindow

    with ScoreWindow(w["plane"].bootstrap, w["plane"].topics.scores, 5) as win:
        def up() -> bool:
            win.poll()
            st = win.stats()
            return key in st and ref in st and st[key].scores >= 0.8 * st[ref].scores >= 0.8 * 5 * RATE * 0.5
        wait_for(up, 120, f"{key} to keep up with {ref}")


def share(answers: list[dict], key: str) -> float:
    return sum(1 for a in answers if a.get("model") == key) / len(answers)


# ----------------------------------------------------------------------------------------------------------------
def test_two_versions_score_every_request_side_by_side(world):
    w, plane, mid = world, world["plane"], world["mid"]
    v1 = registry.register(plane, card(mid, "1", delay_ms=100))  # slower: v2's score is in before the answer
    assert v1.stage == "development"
    registry.set_stage(plane, v1.key, "preproduction")
    w["jobs"].append(registry.get(plane, v1.key).job_id)
    registry.set_stage(plane, v1.key, "production")
    sched = schedules.publish(plane.bootstrap, {"name": "v1", "stages": [{"deadline_ms": DEADLINE_MS, "models": [mid]}],
                                                "default_output": {"fraud_probability": 0.0}},
                              plane.topics.schedules, plane.topics.lifecycle, resolve=registry.resolver(plane))
    assert sched.stages[0].models == [v1.key]  # the bare id was resolved to the version in production
    w["base_version"] = sched.version
    w["load"].start()
    v2 = registry.register(plane, card(mid, "2", output={"fraud_probability": 0.9}))
    with pytest.raises(RegistryError, match="in development"):  # never chosen before production
        schedules.publish(plane.bootstrap, {"stages": [{"deadline_ms": DEADLINE_MS, "models": [v2.key]}],
                                            "default_output": {}}, plane.topics.schedules,
                          resolve=registry.resolver(plane))
    registry.set_stage(plane, v2.key, "preproduction")
    w["jobs"].append(registry.get(plane, v2.key).job_id)
    since = max(scoring(w, v1.key), scoring(w, v2.key)) + 1
    time.sleep(5)
    rids = w["load"].ids_between(since, since + 4)
    got = answers_of(w, rids)
    assert len(got) == len(rids) > 300
    chosen = Counter((a["model"], a["trigger"], a["schedule_version"]) for a in got.values())
    assert {m for m, _, _ in chosen} <= {v1.key, None}, f"a preproduction model was chosen: {chosen}"
    assert chosen[(v1.key, "preferred", sched.version)] >= 0.95 * len(rids), chosen
    in_timings = [r for r, a in got.items() if {v1.key, v2.key} <= set(a["timings"])]
    late = {LateScore.parse(v).score.request_id
            for v in kafka_io.consume(plane.bootstrap, plane.topics.late, timeout=10, idle_timeout=2)}
    missing = [r for r in rids if r not in in_timings and r not in late]
    print(f"side by side: {len(rids)} requests, both versions in the answer's timings for {len(in_timings)}, "
          f"v2's score after the answer for {len(set(rids) & late)}, dropped {len(missing)}")
    assert not missing, f"{len(missing)} of v2's scores neither in timings nor late: {missing[:5]}"
    assert len(in_timings) >= 0.9 * len(rids)
    w["v1"], w["v2"] = v1.key, v2.key


def test_a_roll_gives_each_step_its_weight(world):
    w, plane = world, world["plane"]
    v1, v2 = w["v1"], w["v2"]
    keeping_up(w, v2, v1)
    result = rollout.roll(plane, v2, [10, 50, 100], STEP_S, rollout.Guards(window_s=10, min_scores=20), progress=print)
    assert result.completed and result.steps_done == [10, 50, 100]
    time.sleep(1)
    rids = w["load"].ids_between(time.time() - 4 * STEP_S - 30, time.time() - 1)
    c: AnswerCollector = w["answers"]
    with c.lock:
        got = [c.answers[r] for r in rids if r in c.answers]
    by_version: dict[int, list[dict]] = {}
    for a in got:
        by_version.setdefault(a["schedule_version"], []).append(a)
    weights = dict(zip(result.schedule_versions, [10, 50, 100]))
    weights[w["base_version"]] = 0
    for version, weight in sorted(weights.items()):
        answers = by_version.get(version, [])
        assert len(answers) > 500, f"schedule v{version}: only {len(answers)} answers"
        s = share(answers, v2)
        defaults = sum(1 for a in answers if a["model"] is None)
        print(f"schedule v{version} ({weight:>3} %): {len(answers)} answers, {s:.1%} from {v2}, "
              f"{defaults} default")
        assert abs(100 * s - weight) <= 5, f"v{version}: {v2} answered {s:.1%}, weight {weight} %"
        assert {a["model"] for a in answers} <= {v1, v2, None}
    entries = registry.entries(plane)
    assert (entries[v2].stage, entries[v1].stage) == ("production", "postproduction")


def test_rollback_by_hand_restores_the_schedule_before_the_roll(world):
    w, plane = world, world["plane"]
    v1, v2 = w["v1"], w["v2"]
    sched = rollout.rollback(plane)
    assert sched.rollback_of is not None and sched.roll is None
    assert sched.stages[0].models == [v1]
    entries = registry.entries(plane)
    assert (entries[v2].stage, entries[v1].stage) == ("preproduction", "production")
    c: AnswerCollector = w["answers"]

    def first_under_restored() -> float | None:
        with c.lock:
            times = [c.received_ms[r] for r, a in c.answers.items() if a["schedule_version"] == sched.version]
        return min(times) / 1000 if times else None

    t = wait_for(first_under_restored, 60, f"answers under schedule v{sched.version}") + 1
    time.sleep(3)
    got = answers_of(w, w["load"].ids_between(t, t + 2))
    assert got and {a["model"] for a in got.values()} <= {v1, None}
    assert {a["schedule_version"] for a in got.values()} == {sched.version}


def test_a_failing_challenger_is_rolled_back_by_the_guards_within_one_window(world):
    w, plane, mid = world, world["plane"], world["mid"]
    v1 = w["v1"]
    flag = Path(tempfile.mkdtemp()) / "fail"  # the model fails while this file exists
    bad = registry.register(plane, card(mid, "3", fail_if_file=str(flag)))
    registry.set_stage(plane, bad.key, "preproduction")
    w["jobs"].append(registry.get(plane, bad.key).job_id)
    keeping_up(w, bad.key, v1)
    guards = rollout.Guards(window_s=10, min_scores=20, max_error_rate=0.05)
    active_before = schedules.active(plane.bootstrap, plane.topics.schedules).version

    def fail_once_the_roll_has_begun():
        wait_for(lambda: schedules.active(plane.bootstrap, plane.topics.schedules).version > active_before, 60,
                 "the roll's first step")
        time.sleep(2)  # a healthy start: the guards see good scores first
        flag.touch()

    cue = threading.Thread(target=fail_once_the_roll_has_begun, daemon=True)
    cue.start()
    result = rollout.roll(plane, bad.key, [50, 100], 60, guards, progress=print)
    cue.join(5)
    assert result.rolled_back and not result.completed and result.breaches
    assert "error rate" in " ".join(result.breaches)
    events = [json.loads(v) for v in kafka_io.consume(plane.bootstrap, plane.topics.lifecycle, timeout=10,
                                                      idle_timeout=2)]
    rollback_at = next(e["at_ms"] for e in reversed(events) if e["kind"] == "rollback")
    scores = kafka_io.consume(plane.bootstrap, plane.topics.scores, timeout=30, idle_timeout=2)
    first_error = min(json.loads(s)["finished_at_ms"] for s in scores
                      if json.loads(s)["model_version"] == "3" and json.loads(s)["error"])
    print(f"guard: first error score at {first_error}, rolled back {rollback_at - first_error} ms later "
          f"(window {guards.window_s:g} s)")
    assert 0 < rollback_at - first_error <= guards.window_s * 1000
    assert registry.entries(plane)[bad.key].stage == "preproduction"
    active = schedules.active(plane.bootstrap, plane.topics.schedules)
    assert active.stages[0].models == [v1] and active.rollback_of is not None
    w["v3"] = bad.key


def test_retirement_is_refused_while_scheduled_and_stops_the_job_with_a_savepoint_after(world):
    w, plane = world, world["plane"]
    v1, v2 = w["v1"], w["v2"]
    with pytest.raises(RegistryError, match="still names"):
        registry.set_stage(plane, v1, "retired")
    assert jobs.job_state(registry.get(plane, v1).job_id, plane.s) == "RUNNING"
    registry.set_stage(plane, v2, "production")
    schedules.publish(plane.bootstrap, {"name": "v2 only", "stages": [{"deadline_ms": DEADLINE_MS, "models": [v2]}],
                                        "default_output": {"fraud_probability": 0.0}},
                      plane.topics.schedules, plane.topics.lifecycle, resolve=registry.resolver(plane))
    retired = registry.set_stage(plane, v1, "retired")
    assert retired.stage == "retired" and retired.savepoint
    assert Path(retired.savepoint.removeprefix("file:")).exists()
    assert jobs.job_state(retired.job_id, plane.s) == "FINISHED"


def test_every_step_is_in_the_lifecycle_topic_in_order(world):
    w, plane = world, world["plane"]
    v1, v2, v3 = w["v1"], w["v2"], w["v3"]
    events = [json.loads(v) for v in kafka_io.consume(plane.bootstrap, plane.topics.lifecycle, timeout=10,
                                                      idle_timeout=2)]

    def label(e):
        key = f"{e.get('model_id')}@{e.get('model_version')}" if e.get("model_version") else None
        if e["kind"] == "stage_changed":
            return f"{key} -> {e['to_stage']}"
        if e["kind"] in ("roll_step", "guard_passed"):
            return f"{e['kind']} {key} {e['detail']['weight']}"
        return f"{e['kind']} {key}" if key else e["kind"]

    seen = [label(e) for e in events]
    expected = [
        f"model_registered {v1}", f"{v1} -> preproduction", f"{v1} -> production", "schedule_published",
        f"model_registered {v2}", f"{v2} -> preproduction",
        f"roll_started {v2}", f"{v2} -> production",
        "schedule_published", f"roll_step {v2} 10", f"guard_passed {v2} 10",
        "schedule_published", f"roll_step {v2} 50", f"guard_passed {v2} 50",
        "schedule_published", f"roll_step {v2} 100", f"guard_passed {v2} 100",
        f"{v1} -> postproduction", f"roll_completed {v2}",
        "schedule_published", f"rollback {v2}", f"{v2} -> preproduction", f"{v1} -> production",
        f"model_registered {v3}", f"{v3} -> preproduction", f"roll_started {v3}", f"{v3} -> production",
        "schedule_published", f"roll_step {v3} 50", f"guard_breached {v3}",
        "schedule_published", f"rollback {v3}", f"{v3} -> preproduction",
        f"{v2} -> production", "schedule_published", f"job_stopped {v1}", f"{v1} -> retired",
    ]
    it = iter(seen)
    missing = [x for x in expected if x not in it]  # `expected` is a subsequence of what was recorded
    assert not missing, f"not in order in the lifecycle topic: {missing}\nrecorded: {seen}"
