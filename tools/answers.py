"""The consumer's side of the answer contract: at most one visible answer per request id.

The rule (README, "The answer contract"): **the first answer of a request id in the answers topic is
its answer; ignore any later one.** The rendezvous gives one answer per request id and, after a
restore, does not answer again the requests it answered since its checkpoint (jobs/rendezvous/
recovery.py). A second record for the same id still comes when a request is repeated after the
duplicate window (`answered_retention_ms`): it is answered again, possibly differently, and this rule
keeps the first. `AnswerView` applies the rule with bounded memory.
"""

from __future__ import annotations

from collections import OrderedDict


class AnswerView:
    """Feed it the answers topic in order (`offer`); it says which records are the answer to show.
    Remembers the last `capacity` request ids (oldest forgotten first): size it above the number of
    answers within your retry horizon (e.g. 10 minutes at your peak rate)."""

    def __init__(self, capacity: int = 1_000_000):
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def offer(self, answer: dict) -> bool:
        """True when `answer` (a parsed Answer) is the first for its request id: show it. False: ignore it."""
        rid = answer.get("request_id")
        if not isinstance(rid, str):
            return False
        if rid in self._seen:
            self.duplicates += 1
            return False
        self._seen[rid] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._seen
