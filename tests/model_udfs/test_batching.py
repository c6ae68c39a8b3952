"""BatchingRunner and the batched scikit-learn runner (no JVM)."""

import asyncio
from pathlib import Path

import pytest

from model_udfs.base import BatchingRunner, make_runner
from schemas.model_card import ModelCard

REPO = Path(__file__).resolve().parents[2]
CHAMPION = REPO / "artifacts" / "models" / "fraud-champion" / "1.0.0" / "card.json"


class Doubler(BatchingRunner):
    async def predict_batch(self, requests, features):
        if any(r.get("fail") for r in requests):
            raise RuntimeError("batch failed")
        return [{"y": r["x"] * 2} for r in requests]


def card(**params):
    return ModelCard(model_id="d", version="1", runner="tests.model_udfs.test_batching:Doubler", params=params)


def test_calls_in_flight_are_scored_as_one_batch_in_order():
    async def scenario():
        r = Doubler(card())
        outs = await asyncio.gather(*(r.predict({"x": i}, {}) for i in range(10)))
        return r, outs

    r, outs = asyncio.run(scenario())
    assert outs == [{"y": 2 * i} for i in range(10)]
    assert (r.batches, r.rows) == (1, 10)


def test_batches_are_bounded_and_a_failing_batch_fails_each_call():
    async def scenario():
        r = Doubler(card(max_batch_size=4))
        outs = await asyncio.gather(*(r.predict({"x": i}, {}) for i in range(10)))
        failing = await asyncio.gather(r.predict({"x": 1, "fail": True}, {}), r.predict({"x": 2}, {}),
                                       return_exceptions=True)
        return r, outs, failing

    r, outs, failing = asyncio.run(scenario())
    assert outs == [{"y": 2 * i} for i in range(10)] and r.batches == 3
    assert all(isinstance(f, RuntimeError) for f in failing)


def test_a_timed_out_call_does_not_block_the_batch():
    async def scenario():
        r = Doubler(card(max_batch_wait_ms=50))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.predict({"x": 1}, {}), 0.001)
        return await r.predict({"x": 3}, {})

    assert asyncio.run(scenario()) == {"y": 6}


@pytest.mark.skipif(not CHAMPION.exists(), reason="demo models not trained (make setup)")
def test_batched_sklearn_equals_row_by_row():
    import joblib

    from jobs.external_state.features import EntityState, FeatureComputer
    from schemas.features import feature_vector
    from schemas.records import Request
    from training.synthetic import TransactionGenerator

    c = ModelCard.load(CHAMPION)
    gen, fc, st = TransactionGenerator(seed=3), FeatureComputer(), {}
    rows = []
    for i in range(200):
        req = Request.model_validate(gen.next(1_700_000_000_000 + i * 1000).request)
        f = fc.update(st.setdefault(req.entity_id, EntityState()), req)
        rows.append((req.model_dump(), f.model_dump()))
    model = joblib.load(c.artifact)
    expected = [float(model.predict_proba([feature_vector(r, f)])[0][1]) for r, f in rows]

    async def scenario():
        runner = make_runner(c)
        await runner.load()
        return runner, await asyncio.gather(*(runner.predict(r, f) for r, f in rows))

    runner, outs = asyncio.run(scenario())
    assert runner.batches < len(rows) / 10  # batched for real
    assert [o["fraud_probability"] for o in outs] == pytest.approx(expected, abs=1e-12)


@pytest.mark.skipif(not CHAMPION.exists(), reason="demo models not trained (make setup)")
def test_score_shift_moves_each_probability_and_clips():
    from jobs.external_state.features import EntityState, FeatureComputer
    from schemas.records import Request
    from training.synthetic import TransactionGenerator

    c = ModelCard.load(CHAMPION)
    shifted = c.model_copy(update={"params": {**c.params, "score_shift": -0.4}})
    gen, fc, st = TransactionGenerator(seed=5), FeatureComputer(), {}
    rows = []
    for i in range(400):
        req = Request.model_validate(gen.next(1_700_000_000_000 + i * 1000).request)
        rows.append((req.model_dump(), fc.update(st.setdefault(req.entity_id, EntityState()), req).model_dump()))

    async def scores(card):
        runner = make_runner(card)
        await runner.load()
        return [o["fraud_probability"] for o in await asyncio.gather(*(runner.predict(r, f) for r, f in rows))]

    base, moved = asyncio.run(scores(c)), asyncio.run(scores(shifted))
    assert moved == pytest.approx([max(0.0, p - 0.4) for p in base], abs=1e-12)
    assert any(p > 0.4 for p in base) and any(p < 0.4 for p in base)  # both sides of the clip are exercised
