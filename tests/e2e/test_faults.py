"""Faults against the real stack, under steady load, with no hand-made restart: every request is
answered, and none gets two different answers (the answer contract, README). Each test prints, per
fault: sent, answered, lost, duplicated, conflicting, and the longest time without an answer.

They run with `make faults` (about 5 minutes on their own stack), not in `make test`: long fault runs have
their own target. `make chaos` runs the same tests longer (RENDEZVOUS_CHAOS_SCALE=5: five times the load, a
fault every 20 s)."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from control import kafka_io
from control.ops import deploy, jobs, schedules
from control.ops.jobs import flink_rest
from control.runtime import mlserver, pinned, supervisor
from control.runtime.flink import flink_pid_files
from control.runtime.process import pid_alive, read_pid
from schemas.model_card import ModelCard
from schemas.records import LateScore, QuarantineRecord, Score
from schemas.topics import TopicNames
from tools import load

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

SCALE = int(os.environ.get("RENDEZVOUS_CHAOS_SCALE", "1"))
RATE = 50
DURATION_S = 30 * SCALE
DRAIN_S = 180
CHECKPOINT_MS = 2000


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def pipeline(stack, tmp_path_factory):
    """requests -> external state -> a local and a remote (MLServer) model -> rendezvous -> answers."""
    u = os.urandom(4).hex()
    t0 = time.time()
    t = TopicNames.suffixed(f"fault-{u}")
    kafka_io.ensure_topics(stack.bootstrap_servers, t.specs())
    tmp = tmp_path_factory.mktemp("faults")
    http_port, grpc_port = free_ports(2)
    models = stack.home / "artifacts" / "models"
    server = mlserver.start(models / "fraud-challenger" / "2.0.0", http_port=http_port, grpc_port=grpc_port,
                            metrics=False, log_file=tmp / "mlserver.log", work_dir=tmp / "mlserver")
    remote = ModelCard(model_id="remote", version="2.0.0", runner="model_udfs.remote:KServeV2Runner",
                       params={"url": server.url, "model_name": "fraud-challenger", "model_version": "2.0.0",
                               "output_tensor": "predict_proba", "output_index": 1,
                               "output_name": "fraud_probability"}, timeout_ms=300)
    local = ModelCard.load(models / "fraud-champion" / "1.0.0" / "card.json")
    schedules.publish(stack.bootstrap_servers, {
        "name": "remote first", "stages": [{"deadline_ms": 400, "models": ["remote@2.0.0"]},
                                           {"deadline_ms": 900, "models": ["remote@2.0.0", local.key]}],
        "default_output": {"fraud_probability": 0.0, "decision": "review"}}, t.schedules, t.lifecycle)
    common = dict(checkpoint_interval_ms=CHECKPOINT_MS, wait=False)
    ids = {
        "external-state": deploy.deploy_external_state(
            stack, job_name=f"fault es {u}", source_topic=t.requests, sink_topic=t.augmented,
            quarantine_topic=t.quarantine, group_id=f"fault-es-{u}", start="latest", **common),
        "rendezvous": deploy.deploy_rendezvous(
            stack, job_name=f"fault rendezvous {u}", augmented_topic=t.augmented, scores_topic=t.scores,
            schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late, invalid_topic=t.quarantine,
            group_id=f"fault-rv-{u}", start="latest", **common),
    }
    for card in (local, remote):
        ids[card.key] = deploy.deploy_model(card, stack, job_name=f"fault model {card.key} {u}",
                                            source_topic=t.augmented, sink_topic=t.scores,
                                            group_id=f"fault-{card.model_id}-{u}", lifecycle_topic=t.lifecycle,
                                            **common)
    for jid in ids.values():
        jobs.wait_running(jid, stack, timeout=180)
    p = {"topics": t, "jobs": ids, "server": server, "stack": stack, "remote": remote.key, "local": local.key,
         "t0": t0}
    healthy(p)
    yield p
    server.stop()
    for jid in ids.values():
        try:
            if jobs.job_state(jid, stack) in ("RUNNING", "RESTARTING", "CREATED", "INITIALIZING"):
                jobs.cancel(jid, stack)
        except Exception:
            pass


def healthy(p, timeout: float = 240) -> None:
    """Wait until every job runs and a fresh request is answered by a model (fresh workers warm up)."""
    deadline = time.monotonic() + timeout
    for jid in p["jobs"].values():
        jobs.wait_running(jid, p["stack"], timeout=max(5.0, deadline - time.monotonic()))
    while time.monotonic() < deadline:
        r = load.run_load(p["stack"].bootstrap_servers, 10, 1.0, p["topics"].requests, p["topics"].answers,
                          drain_s=10, progress=None)
        if r.unanswered == 0 and not r.default_share:
            return
    raise AssertionError("the pipeline did not answer with models again within the timeout")


def failures(p) -> dict[str, int]:
    """Failures each job has recorded (its exception history): a failover shows here whether or not the
    job-level restart counter counts a region's restart."""
    return {name: len(flink_rest(p["stack"], f"/jobs/{jid}/exceptions").get("exceptionHistory", {})
                      .get("entries", [])) for name, jid in p["jobs"].items()}


