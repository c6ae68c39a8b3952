"""SQL over the streams: bounded queries of the topics as they are (`rendezvous sql "SELECT ..."`) and a
continuous INSERT INTO job (`rendezvous sql -f FILE.sql`)."""

import json
import time

import pytest
from click.testing import CliRunner

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import jobs
from control.ops import sql as sql_lib
from schemas.records import Answer, ModelTiming, QuarantineRecord, Reason, Score
from schemas.topics import TopicNames, TopicSpec

pytestmark = pytest.mark.e2e

T0 = 1_760_000_000_000


def _answer(i: int, model: str | None, trigger: str) -> Answer:
    mid, _, ver = (model or "").partition("@")
    timings = {model: ModelTiming(model_version=ver, latency_ms=10 + i, finished_at_ms=T0 + i, arrived_after_ms=i)} \
        if model else {}
    return Answer(request_id=f"r{i}", model_id=mid or None, model_version=ver or None, model=model,
                  output={"fraud_probability": 0.25 * (i % 4), "label": "ok", "n": i}, stage=0 if model else None,
                  trigger=trigger, is_default=model is None, schedule_version=1, request_time_ms=T0 + i,
                  received_at_ms=T0 + i, answered_at_ms=T0 + i + 5, timings=timings)


ANSWERS = ([_answer(i, "champion@1", "preferred") for i in range(4)]
           + [_answer(i, "challenger@2", "deadline") for i in range(4, 6)]
           + [_answer(6, "champion@1", "deadline"), _answer(7, None, "default")])
SCORES = [Score(request_id=f"r{i}", model_id=m, model_version=v, output={"fraud_probability": p},
                request_time_ms=T0 + i, received_at_ms=T0 + i, started_at_ms=T0 + i, finished_at_ms=T0 + i + ms)
          for i, (m, v, p, ms) in enumerate([("champion", "1", 0.9, 12), ("challenger", "2", 0.2, 30),
                                              ("champion", "1", 0.1, 8), ("challenger", "2", 0.15, 40)])]


@pytest.fixture(scope="module")
def streams(stack):
    """A suffixed topic set with known answers, scores and one quarantined record."""
    import uuid

    suffix = uuid.uuid4().hex[:10]
    topics = TopicNames.suffixed(suffix)
    ensure_topics(stack.bootstrap_servers, topics.specs())
    kafka_io.produce(stack.bootstrap_servers, topics.answers, [a.to_json() for a in ANSWERS])
    kafka_io.produce(stack.bootstrap_servers, topics.scores, [s.to_json() for s in SCORES])
    kafka_io.produce(stack.bootstrap_servers, topics.quarantine, [QuarantineRecord.of(
        '{"x": 1}', [Reason(code="missing", field="request_id", message="required")], topics.requests,
        at_ms=T0).to_json()])
    return suffix, topics


def test_answers_by_model_and_trigger(stack, streams):
    _, topics = streams
    r = sql_lib.query("SELECT model, `trigger`, COUNT(*) AS n FROM answers GROUP BY model, `trigger` "
                      "ORDER BY COALESCE(model, ''), `trigger`", stack, topics)
    assert r.columns == ["model", "trigger", "n"]
    assert r.rows == [(None, "default", 1), ("challenger@2", "deadline", 2), ("champion@1", "deadline", 1),
                      ("champion@1", "preferred", 4)]


def test_free_shape_maps_nested_rows_and_metadata(stack, streams):
    _, topics = streams
    r = sql_lib.query("SELECT request_id, output['fraud_probability'] AS p, CAST(output['n'] AS INT) AS n, "
                      "timings['champion@1'].latency_ms AS lat, kafka_time IS NOT NULL AS has_time "
                      "FROM answers WHERE request_id IN ('r1', 'r7') ORDER BY request_id", stack, topics)
    assert r.rows == [("r1", "0.25", 1, 11, True), ("r7", "0.75", 7, None, True)]
    import datetime

    t = sql_lib.query("SELECT kafka_time FROM answers LIMIT 1", stack, topics)  # TIMESTAMP_LTZ, collected
    assert isinstance(t.rows[0][0], datetime.datetime)
    q = sql_lib.query("SELECT reasons[1].code, reasons[1].`field`, `raw` FROM quarantine", stack, topics)
    assert q.rows == [("missing", "request_id", '{"x": 1}')]


