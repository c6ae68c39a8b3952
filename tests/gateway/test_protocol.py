"""The V2 mapping (no Kafka, no server): tensors to requests, the quarantine's reasons for bad input, Triton's
binary form as its own client writes it, answers to responses. Whatever the body, a BadRequest or a call."""

import json
import random

import numpy as np
import pytest

from gateway import protocol
from gateway.client import infer_body
from jobs.external_state.validation import validate

TXN = {"entity_id": "card-1", "amount": 42.5, "merchant_category": "grocery", "country": "DE"}


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def tensor(name, data, datatype="BYTES", shape=None):
    return {"name": name, "shape": shape if shape is not None else [len(data)], "datatype": datatype, "data": data}


def test_one_row_is_one_request_with_the_return_address_and_the_gateways_time():
    call = protocol.parse_infer(body(infer_body({**TXN, "request_id": "r-1", "payload": {"channel": "web"}})), {},
                                now_ms=1234, reply_to="answers.gw")
    (r,) = call.requests
    assert (r.request_id, r.entity_id, r.amount, r.merchant_category, r.country) == ("r-1", "card-1", 42.5,
                                                                                      "grocery", "DE")
    assert (r.event_time_ms, r.reply_to, r.payload, call.id, call.budget_ms) == (1234, "answers.gw",
                                                                                 {"channel": "web"}, "r-1", None)


def test_a_call_without_an_id_gets_one_and_a_batch_gets_one_per_row():
    assert protocol.parse_infer(body(infer_body(TXN)), {}, 1).requests[0].request_id.startswith("gw-")
    doc = {"id": "b", "inputs": [tensor("entity_id", ["a", "b", "c"], shape=[3, 1]),
                                 tensor("amount", [1, 2.5, 3], "FP32"), tensor("merchant_category", ["x"] * 3),
                                 tensor("country", ["DE", "FR", "US"]), tensor("event_time_ms", [7, 8, 9], "INT64")]}
    call = protocol.parse_infer(body(doc), {}, 1)
    assert [(r.request_id, r.entity_id, r.amount, r.event_time_ms) for r in call.requests] == [
        ("b-0", "a", 1.0, 7), ("b-1", "b", 2.5, 8), ("b-2", "c", 3.0, 9)]


@pytest.mark.parametrize("fields", [
    {"amount": -3.0}, {"amount": 2e6}, {"country": "DEU"}, {"entity_id": ""}, {"amount": "12"},
    {"merchant_category": 5}, {"payload": [1, 2]}])
def test_a_bad_value_gets_the_reasons_its_quarantine_record_would_carry(fields):
    txn = {**TXN, **fields}
    datatypes = {"amount": "FP64" if isinstance(txn["amount"], float) else "BYTES",
                 "merchant_category": "INT64" if isinstance(txn["merchant_category"], int) else "BYTES"}
    inputs = [tensor(k, [json.dumps(v) if k == "payload" else v], datatypes.get(k, "BYTES")) for k, v in txn.items()]
    with pytest.raises(protocol.BadRequest) as e:
        protocol.parse_infer(body({"id": "r", "inputs": inputs}), {}, 5)
    quarantined = validate(json.dumps({"request_id": "r", "event_time_ms": 5, **txn}))
    assert e.value.reasons == [r.model_dump() for r in quarantined.reasons]


def test_a_missing_input_is_the_validations_missing_field():
    with pytest.raises(protocol.BadRequest) as e:
        protocol.parse_infer(body({"inputs": [tensor("amount", [1.0], "FP64")]}), {}, 5)
    assert {(r["code"], r["field"]) for r in e.value.reasons} == {("missing", "entity_id"), ("missing", "country"),
                                                                  ("missing", "merchant_category")}