def restarts(p) -> dict[str, int]:
    out = {}
    for name, jid in p["jobs"].items():
        m = flink_rest(p["stack"], f"/jobs/{jid}/metrics?get=numRestarts")
        out[name] = int(float(m[0]["value"])) if m else 0
    return out


def record(s, fault: str, **figures) -> None:
    """The fault's accounting, for the README's table (`python -m bench.faults_table`)."""
    out = s.run_dir / "faults"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{fault.replace(' ', '-')}.json").write_text(json.dumps(
        {"fault": fault, "at": time.strftime("%Y-%m-%d"), "scale": SCALE, "rate": RATE, "duration_s": DURATION_S,
         **figures}, indent=2))


def run(p, fault: str, inject=None, at_s: float = 8.0, every_s: float | None = None) -> load.LoadReport:
    """Steady load with `inject()` called at `at_s` (and every `every_s` after); prints the accounting."""
    fired: list[float] = []

    def on_tick(elapsed: float) -> None:
        if inject is None:
            return
        due = at_s + (len(fired) * every_s if every_s else 0)
        if elapsed >= due and (every_s or not fired) and elapsed < DURATION_S - 5:
            fired.append(elapsed)
            inject()

    report = load.run_load(p["stack"].bootstrap_servers, RATE, DURATION_S, p["topics"].requests,
                           p["topics"].answers, drain_s=DRAIN_S, progress=None, on_tick=on_tick)
    print(f"\n[{fault}] faults injected at {[round(f, 1) for f in fired]} s: sent {report.sent}, answered "
          f"{report.answered}, lost {report.unanswered}, duplicated {report.duplicate_answers}, conflicting "
          f"{report.conflicting_answers}; longest time without an answer {report.max_answer_gap_ms} ms; "
          f"default answers {100 * (report.default_share or 0):.1f} %; client p50 {report.client_latency_p50_ms} "
          f"ms, p99 {report.client_latency_p99_ms} ms")
    record(p["stack"], fault, sent=report.sent, answered=report.answered, lost=report.unanswered,
           duplicated=report.duplicate_answers, conflicting=report.conflicting_answers,
           max_answer_gap_ms=report.max_answer_gap_ms, default_share=report.default_share, faults=len(fired),
           recover_answers=os.environ.get("RENDEZVOUS_RENDEZVOUS_RECOVER_ANSWERS", "true") != "false")
    assert fired or inject is None
    assert report.unanswered == 0, f"[{fault}] {report.unanswered} requests lost"
    assert report.conflicting_answers == 0, f"[{fault}] {report.conflicting_answers} conflicting answers"
    return report


