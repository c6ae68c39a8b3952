"""The decoy archive on the real stack (issue 12): every request, score, answer and label of a load run lands in
the Parquet archive exactly once, also when the TaskManager is killed while it archives; `explain` tells an
answer's story from the live topics and from the archive alone; `replay` of the champion's own card over the
archive reproduces its recorded scores, a different model's shows the disagreement."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import archive, deploy, jobs, registry, schedules
from control.ops.jobs import flink_rest
from control.runtime.flink import flink_pid_files
from control.runtime.process import read_pid
from schemas.model_card import ModelCard
from schemas.records import Label
from schemas.topics import TopicNames
from training.synthetic import TransactionGenerator

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHAMPION = ModelCard.load(REPO / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json")
CANARY = ModelCard(model_id="fraud-canary", version="1", runner="model_udfs.python_runners:RuleRunner")


def hour_of(ms: int) -> tuple[str, str]:
    t = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return t.strftime("%Y-%m-%d"), t.strftime("%H")


def failures(jid: str, s) -> int:
    """Failures the job has recorded (its exception history; a region failover counts too)."""
    return len(flink_rest(s, f"/jobs/{jid}/exceptions").get("exceptionHistory", {}).get("entries", []))


@pytest.fixture(scope="module")
def archived(stack, tmp_path_factory):
    """A pipeline (external state, champion, canary, rendezvous, decoy) that scored 400 labelled requests, the
    TaskManager killed halfway while the decoy archived; returns what the test needs to check."""
    unique = os.urandom(5).hex()
    topics = TopicNames.suffixed(f"ar{unique}")
    where = str(tmp_path_factory.mktemp("archive"))
    ensure_topics(stack.bootstrap_servers, topics.specs())
    plane = registry.Plane(stack, topics)
    sched = schedules.publish(stack.bootstrap_servers, {
        "name": "archived", "stages": [{"deadline_ms": 1500, "models": [CHAMPION.key]}],
        "default_output": {"fraud_probability": 0.0}}, topic=topics.schedules, lifecycle_topic=None)
    ids = [deploy.deploy_external_state(stack, job_name=f"ar-es-{unique}", start="earliest",
                                        source_topic=topics.requests, sink_topic=topics.augmented,
                                        quarantine_topic=topics.quarantine, group_id=f"ar-es-{unique}", wait=False)]
    ids += deploy.side_by_side([lambda card=card: deploy.deploy_model(
        card, stack, job_name=f"ar-{card.model_id}-{unique}", start="earliest", source_topic=topics.augmented,
        sink_topic=topics.scores, group_id=f"ar-{card.model_id}-{unique}", wait=False)
        for card in (CHAMPION, CANARY)], stack)
    ids.append(deploy.deploy_rendezvous(
        stack, job_name=f"ar-rv-{unique}", start="earliest", augmented_topic=topics.augmented,
        scores_topic=topics.scores, schedules_topic=topics.schedules, answers_topic=topics.answers,
        late_topic=topics.late, invalid_topic=topics.quarantine, group_id=f"ar-rv-{unique}", wait=False))
    decoy = archive.start(stack, topics, where, wait=False)
    ids.append(decoy)
    try:
        for jid in ids:
            jobs.wait_running(jid, stack, timeout=180)
        gen = TransactionGenerator(seed=4, prefix=f"ar-{unique}")
        sent: list[dict] = []

        def send(n: int) -> None:
            for _ in range(n // 10):
                batch = [gen.next(int(time.time() * 1000)) for _ in range(10)]
                kafka_io.produce(stack.bootstrap_servers, topics.requests, [t.request for t in batch],
                                 key=lambda r: r["request_id"].encode())
                kafka_io.produce(stack.bootstrap_servers, topics.labels, [Label(
                    request_id=t.request["request_id"], outcome="fraud" if t.is_fraud else "legit",
                    positive=t.is_fraud, event_time_ms=t.request["event_time_ms"], known_at_ms=int(time.time() * 1000)
                ).to_json() for t in batch], key=lambda v: json.loads(v)["request_id"].encode())
                sent.extend(t.request for t in batch)
                time.sleep(0.1)

        send(200)
        wait_archived(where, "requests", 1, timeout=120)  # a checkpoint published the first files
        before = failures(decoy, stack)
        os.kill(read_pid(flink_pid_files(stack)["taskmanager"]), signal.SIGKILL)  # mid-archiving
        send(200)
        deadline = time.monotonic() + 120  # the JobManager notices the lost TaskManager, then restarts the jobs
        while failures(decoy, stack) == before and time.monotonic() < deadline:
            time.sleep(1)
        assert failures(decoy, stack) > before, "the kill did not fail the decoy over"
        for jid in ids:
            jobs.wait_running(jid, stack, timeout=240, recovering=True)
        ids_sent = {r["request_id"] for r in sent}
        kafka_io.consume(stack.bootstrap_servers, topics.answers, timeout=240,
                         until=lambda vs: {json.loads(v)["request_id"] for v in vs} >= ids_sent)
        settle(stack, ids[:-1], [[topics.requests], [topics.augmented], [topics.augmented],
                                 [topics.augmented, topics.scores]])
        yield {"topics": topics, "archive": where, "sent": sent, "plane": plane, "schedule": sched, "jobs": ids}
    finally:
        archive.stop(stack, topics)
        try:
            jobs.cancel_all(ids, stack)  # side by side: one by one, each took seconds to end, its TaskManagers to stop
        except Exception:
            pass


def settle(stack, job_ids: list[str], inputs: list[list[str]]) -> None:
    """Every job has processed all of its inputs and written what it made of them (so the topics the test compares
    the archive with are final: a model job replaying after the kill, e.g. the canary, which no answer waits for,
    may still be writing scores when the last answer is out). In pipeline order; for each job, checkpoints until
    its committed offsets reach its inputs' ends, then one more: its sink flushed what the records before made."""
    from control.ops import handover
    from jobs.common.entry import SETTINGS

    for jid, topics in zip(job_ids, inputs):
        group = json.loads(jobs.job_parameters(jid, stack)[SETTINGS])["group_id"]
        handover.wait_committed(jid, stack, group, handover.end_offsets(stack, topics), 180, f"job {jid} settling")
        handover.checkpoint(jid, stack)


