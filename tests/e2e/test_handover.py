"""`rendezvous upgrade`: the seed's upgrade protocol on the real stack (control/ops/handover.py), under steady load on
two-partition topics, in the production execution modes: the rendezvous hands over to changed code, then the
external state, then the rendezvous hands back (`--rollback`). Snapshot token (a savepoint, the job running on), the
new version restored from it and caught up, a transition token in each partition, the old version stopped once it
has finished its share.

Checked: every request is augmented exactly once and answered exactly once; an entity's count goes on across the
external state's hand-over; the model job runs on untouched (same job, no restart); each step is in the lifecycle;
the code that runs afterwards is the new one. Printed: the client's latency (answer's append time - request time)
before, during and after each hand-over, and how long each step took."""

from __future__ import annotations

import os

import numpy as np
import pytest

from control import kafka_io
from control.ops import deploy, handover, jobs, schedules
from control.runtime import jit, pinned, priority
from schemas.model_card import ModelCard
from schemas.records import (
    Answer,
    AugmentedRequest,
    LifecycleEvent,
    QuarantineRecord,
    Request,
)
from schemas.topics import TopicNames, shadow_topic
from tests.e2e.test_upgrade import (
    EDITS,
    V2,
    Load,
    changed_copy,
    request,
    restarts,
    wait_for,
)

pytestmark = pytest.mark.e2e

STEPS = ["started", "snapshot", "quiescent", "snapshot_complete", "transition", "completed"]


@pytest.fixture(scope="module")
def v2(stack, tmp_path_factory):
    return changed_copy(stack.home, tmp_path_factory.mktemp("code-v2"), EDITS)


def answers_with_times(s, topic: str) -> dict[str, list[tuple[Answer, int]]]:
    out: dict[str, list[tuple[Answer, int]]] = {}
    for r in kafka_io.records_to_end(s.bootstrap_servers, topic, timeout=30):
        a = Answer.parse(r.value)
        out.setdefault(a.request_id, []).append((a, r.timestamp))
    return out


def quarantined_all(s, topic: str, raw: str) -> list[QuarantineRecord]:
    return [q for q in (QuarantineRecord.parse(v) for _, v in kafka_io.read_to_end(s.bootstrap_servers, topic))
            if q.raw == raw]


