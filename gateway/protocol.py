"""The Open Inference Protocol (KServe V2 REST) on the rendezvous's records: pure functions, no I/O.

An infer request becomes one `Request` per row; an `Answer` becomes output tensors plus provenance in the
response's parameters. The mapping (README, "The gateway"):

| input tensor | datatype | Request field |
|---|---|---|
| `entity_id` | BYTES | `entity_id` |
| `amount` | FP64 (any FP, INT or UINT) | `amount` |
| `merchant_category` | BYTES | `merchant_category` |
| `country` | BYTES | `country` |
| `event_time_ms` (optional) | INT64 | `event_time_ms` (default: when the gateway received the call) |
| `payload` (optional) | BYTES, a JSON object | `payload` |

Every input has shape `[N]` or `[N, 1]`: N rows, N requests (at most `max_batch`). The request's `id` is the
request id (generated when absent); row i of a batch of N > 1 is `<id>-<i>`. Values are handed over as they
came (BYTES as text, numbers as numbers) and validated by the external-state job's own validation
(`jobs.external_state.validation`), so a bad value gets exactly the reasons its quarantine record would carry;
structural faults (no such input, a wrong shape) get reasons with the same codes.

Each key of the answer's `output` becomes an output tensor of shape `[N]` (BOOL, INT64, FP64 or BYTES; BYTES
holding JSON when the rows' values are not all of one plain type). The response's parameters carry the
provenance: `request_id`, `model` (`id@version`), `model_id`, `model_version`, `stage`, `trigger`,
`is_default`, `schedule_version`, `budget_spent`, `explored`, `request_time_ms`, `answered_at_ms` (fields an
answer does not have, e.g. the model of a default answer, are left out); for N > 1 each is a list, one value
per row.

Triton's binary tensor extension (`Inference-Header-Content-Length`, inputs with `binary_data_size`), which
its clients use by default, is read too; responses are always JSON.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from jobs.external_state.validation import validate
from schemas.records import Request, Schedule

INPUTS = ("entity_id", "amount", "merchant_category", "country", "event_time_ms", "payload")
METADATA_INPUTS = (("entity_id", "BYTES"), ("amount", "FP64"), ("merchant_category", "BYTES"), ("country", "BYTES"),
                   ("event_time_ms", "INT64"), ("payload", "BYTES"))
PROVENANCE = ("request_id", "model", "model_id", "model_version", "stage", "trigger", "is_default",
              "schedule_version", "budget_spent", "explored", "request_time_ms", "answered_at_ms")
BINARY_HEADER = "Inference-Header-Content-Length"
BUDGET_HEADER = "X-Budget-Ms"
"""A caller's budget as an HTTP header (the `budget_ms` request parameter says the same and wins)."""

_NUMPY_TYPES = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
                "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
DATATYPES = frozenset(_NUMPY_TYPES) | {"BYTES", "BF16"}


def reason(code: str, field: str | None, message: str) -> dict:
    """A reason as the quarantine records carry them (`schemas.records.Reason`)."""
    return {"code": code, "field": field, "message": message}


class BadRequest(Exception):
    """An infer request the gateway refuses (HTTP 400), with its reasons."""

    def __init__(self, reasons: list[dict]):
        super().__init__(reasons[0]["message"] if reasons else "invalid inference request")
        self.reasons = reasons


@dataclass
class InferCall:
    """A valid infer request: its requests (one per row), the caller's id and budget, the outputs asked for."""

    id: str | None
    requests: list[Request]
    budget_ms: float | None = None
    outputs: list[str] | None = None
    row_ids: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ request
def parse_infer(body: bytes, headers: dict[str, str], now_ms: int, reply_to: str | None = None,
                max_batch: int = 64, max_budget_ms: float = 60_000.0) -> InferCall:
    """The requests an infer body asks for, or `BadRequest` with every reason found. Never raises anything else."""
    try:
        return _parse(body, {k.lower(): v for k, v in headers.items()}, now_ms, reply_to, max_batch, max_budget_ms)
    except BadRequest:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the body, the caller gets a 400 with a reason, never a crash
        raise BadRequest([reason("invalid", None, f"unreadable inference request ({type(e).__name__}: {e})")])


