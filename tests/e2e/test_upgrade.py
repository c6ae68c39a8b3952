"""Upgrades on the real stack, in the production execution modes (thread mode for the external state and the
rendezvous, process mode for model jobs), into changed code: a copy of the project's packages with small,
visible changes (a quarantine message, the rule model's base score), submitted from that copy.

- Two versions of the thread-mode external state run at once, each with its own code (each job has its own
  TaskManager and Python interpreter).
- `job upgrade` of the external state under steady load: an entity's count goes on across the upgrade, every
  request is augmented once, and the model job reading its output runs on untouched (same job id, no
  restart); then the model job itself is upgraded: every request is scored once.
- A rendezvous with open mailboxes (scores held, timers pending) is upgraded: an incompatible state encoding
  is refused first (the job still runs), then the compatible new code answers each request once, by the
  schedule version it started with, at that schedule's deadline.

Each test prints its measured figures (the stop, the start, the longest time without output)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import psutil
import pytest

from control import kafka_io
from control.errors import ControlError
from control.ops import deploy, jobs, schedules, upgrade
from control.ops.jobs import SOURCE_PACKAGES, flink_rest
from control.runtime import pinned
from control.runtime.flink import flink_pid_files
from control.runtime.process import read_pid
from schemas.model_card import ModelCard
from schemas.records import (
    Answer,
    AugmentedRequest,
    LifecycleEvent,
    QuarantineRecord,
    Score,
)
from schemas.topics import TopicNames

pytestmark = pytest.mark.e2e

V2 = "v2: "
EDITS = {  # harmless changes that show in the output of the code that runs
    "jobs/external_state/validation.py": [('message=e.get("msg", "invalid")',
                                           'message="v2: " + e.get("msg", "invalid")')],
    "jobs/rendezvous/pipeline.py": [('message="neither an augmented', 'message="v2: neither an augmented')],
    "model_udfs/python_runners.py": [("        score = 0.05\n", "        score = 0.04\n")],
}
INCOMPATIBLE = {  # a new mailbox encoding that no longer reads versions 1 to 3
    "jobs/rendezvous/mailbox.py": [("MAILBOX_STATE_VERSION = 2\n", "MAILBOX_STATE_VERSION = 4\n"),
                                   ("MAILBOX_READS = tuple(sorted(_LENGTHS))",
                                    "MAILBOX_READS = (MAILBOX_STATE_VERSION,)")],
}


def changed_copy(home: Path, dest: Path, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """The project's shipped packages copied to `dest`, with each `old` replaced by `new` (each found once)."""
    for pkg in SOURCE_PACKAGES:
        shutil.copytree(home / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, subs in edits.items():
        text = (dest / rel).read_text()
        for old, new in subs:
            assert text.count(old) == 1, f"{rel}: {old!r} found {text.count(old)} times (the test's edit is stale)"
            text = text.replace(old, new)
        (dest / rel).write_text(text)
    return dest


@pytest.fixture(scope="module")
def v2(stack, tmp_path_factory) -> Path:
    return changed_copy(stack.home, tmp_path_factory.mktemp("code-v2"), EDITS)


def taskmanagers_of(s, jid: str) -> set[str]:
    out = set()
    for v in flink_rest(s, f"/jobs/{jid}")["vertices"]:
        out |= {st["taskmanager-id"] for st in flink_rest(s, f"/jobs/{jid}/vertices/{v['id']}")["subtasks"]}
    return out


def restarts(s, jid: str) -> int:
    m = flink_rest(s, f"/jobs/{jid}/metrics?get=numRestarts")
    return int(float(m[0]["value"])) if m else 0


def request(rid: str, entity: str, amount: float) -> dict:
    return {"request_id": rid, "entity_id": entity, "event_time_ms": int(time.time() * 1000), "amount": amount,
            "merchant_category": "grocery", "country": "DE"}


class Load(threading.Thread):
    """Records `make(i)` -> (key, record) at a steady rate until stopped."""

    def __init__(self, s, topic: str, make, rate: float = 20.0):
        super().__init__(daemon=True)
        self.s, self.topic, self.make, self.rate = s, topic, make, rate
        self.sent: list[dict] = []
        self.halt = threading.Event()

    def run(self) -> None:
        p = kafka_io.producer(self.s.bootstrap_servers)
        try:
            i = 0
            while not self.halt.is_set():
                key, r = self.make(i)
                p.send(self.topic, key=key.encode(), value=json.dumps(r).encode()).get(timeout=30)
                self.sent.append(r)
                i += 1
                self.halt.wait(1 / self.rate)
        finally:
            p.close()

    def stop(self) -> list[dict]:
        self.halt.set()
        self.join(30)
        return self.sent


def wait_for(what: str, check, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def augmented(s, topic: str, ids: set[str], timeout: float = 180.0) -> list[AugmentedRequest]:
    vals = kafka_io.consume(s.bootstrap_servers, topic, timeout=timeout,
                            until=lambda vs: ids <= {AugmentedRequest.parse(v).request.request_id for v in vs})
    return [AugmentedRequest.parse(v) for v in vals]


def quarantined(s, topic: str, raw: str, timeout: float = 120.0) -> QuarantineRecord:
    vals = kafka_io.consume(s.bootstrap_servers, topic, timeout=timeout,
                            until=lambda vs: any(QuarantineRecord.parse(v).raw == raw for v in vs))
    return next(q for q in map(QuarantineRecord.parse, vals) if q.raw == raw)


def longest_gap_ms(stamps: list[int]) -> int:
    stamps = sorted(stamps)
    return max((b - a for a, b in zip(stamps, stamps[1:])), default=0)


def test_thread_mode_versions_run_side_by_side_and_an_external_state_upgrade_keeps_features(
        stack, v2, unique, job_cleanup, tmp_path):
    s = stack
    t, t2 = TopicNames.suffixed(f"up-{unique}"), TopicNames.suffixed(f"up2-{unique}")
    kafka_io.ensure_topics(s.bootstrap_servers, t.specs() + t2.specs())
    canary = ModelCard(model_id=f"canary-{unique}", version="1", runner="model_udfs.python_runners:RuleRunner",
                       timeout_ms=5000)
    model = deploy.deploy_model(canary, s, job_name=f"up-model-{unique}", source_topic=t.augmented,
                                sink_topic=t.scores, group_id=f"up-model-{unique}", start="earliest", wait=False,
                                lifecycle_topic=t.lifecycle)
    job_cleanup.append(model)
    es = deploy.deploy_external_state(s, job_name=f"up-es-{unique}", source_topic=t.requests,
                                      sink_topic=t.augmented, quarantine_topic=t.quarantine,
                                      group_id=f"up-es-{unique}", start="earliest", checkpoint_interval_ms=2000,
                                      wait=False)
    job_cleanup.append(es)
    for jid in (model, es):
        jobs.wait_running(jid, s, timeout=240)
    shared = taskmanagers_of(s, model)

    hot = f"up-{unique}-hot"  # every fourth request

    def make(i: int) -> tuple[str, dict]:
        entity = hot if i % 4 == 0 else f"up-{unique}-e{i % 7}"
        return entity, request(f"up-{unique}-{i}", entity, 10.0 + i % 50)

    load = Load(s, t.requests, make)
    load.start()
    try:
        # 1. two versions of the thread-mode external state at once: this one (code v1) and one from code v2
        quick_jit = s.model_copy(update={"pinned_taskmanager_jvm_args": "-XX:TieredStopAtLevel=1"})
        other = deploy.deploy_external_state(quick_jit, job_name=f"up-es2-{unique}", source_topic=t2.requests,
                                             sink_topic=t2.augmented, quarantine_topic=t2.quarantine,
                                             group_id=f"up-es2-{unique}", start="earliest", code=v2)
        job_cleanup.append(other)
        kafka_io.produce(s.bootstrap_servers, t.requests, ["{bad-1"])
        kafka_io.produce(s.bootstrap_servers, t2.requests, ["{bad-1"])
        old_msg = quarantined(s, t.quarantine, "{bad-1").reasons[0].message
        new_msg = quarantined(s, t2.quarantine, "{bad-1").reasons[0].message
        assert jobs.job_state(es, s) == jobs.job_state(other, s) == "RUNNING"
        tms_es, tms_other = taskmanagers_of(s, es), taskmanagers_of(s, other)
        print(f"[side by side] v1 on {tms_es}: {old_msg!r}; v2 on {tms_other}: {new_msg!r}; models on {shared}")
        assert not old_msg.startswith(V2) and new_msg.startswith(V2), (old_msg, new_msg)
        assert not tms_es & tms_other and all(map(pinned.is_pinned, tms_es | tms_other)) and not shared & tms_es
        other_pin = pinned.of_job(s, other)
        assert pinned.pids(s, other_pin) and all("-XX:TieredStopAtLevel=1" in psutil.Process(pid).cmdline()
                                                 for pid in pinned.pids(s, other_pin))  # its settings' JVM options
        assert "-XX:TieredStopAtLevel=1" in s.pinned_taskmanager_jvm_args or not any(
            "-XX:TieredStopAtLevel=1" in psutil.Process(pid).cmdline()
            for pid in pinned.pids(s, pinned.of_job(s, es)))  # the default: the JVM's own
        jm = read_pid(flink_pid_files(s)["jobmanager"])
        cmdline = psutil.Process(jm).cmdline() if jm else []
        assert all(o in cmdline for o in s.jobmanager_jvm_args.split())  # its settings' JVM options (C1 only: default)
        jobs.cancel(other, s)
        assert other_pin not in pinned.pins(s)  # its TaskManager went with it

        # 2. the upgrade of the running external state into code v2, under load
        wait_for("augmented records of the hot entity", lambda: sum(
            AugmentedRequest.parse(v).request.entity_id == hot
            for _, v in kafka_io.read_to_end(s.bootstrap_servers, t.augmented)) >= 3)
        done = upgrade.upgrade(es, v2, s, progress=lambda m: print(f"[upgrade] {m}"), lifecycle_topic=t.lifecycle)
        job_cleanup.append(done.job_id)
        assert pinned.of_job(s, es) is None and taskmanagers_of(s, done.job_id).isdisjoint(tms_es)
        n_at_upgrade = len(load.sent)
        kafka_io.produce(s.bootstrap_servers, t.requests, ["{bad-2"])
        assert quarantined(s, t.quarantine, "{bad-2").reasons[0].message.startswith(V2)
        wait_for("requests sent after the upgrade", lambda: len(load.sent) >= n_at_upgrade + 40)

        # 3. the model job itself, into code v2 (process mode), under the same load
        assert jobs.job_state(model, s) == "RUNNING" and restarts(s, model) == 0, "the model job was touched"
        model_done = upgrade.upgrade(model, v2, s, progress=lambda m: print(f"[model upgrade] {m}"),
                                     lifecycle_topic=t.lifecycle)
        job_cleanup.append(model_done.job_id)
        n_at_model_upgrade = len(load.sent)
        wait_for("requests sent after the model upgrade", lambda: len(load.sent) >= n_at_model_upgrade + 40)
    finally:
        sent = load.stop()

    ids = {r["request_id"] for r in sent}
    aug = augmented(s, t.augmented, ids)
    by_id: dict[str, list[AugmentedRequest]] = {}
    for a in aug:
        by_id.setdefault(a.request.request_id, []).append(a)
    assert set(by_id) == ids and all(len(v) == 1 for v in by_id.values()), "a request lost or augmented twice"
    hots = sorted((a for a in aug if a.request.entity_id == hot), key=lambda a: a.request.event_time_ms)
    counts = [a.features.entity_count for a in hots]
    assert counts == list(range(len(hots))), counts  # the entity's count went on across the upgrade
    delay = max(a.augmented_at_ms - a.request.event_time_ms for a in aug)

    scores = [Score.parse(v) for v in kafka_io.consume(
        s.bootstrap_servers, t.scores, timeout=180, until=lambda vs: ids <= {Score.parse(v).request_id for v in vs})]
    per_request: dict[str, int] = {}
    for sc in scores:
        per_request[sc.request_id] = per_request.get(sc.request_id, 0) + 1
    assert set(per_request) == ids and set(per_request.values()) == {1}, "a request scored twice or not at all"
    after = {r["request_id"] for r in sent[n_at_model_upgrade:]}
    assert {sc.output["fraud_probability"] for sc in scores if sc.request_id in after} == {0.04}  # code v2 scores
    events = [LifecycleEvent.model_validate_json(v) for v in kafka_io.consume(
        s.bootstrap_servers, t.lifecycle, timeout=60,
        until=lambda vs: sum('"upgrade"' in v.decode() for v in vs) >= 2)]
    ups = [e for e in events if e.kind == "upgrade"]
    assert [e.detail["from_job_id"] for e in ups] == [es, model]
    assert ups[0].detail["to_code"] != ups[0].detail["from_code"]
    since = {r["request_id"] for r in sent[n_at_upgrade:]}  # the model upgrade's window, without the first one's
    print(f"[external state upgrade] {len(sent)} requests, {len(hots)} of the hot entity (counts 0..{counts[-1]}); "
          f"stop-with-savepoint {done.stop_s:.1f} s, new job running {done.start_s:.1f} s later; longest time without "
          f"an augmented record {longest_gap_ms([a.augmented_at_ms for a in aug])} ms; longest request wait {delay} ms")
    print(f"[model upgrade] stop {model_done.stop_s:.1f} s, start {model_done.start_s:.1f} s; longest time without a "
          f"score {longest_gap_ms([sc.finished_at_ms for sc in scores if sc.request_id in since])} ms; "
          f"{len(scores)} scores, one per request")


def test_a_rendezvous_with_open_mailboxes_is_upgraded_into_new_code_and_answers_each_once_on_its_schedule(
        stack, v2, unique, job_cleanup, tmp_path):
    s = stack
    deadline_ms = 60_000
    t = TopicNames.suffixed(f"uprv-{unique}")
    kafka_io.ensure_topics(s.bootstrap_servers, t.specs())
    v1 = schedules.publish(s.bootstrap_servers, {
        "name": "long", "stages": [{"deadline_ms": deadline_ms, "models": ["m@1", "n@1"]}],
        "default_output": {"fraud_probability": 0.0}}, topic=t.schedules, lifecycle_topic=None)
    jid = deploy.deploy_rendezvous(
        s, job_name=f"uprv-{unique}", start="earliest", augmented_topic=t.augmented, scores_topic=t.scores,
        schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late, invalid_topic=t.quarantine,
        group_id=f"uprv-{unique}")
    job_cleanup.append(jid)
    vertex = next(v["id"] for v in flink_rest(s, f"/jobs/{jid}")["vertices"] if v["name"].startswith("rendezvous"))

    def read(n: int) -> bool:
        return sum(x["metrics"]["read-records"] for x in flink_rest(
            s, f"/jobs/{jid}/vertices/{vertex}")["subtasks"]) >= n

    def aug(rid: str, now: int) -> dict:
        return {"request": {**request(rid, "e", 1.0), "event_time_ms": now},
                "features": {"entity_count": 0, "window_count": 1, "window_sum": 1.0, "window_ms": 1000,
                             "ms_since_prev": None, "amount_mean": 0.0, "amount_std": 0.0, "amount_zscore": 0.0},
                "feature_version": "features-v1", "entity_seq": 1, "augmented_at_ms": now}

    def score(rid: str, model: str, at: int) -> dict:
        return {"request_id": rid, "model_id": model, "model_version": "1", "output": {"fraud_probability": 0.5},
                "request_time_ms": at, "received_at_ms": at, "started_at_ms": at, "finished_at_ms": at}

    held = [f"held-{i}-{unique}" for i in range(10)]  # n@1 scored before the upgrade: held in the mailbox
    late = [f"after-{i}-{unique}" for i in range(10)]  # m@1 (preferred) scores only after the upgrade
    silent = [f"silent-{i}-{unique}" for i in range(10)]  # never scored: the default at the deadline
    t0 = int(time.time() * 1000)
    kafka_io.produce(s.bootstrap_servers, t.augmented, [aug(r, t0) for r in held + late + silent])
    kafka_io.produce(s.bootstrap_servers, t.scores, [score(r, "n", t0) for r in held])
    v2_schedule = schedules.publish(s.bootstrap_servers, {
        "name": "short", "stages": [{"deadline_ms": 1000, "models": ["other@1"]}],
        "default_output": {"fraud_probability": 1.0}}, topic=t.schedules, lifecycle_topic=None)
    wait_for("the rendezvous to read every request, score and schedule", lambda: read(30 + 10 + 2))
    assert not kafka_io.read_to_end(s.bootstrap_servers, t.answers), "answered before the upgrade"

    bad = changed_copy(s.home, tmp_path / "incompatible", INCOMPATIBLE)
    with pytest.raises(ControlError, match=r"refused, the job keeps running(.|\n)*rendezvous-mailbox(.|\n)*not 1, 2"):
        upgrade.upgrade(jid, bad, s, lifecycle_topic=t.lifecycle)
    assert jobs.job_state(jid, s) == "RUNNING" and restarts(s, jid) == 0

    # a steady stream of new requests through the upgrade, answered by schedule v2 (the default after 1 s)
    stream = Load(s, t.augmented, lambda i: (f"stream-{i}", aug(f"stream-{i}-{unique}", int(time.time() * 1000))),
                  rate=10.0)
    stream.start()
    try:
        wait_for("answers to the stream", lambda: sum(b"stream-" in v for _, v in kafka_io.read_to_end(
            s.bootstrap_servers, t.answers)) >= 10)
        done = upgrade.upgrade(jid, v2, s, lifecycle_topic=t.lifecycle,
                               progress=lambda m: print(f"[upgrade {time.time() * 1000:.0f}] {m}"))
        job_cleanup.append(done.job_id)
        restored_ms = int(time.time() * 1000)
        n_at_restore = len(stream.sent)
        wait_for("requests sent after the upgrade", lambda: len(stream.sent) >= n_at_restore + 30)
    finally:
        streamed = {r["request"]["request_id"] for r in stream.stop()}
    assert restored_ms < t0 + deadline_ms, (f"the upgrade took {(restored_ms - t0) / 1000:.0f} s, longer than the "
                                            f"schedule's deadline: the machine is overloaded")
    kafka_io.produce(s.bootstrap_servers, t.scores, [score(r, "m", restored_ms) for r in late])
    kafka_io.produce(s.bootstrap_servers, t.augmented, ["not a record"])
    assert quarantined(s, t.quarantine, "not a record").reasons[0].message.startswith(V2)  # the new code decides

    ids = set(held + late + silent) | streamed
    wait_for("every request answered", lambda: ids <= {Answer.parse(v).request_id for _, v in
                                                       kafka_io.read_to_end(s.bootstrap_servers, t.answers)},
             timeout=deadline_ms / 1000 + 120)
    # a request made now, under schedule v2 (1 s), is answered after every timer of the earlier ones has fired
    sentinel = f"sentinel-{unique}"
    kafka_io.produce(s.bootstrap_servers, t.augmented, [aug(sentinel, int(time.time() * 1000))])
    wait_for("the sentinel's answer", lambda: sentinel in {Answer.parse(v).request_id for _, v in
                                                          kafka_io.read_to_end(s.bootstrap_servers, t.answers)})
    records = kafka_io.records_to_end(s.bootstrap_servers, t.answers)
    answers = [Answer.parse(r.value) for r in records]
    count: dict[str, int] = {}
    for a in answers:
        count[a.request_id] = count.get(a.request_id, 0) + 1
    # a request answered twice, with where each answer is in the topic and when and how it was decided
    twice = {rid: [(r.partition, r.offset, r.timestamp, a.answered_at_ms, a.trigger) for r, a in
                   zip(records, answers) if a.request_id == rid] for rid, n in count.items() if n > 1}
    assert set(count) == ids | {sentinel} and set(count.values()) == {1}, (
        f"restored at {restored_ms}, sentinel sent after it; answered twice: {twice}")
    by_id = {a.request_id: a for a in answers}
    assert by_id[sentinel].schedule_version == v2_schedule.version
    assert {by_id[r].schedule_version for r in held + late + silent} == {v1.version}
    assert {by_id[r].schedule_version for r in streamed} == {v2_schedule.version}
    assert {(by_id[r].model, by_id[r].trigger) for r in held} == {("n@1", "deadline")}
    assert {(by_id[r].model, by_id[r].trigger) for r in late} == {("m@1", "preferred")}
    assert {(by_id[r].is_default, by_id[r].trigger) for r in silent} == {(True, "default")}
    for r in held + silent:  # at v1's deadline, counted from the request's time, as its timer was set
        a = by_id[r]
        assert a.deadline_at_ms == a.request_time_ms + deadline_ms and a.answered_at_ms >= a.deadline_at_ms, a
    overshoot = [by_id[r].answered_at_ms - by_id[r].deadline_at_ms for r in held + silent]
    stream_gap = longest_gap_ms([by_id[r].answered_at_ms for r in streamed])
    stream_late = max(by_id[r].answered_at_ms - (by_id[r].request_time_ms + 1000) for r in streamed)
    print(f"[rendezvous upgrade] 30 open mailboxes (10 with a held score); stop-with-savepoint {done.stop_s:.1f} s, "
          f"new job running {done.start_s:.1f} s later ({(restored_ms - t0) / 1000:.1f} s after the requests); "
          f"after the restore: 10 answered by m@1 at once, 20 at v1's 60 s deadline, {max(overshoot)} ms after it "
          f"at most (median {sorted(overshoot)[len(overshoot) // 2]} ms); each request answered once")
    print(f"[rendezvous upgrade] a stream of {len(streamed)} requests at 10/s (schedule v2, 1 s): longest time without "
          f"an answer {stream_gap} ms, an answer at most {stream_late} ms after its deadline; each answered once")