@pytest.mark.parametrize("doc, code, where", [
    ([], "not_an_object", None),
    ({"inputs": []}, "wrong_type", "inputs"),
    ({"inputs": [tensor("colour", ["red"])]}, "unknown_field", "colour"),
    ({"inputs": [tensor("country", ["DE"]), tensor("country", ["FR"])]}, "duplicate", "country"),
    ({"inputs": [tensor("country", ["DE"], shape=[1, 2])]}, "invalid", "country.shape"),
    ({"inputs": [tensor("country", ["DE"], shape=[2])]}, "invalid", "country.data"),
    ({"inputs": [tensor("country", ["DE"], datatype="STRING")]}, "wrong_type", "country.datatype"),
    ({"inputs": [tensor("country", ["DE"]), tensor("amount", [1.0, 2.0], "FP64")]}, "invalid", "amount.shape"),
    ({"inputs": [tensor("country", ["DE"] * 65)]}, "out_of_range", "inputs"),
    ({"id": 7, "inputs": [tensor("country", ["DE"])]}, "wrong_type", "id"),
    ({"inputs": [tensor("country", ["DE"])], "extra": 1}, "unknown_field", "extra"),
    ({"inputs": [tensor("country", ["DE"])], "parameters": {"budget_ms": -1}}, "out_of_range", "parameters.budget_ms"),
    ({"inputs": [tensor("country", ["DE"])], "parameters": {"budget_ms": "soon"}}, "wrong_type",
     "parameters.budget_ms"),
])
def test_structural_faults_get_a_reason_with_the_quarantines_codes(doc, code, where):
    with pytest.raises(protocol.BadRequest) as e:
        protocol.parse_infer(body(doc), {}, 5)
    assert (code, where) in {(r["code"], r["field"]) for r in e.value.reasons}, e.value.reasons


def test_not_json_is_malformed_json():
    with pytest.raises(protocol.BadRequest) as e:
        protocol.parse_infer(b"{nope", {}, 5)
    assert e.value.reasons[0]["code"] == "malformed_json"


def test_the_budget_comes_from_the_parameter_the_header_or_tritons_timeout_in_microseconds():
    def budget(params=None, headers=None):
        doc = infer_body(TXN)
        if params:
            doc["parameters"] = params
        return protocol.parse_infer(body(doc), headers or {}, 1).budget_ms

    assert budget({"budget_ms": 80}) == 80.0
    assert budget(headers={"x-budget-ms": "120"}) == 120.0
    assert budget({"timeout": 250_000}) == 250.0
    assert budget({"budget_ms": 80}, {"X-Budget-Ms": "120"}) == 80.0  # the parameter wins
    assert budget() is None


def test_tritons_binary_tensors_as_its_client_writes_them():
    from tritonclient.http import InferInput
    from tritonclient.http._utils import _get_inference_request

    def inp(name, arr, dt):
        i = InferInput(name, list(arr.shape), dt)
        i.set_data_from_numpy(arr, binary_data=True)
        return i

    ins = [inp("entity_id", np.array([b"card-1", b"card-2"], dtype=object), "BYTES"),
           inp("amount", np.array([12.5, 7.0], dtype=np.float32), "FP32"),
           inp("merchant_category", np.array(["grocery", "fuel"], dtype=object), "BYTES"),
           inp("country", np.array(["DE", "FR"], dtype=object), "BYTES"),
           inp("event_time_ms", np.array([[11], [12]], dtype=np.int64), "INT64")]
    raw, header_length = _get_inference_request(ins, "bin", None, 0, False, False, 0, None, None)
    call = protocol.parse_infer(raw, {"Inference-Header-Content-Length": str(header_length)}, 1)
    assert [(r.request_id, r.entity_id, r.amount, r.country, r.event_time_ms) for r in call.requests] == [
        ("bin-0", "card-1", 12.5, "DE", 11), ("bin-1", "card-2", 7.0, "FR", 12)]
    with pytest.raises(protocol.BadRequest) as e:  # the header says more than the body has
        protocol.parse_infer(raw, {"Inference-Header-Content-Length": str(len(raw) + 1)}, 1)
    assert e.value.reasons[0]["field"] == protocol.BINARY_HEADER
    with pytest.raises(protocol.BadRequest):  # binary sizes beyond the body
        protocol.parse_infer(raw[:-3], {"Inference-Header-Content-Length": str(header_length)}, 1)