def _parse(body: bytes, headers: dict[str, str], now_ms: int, reply_to: str | None, max_batch: int,
           max_budget_ms: float) -> InferCall:
    header, binary = _split_binary(body, headers)
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest([reason("malformed_json", None, f"the body is not JSON: {e}")])
    if not isinstance(doc, dict):
        raise BadRequest([reason("not_an_object", None, "an inference request is a JSON object with 'inputs'")])
    problems = [reason("unknown_field", k, f"not a field of an inference request: {k!r}")
                for k in doc if k not in ("id", "inputs", "outputs", "parameters")]
    call_id = doc.get("id")
    if call_id is not None and (not isinstance(call_id, str) or not call_id):
        problems.append(reason("wrong_type", "id", "the request id is a non-empty string"))
        call_id = None
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        problems.append(reason("wrong_type", "parameters", "parameters is a JSON object"))
        params = {}
    budget_ms = _budget(params, headers, max_budget_ms, problems)
    outputs = _requested_outputs(doc.get("outputs"), problems)
    columns, rows = _columns(doc.get("inputs"), binary, max_batch, problems)
    if problems:  # the tensors do not make rows; a missing input is the validation's to say (`missing`)
        raise BadRequest(problems)
    base = call_id or f"gw-{uuid.uuid4().hex}"
    row_ids = [base] if rows == 1 else [f"{base}-{i}" for i in range(rows)]
    requests: list[Request] = []
    for i, rid in enumerate(row_ids):
        rec: dict[str, Any] = {"request_id": rid}
        for name in INPUTS:
            if name in columns:
                rec[name] = columns[name][i]
        rec.setdefault("event_time_ms", now_ms)
        if isinstance(rec.get("payload"), str):
            rec["payload"] = _json_or_text(rec["payload"])
        if reply_to is not None:
            rec["reply_to"] = reply_to
        checked = validate(json.dumps(rec, allow_nan=True))
        if isinstance(checked, Request):
            requests.append(checked)
        else:
            problems += [{**r.model_dump(), **({"row": i} if rows > 1 else {})} for r in checked.reasons]
    if problems:
        raise BadRequest(problems)
    return InferCall(id=call_id, requests=requests, budget_ms=budget_ms, outputs=outputs, row_ids=row_ids)


def _split_binary(body: bytes, headers: dict[str, str]) -> tuple[bytes, bytes]:
    raw = headers.get(BINARY_HEADER.lower())
    if raw is None:
        return body, b""
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise BadRequest([reason("invalid", BINARY_HEADER, f"{BINARY_HEADER} is {raw!r}; the body has {len(body)} "
                                 "bytes")])
    return body[:n], body[n:]


def _budget(params: dict, headers: dict[str, str], max_budget_ms: float, problems: list[dict]) -> float | None:
    """The caller's budget in ms: parameter `budget_ms`, else header X-Budget-Ms, else Triton's `timeout`
    parameter (microseconds); None when the caller gives none."""
    for where, value, scale in (("parameters.budget_ms", params.get("budget_ms"), 1.0),
                                (BUDGET_HEADER, headers.get(BUDGET_HEADER.lower()), 1.0),
                                ("parameters.timeout", params.get("timeout"), 1e-3)):
        if value is None:
            continue
        if isinstance(value, str) and where == BUDGET_HEADER:
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(reason("wrong_type", where, f"a budget is a number of {'µs' if scale < 1 else 'ms'}"))
            return None
        ms = float(value) * scale
        if not (math.isfinite(ms) and 0 < ms <= max_budget_ms):
            problems.append(reason("out_of_range", where, f"a budget is more than 0 and at most {max_budget_ms:g} ms, "
                                   f"not {ms:g} ms"))
            return None
        return ms
    return None


def _requested_outputs(outputs: Any, problems: list[dict]) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        problems.append(reason("wrong_type", "outputs", "outputs is a list of objects with a 'name'"))
        return None
    return [o["name"] for o in outputs]