def test_the_rendezvous_and_the_external_state_hand_over_to_new_code_under_load_and_back(
        stack, v2, unique, job_cleanup):
    s = stack
    t = TopicNames.suffixed(f"ho-{unique}")
    kafka_io.ensure_topics(s.bootstrap_servers, t.specs(), partitions=2)
    card = ModelCard(model_id=f"rule-{unique}", version="1", runner="model_udfs.python_runners:RuleRunner",
                     timeout_ms=5000)
    schedules.publish(s.bootstrap_servers, {
        "name": "ho", "stages": [{"deadline_ms": 500, "models": [card.key]}],
        "default_output": {"fraud_probability": 0.0}}, topic=t.schedules, lifecycle_topic=None)
    common = {"transitions_topic": t.transitions, "start": "earliest", "wait": False}
    model = deploy.deploy_model(card, s, job_name=f"ho-model-{unique}", source_topic=t.augmented,
                                sink_topic=t.scores, group_id=f"ho-model-{unique}", start="earliest", wait=False,
                                lifecycle_topic=t.lifecycle)
    es = deploy.deploy_external_state(s, job_name=f"ho-es-{unique}", source_topic=t.requests, sink_topic=t.augmented,
                                      quarantine_topic=t.quarantine, group_id=f"ho-es-{unique}", **common)
    rz = deploy.deploy_rendezvous(s, job_name=f"ho-rz-{unique}", augmented_topic=t.augmented, scores_topic=t.scores,
                                  schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late,
                                  invalid_topic=t.quarantine, group_id=f"ho-rz-{unique}", **common)
    job_cleanup.extend([model, es, rz])
    for jid in (model, es, rz):
        jobs.wait_running(jid, s, timeout=240)

    entities = [f"ho-{unique}-e{i}" for i in range(6)]

    def make(i: int) -> tuple[str, dict]:
        return entities[i % len(entities)], request(f"ho-{unique}-{i}", entities[i % len(entities)], 10.0 + i % 50)

    load = Load(s, t.requests, make, rate=40.0)
    load.start()
    done = []
    try:
        wait_for("answers for 5 s of load", lambda: len(answers_with_times(s, t.answers)) >= 200)
        jm = handover.local_jobmanager(s)
        jm_nice = os.getpriority(os.PRIO_PROCESS, jm) if jm else None
        for name, jid, code, rollback in (("rendezvous -> v2", rz, v2, False), ("external state -> v2", es, v2, False),
                                          ("rendezvous -> back", None, None, True)):
            jid = jid or done[0].job_id
            # the first waits for the new version's JIT compilers, briefly: it reads the real TaskManager's threads
            quiet_s = 0.0 if done else 5.0
            # the second holds its new version's optimizing compilers at the lowest priority, 5 s at most after
            hold_s = 5.0 if len(done) == 1 else 0.0
            # the new rendezvous and external state write as a shadow before their tokens (3 s more once they keep
            # up), the last does not
            shadow_s = 3.0 if len(done) < 2 else 0.0
            ho = handover.hand_over(jid, code, s, progress=lambda m, n=name: print(f"[{n}] {m}"),
                                    lifecycle_topic=t.lifecycle, rollback=rollback, compilers_quiet_timeout_s=quiet_s,
                                    hold_compilers_s=hold_s, shadow_s=shadow_s)
            job_cleanup.append(ho.job_id)
            done.append(ho)
            assert jobs.job_state(jid, s) == "FINISHED"  # stopped with a savepoint once it had finished its share
            # the runtime's JobManager worked at the lowest priority while the old version stopped, then got its own
            if jm is not None:  # (a remote one is left alone)
                assert ho.jobmanager_lowered == (priority.can_renice() and jm_nice < handover.RETIRING_NICE), ho
                assert os.getpriority(os.PRIO_PROCESS, jm) == jm_nice
                assert jm_nice or not priority.in_our_group(jm)
            if quiet_s:  # what the wait reads: the compiler threads of the new version's real JVM
                assert jit.compiler_threads(pinned.pids(s, pinned.of_job(s, ho.job_id))), "no compiler thread read"
                if priority.can_renice():  # it started at a lower priority, so it waited: 3 s at least
                    assert ho.timings_s["compilers_s"] >= 3.0, ho.timings_s
            if hold_s and priority.can_renice():  # held through the transition, then given back
                assert 0 < ho.timings_s["compilers_held_s"] <= hold_s + 2, ho.timings_s
                c2 = jit.compiler_tids(pinned.pids(s, pinned.of_job(s, ho.job_id)))
                assert c2 and {os.getpriority(os.PRIO_PROCESS, tid) for tid in c2} == {0}, c2
                assert not any(priority.in_our_group(tid, "tasks") for tid in c2), "a compiler thread left in a group"
            n = len(load.sent)
            wait_for("more requests", lambda: len(load.sent) >= n + 40)
    finally:
        sent = load.stop()

    ids = {r["request_id"] for r in sent}
    wait_for("every request answered", lambda: ids <= set(answers_with_times(s, t.answers)), timeout=120)
    answers = answers_with_times(s, t.answers)
    twice = {r: [a.model_dump() for a, _ in v] for r, v in answers.items() if len(v) > 1}
    assert not twice, f"{len(twice)} requests answered more than once: {list(twice.items())[:2]}"
    assert set(answers) == ids, "answers to requests never sent"

    augmented = [AugmentedRequest.parse(v) for _, v in kafka_io.read_to_end(s.bootstrap_servers, t.augmented)
                 if not v.startswith(b'{"transition"')]
    per_id: dict[str, int] = {}
    for a in augmented:
        per_id[a.request.request_id] = per_id.get(a.request.request_id, 0) + 1
    assert set(per_id) == ids and set(per_id.values()) == {1}, "a request lost or augmented twice"
    for e in entities:  # the entity's count went on across the external state's hand-over
        counts = sorted(a.features.entity_count for a in augmented if a.request.entity_id == e)
        assert counts == list(range(len(counts))), (e, counts)

    assert jobs.job_state(model, s) == "RUNNING" and restarts(s, model) == 0, "the model job was touched"

    # the first new rendezvous answered as a shadow, into its own topic only (in the answers topic, a shadow answer
    # would be a second answer: none above), the requests before its tokens only, and as the old version did
    assert [h.shadow_records is not None for h in done] == [True, True, False]
    shadows = [Answer.parse(v)
               for _, v in kafka_io.read_to_end(s.bootstrap_servers, shadow_topic(t.answers))]
    assert len(shadows) >= done[0].shadow_records > 0 and {a.request_id for a in shadows} <= ids
    position = {AugmentedRequest.parse(r.value).request.request_id: (r.partition, r.offset)
                for r in kafka_io.records_to_end(s.bootstrap_servers, t.augmented, timeout=30)
                if not r.value.startswith(b'{"transition"')}
    token_at = {p.partition: p.offset for p in done[0].tokens[t.augmented]}
    assert all(position[a.request_id][1] < token_at[position[a.request_id][0]] for a in shadows)
    both = [(a, answers[a.request_id][0][0]) for a in shadows if not a.is_default]
    both = [(a, real) for a, real in both if not real.is_default]
    assert all(a.output == real.output and a.model == real.model for a, real in both), both[:2]
    print(f"[hand-over] shadow: {len(shadows)} answers before the tokens ({done[0].shadow_records} by snapshot "
          f"complete), {len(both)} by the model in both versions, all with the old version's output")
    # the new external state augmented as a shadow, into its own topic only (the augmented topic has each request
    # once, above), the requests before its tokens only, with the features the old version computed for them
    real = {a.request.request_id: a for a in augmented}
    es_shadows = [AugmentedRequest.parse(v)
                  for _, v in kafka_io.read_to_end(s.bootstrap_servers, shadow_topic(t.augmented))]
    assert len(es_shadows) >= done[1].shadow_records > 0
    at_request = {Request.parse(r.value).request_id: (r.partition, r.offset)
                  for r in kafka_io.records_to_end(s.bootstrap_servers, t.requests, timeout=30)
                  if not r.value.startswith(b'{"transition"')}  # (the bad request comes later)
    es_token_at = {p.partition: p.offset for p in done[1].tokens[t.requests]}
    for a in es_shadows:
        rid = a.request.request_id
        assert at_request[rid][1] < es_token_at[at_request[rid][0]], (rid, at_request[rid], es_token_at)
        assert (a.features, a.entity_seq) == (real[rid].features, real[rid].entity_seq), (a, real[rid])
    print(f"[hand-over] external state's shadow: {len(es_shadows)} augmented requests before the tokens "
          f"({done[1].shadow_records} by snapshot complete), all with the old version's features")

    # the code that runs now: the external state's v2, the rendezvous's v1 again (rolled back)
    kafka_io.produce(s.bootstrap_servers, t.requests, ["{bad-ho"])
    kafka_io.produce(s.bootstrap_servers, t.augmented, ["not a record"])
    bad = wait_for("the bad request quarantined", lambda: quarantined_all(s, t.quarantine, "{bad-ho"))
    unreadable = wait_for("the unreadable record quarantined",
                          lambda: quarantined_all(s, t.quarantine, "not a record"))
    assert len(bad) == 1 and bad[0].reasons[0].message.startswith(V2)
    assert len(unreadable) == 1 and not unreadable[0].reasons[0].message.startswith(V2)

    events = [LifecycleEvent.parse(v) for _, v in kafka_io.read_to_end(s.bootstrap_servers, t.lifecycle)]
    for ho in done:
        steps = [e.detail["step"] for e in events if e.kind == "upgrade" and e.detail["upgrade_id"] == ho.upgrade_id]
        assert steps == STEPS, steps
    assert [(h.previous, h.owner) for h in done] == [
        (f"ho-rz-{unique}", f"ho-rz-{unique}#2"), (f"ho-es-{unique}", f"ho-es-{unique}#2"),
        (f"ho-rz-{unique}#2", f"ho-rz-{unique}#3")]

    # a fresh deployment on these topics takes the name of the version that owns them now (else it would own nothing)
    assert deploy.current_owner(s, t.transitions, t.augmented) == f"ho-rz-{unique}#3"
    assert deploy.current_owner(s, t.transitions, t.requests) == f"ho-es-{unique}#2"

    sent_at = {r["request_id"]: r["event_time_ms"] for r in sent}
    lat = sorted((sent_at[r], ts - sent_at[r], v[0][0].is_default) for r, v in answers.items() for _, ts in v[:1])
    print(f"[hand-over] {len(ids)} requests at 40/s, each augmented once and answered once; "
          f"{sum(d for *_, d in lat)} default answers")
    # windows: the 10 s before each hand-over started, and its transition (tokens written -> old version stopped)
    at = {(e.detail["upgrade_id"], e.detail["step"]): e.at_ms for e in events if e.kind == "upgrade"}
    windows = {}
    for name, ho in zip(("rendezvous -> v2", "external state -> v2", "rendezvous -> back"), done):
        windows[f"{name}, 10 s before"] = (at[ho.upgrade_id, "started"] - 10_000, at[ho.upgrade_id, "started"])
        windows[f"{name}, transition"] = (at[ho.upgrade_id, "transition"] - 1_000, at[ho.upgrade_id, "completed"])
    for name, (a, b) in windows.items():
        xs = [ms for t0, ms, _ in lat if a <= t0 <= b]
        if xs:
            print(f"[hand-over] {name:>34}: {len(xs):4d} answers, client latency p50 {np.percentile(xs, 50):6.1f} ms, "
                  f"p99 {np.percentile(xs, 99):6.1f} ms, max {max(xs)} ms, defaults "
                  f"{sum(d for t0, _, d in lat if a <= t0 <= b)}")
    for name, ho in zip(("rendezvous -> v2", "external state -> v2", "rendezvous -> back"), done):
        print(f"[hand-over] {name} (s): " + ", ".join(f"{k} {v:.1f}" for k, v in ho.timings_s.items()))