# ------------------------------------------------------------------------------------------------ the faults
def test_a_flood_of_malformed_input_restarts_nothing_and_loses_nothing(pipeline):
    p, t = pipeline, pipeline["topics"]
    before = restarts(p)
    good = [json.loads(v) for v in (json.dumps(x.request) for x in _valid(300, "flood"))]
    deep = "[" * 20_000 + "]" * 20_000
    bad = ([os.urandom(200) for _ in range(20)] + ["x" * 1_000_000] * 3 + [deep] * 5
           + ['{"request_id": "n1", "amount": NaN}', '{"request_id": "n2", "amount": Infinity}'] * 10
           + [json.dumps({**good[0], "request_id": f"wt{i}", "amount": "12"}) for i in range(20)]
           + [b""] * 10 + [None] * 10
           + [json.dumps({**good[0], "request_id": f"uf{i}", "extra": 1}) for i in range(20)])
    mixed = [json.dumps(g) for g in good] + bad
    random.Random(3).shuffle(mixed)
    prod = kafka_io.producer(p["stack"].bootstrap_servers, max_request_size=2_000_000)
    try:
        for v in mixed:
            # null-key records throughout; a null value needs a key (kafka-python refuses a record with neither)
            prod.send(t.requests, v.encode() if isinstance(v, str) else v, key=b"k" if v is None else None)
        prod.flush()
    finally:
        prod.close()
    ids = {g["request_id"] for g in good}
    answers = kafka_io.consume(p["stack"].bootstrap_servers, t.answers, timeout=180,
                               until=lambda vs: ids <= {json.loads(v)["request_id"] for v in vs})
    answered = {json.loads(v)["request_id"] for v in answers} & ids
    quarantined = [QuarantineRecord.parse(v) for v in kafka_io.consume(
        p["stack"].bootstrap_servers, t.quarantine, timeout=120,
        until=lambda vs: len([v for v in vs if b'"external_state"' in v]) >= len(bad))]
    from_es = [q for q in quarantined if q.stage == "external_state"]
    reasons = Counter(r.code for q in from_es for r in q.reasons[:1])
    print(f"\n[malformed flood] sent {len(good)} valid + {len(bad)} malformed: answered {len(answered)}, "
          f"quarantined {len(from_es)} ({dict(reasons)}); job restarts {restarts(p)}")
    record(p["stack"], "malformed flood", valid=len(good), malformed=len(bad), answered=len(answered),
           quarantined=len(from_es), reasons=dict(reasons), restarts=sum(restarts(p).values()) -
           sum(before.values()))
    assert answered == ids and len(answered) + len(from_es) == len(good) + len(bad)
    assert all(q.reasons and q.reasons[0].code for q in from_es)
    assert restarts(p) == before, "a malformed record restarted a job"


def test_a_remote_model_server_killed_under_load_falls_back_and_stalls_nothing(pipeline):
    p = pipeline
    report = run(p, "model server killed", inject=lambda: os.killpg(p["server"].pid, signal.SIGKILL))
    by_model = report.by_model
    print(f"[model server killed] answers by model {by_model}")
    assert by_model.get(p["local"], 0) > 0, "the schedule's fallback never answered"
    assert report.client_latency_p99_ms is not None and report.client_latency_p99_ms < 2000, "answers stalled"
    # back to the remote model when its server is back
    old = p["server"]
    p["server"] = mlserver.start(old.models_dir, http_port=old.http_port, grpc_port=free_ports(1)[0], metrics=False,
                                 log_file=Path(old.log_file).with_name("mlserver-restarted.log"),
                                 work_dir=old.work_dir)
    healthy(p)


def test_a_killed_python_worker_is_replaced_and_loses_nothing(pipeline):
    p = pipeline

    models = [n for n in p["jobs"] if "@" in n]  # the process-mode jobs: one Python worker each
    before = failures(p)

    def kill_worker():
        tm = read_pid(flink_pid_files(p["stack"])["taskmanager"])
        # this test's workers: started after its jobs were (a cancelled job's worker may still be exiting)
        workers = [c for c in psutil.Process(tm).children(recursive=True)
                   if "beam_boot" in " ".join(c.cmdline()) and c.create_time() >= p["t0"]]
        assert workers, "no process-mode Python worker found under the TaskManager"
        os.kill(random.Random(len(workers)).choice(workers).pid, signal.SIGKILL)

    run(p, "python worker killed", inject=kill_worker, every_s=20 if SCALE > 1 else None)
    after = failures(p)
    print(f"[python worker killed] job failures {before} -> {after}")
    assert sum(after[m] for m in models) > sum(before[m] for m in models), "the kill hit no job of this test"
    healthy(p)


def test_the_broker_stopped_and_restarted_by_the_supervisor_loses_nothing(pipeline):
    p, s = pipeline, pipeline["stack"]
    before = supervisor.restarts_of(s, "kafka broker")
    run(p, "broker stopped", inject=lambda: os.kill(read_pid(s.pid_dir / "kafka.pid"), signal.SIGTERM))
    assert supervisor.restarts_of(s, "kafka broker") > before
    healthy(p)


