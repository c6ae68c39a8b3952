"""Strict request validation: a request is either valid or a QuarantineRecord with reasons. Never raises."""

from __future__ import annotations

from pydantic import ValidationError

from schemas.records import MAX_RECORD_BYTES, QuarantineRecord, Reason, Request

_CODES = {
    "json_invalid": "malformed_json",
    "json_type": "malformed_json",
    "model_type": "not_an_object",
    "model_attributes_type": "not_an_object",
    "missing": "missing",
    "extra_forbidden": "unknown_field",
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "less_than_equal": "out_of_range",
    "string_too_short": "out_of_range",
    "string_too_long": "out_of_range",
    "finite_number": "out_of_range",
}


def _code(error_type: str) -> str:
    if error_type in _CODES:
        return _CODES[error_type]
    if error_type.endswith("_type") or error_type.endswith("_parsing"):
        return "wrong_type"
    return "invalid"


def reasons_of(err: ValidationError) -> list[Reason]:
    out = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e.get("loc", ())) or None
        out.append(Reason(code=_code(e["type"]), field=loc, message=e.get("msg", "invalid")))
    return out


def validate(raw: str | bytes | None, source_topic: str = "requests") -> Request | QuarantineRecord:
    """Parse and validate one raw record from the requests topic (None: a record with a null value)."""
    if raw is None:
        return QuarantineRecord.of(None, [Reason(code="null_value", message="the record has no value (null)")],
                                   source_topic)
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else raw
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_RECORD_BYTES:
        return QuarantineRecord.of(text, [Reason(code="too_large", message=f"{size} bytes; at most "
                                                 f"{MAX_RECORD_BYTES} are accepted")], source_topic)
    try:
        return Request.parse(text)
    except ValidationError as e:
        reasons = reasons_of(e)
    except Exception as e:  # noqa: BLE001 - whatever happens, the record is accounted for
        reasons = [Reason(code="invalid", message=f"{type(e).__name__}: {e}")]
    return QuarantineRecord.of(text, reasons, source_topic)