def wait_archived(where: str, table: str, rows: int, timeout: float) -> int:
    """Wait until the archived table has at least `rows` rows (files are published at checkpoints)."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        try:
            n = archive.read(table, where, columns=["request_id"]).num_rows
        except archive.ArchiveError:
            n = 0
        if n >= rows:
            return n
        time.sleep(1)
    raise AssertionError(f"the archive's {table} has {n} rows after {timeout:.0f} s, expected {rows}")


def topic_rows(stack, topic: str) -> list[dict]:
    return [dict(json.loads(r.value), kafka_time_ms=r.timestamp)
            for r in kafka_io.records_to_end(stack.bootstrap_servers, topic)]


def test_the_archive_holds_every_record_exactly_once_through_a_taskmanager_kill(stack, archived):
    t, where, sent = archived["topics"], archived["archive"], archived["sent"]
    # every table reaches the topic's record count: nothing lost; and no more than it: nothing duplicated
    expected = {"requests": topic_rows(stack, t.augmented), "scores": topic_rows(stack, t.scores),
                "answers": topic_rows(stack, t.answers), "labels": topic_rows(stack, t.labels)}
    for table, rows in expected.items():
        wait_archived(where, table, len(rows), timeout=120)
    got = {table: archive.read(table, where).to_pylist() for table in expected}
    for table, rows in expected.items():
        def ident(r):
            return (r["request_id"], r.get("model_id"), r["kafka_time_ms"])
        assert Counter(map(ident, got[table])) == Counter(
            (r.get("request", r)["request_id"], r.get("model_id"), r["kafka_time_ms"]) for r in rows), table
    # per hour, the requests sent (their event time's hour, UTC). The external-state job's sink is at least
    # once: after the kill it wrote some requests twice, and the models saw (and scored) both copies, so the
    # archive holds both too (equal to the topic, above); by request id, the hours hold exactly what was sent
    per_hour = Counter(hour_of(r["event_time_ms"]) for r in sent)
    assert Counter((r["dt"], r["hr"]) for r in {r["request_id"]: r for r in got["requests"]}.values()) == per_hour
    assert {r["request_id"] for r in got["requests"]} == {r["request_id"] for r in sent} and len(sent) == 400
    print(f"[archive] {len(got['requests'])} archived requests for {len(sent)} sent (more: written twice "
          f"upstream by the failover), {len(got['scores'])} scores, {len(got['answers'])} answers")
    # as the models saw them: the augmented record's JSON, and its fields as columns
    aug = {json.loads(r["augmented_json"])["request"]["request_id"]: r for r in got["requests"]}
    some = next(iter(aug.values()))
    raw = json.loads(some["augmented_json"])
    assert some["amount"] == raw["request"]["amount"] and some["entity_seq"] == raw["entity_seq"]
    assert some["amount_zscore"] == raw["features"]["amount_zscore"] and some["feature_version"] == "features-v1"
    # scores and answers equal the topics' (outputs, errors, times, choices; a model job replayed by the kill
    # scored some requests twice: both copies are in the topic, so both are in the archive)
    def score(r, output):
        return (r["request_id"], r["model_id"], r["kafka_time_ms"], r["finished_at_ms"], r["error"],
                tuple(sorted((k, float(v)) for k, v in output)))
    assert Counter(score(r, r["output"] or []) for r in got["scores"]) == Counter(
        score(x, (x["output"] or {}).items()) for x in expected["scores"])
    def answer(r):
        return (r["request_id"], r["model"], r["trigger"], r["stage"], r["schedule_version"], r["answered_at_ms"])
    assert Counter(map(answer, got["answers"])) == Counter(map(answer, expected["answers"]))


def test_explain_tells_the_story_from_the_topics_and_from_the_archive_alone(stack, archived):
    from click.testing import CliRunner

    from control.ops import explain
    from tools.cli import main

    t, where = archived["topics"], archived["archive"]
    rid = archived["sent"][7]["request_id"]
    live = explain.story_of(rid, stack, t, where, source="live")
    assert live.source == "live topics" and live.augmented.request.request_id == rid
    assert {x.key for x in live.scores} >= {CHAMPION.key, CANARY.key}
    assert len(live.answers) == 1 and live.answers[0].schedule_version == archived["schedule"].version
    assert live.schedule == archived["schedule"] and live.labels and live.labels[0].request_id == rid
    # from the archive only: a topic set that never held it (auto falls back to the archive)
    gone = TopicNames.suffixed(f"none{os.urandom(4).hex()}")
    old = explain.story_of(rid, stack, gone, where, source="auto")
    assert old.source.startswith("archive")
    assert old.augmented == live.augmented  # exactly as the models read it
    assert sorted((x.key, x.finished_at_ms, x.output) for x in old.scores) == sorted(
        (x.key, x.finished_at_ms, x.output) for x in live.scores)
    assert [a.model_dump() for a in old.answers] == [a.model_dump() for a in live.answers]
    assert old.labels == live.labels
    res = CliRunner().invoke(main, ["explain", rid, "--source", "archive", "--archive", where,
                                    "--topics-suffix", t.requests.removeprefix("requests-")])
    assert res.exit_code == 0, res.output
    assert f"request {rid}" in res.output and "why: " in res.output and CHAMPION.key in res.output
    assert f"schedule v{archived['schedule'].version}" in res.output and "features features-v1" in res.output
    missing = CliRunner().invoke(main, ["explain", "no-such-id", "--source", "archive", "--archive", where])
    assert missing.exit_code == 3 and "not found" in missing.output


def test_replay_reproduces_the_champion_and_reports_a_shifted_model_s_disagreement(stack, archived, tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from control.ops import replay
    from tools.cli import main

    t, where = archived["topics"], archived["archive"]
    recorded = {}
    for r in archive.read("scores", where).to_pylist():
        if (r["model_id"], r["model_version"]) == (CHAMPION.model_id, CHAMPION.version):
            recorded[r["request_id"]] = float(dict(r["output"])["fraud_probability"])
    same = replay.replay(CHAMPION, stack, t, where, out_dir=tmp_path / "same", progress=None)
    assert (same.requests, same.scored, same.compared, same.against) == (400, 400, 400, CHAMPION.key)
    # the same code on the same archived input: the same decisions, and the same probabilities up to the last
    # bits (scikit-learn scores a batch at a time; another batch size rounds a few ulps differently)
    assert same.agreement == 1.0 and same.disagreements == [] and same.max_abs_diff < 1e-12
    replayed = {r["request_id"]: r["score"] for r in pq.read_table(tmp_path / "same" / "scores.parquet").to_pylist()}
    assert replayed.keys() == recorded.keys()
    assert [replayed[k] for k in recorded] == pytest.approx(list(recorded.values()), rel=1e-9, abs=1e-15)
    print(f"[replay] champion over {same.requests} archived requests: max |difference| {same.max_abs_diff:.2g}, "
          f"p50 {same.p50_ms} ms, p99 {same.p99_ms} ms, worker peak {same.peak_rss_mb} MiB")
    assert same.labelled == 400 and same.peak_rss_mb and same.peak_rss_mb > 50 and same.p99_ms is not None

    shifted = CHAMPION.model_copy(update={"model_id": "fraud-shifted", "version": "1",
                                          "params": {**CHAMPION.params, "score_shift": -0.6}})
    card = tmp_path / "shifted.json"
    card.write_text(shifted.model_dump_json())
    # the card's artifact is absolute (ModelCard.load resolved it): the copy loads the same model
    res = CliRunner().invoke(main, ["replay", str(card), "--archive", where, "--out", str(tmp_path / "shifted"),
                                    "--topics-suffix", t.requests.removeprefix("requests-"), "--json",
                                    "--fail-if", "agreement<0.999", "--fail-if", "p99_ms>100000"])
    assert res.exit_code == 1, res.output  # the agreement condition holds: the gate fails
    report = json.loads(res.output)
    flagged = sum(1 for p in recorded.values() if p >= 0.5)
    assert flagged > 0 and report["compared"] == 400
    assert report["disagreement"] == pytest.approx(flagged / 400)  # exactly the champion's frauds fall below
    assert report["recall"] == 0.0 and report["against_recall"] > 0.5
    assert [f.split(" ")[0] for f in report["failed"]] == ["agreement<0.999"]


def test_the_archive_is_queryable_with_rendezvous_sql(stack, archived):
    from control.ops import sql as sql_lib

    where = archived["archive"]
    s = stack.model_copy(update={"archive_override": where})
    r = sql_lib.query("SELECT 'requests', COUNT(DISTINCT request_id) FROM archive_requests UNION ALL "
                      "SELECT 'answers', COUNT(*) FROM archive_answers UNION ALL "
                      "SELECT 'scores', COUNT(*) FROM archive_scores", s, archived["topics"])
    got = dict(r.rows)
    assert got == {"requests": 400, "answers": 400, "scores": archive.read("scores", where).num_rows}
    by_model = sql_lib.query("SELECT model, COUNT(*) FROM archive_answers GROUP BY model", s, archived["topics"])
    assert dict(by_model.rows) == Counter(a["model"] for a in archive.read("answers", where).to_pylist())
    print(f"[archive] answers by model, in SQL over the archive: {dict(by_model.rows)}")
