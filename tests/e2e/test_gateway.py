"""The gateway on the real stack: external state, a model job and the rendezvous on their own topics, a gateway
process in front, called by Triton's Open Inference Protocol client (tritonclient, written independently of
this project) and by plain HTTP. One answer per request id, the same one over HTTP and on the answers topic;
bad bodies get 400s with the quarantine's reasons; a budget shorter than the schedule gets a timeout response
before the answer exists, and the answer is still recorded."""

import json
import socket
import time
import uuid

import httpx
import numpy as np
import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from control.ops import deploy, jobs, schedules
from control.runtime import gateway as gateway_rt
from jobs.external_state.validation import validate
from schemas.model_card import ModelCard
from schemas.records import Answer
from schemas.topics import TopicNames

pytestmark = pytest.mark.e2e

NAME = "fraud"
OUTPUT = {"fraud_probability": 0.25, "decision": "approve"}
DEFAULT = {"fraud_probability": 0.0, "decision": "review"}
# one model: every answer is its own (a cold Python worker's first records take seconds: the deadline allows it)
SCHEDULE = {"name": "gw", "stages": [{"deadline_ms": 10_000, "models": ["gw-fast"]}], "default_output": DEFAULT}
# no model of this stage runs: every request is answered by the default at 2.5 s
WAITING = {"name": "gw-wait", "stages": [{"deadline_ms": 2_500, "models": ["nobody"]}], "default_output": DEFAULT}
FAST = ModelCard(model_id="gw-fast", version="1", runner="model_udfs.python_runners:ConstantRunner",
                 params={"delay_ms": 1, "output": OUTPUT}, timeout_ms=2000)
