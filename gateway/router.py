"""Routes answers to the callers waiting for them, by request id: the gateway's one table of waiters.

Runs on the event loop (the Kafka thread hands answers over with `loop.call_soon_threadsafe`). The rule is the
answer contract's (tools/answers.py): the first answer of a request id is its answer; a later one is counted,
never shown. Answers are remembered (the last `recent` of them), so a caller who timed out and asks again with
the same id gets the answer the system recorded, without a second request; callers of an id that is still in
flight share one waiter, and one request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

Key = tuple[str, str]
"""(rendezvous name, request id)."""


class DeliveryFailed(Exception):
    """The request could not be written to Kafka."""


class Router:
    def __init__(self, recent: int = 10_000):
        self.recent_capacity = recent
        self._waiting: dict[Key, list] = {}  # key -> [future, number of callers waiting on it]
        self._recent: OrderedDict[Key, dict] = OrderedDict()
        self.duplicates = 0
        self.conflicting = 0
        self.unclaimed = 0  # answers nobody waited for any more (their callers had timed out)

    def answered(self, key: Key) -> dict | None:
        """The answer already received for `key`, if it is remembered."""
        return self._recent.get(key)

    def attach(self, key: Key) -> tuple[asyncio.Future, bool]:
        """A future for `key`'s answer, and whether it is new (then the caller must send the request)."""
        entry = self._waiting.get(key)
        if entry is not None:
            entry[1] += 1
            return entry[0], False
        fut = asyncio.get_running_loop().create_future()
        self._waiting[key] = [fut, 1]
        return fut, True

    def detach(self, key: Key, fut: asyncio.Future) -> None:
        """A caller of `fut` stopped waiting (answered, timed out, gone). The last one takes the waiter away; the
        answer, when it comes, is still remembered."""
        entry = self._waiting.get(key)
        if entry is None or entry[0] is not fut:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._waiting[key]
            if not fut.done():
                fut.cancel()

    def deliver(self, key: Key, answer: dict) -> None:
        first = self._recent.get(key)
        if first is not None:
            self.duplicates += 1
            if (first.get("model"), first.get("output")) != (answer.get("model"), answer.get("output")):
                self.conflicting += 1
            return
        self._recent[key] = answer
        if len(self._recent) > self.recent_capacity:
            self._recent.popitem(last=False)
        entry = self._waiting.get(key)
        if entry is None:
            self.unclaimed += 1
        elif not entry[0].done():
            entry[0].set_result(answer)

    def deliver_many(self, batch: list[tuple[Key, dict]]) -> None:
        for key, answer in batch:
            self.deliver(key, answer)

    def fail(self, key: Key, message: str) -> None:
        """The request of `key` was not written: its callers get the error, and a retry sends it again."""
        entry = self._waiting.pop(key, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(DeliveryFailed(message))
            entry[0].exception()  # retrieved here: callers that left already would not

    @property
    def waiting(self) -> int:
        return len(self._waiting)
