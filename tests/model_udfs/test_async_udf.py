"""The async UDF (no JVM): load shedding (a request older than skip_older_than_ms yields no score), its metrics."""

import asyncio
import json
import time

from model_udfs.async_udf import ModelAsyncFunction
from schemas.model_card import ModelCard
from schemas.records import Score

CARD = ModelCard(model_id="m", version="1", runner="model_udfs.python_runners:ConstantRunner",
                 params={"output": {"fraud_probability": 0.25}}, timeout_ms=500)


def augmented(age_ms: int) -> str:
    t = int(time.time() * 1000) - age_ms
    return json.dumps({"request": {"request_id": f"r{age_ms}", "event_time_ms": t}, "features": {}})


def run(fn: ModelAsyncFunction, value: str) -> list[str]:
    return asyncio.run(fn.async_invoke(value))


def test_requests_older_than_the_bound_are_not_scored_and_are_counted():
    fn = ModelAsyncFunction(CARD, skip_older_than_ms=1_000)
    assert run(fn, augmented(5_000)) == []
    fresh = run(fn, augmented(0))
    assert len(fresh) == 1 and Score.parse(fresh[0]).output == {"fraud_probability": 0.25}
    assert fn.skipped == 1


def test_without_a_bound_every_request_is_scored():
    fn = ModelAsyncFunction(CARD)
    [score] = run(fn, augmented(3_600_000))
    assert Score.parse(score).request_id == "r3600000" and fn.skipped == 0


def test_an_output_too_large_to_write_becomes_an_error_score():
    from schemas.records import MAX_RECORD_BYTES

    card = CARD.model_copy(update={"params": {"output": {"blob": "x" * MAX_RECORD_BYTES}}})
    [score] = run(ModelAsyncFunction(card), augmented(0))
    parsed = Score.parse(score)
    assert parsed.output is None and parsed.error.startswith("model output too large")


def test_a_cpu_bound_constant_model_burns_its_cpu_in_its_own_thread():
    import asyncio
    import time

    from model_udfs.python_runners import ConstantRunner

    runner = ConstantRunner(ModelCard(model_id="cpu", version="1", runner="model_udfs.python_runners:ConstantRunner",
                                      params={"cpu_ms": 30, "output": {"p": 1}}))
    t0 = time.thread_time()
    assert asyncio.run(runner.predict({"request_id": "r"}, {})) == {"p": 1}
    assert time.thread_time() - t0 >= 0.030


class FakeMetricGroup:
    """Records what the UDF registers (PyFlink's MetricGroup API)."""

    def __init__(self):
        self.groups, self.gauges = [], {}

    def add_group(self, name, extra=None):
        self.groups.append((name, extra))
        return self

    def gauge(self, name, fn):
        self.gauges[name] = fn

    def get_metrics_group(self):  # doubles as the runtime context
        return self


def test_scores_errors_latency_and_shed_requests_are_gauges_labelled_with_the_model():
    card = CARD.model_copy(update={"params": {"delay_ms": 30, "output": {"p": 1}}})
    fn, ctx = ModelAsyncFunction(card, skip_older_than_ms=1_000), FakeMetricGroup()
    fn.open(ctx)
    assert ctx.groups == [("model", "m@1")]
    values = {name: get() for name, get in ctx.gauges.items()}
    assert values.pop("peak_rss_mb") > 10  # this process's peak memory, MiB
    assert values == {"scores": 0, "errors": 0, "latency_ms_sum": 0, "skipped_stale": 0}
    run(fn, augmented(0))
    run(fn, augmented(5_000))  # shed
    run(fn, "not json")  # an error score
    values = {name: get() for name, get in ctx.gauges.items()}
    assert (values["scores"], values["errors"], values["skipped_stale"]) == (2, 1, 1)
    assert 30 <= values["latency_ms_sum"] < 1000  # the model's 30 ms, and the error score's few


def test_a_transition_token_is_passed_by_and_a_null_record_is_an_error_score():
    from jobs.common.transition import token_json

    fn = ModelAsyncFunction(CARD)
    assert run(fn, token_json("u", "requests.augmented", 0, "rendezvous#2", "rendezvous", 1)) == []
    [err] = run(fn, None)
    assert Score.parse(err).error.startswith("unreadable input")


def test_a_cascade_input_reaches_the_runner_and_missing_inputs_become_an_error_score():
    from tools.cascade import B, cards

    fn = ModelAsyncFunction(cards()[B])
    hidden = {"colour": "blue", "fraud": True, "difficulty": 0.1}
    aug = json.loads(augmented(0))
    aug["request"]["payload"] = {"hidden": hidden}
    flagged_by_a = {**aug, "inputs": {"cascade-a": {"model": "cascade-a@2", "output": {"fraud_probability": 0.9},
                                                    "error": None}}}
    [screened] = run(fn, json.dumps(flagged_by_a))
    assert Score.parse(screened).output == {"screened_by": "cascade-a@2"}
    passed = {**aug, "inputs": {"cascade-a": {"model": "cascade-a@1", "output": {"fraud_probability": 0.1},
                                              "error": None}}}
    [judged] = run(fn, json.dumps(passed))
    assert Score.parse(judged).output == {"fraud_probability": 0.9}  # a blue fraud B finds
    [missing] = run(fn, json.dumps({**aug, "inputs": {}, "inputs_missing": ["cascade-a"]}))
    assert Score.parse(missing).error == "inputs missing after 5000 ms: cascade-a"
    [no_input] = run(fn, json.dumps(aug))  # a B fed without its input: an error score that says so
    assert "has no such input" in Score.parse(no_input).error