TXN = {"entity_id": "card-gw-1", "amount": 42.5, "merchant_category": "grocery", "country": "DE"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def system(stack):
    u = uuid.uuid4().hex[:8]
    t = TopicNames.suffixed(f"gw{u}")
    used = (t.requests, t.augmented, t.quarantine, t.scores, t.late, t.schedules, t.answers)
    ensure_topics(stack.bootstrap_servers, [spec for spec in t.specs() if spec.name in used])
    v1 = schedules.publish(stack.bootstrap_servers, SCHEDULE, topic=t.schedules, lifecycle_topic=None)
    ids = [deploy.deploy_external_state(stack, job_name=f"gw-es-{u}", start="earliest", source_topic=t.requests,
                                        sink_topic=t.augmented, quarantine_topic=t.quarantine,
                                        group_id=f"gw-es-{u}", wait=False),
           deploy.deploy_model(FAST, stack, job_name=f"gw-model-{u}", start="earliest", source_topic=t.augmented,
                               sink_topic=t.scores, group_id=f"gw-model-{u}", wait=False),
           deploy.deploy_rendezvous(stack, job_name=f"gw-rv-{u}", start="earliest", augmented_topic=t.augmented,
                                    scores_topic=t.scores, schedules_topic=t.schedules, answers_topic=t.answers,
                                    late_topic=t.late, invalid_topic=t.quarantine, group_id=f"gw-rv-{u}",
                                    wait=False)]
    gw = None
    try:
        for jid in ids:
            jobs.wait_running(jid, stack, timeout=180)
        port = free_port()
        gw = gateway_rt.start(stack, port=port, rendezvous={NAME: {"requests": t.requests, "answers": t.answers,
                                                                   "schedules": t.schedules}})
        yield {"stack": stack, "topics": t, "url": gw.url, "port": port, "v1": v1, "gw": gw}
    finally:
        if gw is not None:
            gw.stop()
        try:
            jobs.cancel_all(ids, stack)  # side by side: one by one, each took seconds to end, its TaskManagers to stop
        except Exception:  # noqa: BLE001
            pass


def recorded(system, rids, idle_s: float | None = None) -> list[Answer]:
    """The answers on the answers topic of these request ids (all of them; with idle_s, then nothing more for
    that long: to prove no second answer comes)."""
    want = set(rids)
    values = kafka_io.consume(system["stack"].bootstrap_servers, system["topics"].answers, timeout=120,
                              idle_timeout=idle_s, until=lambda vs: want <= {Answer.parse(v).request_id for v in vs})
    return [a for a in map(Answer.parse, values) if a.request_id in want]


def triton_inputs(rows: list[dict]):
    from tritonclient.http import InferInput

    def inp(name, values, datatype):
        arr = np.array(values, dtype=object if datatype == "BYTES" else np.float64)
        i = InferInput(name, [len(rows)], datatype)
        i.set_data_from_numpy(arr)  # Triton's binary tensor form, the client's default
        return i

    return [inp("entity_id", [r["entity_id"] for r in rows], "BYTES"),
            inp("amount", [r["amount"] for r in rows], "FP64"),
            inp("merchant_category", [r["merchant_category"] for r in rows], "BYTES"),
            inp("country", [r["country"] for r in rows], "BYTES")]


def test_a_v2_client_gets_the_rendezvous_answer_with_its_provenance(system):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{system['port']}", concurrency=2)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    meta = client.get_model_metadata(NAME)
    assert meta["versions"] == [str(system["v1"].version)] and meta["parameters"]["schedule_name"] == "gw"

    rid = f"gw-{uuid.uuid4().hex[:8]}"
    result = client.infer(NAME, triton_inputs([TXN]), request_id=rid)
    params = result.get_response()["parameters"]
    assert result.as_numpy("fraud_probability").tolist() == [OUTPUT["fraud_probability"]]
    assert result.as_numpy("decision").tolist() == [OUTPUT["decision"]]
    assert {k: params[k] for k in ("request_id", "model", "model_id", "model_version", "stage", "trigger",
                                   "is_default", "schedule_version")} == {
        "request_id": rid, "model": "gw-fast@1", "model_id": "gw-fast", "model_version": "1", "stage": 0,
        "trigger": "preferred", "is_default": False, "schedule_version": system["v1"].version}

    # asked again, twice at once: the same answer, from the gateway's memory (no second request)
    again = [client.async_infer(NAME, triton_inputs([TXN]), request_id=rid) for _ in range(2)]
    for pending in again:
        assert pending.get_result().get_response()["parameters"] == params

    # two concurrent calls of a new id share one request; both get its one answer
    rid2 = f"gw-{uuid.uuid4().hex[:8]}"
    pair = [client.async_infer(NAME, triton_inputs([{**TXN, "amount": 7.0}]), request_id=rid2) for _ in range(2)]
    first, second = (p.get_result().get_response()["parameters"] for p in pair)
    assert first == second and first["request_id"] == rid2

    # a batch of three rows: three requests, one answer each, in row order
    rows = [{**TXN, "entity_id": f"card-gw-{i}"} for i in range(3)]
    batch = client.infer(NAME, triton_inputs(rows), request_id=f"{rid}-b")
    bp = batch.get_response()["parameters"]
    assert bp["request_id"] == [f"{rid}-b-{i}" for i in range(3)] and bp["model"] == ["gw-fast@1"] * 3
    assert batch.as_numpy("fraud_probability").tolist() == [OUTPUT["fraud_probability"]] * 3
    client.close()

    # the answers topic holds exactly one answer per request id, the one the callers got
    ids = [rid, rid2] + bp["request_id"]
    answers = recorded(system, ids, idle_s=3)
    assert sorted(a.request_id for a in answers) == sorted(ids)
    a = next(a for a in answers if a.request_id == rid)
    assert (a.model, a.output, a.schedule_version, a.trigger, a.stage) == (
        params["model"], OUTPUT, params["schedule_version"], params["trigger"], params["stage"])


def test_malformed_calls_get_400s_with_reasons_and_the_gateway_stays_up(system):
    infer = f"{system['url']}/v2/models/{NAME}/infer"
    with httpx.Client(timeout=30) as http:
        def post(content=None, doc=None, headers=None, path=infer):
            return http.post(path, content=content, json=doc, headers=headers)

        r = post(content=b"{not json")
        assert r.status_code == 400 and r.json()["reasons"][0]["code"] == "malformed_json"
        r = post(doc={"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]})
        assert r.status_code == 400 and ("unknown_field", "colour") in {(x["code"], x["field"])
                                                                       for x in r.json()["reasons"]}
        r = post(doc={"inputs": [{"name": "amount", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]})
        assert r.status_code == 400 and r.json()["reasons"][0]["field"] == "amount.shape"
        r = post(content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": "999"})
        assert r.status_code == 400
        # a bad value: the reasons its quarantine record would carry
        bad = {**TXN, "amount": -5.0, "country": "DEU"}
        r = post(doc={"id": "bad-1", "inputs": [{"name": k, "shape": [1], "datatype": "FP64" if k == "amount"
                                                 else "BYTES", "data": [v]} for k, v in bad.items()]})
        q = validate(json.dumps({"request_id": "bad-1", "event_time_ms": 1, **bad}))
        assert r.status_code == 400 and r.json()["reasons"] == [x.model_dump() for x in q.reasons]
        assert {x["code"] for x in r.json()["reasons"]} == {"out_of_range"}
        assert http.post(f"{system['url']}/v2/models/nope/infer", json={}).status_code == 404
        assert http.get(f"{system['url']}/v2/models/{NAME}/infer").status_code == 405
        # still serving
        assert http.get(f"{system['url']}/v2/health/live").status_code == 200
        r = post(doc={"id": f"after-{uuid.uuid4().hex[:6]}",
                       "inputs": [{"name": k, "shape": [1], "datatype": "FP64" if k == "amount" else "BYTES",
                                   "data": [v]} for k, v in TXN.items()]})
        assert r.status_code == 200 and r.json()["parameters"]["model"] == "gw-fast@1"


def test_the_load_generator_drives_the_system_through_the_gateway(system):
    from tools.load import run_load

    t = system["topics"]
    r = run_load(system["stack"].bootstrap_servers, rate=20, duration_s=2, requests_topic=t.requests,
                 answers_topic=t.answers, drain_s=30, progress=None, gateway=system["url"], model=NAME)
    assert r.path == "gateway" and r.sent == 40
    assert r.gateway_status == {"200": 40} and r.gateway_mismatches == 0
    assert (r.answered, r.duplicate_answers, r.by_model) == (40, 0, {"gw-fast@1": 40})
    assert r.client_latency_p50_ms is not None


def test_a_budget_shorter_than_the_schedule_times_out_and_the_answer_is_still_recorded(system):
    s, t, url = system["stack"], system["topics"], system["url"]
    v2 = schedules.publish(s.bootstrap_servers, WAITING, topic=t.schedules, lifecycle_topic=None)
    infer = f"{url}/v2/models/{NAME}/infer"

    def body(rid, **params):
        return {"id": rid, "parameters": params,
                "inputs": [{"name": k, "shape": [1], "datatype": "FP64" if k == "amount" else "BYTES", "data": [v]}
                           for k, v in TXN.items()]}

    with httpx.Client(timeout=60) as http:
        # ready when both the gateway and the rendezvous go by v2: a call answered under it (default budget 2.5 s)
        for i in range(10):
            probe = http.post(infer, json=body(f"probe-{uuid.uuid4().hex[:6]}")).json()
            if probe.get("parameters", {}).get("schedule_version") == v2.version:
                break
        assert probe["parameters"]["schedule_version"] == v2.version and probe["parameters"]["is_default"]

        rid = f"short-{uuid.uuid4().hex[:8]}"
        r = http.post(infer, json=body(rid, budget_ms=150))
        responded_ms = time.time() * 1000
        assert r.status_code == 504
        err = r.json()
        assert err["request_ids"] == [rid] and err["budget_ms"] == 150 and "still answered" in err["error"]

        # the request was answered all the same, and recorded: after the caller heard it timed out
        (a,) = recorded(system, [rid])
        assert a.is_default and a.schedule_version == v2.version and a.answered_at_ms > responded_ms
        # the caller asks again with the same id: the recorded answer (once its reply reached the gateway, which
        # reads it a moment after it is on the answers topic: until then a retry is a duplicate request and
        # times out too)
        for _ in range(3):
            again = http.post(infer, json=body(rid))
            if again.status_code == 200:
                break
        assert again.status_code == 200
        assert again.json()["parameters"]["answered_at_ms"] == a.answered_at_ms
        assert again.json()["parameters"]["trigger"] == "default"
    schedules.publish(s.bootstrap_servers, SCHEDULE, topic=t.schedules, lifecycle_topic=None)
