"""The KServe V2 remote runner against a real MLServer (e2e) and against a tiny fake V2 server (unit).

The e2e tests train the demo models into a temporary directory, serve the champion's directory with
MLServer from `.venv-mlserver/` (started once per module on free ports, stopped afterwards) and check
that the remote scores equal the in-process scikit-learn scores.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from control.runtime import mlserver
from control.runtime.process import group_members
from jobs.external_state.features import EntityState, FeatureComputer
from model_udfs.base import make_runner
from model_udfs.remote import KServeV2Runner, RemoteModelError
from schemas.features import feature_vector
from schemas.model_card import ModelCard
from schemas.records import Request

CHAMPION, CHAMPION_VERSION = "fraud-champion", "1.0.0"


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def remote_card(url: str, model_name: str = CHAMPION, model_version: str | None = CHAMPION_VERSION,
                timeout_ms: int = 2000, **params) -> ModelCard:
    return ModelCard(model_id=f"{model_name}-remote", version="1.0.0", runner="model_udfs.remote:KServeV2Runner",
                     params={"url": url, "model_name": model_name, "model_version": model_version,
                             "output_tensor": "predict_proba", **params},
                     timeout_ms=timeout_ms, capacity=8)


def run(coro, timeout: float = 30.0):
    """Run a coroutine with an overall deadline: a hanging call fails the test instead of hanging it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def sample_inputs(n: int = 3000, every: int = 150) -> list[tuple[dict, dict]]:
    """(request, features) pairs from the training stream: a spread of legit ones and every fraud one."""
    from training.synthetic import training_stream

    fc, states, out = FeatureComputer(), {}, []
    for i, txn in enumerate(training_stream(n, seed=5)):
        req = Request.model_validate(txn.request)
        f = fc.update(states.setdefault(req.entity_id, EntityState()), req)
        if txn.is_fraud or i % every == 0:
            out.append((txn.request, f.model_dump()))
    return out


# ---------------------------------------------------------------------------------------------
# e2e: a real MLServer
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from training.train import train_all

    out = tmp_path_factory.mktemp("models")
    train_all(out, n=5000, progress=lambda m: None)
    return out


@pytest.fixture(scope="module")
def champion_server(trained, tmp_path_factory):
    """MLServer serving the champion's directory on free ports; stopped (whole process group) afterwards."""
    tmp = tmp_path_factory.mktemp("mlserver")
    http_port, grpc_port = free_ports(2)
    server = mlserver.start(trained / CHAMPION / CHAMPION_VERSION, http_port=http_port, grpc_port=grpc_port,
                            metrics=False, log_file=tmp / "mlserver.log", work_dir=tmp / "work", timeout=120,
                            progress=lambda m: print(f"[mlserver] {m}"))
    yield server
    server.stop()
    assert not server.running()
    assert not group_members(server.pid), "MLServer left processes behind"


@pytest.mark.e2e
def test_server_binds_loopback_and_reports_models(champion_server):
    assert champion_server.url == f"http://127.0.0.1:{champion_server.http_port}"
    assert champion_server.models == [mlserver.ServedModel(CHAMPION, CHAMPION_VERSION)]
    settings = json.loads((champion_server.work_dir / "repository" / "settings.json").read_text())
    assert settings["host"] == "127.0.0.1" and settings["metrics_endpoint"] is None
    print(f"MLServer started in {champion_server.startup_s:.2f}s")


@pytest.mark.e2e
def test_remote_scores_equal_in_process_scores(champion_server, trained):
    import joblib

    card = ModelCard.load(trained / CHAMPION / CHAMPION_VERSION / "card.json")
    est = joblib.load(card.artifact)
    inputs = sample_inputs()
    expected = [float(est.predict_proba([feature_vector(r, f)])[0][1]) for r, f in inputs]
    assert len(inputs) >= 10 and min(expected) < 0.1 and max(expected) > 0.9  # both classes are exercised

    runner = make_runner(remote_card(champion_server.url))
    assert isinstance(runner, KServeV2Runner)

    async def scenario():
        await runner.load()
        try:
            sequential = [await runner.predict(r, f) for r, f in inputs[:5]]
            concurrent = await asyncio.gather(*(runner.predict(r, f) for r, f in inputs))
        finally:
            await runner.close()
        return sequential, concurrent

    sequential, concurrent = run(scenario(), timeout=60)
    for got, want in zip(sequential, expected[:5], strict=True):
        assert set(got) == {"fraud_probability"}
        assert got["fraud_probability"] == pytest.approx(want, abs=1e-9)
    for got, want in zip(concurrent, expected, strict=True):
        assert got["fraud_probability"] == pytest.approx(want, abs=1e-9)