def test_a_killed_taskmanager_is_restarted_and_every_request_keeps_one_answer(pipeline):
    """Every TaskManager of the pipeline killed at once: the shared one (the model jobs) and the external state's
    and the rendezvous's own; the supervisor starts them again and every job restores from its checkpoint."""
    p, s = pipeline, pipeline["stack"]
    before = supervisor.restarts_of(s, "flink taskmanager")
    own = [pinned.of_job(s, p["jobs"][name]) for name in ("external-state", "rendezvous")]
    own_before = [pinned.restarts(s, pin) for pin in own]

    def kill_tm():
        for pid in [read_pid(flink_pid_files(s)["taskmanager"])] + [x for pin in own for x in pinned.pids(s, pin)]:
            os.kill(pid, signal.SIGKILL)

    report = run(p, "taskmanager killed", inject=kill_tm, at_s=10, every_s=20 if SCALE > 1 else None)
    assert supervisor.restarts_of(s, "flink taskmanager") > before
    assert all(pinned.restarts(s, pin) > n for pin, n in zip(own, own_before)), \
        "a job's own TaskManager was not restarted"
    # the restored rendezvous read back what it answered since its checkpoint (without that: duplicates)
    assert report.duplicate_answers == 0, f"{report.duplicate_answers} requests answered twice"
    print(f"[taskmanager killed] recovered: no answer for {report.max_answer_gap_ms / 1000:.1f} s at most")
    tm = read_pid(flink_pid_files(s)["taskmanager"])
    assert tm and pid_alive(tm)
    healthy(p)


def test_a_flood_of_orphan_scores_is_held_bounded_and_expires_as_late_scores(stack):
    u = os.urandom(4).hex()
    t = TopicNames.suffixed(f"orphan-{u}")
    kafka_io.ensure_topics(stack.bootstrap_servers, t.specs())
    jid = deploy.deploy_rendezvous(
        stack, job_name=f"orphans {u}", augmented_topic=t.augmented, scores_topic=t.scores,
        schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late, invalid_topic=t.quarantine,
        group_id=f"orphans-{u}", start="earliest", orphan_timeout_ms=5000, checkpoint_interval_ms=1000)
    try:
        n = 20_000
        now = int(time.time() * 1000)
        scores = [Score(request_id=f"ghost-{i}", model_id="m", model_version="1", output={"p": 0.1},
                        request_time_ms=now, received_at_ms=now, started_at_ms=now, finished_at_ms=now).to_json()
                  for i in range(n)]
        sizes = []

        def state_size() -> int:
            latest = flink_rest(stack, f"/jobs/{jid}/checkpoints").get("latest", {}).get("completed") or {}
            return int(latest.get("state_size") or latest.get("checkpointed_size") or 0)

        kafka_io.produce(stack.bootstrap_servers, t.scores, scores)
        late = []
        deadline = time.monotonic() + 180
        while len(late) < n and time.monotonic() < deadline:
            sizes.append(state_size())
            late = kafka_io.consume(stack.bootstrap_servers, t.late, timeout=5, idle_timeout=1)
        reasons = Counter(LateScore.parse(v).reason for v in late)
        peak = max(sizes)
        after = state_size()
        deadline = time.monotonic() + 60  # the next checkpoints after the last expiry
        while after >= 0.2 * peak and time.monotonic() < deadline:
            time.sleep(0.5)
            after = state_size()
        print(f"\n[orphan flood] {n} scores for requests that never come: {dict(reasons)} late scores; "
              f"checkpointed state peak {peak / 1e6:.1f} MB, after expiry {after / 1e6:.2f} MB")
        record(stack, "orphan flood", scores=n, late=dict(reasons), state_peak_bytes=peak, state_after_bytes=after)
        assert reasons == {"orphan_expired": n}
        assert peak > 0 and after < 0.2 * peak, "held state did not shrink after the orphans expired"
    finally:
        jobs.cancel(jid, stack)


def _valid(n: int, prefix: str):
    from training.synthetic import TransactionGenerator

    gen = TransactionGenerator(seed=4, prefix=f"{prefix}-{os.urandom(3).hex()}")
    now = int(time.time() * 1000)
    return [gen.next(now + i) for i in range(n)]
