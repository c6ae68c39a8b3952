"""The gateway's waiters (asyncio, no Kafka): first answer wins, callers of one id share one request, answers
outlive the callers who gave up, failures reach the callers and let a retry send again."""

import asyncio

import pytest

from gateway.router import DeliveryFailed, Router

K = ("fraud", "r1")


def run(coro):
    return asyncio.run(coro)


def test_the_first_answer_wins_and_a_later_different_one_is_counted():
    async def go():
        r = Router()
        fut, new = r.attach(K)
        assert new
        r.deliver(K, {"model": "a@1", "output": {"p": 1}})
        r.deliver(K, {"model": "b@1", "output": {"p": 2}})
        r.deliver(K, {"model": "a@1", "output": {"p": 1}})
        assert (await fut)["model"] == "a@1"
        r.detach(K, fut)
        assert (r.duplicates, r.conflicting, r.waiting) == (2, 1, 0)
        assert r.answered(K)["model"] == "a@1"
    run(go())


def test_callers_of_one_id_share_one_waiter_and_one_request():
    async def go():
        r = Router()
        f1, new1 = r.attach(K)
        f2, new2 = r.attach(K)
        assert f1 is f2 and new1 and not new2
        r.detach(K, f1)  # one gave up: the other still waits
        assert not f1.cancelled() and r.waiting == 1
        r.deliver(K, {"model": "a@1"})
        assert (await f2)["model"] == "a@1"
    run(go())


def test_an_answer_after_everyone_gave_up_is_remembered_for_the_next_call():
    async def go():
        r = Router(recent=2)
        fut, _ = r.attach(K)
        r.detach(K, fut)
        assert fut.cancelled() and r.waiting == 0
        r.deliver(K, {"model": "late@1"})
        assert r.unclaimed == 1 and r.answered(K)["model"] == "late@1"
        r.deliver(("fraud", "r2"), {})
        r.deliver(("fraud", "r3"), {})
        assert r.answered(K) is None  # the oldest is forgotten beyond `recent`
    run(go())


def test_a_failed_delivery_fails_the_callers_and_a_retry_sends_again():
    async def go():
        r = Router()
        fut, _ = r.attach(K)
        r.fail(K, "broker said no")
        with pytest.raises(DeliveryFailed, match="broker said no"):
            await fut
        r.detach(K, fut)
        again, new = r.attach(K)
        assert new and again is not fut
    run(go())
