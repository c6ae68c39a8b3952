"""A version of the external state taking over writes, before its token, the augmented requests of the live requests
it does not own into its shadow topic, and nothing else there (the functions called directly: no JVM; the real
hand-over: tests/e2e/test_handover.py)."""

from __future__ import annotations

import json
import time

import pytest

from jobs.common.transition import SHADOW_MAX_AGE_MS, Ownership, token_json
from jobs.external_state.features import FeatureComputer
from jobs.external_state.pipeline import QUARANTINE_TAG, AugmentWithFeatures, Validate
from jobs.external_state.settings import ExternalStateSettings
from schemas.records import AugmentedRequest, Request

NEW = "external-state#2"


class Value:  # a ValueState
    def __init__(self):
        self.v = None

    def value(self):
        return self.v

    def update(self, v):
        self.v = v

    def clear(self):
        self.v = None


def request(i: int, age_ms: int = 0) -> str:
    return Request(request_id=f"r{i}", entity_id="card-1", event_time_ms=int(time.time() * 1000) - age_ms,
                   amount=10.0 + i, merchant_category="grocery", country="DE").to_json()


def validate_all(settings: ExternalStateSettings, first: bool, records):
    v = Validate(settings)
    v.ownership = Ownership(settings.owner_name, first)  # what `open` builds, with an empty registry
    return [row for offset, raw in records for row in v.process_element(("requests", 0, offset, raw), None)
            if row[0] is not QUARANTINE_TAG]


def augment(rows, shadow_topic: str | None):
    f = AugmentWithFeatures(60_000, 30, "requests.augmented", shadow_topic)
    f.entity, f.legacy_stats, f.computer = Value(), Value(), FeatureComputer(60_000)
    return [out for r in rows for out in f.process_element(r, None)]


@pytest.mark.parametrize("shadows", [True, False])
def test_before_its_token_a_new_version_shadows_the_live_requests_only(shadows):
    s = ExternalStateSettings(owner=NEW, takes_over=True,
                              shadow_topic="requests.augmented-shadow" if shadows else None)
    token = token_json("u1", "requests", 0, NEW, "external-state", 0)
    records = [(0, request(0, age_ms=SHADOW_MAX_AGE_MS + 60_000)),  # the backlog it catches up on
               (1, request(1)), (2, "not json 2"), (3, request(3)),  # live, another version's
               (4, token), (5, request(5)), (6, "not json 6")]  # its own from the token on
    rows = validate_all(s, False, records)
    assert [(json.loads(r.request_json)["request_id"], r.mine, r.shadow) for r in rows] == \
        [("r0", False, False), ("r1", False, shadows), ("r3", False, shadows), ("r5", True, False)]
    out = augment(rows, s.shadow_topic)
    # every request went through the features (the entity's count goes on), one record each for what it writes
    assert [(t, k, AugmentedRequest.parse(p).request.request_id) for t, k, p in out] == \
        ([("requests.augmented-shadow", None, "r1"), ("requests.augmented-shadow", None, "r3")] if shadows else []) \
        + [("requests.augmented", None, "r5")]
    assert AugmentedRequest.parse(out[-1][2]).entity_seq == 4
    # bad input is quarantined by its owner only: the old version quarantined record 2, this one record 6
    v = Validate(s)
    v.ownership = Ownership(NEW, False)
    quarantined = [r for off, raw in records for r in v.process_element(("requests", 0, off, raw), None)
                   if r[0] is QUARANTINE_TAG]
    assert [json.loads(q[1])["raw"] for q in quarantined] == ["not json 6"]


def test_a_shadow_writes_what_the_version_it_takes_over_from_writes():
    """Same state, same requests: the shadow's augmented requests are the old version's, but for when."""
    old = ExternalStateSettings()
    new = ExternalStateSettings(owner=NEW, takes_over=True, shadow_topic="requests.augmented-shadow")
    records = [(i, request(i)) for i in range(5)]
    a = augment(validate_all(old, True, records), None)
    b = augment(validate_all(new, False, records), new.shadow_topic)
    assert {t for t, _, _ in a} == {"requests.augmented"} and {t for t, _, _ in b} == {new.shadow_topic}

    def content(out):
        return [AugmentedRequest.parse(p).model_dump(exclude={"augmented_at_ms"}) for _, _, p in out]

    assert content(a) == content(b) and len(a) == 5


def test_a_first_version_and_a_retiring_one_never_shadow():
    token = token_json("u1", "requests", 0, NEW, "external-state", 0)
    first = ExternalStateSettings(shadow_topic="requests.augmented-shadow")  # (a restart drops it: belt and braces)
    rows = validate_all(first, True, [(0, request(0)), (1, token), (2, request(2))])
    assert [(r.mine, r.shadow) for r in rows] == [(True, False), (False, False)]