@pytest.mark.e2e
def test_unversioned_card_and_custom_output_name(champion_server):
    runner = make_runner(remote_card(champion_server.url, model_version=None, output_name="p", output_index=0))
    r, f = sample_inputs(n=200, every=50)[0]

    async def scenario():
        await runner.load()
        try:
            return await runner.predict(r, f)
        finally:
            await runner.close()

    out = run(scenario())
    assert set(out) == {"p"} and 0.0 <= out["p"] <= 1.0


@pytest.mark.e2e
def test_wrong_model_name_is_a_clear_error(champion_server):
    runner = make_runner(remote_card(champion_server.url, model_name="fraud-champion-typo"))
    with pytest.raises(RemoteModelError) as e:
        run(runner.load())
    msg = str(e.value)
    assert "does not serve this model" in msg and "'fraud-champion-typo'" in msg
    assert "fraud-champion@1.0.0" in msg  # what the server does serve
    assert runner._client is None  # the failed load closed its client

    runner = make_runner(remote_card(champion_server.url, model_version="9.9.9"))
    with pytest.raises(RemoteModelError, match="does not serve this model.*9.9.9"):
        run(runner.load())


@pytest.mark.e2e
def test_server_that_is_down_raises_not_hangs(trained, tmp_path_factory):
    # nothing listens: load fails fast
    (port,) = free_ports(1)
    runner = make_runner(remote_card(f"http://127.0.0.1:{port}", timeout_ms=500))
    t0 = time.monotonic()
    with pytest.raises(RemoteModelError, match="cannot reach the model server"):
        run(runner.load(), timeout=10)
    assert time.monotonic() - t0 < 10

    # a server that goes down after load: predict fails fast
    tmp = tmp_path_factory.mktemp("mlserver-down")
    http_port, grpc_port = free_ports(2)
    server = mlserver.start(trained / CHAMPION / CHAMPION_VERSION, http_port=http_port, grpc_port=grpc_port,
                            metrics=False, log_file=tmp / "mlserver.log", work_dir=tmp / "work", timeout=120)
    runner = make_runner(remote_card(server.url, timeout_ms=500))
    r, f = sample_inputs(n=200, every=50)[0]

    async def scenario():
        await runner.load()
        try:
            assert "fraud_probability" in await runner.predict(r, f)
            server.stop()
            t0 = time.monotonic()
            with pytest.raises(RemoteModelError, match="failed|no answer"):
                await runner.predict(r, f)
            return time.monotonic() - t0
        finally:
            await runner.close()

    try:
        assert run(scenario(), timeout=30) < 5
    finally:
        server.stop()
    assert not group_members(server.pid)


def test_start_without_models_or_with_taken_port_says_what_to_do(tmp_path):
    with pytest.raises(mlserver.MLServerError, match="no model-settings.json"):
        mlserver.start(tmp_path, http_port=free_ports(1)[0])
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model-settings.json").write_text('{"name": "m"}')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(mlserver.MLServerError,
                           match=f"port 127.0.0.1:{port} is taken.*RENDEZVOUS_MLSERVER_HTTP_PORT"):
            mlserver.start(tmp_path, http_port=port, grpc_port=free_ports(1)[0])


def test_missing_mlserver_venv_says_run_make_setup(tmp_path):
    from control.settings import RuntimeSettings

    with pytest.raises(mlserver.MLServerError, match="make setup"):
        mlserver.start(tmp_path, RuntimeSettings(home=tmp_path))


# ---------------------------------------------------------------------------------------------
# unit: a fake V2 server with scripted answers (no MLServer)
# ---------------------------------------------------------------------------------------------
class _FakeV2(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, str, float]] = {}  # model name -> (status, body, delay s) of /infer

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        name = self.path.split("/")[3] if self.path.startswith("/v2/models/") else ""
        if self.path.endswith("/ready") and name in self.answers:
            self._send(200, "")
        else:
            self._send(404, json.dumps({"error": f"Model {name} not found"}))

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        name = self.path.split("/")[3] if self.path.startswith("/v2/models/") else ""
        if name not in self.answers:
            return self._send(404, json.dumps({"error": f"Model {name} not found"}))
        status, body, delay = self.answers[name]
        time.sleep(delay)
        self._send(status, body)


def _proba(p0, p1, name="predict_proba"):
    return json.dumps({"model_name": "m", "outputs": [{"name": name, "shape": [1, 2], "datatype": "FP64",
                                                       "data": [p0, p1]}]})


