"""The cascade scenario's pure parts (tools.cascade, model_udfs.cascade_runners): the seed's figures 6-1/6-2
hold on the generated traffic, window by window, and `summarise` reads them from metrics rows."""

from __future__ import annotations

import asyncio

import pytest

from model_udfs.base import make_runner
from schemas.records import Metrics
from tools import cascade
from tools.cascade import A_PRIME, CASCADE, A, B, CascadeTraffic


def run_models(a_key: str, n: int = 2000, prefix: str = "t"):
    """Scores of A (or A'), B after it and the cascade over both, for n transactions."""
    cards = cascade.cards()
    a, b, c = (make_runner(cards[k]) for k in (a_key, B, CASCADE))
    traffic = CascadeTraffic(prefix)

    async def go():
        out = []
        for _ in range(n):
            req, fraud = traffic.next(0)
            sa = await a.predict(req, {})
            ia = {"model": a_key, "output": sa, "error": None}
            sb = await b.predict(req, {"inputs": {"cascade-a": ia}})
            sc = await c.predict(req, {"inputs": {"cascade-a": ia, "cascade-b": {"model": B, "output": sb,
                                                                               "error": None}}})
            out.append((fraud, sa, sb, sc))
        return out

    return asyncio.run(go())


def recall(rows, i):
    judged = [(f, r[i]) for f, *r in rows if f and "fraud_probability" in r[i]]
    return sum(s["fraud_probability"] >= 0.5 for _, s in judged) / len(judged)


def test_traffic_is_half_red_half_fraud_and_deterministic():
    t1, t2 = CascadeTraffic("x"), CascadeTraffic("x")
    reqs = [t1.next(i) for i in range(1000)]
    assert reqs == [t2.next(i) for i in range(1000)]
    colours = [r["payload"]["hidden"]["colour"] for r, _ in reqs]
    assert colours.count("red") == 500 and sum(f for _, f in reqs) == 500
    assert all(r["payload"]["hidden"]["fraud"] == f for r, f in reqs)


def test_the_seeds_figures_hold_on_the_generated_traffic_in_every_stretch():
    before, after = run_models(A), run_models(A_PRIME)
    for lo in range(0, 2000, 400):  # a window of 400 transactions (10 s at 40/s)
        w1, w2 = before[lo:lo + 400], after[lo:lo + 400]
        assert recall(w1, 0) == pytest.approx(0.4, abs=0.02) and recall(w2, 0) == pytest.approx(0.7, abs=0.02)
        assert recall(w1, 1) == pytest.approx(2 / 3, abs=0.03) and recall(w2, 1) == 0.0
        assert recall(w1, 2) == pytest.approx(0.8, abs=0.02) and recall(w2, 2) == pytest.approx(0.7, abs=0.02)
    assert all("screened_by" in sb for f, sa, sb, _ in after if sa["fraud_probability"] >= 0.5)


def test_a_transaction_without_its_hidden_colour_is_an_error_not_a_guess():
    a = make_runner(cascade.cards()[A])
    with pytest.raises(ValueError, match="hidden colour"):
        asyncio.run(a.predict({"payload": {}}, {}))
    c = make_runner(cascade.cards()[CASCADE])
    with pytest.raises(ValueError, match="no input has a score"):
        asyncio.run(c.predict({}, {"inputs": {"cascade-a": {"model": A, "output": None, "error": "boom"}}}))


def acc(model, start, tp, fn):
    return Metrics(kind="accuracy", window_start_ms=start, window_end_ms=start + 10, model=model, count=tp + fn,
                   tp=tp, fn=fn)


def test_summarise_sums_the_windows_wholly_inside_each_span():
    rows = [acc(CASCADE, 0, 8, 2), acc(CASCADE, 10, 16, 4), acc(CASCADE, 15, 0, 100), acc(CASCADE, 30, 7, 3),
            acc(B, 0, 4, 2), Metrics(kind="model", window_start_ms=0, window_end_ms=10, model=CASCADE, count=3)]
    got = cascade.summarise(rows, (0, 20), (30, 40))
    assert got[CASCADE]["before"] == cascade.Recall(24, 30, 2) and got[CASCADE]["before"].value == 0.8
    assert got[CASCADE]["after"].value == 0.7 and got[B]["before"].value == 4 / 6
    assert got[A_PRIME]["before"].value is None


def test_metrics_attribute_every_keeps_attributing_until_interrupted(monkeypatch):
    """`rendezvous metrics attribute --every N`: each pass's new rows are printed as they are written."""
    import time

    from click.testing import CliRunner

    from control.ops import attribution
    from schemas.records import Metrics
    from tools.cli import main

    rows = [[Metrics(kind="attribution", window_start_ms=0, window_end_ms=10_000, model="b@1", figure="recall",
                     count=9, before=0.6, after=0.0, versus="a@2", trigger="job_submitted", event_at_ms=5_000)], []]
    passes = []

    def run_once(topics=None):
        passes.append(topics)
        if len(passes) > len(rows):
            raise KeyboardInterrupt
        return rows[len(passes) - 1]

    monkeypatch.setattr(attribution, "run_once", run_once)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    res = CliRunner().invoke(main, ["metrics", "attribute", "--every", "5"])
    assert res.exit_code == 0, res.output
    assert len(passes) == 3 and res.output.count("b@1") == 1 and "a@2" in res.output