def test_no_body_makes_the_parser_raise_anything_but_bad_request():
    rng = random.Random(5)
    good = body(infer_body({**TXN, "payload": {"a": 1}}))
    pieces = [b"{", b"}", b"[", b"]", b'"inputs"', b":", b",", b"null", b"1e999", b"NaN", b'"\\ud800"', b"\xff",
              b'{"name":"amount","shape":[1],"datatype":"FP64","data":[[[[1]]]]}', b'"shape":[-1]', b"true"]
    for i in range(3000):
        if i % 2:
            raw = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw = bytes(raw)
        else:
            raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        headers = {protocol.BINARY_HEADER: str(rng.randrange(-2, len(raw) + 2))} if i % 7 == 0 else {}
        try:
            call = protocol.parse_infer(raw, headers, 1, "answers.gw")
        except protocol.BadRequest as e:
            assert e.reasons and all(set(r) >= {"code", "field", "message"} for r in e.reasons)
        else:
            assert call.requests


def test_an_answer_becomes_output_tensors_and_provenance_parameters():
    a = {"request_id": "r", "model": "m@1", "model_id": "m", "model_version": "1", "stage": 0,
         "trigger": "preferred", "is_default": False, "schedule_version": 3, "budget_spent": False,
         "output": {"fraud_probability": 0.2, "decision": "ok", "n": 3, "flag": True, "tags": ["x"]}}
    res = protocol.infer_response("fraud", "3", "r", [a])
    assert {t["name"]: (t["datatype"], t["data"]) for t in res["outputs"]} == {
        "fraud_probability": ("FP64", [0.2]), "decision": ("BYTES", ["ok"]), "n": ("INT64", [3]),
        "flag": ("BOOL", [True]), "tags": ("BYTES", ['["x"]'])}
    assert res["parameters"] == {"request_id": "r", "model": "m@1", "model_id": "m", "model_version": "1",
                                 "stage": 0, "trigger": "preferred", "is_default": False, "schedule_version": 3,
                                 "budget_spent": False}
    assert (res["model_name"], res["model_version"], res["id"]) == ("fraud", "3", "r")
    default = {**a, "model": None, "model_id": None, "model_version": None, "stage": None, "trigger": "default",
               "is_default": True, "output": {"fraud_probability": 0}}
    batch = protocol.infer_response("fraud", "3", None, [a, default], outputs=["fraud_probability"])
    assert batch["outputs"] == [{"name": "fraud_probability", "shape": [2], "datatype": "FP64", "data": [0.2, 0.0]}]
    assert batch["parameters"]["model"] == ["m@1", None] and batch["parameters"]["trigger"] == ["preferred", "default"]


def test_model_metadata_names_the_inputs_and_the_active_schedule():
    from jobs.rendezvous.schedule import BUILTIN_SCHEDULE

    meta = protocol.model_metadata("fraud", BUILTIN_SCHEDULE)
    assert meta["versions"] == ["0"] and {i["name"] for i in meta["inputs"]} == set(protocol.INPUTS)
    assert {o["name"] for o in meta["outputs"]} == set(BUILTIN_SCHEDULE.default_output)
    assert meta["parameters"]["last_deadline_ms"] == BUILTIN_SCHEDULE.stages[-1].deadline_ms


def test_the_client_helper_reads_outputs_and_provenance_and_a_default_has_no_model():
    from gateway.client import GatewayAnswer

    a = GatewayAnswer.of(protocol.infer_response("fraud", "3", "r", [{
        "request_id": "r", "model": None, "trigger": "default", "is_default": True, "schedule_version": 3,
        "output": {"fraud_probability": 0.0}}]))
    assert a.output == {"fraud_probability": 0.0} and (a.model, a.trigger, a.is_default) == (None, "default", True)
    with pytest.raises(AttributeError):
        a.colour