def test_champion_challenger_disagreement(stack, streams):
    _, topics = streams
    r = sql_lib.query("""
        SELECT c.request_id, CAST(c.output['fraud_probability'] AS DOUBLE) AS champion,
               CAST(h.output['fraud_probability'] AS DOUBLE) AS challenger
        FROM scores c JOIN scores h ON c.request_id = h.request_id
        WHERE c.model_id = 'champion' AND h.model_id = 'challenger'""", stack, topics)
    assert r.rows == []  # different requests: no pair
    r = sql_lib.query("SELECT model_id, MAX(finished_at_ms - started_at_ms) AS slowest, "
                      "AVG(CAST(output['fraud_probability'] AS DOUBLE)) AS mean_p FROM scores "
                      "GROUP BY model_id ORDER BY model_id", stack, topics)
    assert [(m, s) for m, s, _ in r.rows] == [("challenger", 40), ("champion", 12)]
    assert [round(p, 3) for _, _, p in r.rows] == [0.175, 0.5]


def test_errors_say_what_is_wrong(stack, streams):
    _, topics = streams
    with pytest.raises(sql_lib.SqlError, match="answerz"):
        sql_lib.query("SELECT * FROM answerz", stack, topics)
    with pytest.raises(sql_lib.SqlError, match="nonsense"):
        sql_lib.query("SELECT nonsense FROM answers", stack, topics)
    with pytest.raises(sql_lib.SqlError, match="rendezvous up"):
        sql_lib.query("SELECT 1", stack, topics, bootstrap="127.0.0.1:1")


