"""Validation and quarantine reasons (no JVM)."""

import json

import pytest

from jobs.external_state.validation import validate
from schemas.records import QuarantineRecord, Request

GOOD = {"request_id": "r1", "entity_id": "card-1", "event_time_ms": 1_700_000_000_000, "amount": 12.5,
        "merchant_category": "grocery", "country": "DE", "payload": {"channel": "web"}}


def codes(q):
    assert isinstance(q, QuarantineRecord)
    return {(r.code, r.field) for r in q.reasons}


def test_valid_request_parses():
    r = validate(json.dumps(GOOD))
    assert isinstance(r, Request) and r.amount == 12.5 and r.payload == {"channel": "web"}


def test_integer_amount_is_accepted_as_a_number():
    assert isinstance(validate(json.dumps({**GOOD, "amount": 12})), Request)


@pytest.mark.parametrize("raw, expected", [
    ("{not json", {("malformed_json", None)}),
    ("[1, 2]", {("not_an_object", None)}),
    ('"just a string"', {("not_an_object", None)}),
    (json.dumps({k: v for k, v in GOOD.items() if k != "amount"}), {("missing", "amount")}),
    (json.dumps({**GOOD, "event_time_ms": "yesterday"}), {("wrong_type", "event_time_ms")}),
    (json.dumps({**GOOD, "amount": "12.5"}), {("wrong_type", "amount")}),
    (json.dumps({**GOOD, "amount": -1}), {("out_of_range", "amount")}),
    (json.dumps({**GOOD, "amount": 1e12}), {("out_of_range", "amount")}),
    (json.dumps({**GOOD, "country": "DEU"}), {("out_of_range", "country")}),
    (json.dumps({**GOOD, "surprise": 1}), {("unknown_field", "surprise")}),
    ('{"request_id": "r", "entity_id": "e", "event_time_ms": 1, "amount": NaN, "merchant_category": "m", '
     '"country": "DE"}', {("out_of_range", "amount")}),
])
def test_bad_input_is_quarantined_with_reasons(raw, expected):
    q = validate(raw)
    assert codes(q) == expected
    assert q.raw == raw
    assert q.source_topic == "requests"


def test_several_problems_give_several_reasons():
    q = validate(json.dumps({**GOOD, "amount": "x", "country": 5, "extra": True}))
    assert codes(q) == {("wrong_type", "amount"), ("wrong_type", "country"), ("unknown_field", "extra")}


def test_undecodable_bytes_are_kept_and_quarantined():
    q = validate(b"\xff\xfe{")
    assert isinstance(q, QuarantineRecord)
    assert q.raw.endswith("{")
    assert QuarantineRecord.parse(q.to_json()) == q


def test_null_and_oversized_records_are_quarantined_in_bounded_form():
    from schemas.records import (
        MAX_QUARANTINED_RAW_CHARS,
        MAX_RECORD_BYTES,
        QuarantineRecord,
    )

    null = validate(None)
    assert isinstance(null, QuarantineRecord) and null.reasons[0].code == "null_value"
    assert (null.raw, null.raw_bytes, null.raw_truncated) == ("", 0, False)

    big = '{"request_id": "' + "é" * (MAX_RECORD_BYTES // 2) + '"}'  # 2 bytes per é: over the limit
    q = validate(big)
    assert isinstance(q, QuarantineRecord) and q.reasons[0].code == "too_large"
    assert q.raw_bytes == len(big.encode()) > MAX_RECORD_BYTES
    assert q.raw_truncated and len(q.raw) == MAX_QUARANTINED_RAW_CHARS
    assert len(q.to_json()) < 2 * MAX_QUARANTINED_RAW_CHARS + 1_000  # far below the producer's 1 MiB

    quotes = validate('"' * 600_000)
    assert quotes.reasons[0].code == "malformed_json" and quotes.raw_truncated
    assert len(quotes.to_json().encode()) < 4 * MAX_QUARANTINED_RAW_CHARS