def _columns(inputs: Any, binary: bytes, max_batch: int, problems: list[dict]) -> tuple[dict[str, list], int]:
    """Each input's values by name (one per row), and the number of rows."""
    if not isinstance(inputs, list) or not inputs:
        problems.append(reason("missing" if inputs is None else "wrong_type", "inputs",
                               "an inference request has a non-empty list of input tensors"))
        return {}, 0
    columns: dict[str, list] = {}
    rows: int | None = None
    offset = 0
    for k, t in enumerate(inputs):
        where = f"inputs[{k}]"
        if not isinstance(t, dict):
            problems.append(reason("not_an_object", where, "an input tensor is an object"))
            continue
        name, shape, datatype = t.get("name"), t.get("shape"), t.get("datatype")
        if isinstance(name, str):
            where = name
        tensor_params = t.get("parameters") if isinstance(t.get("parameters"), dict) else {}
        size = tensor_params.get("binary_data_size")
        if size is not None:  # consume its bytes even if the tensor is refused: the next ones follow it
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                problems.append(reason("invalid", f"{where}.parameters.binary_data_size",
                                       f"binary_data_size {size!r} does not fit the {len(binary) - offset} binary "
                                       "bytes left"))
                return columns, rows or 0
            chunk = binary[offset:offset + size]
            offset += size
        if not isinstance(name, str):
            problems.append(reason("missing" if name is None else "wrong_type", f"inputs[{k}].name",
                                   "an input tensor has a name"))
            continue
        if name not in INPUTS:
            problems.append(reason("unknown_field", name, f"no input {name!r}; inputs: {', '.join(INPUTS)}"))
            continue
        if name in columns:
            problems.append(reason("duplicate", name, f"input {name!r} is given twice"))
            continue
        if datatype not in DATATYPES or datatype == "BF16":
            problems.append(reason("wrong_type", f"{name}.datatype", f"datatype {datatype!r} is not one of "
                                   f"{', '.join(sorted(DATATYPES - {'BF16'}))}"))
            continue
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                or (len(shape) == 2 and shape[1] != 1)):
            problems.append(reason("invalid", f"{name}.shape", f"shape {shape!r}: an input is [N] or [N, 1], N rows"))
            continue
        n = shape[0]
        try:
            values = _decode(chunk, datatype) if size is not None else _flatten(t.get("data"))
        except ValueError as e:
            problems.append(reason("invalid", f"{name}.data", str(e)))
            continue
        if len(values) != n:
            problems.append(reason("invalid", f"{name}.data", f"shape {shape} holds {n} values, the data {len(values)}"))
            continue
        if datatype.startswith("FP"):
            values = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]
        if rows is None:
            rows = n
        elif n != rows:
            problems.append(reason("invalid", f"{name}.shape", f"{n} rows where the other inputs have {rows}"))
            continue
        columns[name] = values
    if rows is not None and not 1 <= rows <= max_batch:
        problems.append(reason("out_of_range", "inputs", f"{rows} rows: a call carries 1 to {max_batch} requests"))
    return columns, rows or 0


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        raise ValueError("data is a list of values (row-major, flat or nested)")
    out: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _decode(chunk: bytes, datatype: str) -> list:
    """Values of a tensor in Triton's binary form: little-endian numbers, or BYTES as 4-byte lengths + bytes."""
    if datatype == "BYTES":
        out, i = [], 0
        while i < len(chunk):
            if i + 4 > len(chunk):
                raise ValueError("truncated BYTES element length")
            (n,) = struct.unpack_from("<I", chunk, i)
            i += 4
            if i + n > len(chunk):
                raise ValueError("truncated BYTES element")
            raw = chunk[i:i + n]
            i += n
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError("a BYTES element is not UTF-8 text") from None
        return out
    import numpy as np

    dtype = np.dtype(_NUMPY_TYPES[datatype])
    if len(chunk) % dtype.itemsize:
        raise ValueError(f"{len(chunk)} bytes are not a whole number of {datatype} values")
    return np.frombuffer(chunk, dtype=dtype).tolist()


def _json_or_text(text: str) -> Any:
    """A payload tensor's JSON object (left as text when it is not JSON: validation then says wrong_type)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------------------ response
def _tensor(name: str, values: list) -> dict:
    if all(isinstance(v, bool) for v in values):
        datatype = "BOOL"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        datatype = "INT64"
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        datatype, values = "FP64", [float(v) for v in values]
    elif all(isinstance(v, str) for v in values):
        datatype = "BYTES"
    else:
        datatype, values = "BYTES", [json.dumps(v, separators=(",", ":")) for v in values]
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values}


def infer_response(model_name: str, model_version: str | None, call_id: str | None, answers: list[dict],
                   outputs: list[str] | None = None) -> dict:
    """The V2 response of answers (parsed `Answer`s, one per row, in row order)."""
    names: list[str] = []
    for a in answers:
        names += [k for k in (a.get("output") or {}) if k not in names]
    if outputs is not None:
        names = [n for n in names if n in outputs]
    tensors = [_tensor(n, [(a.get("output") or {}).get(n) for a in answers]) for n in names]
    params: dict[str, Any] = {}
    for p in PROVENANCE:
        values = [a.get(p) for a in answers]
        if len(answers) == 1:
            if values[0] is not None:
                params[p] = values[0]
        else:
            params[p] = values
    out: dict[str, Any] = {"model_name": model_name, "outputs": tensors, "parameters": params}
    if model_version is not None:
        out["model_version"] = model_version
    if call_id is not None:
        out["id"] = call_id
    return out


def error(message: str, **extra) -> dict:
    """A V2 error body (`{"error": ...}`) with anything else the caller can use."""
    return {"error": message, **extra}


# ------------------------------------------------------------------------------------------------ metadata
def last_deadline_ms(schedule: Schedule) -> int:
    return schedule.stages[-1].deadline_ms


def model_metadata(name: str, schedule: Schedule) -> dict:
    """V2 model metadata of a rendezvous: its inputs, the outputs of its active schedule's default answer, and
    the active schedule in the parameters (the version is the schedule's)."""
    return {
        "name": name,
        "versions": [str(schedule.version)],
        "platform": "rendezvous",
        "inputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in METADATA_INPUTS],
        "outputs": [{"name": out, "datatype": _tensor(out, [value])["datatype"], "shape": [-1]}
                    for out, value in schedule.default_output.items()],
        "parameters": {"schedule_name": schedule.name, "schedule_version": schedule.version,
                       "last_deadline_ms": last_deadline_ms(schedule), "deadline_from": schedule.deadline_from,
                       "models": ",".join(schedule.model_ids())},
    }
