"""Model jobs on the real stack: in-process (scikit-learn), remote (MLServer over the Open Inference
Protocol) and a failing model, each a Flink job submitted with `flink run`, each scoring every request."""

from collections import defaultdict

import joblib
import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy
from control.runtime import mlserver
from jobs.external_state.features import EntityState, FeatureComputer
from schemas.features import feature_vector
from schemas.model_card import ModelCard
from schemas.records import AugmentedRequest, Request, Score
from schemas.topics import TopicSpec
from tests.model_udfs.test_remote import free_ports
from training.synthetic import TransactionGenerator

pytestmark = pytest.mark.e2e
N = 60


def augmented(n: int, seed: int = 5) -> list[AugmentedRequest]:
    gen, fc, states = TransactionGenerator(seed=seed), FeatureComputer(), {}
    out = []
    for i in range(n):
        req = Request.model_validate(gen.next(1_700_000_000_000 + i * 1000).request)
        st = states.setdefault(req.entity_id, EntityState())
        out.append(AugmentedRequest(request=req, features=fc.update(st, req), entity_seq=st.count,
                                    augmented_at_ms=0))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from training.train import train_all

    out = tmp_path_factory.mktemp("models")
    train_all(out, n=5000, progress=lambda m: None)
    return out


def test_in_process_remote_and_failing_models_each_score_every_request(stack, unique, job_cleanup, trained,
                                                                     tmp_path):
    aug_topic, scores_topic = f"mj-aug-{unique}", f"mj-scores-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(aug_topic), TopicSpec(scores_topic)])
    http_port, grpc_port = free_ports(2)
    server = mlserver.start(trained / "fraud-challenger" / "2.0.0", http_port=http_port, grpc_port=grpc_port,
                            metrics=False, log_file=tmp_path / "mlserver.log", work_dir=tmp_path / "mlserver")
    try:
        local = ModelCard.load(trained / "fraud-champion" / "1.0.0" / "card.json")
        remote = ModelCard(model_id="fraud-challenger", version="2.0.0", runner="model_udfs.remote:KServeV2Runner",
                           params={"url": server.url, "model_name": "fraud-challenger", "model_version": "2.0.0",
                                   "output_tensor": "predict_proba"}, timeout_ms=2000)
        failing = ModelCard(model_id="flaky", version="0.1", runner="model_udfs.python_runners:ConstantRunner",
                            params={"fail_rate": 0.5, "seed": 1, "output": {"fraud_probability": 0.5}},
                            timeout_ms=500)
        common = dict(source_topic=aug_topic, sink_topic=scores_topic, start="earliest")
        for card in (local, remote, failing):
            job_cleanup.append(deploy.deploy_model(card, stack, job_name=f"mj {card.key} {unique}",
                                                   group_id=f"mj-{card.model_id}-{unique}", **common))
        reqs = augmented(N)
        kafka_io.produce(stack.bootstrap_servers, aug_topic, [a.to_json() for a in reqs])
        scores = [Score.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, scores_topic, count=3 * N,
                                                           timeout=180, idle_timeout=3)]
    finally:
        server.stop()

    by_model = defaultdict(dict)
    for sc in scores:
        by_model[sc.model_id][sc.request_id] = sc
    ids = {a.request.request_id for a in reqs}
    # every model scored every request, exactly once
    assert len(scores) == 3 * N
    for model in ("fraud-champion", "fraud-challenger", "flaky"):
        assert set(by_model[model]) == ids, model

    # in-process and remote outputs are the models' own predictions
    champion = joblib.load(local.artifact)
    challenger = joblib.load(trained / "fraud-challenger" / "2.0.0" / "model.joblib")
    for a in reqs:
        x = [feature_vector(a.request.model_dump(), a.features.model_dump())]
        rid = a.request.request_id
        c, r = by_model["fraud-champion"][rid], by_model["fraud-challenger"][rid]
        assert c.ok and r.ok, (c.error, r.error)
        assert c.output["fraud_probability"] == pytest.approx(champion.predict_proba(x)[0][1], abs=1e-9)
        assert r.output["fraud_probability"] == pytest.approx(challenger.predict_proba(x)[0][1], abs=1e-9)
        assert (c.model_version, r.model_version) == ("1.0.0", "2.0.0")
        assert c.started_at_ms <= c.finished_at_ms and c.request_time_ms == a.request.event_time_ms

    # the failing model yields error scores and its job keeps running; the others were unaffected
    flaky = by_model["flaky"].values()
    errors = [sc for sc in flaky if not sc.ok]
    assert 0 < len(errors) < N
    assert all(sc.error == "RuntimeError: model failed (injected)" and sc.output is None for sc in errors)


def test_a_model_slower_than_its_timeout_gives_timeout_error_scores(stack, unique, job_cleanup):
    aug_topic, scores_topic = f"mt-aug-{unique}", f"mt-scores-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(aug_topic), TopicSpec(scores_topic)])
    card = ModelCard(model_id="sluggish", version="1", runner="model_udfs.python_runners:ConstantRunner",
                     params={"delay_ms": 400}, timeout_ms=100)
    job_cleanup.append(deploy.deploy_model(card, stack, job_name=f"mt {unique}", source_topic=aug_topic,
                                           sink_topic=scores_topic, start="earliest", group_id=f"mt-{unique}"))
    reqs = augmented(5, seed=9)
    kafka_io.produce(stack.bootstrap_servers, aug_topic, [a.to_json() for a in reqs] + ["not a request"])
    scores = [Score.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, scores_topic, count=6, timeout=120)]
    assert len(scores) == 6
    timed_out = [s for s in scores if s.request_id]
    assert {s.request_id for s in timed_out} == {a.request.request_id for a in reqs}
    assert all(s.error == "timeout after 100 ms" for s in timed_out)
    unreadable = [s for s in scores if not s.request_id]
    assert len(unreadable) == 1 and unreadable[0].error.startswith("unreadable input")


def test_a_model_job_sheds_requests_older_than_its_bound(stack, unique, job_cleanup):
    """skip_older_than_ms: stale requests yield no score, fresh ones are scored (load shedding)."""
    import time

    aug_topic, scores_topic = f"mt-aug-{unique}", f"mt-scores-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(aug_topic), TopicSpec(scores_topic)])
    card = ModelCard(model_id="shedder", version="1", runner="model_udfs.python_runners:ConstantRunner",
                     params={"output": {"fraud_probability": 0.1}}, timeout_ms=500)
    job_cleanup.append(deploy.deploy_model(card, stack, job_name=f"mt {unique}", source_topic=aug_topic,
                                           sink_topic=scores_topic, start="earliest", group_id=f"mt-{unique}",
                                           skip_older_than_ms=60_000))
    stale = augmented(5, seed=11)  # event times in 2023
    now = int(time.time() * 1000)
    fresh = [a.model_copy(update={"request": a.request.model_copy(update={"request_id": f"fresh-{i}",
                                                                          "event_time_ms": now})})
             for i, a in enumerate(augmented(3, seed=12))]
    kafka_io.produce(stack.bootstrap_servers, aug_topic, [a.to_json() for a in stale + fresh])
    # the unordered async operator may emit in any order: read the three, then prove nothing more comes
    scores = [Score.parse(v) for v in kafka_io.consume(stack.bootstrap_servers, scores_topic, count=3, timeout=120,
                                                       idle_timeout=3)]
    assert sorted(s.request_id for s in scores) == ["fresh-0", "fresh-1", "fresh-2"]