@pytest.fixture(scope="module")
def fake_server():
    _FakeV2.answers = {
        "ok": (200, _proba(0.25, 0.75), 0.0),
        "nested": (200, json.dumps({"outputs": [{"name": "predict_proba", "shape": [1, 2], "datatype": "FP64",
                                                 "data": [[0.4, 0.6]]}]}), 0.0),
        "slow": (200, _proba(0.5, 0.5), 3.0),
        "boom": (500, json.dumps({"error": "model exploded"}), 0.0),
        "garbage": (200, "<html>not json</html>", 0.0),
        "no-outputs": (200, json.dumps({"model_name": "m"}), 0.0),
        "other-output": (200, _proba(0.1, 0.9, name="predict"), 0.0),
        "labels": (200, json.dumps({"outputs": [{"name": "predict", "shape": [1, 1], "datatype": "INT64",
                                                 "data": [1]}]}), 0.0),
        "strings": (200, json.dumps({"outputs": [{"name": "predict_proba", "shape": [1, 2], "datatype": "FP64",
                                                  "data": ["a", "b"]}]}), 0.0),
    }
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeV2)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


REQ = {"request_id": "r1", "entity_id": "e", "event_time_ms": 1, "amount": 12.5, "merchant_category": "grocery",
       "country": "DE"}
FEATS = {"entity_count": 0, "window_count": 1, "window_sum": 12.5, "window_ms": 3600000, "ms_since_prev": None,
         "amount_mean": 0.0, "amount_std": 0.0, "amount_zscore": 0.0}


def _predict(url: str, model: str, **kw):
    runner = make_runner(remote_card(url, model_name=model, model_version=None, **kw))

    async def scenario():
        await runner.load()
        try:
            return await runner.predict(REQ, FEATS)
        finally:
            await runner.close()

    return run(scenario(), timeout=10)


def test_fake_server_answers_are_parsed(fake_server):
    assert _predict(fake_server, "ok") == {"fraud_probability": 0.75}
    assert _predict(fake_server, "nested") == {"fraud_probability": 0.6}
    assert _predict(fake_server, "ok", output_index=0, output_name="legit") == {"legit": 0.25}


@pytest.mark.parametrize("model, kw, match", [
    ("boom", {}, "HTTP 500: model exploded"),
    ("garbage", {}, "not JSON"),
    ("no-outputs", {}, "no 'outputs' list"),
    ("other-output", {}, r"no output named 'predict_proba' \(got \['predict'\]\)"),
    ("labels", {"output_tensor": None}, "1 value\\(s\\) per row.*output_tensor"),
    ("strings", {}, "not a finite number"),
    ("ok", {"output_index": 2}, "output_index 2 is out of range"),
    ("slow", {"timeout_ms": 300}, "no answer within 300 ms"),
])
def test_fake_server_errors_are_clear(fake_server, model, kw, match):
    t0 = time.monotonic()
    with pytest.raises(RemoteModelError, match=match):
        _predict(fake_server, model, **kw)
    assert time.monotonic() - t0 < 2.5  # the slow answer (3 s) is cut by the card's timeout


def test_inference_request_body():
    runner = KServeV2Runner(remote_card("http://h:1/"))
    body = runner.inference_request(REQ, FEATS)
    assert body == {"id": "r1", "inputs": [{"name": "input-0", "shape": [1, 10], "datatype": "FP64",
                                            "data": feature_vector(REQ, FEATS)}],
                    "outputs": [{"name": "predict_proba"}]}
    assert runner.model_path == "/v2/models/fraud-champion/versions/1.0.0"
    assert runner.base_url == "http://h:1"


def test_bad_params_and_predict_before_load():
    with pytest.raises(ValueError, match="invalid params for KServeV2Runner: params.model_name: Field required"):
        KServeV2Runner(ModelCard(model_id="x", version="1", runner="model_udfs.remote:KServeV2Runner",
                                 params={"url": "http://h:1"}))
    with pytest.raises(ValueError, match="invalid params for KServeV2Runner: params.output_idx: Extra inputs"):
        KServeV2Runner(remote_card("http://h:1", output_idx=1))  # a typo is caught
    with pytest.raises(RuntimeError, match="before load"):
        run(KServeV2Runner(remote_card("http://h:1")).predict(REQ, FEATS))


def test_runner_pickles_without_its_client(fake_server):
    runner = make_runner(remote_card(fake_server, model_name="ok", model_version=None))
    clone = pickle.loads(pickle.dumps(runner))  # as shipped to a Flink worker, before load()
    assert clone.params == runner.params and clone._client is None

    async def scenario():
        await runner.load()
        try:
            loaded_clone = pickle.loads(pickle.dumps(runner))  # an open client is never pickled
            assert loaded_clone._client is None and runner._client is not None
            return await runner.predict(REQ, FEATS)
        finally:
            await runner.close()

    assert run(scenario()) == {"fraud_probability": 0.75}