def test_the_cli_prints_csv(stack, streams):
    from tools.cli import main

    suffix, _ = streams
    res = CliRunner().invoke(main, ["sql", "--topics-suffix", suffix, "--format", "csv",
                                    "SELECT `trigger`, COUNT(*) AS n FROM answers GROUP BY `trigger` "
                                    "ORDER BY `trigger`"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["trigger,n", "deadline,3", "default,1", "preferred,4"]


def test_a_continuous_job_writes_an_aggregate(stack, streams, unique, job_cleanup, tmp_path):
    suffix, topics = streams
    sink = f"sql-sink-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(sink)])
    script = f"""
    -- answers by model and trigger, kept up to date (an upsert topic: the latest value per key)
    CREATE TABLE answer_counts (
      model STRING, `trigger` STRING, n BIGINT, PRIMARY KEY (model, `trigger`) NOT ENFORCED
    ) WITH ('connector' = 'upsert-kafka', 'topic' = '{sink}', 'key.format' = 'json', 'value.format' = 'json',
            ${{kafka}});
    INSERT INTO answer_counts
    SELECT COALESCE(model, 'default'), `trigger`, COUNT(*) FROM answers GROUP BY COALESCE(model, 'default'), `trigger`;
    """
    path = tmp_path / "counts.sql"
    path.write_text(script)
    from tools.cli import main

    res = CliRunner().invoke(main, ["sql", "-f", str(path), "--topics-suffix", suffix, "--name", f"sql-{unique}"])
    assert res.exit_code == 0, res.output
    jid = res.output.strip().splitlines()[-1]
    job_cleanup.append(jid)
    assert jobs.job_state(jid, stack) == "RUNNING"

    want = {("default", "default"): 1, ("challenger@2", "deadline"): 2, ("champion@1", "deadline"): 1,
            ("champion@1", "preferred"): 4}
    latest: dict = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for k, v in kafka_io.read_to_end(stack.bootstrap_servers, sink):
            if k is not None:
                key = json.loads(k)
                latest[(key["model"], key["trigger"])] = json.loads(v)["n"] if v is not None else None
        if latest == want:
            break
        time.sleep(1)
    assert latest == want

    # it keeps counting: a new answer updates its key
    kafka_io.produce(stack.bootstrap_servers, topics.answers, [_answer(8, "challenger@2", "deadline").to_json()])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        vals = [json.loads(v) for k, v in kafka_io.read_to_end(stack.bootstrap_servers, sink)
                if k is not None and json.loads(k) == {"model": "challenger@2", "trigger": "deadline"}]
        if vals and vals[-1]["n"] == 3:
            break
        time.sleep(1)
    assert vals[-1]["n"] == 3
    jobs.cancel(jid, stack)


def one_of_each(i: int) -> dict:
    """A valid record of every stream's type (schemas.tables.TABLES), the `i`-th of its topic."""
    from schemas.records import (
        AugmentedRequest,
        Features,
        Label,
        LateScore,
        LifecycleEvent,
        Metrics,
        ModelEntry,
        QualityResult,
        Request,
        Schedule,
        Stage,
        TokenPosition,
        Transitions,
    )

    req = Request(request_id=f"q{i}", entity_id="e", event_time_ms=T0 + i, amount=1.0, merchant_category="m",
                  country="DE")
    feats = Features(entity_count=0, window_count=1, window_sum=1.0, window_ms=60_000, amount_mean=0.0,
                     amount_std=0.0, amount_zscore=0.0)
    return {
        "requests": req,
        "augmented_requests": AugmentedRequest(request=req, features=feats, entity_seq=1, augmented_at_ms=T0 + i),
        "scores": SCORES[i % len(SCORES)],
        "late_scores": LateScore(score=SCORES[i % len(SCORES)], reason="after_answer", observed_at_ms=T0 + i),
        "answers": ANSWERS[i % len(ANSWERS)],
        "quarantine": QuarantineRecord.of("{", [Reason(code="malformed_json", message="x")], "requests", at_ms=T0),
        "lifecycle": LifecycleEvent(kind="schedule_published", schedule_version=i, at_ms=T0 + i),
        "quality": QualityResult(source_topic="requests", suite_name="s", suite_version="1", batch_start_ms=T0,
                                 batch_end_ms=T0 + 1, records=i, success=True, validation_ms=1.0,
                                 validated_at_ms=T0 + i),
        "schedules": Schedule(version=i + 1, stages=[Stage(deadline_ms=10, models=["m@1"])], default_output={}),
        "registry": ModelEntry(model_id=f"m{i}", version="1", card={}, registered_at_ms=T0, stage_since_ms=T0),
        "labels": Label(request_id=f"q{i}", outcome="legit", positive=False, event_time_ms=T0, known_at_ms=T0 + i),
        "metrics": Metrics(kind="model", window_start_ms=T0, window_end_ms=T0 + 10_000, model="m@1", count=i),
        "transitions": Transitions(topic=f"requests-{i}", tokens=[TokenPosition(
            upgrade_id="u", partition=0, offset=i, owner="rendezvous#2", written_at_ms=T0 + i)]),
    }


def test_a_count_over_each_topic_equals_the_records_written(stack, unique):
    """`rendezvous sql` over every stream's table: table i's topic holds i + 1 records (a mix-up shows)."""
    from schemas.tables import TABLES
    from tools.cli import main

    topics = TopicNames.suffixed(f"cnt{unique}")
    ensure_topics(stack.bootstrap_servers, topics.specs())
    written = {}
    for n, t in enumerate(TABLES, start=1):
        recs = [one_of_each(i)[t.name] for i in range(n)]
        written[t.name] = kafka_io.produce(stack.bootstrap_servers, getattr(topics, t.topic_field),
                                           [r.to_json() for r in recs], key=lambda v: str(hash(v)).encode())
    assert set(written) == {t.name for t in TABLES}
    query = " UNION ALL ".join(f"SELECT '{t.name}' AS t, COUNT(*) AS n FROM {t.name}" for t in TABLES)
    res = CliRunner().invoke(main, ["sql", "--topics-suffix", f"cnt{unique}", "--format", "json", query])
    assert res.exit_code == 0, res.output
    counted = {row["t"]: row["n"] for row in map(json.loads, res.output.splitlines())}
    assert counted == written
