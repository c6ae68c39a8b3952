"""A runner for models served by a model server over the Open Inference Protocol (KServe V2 REST).

Works with any V2 server (MLServer, KServe, Triton, ...). The card names the server and the model:

    "runner": "model_udfs.remote:KServeV2Runner",
    "params": {"url": "http://127.0.0.1:18080", "model_name": "fraud-champion", "model_version": "1.0.0",
               "output_tensor": "predict_proba", "output_index": 1, "output_name": "fraud_probability"}

`predict` sends the request's feature vector (`feature_vector`, 10 FP64 values) as one input of
shape [1, 10] to POST /v2/models/{model_name}[/versions/{model_version}]/infer and returns
{output_name: value}, the value being column `output_index` of the first row of the chosen output.
The HTTP client (httpx, one pooled client per runner, pool size = the card's capacity) is opened by
`load` and closed by `close`: runner objects are pickled to the Flink workers before `load`.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_udfs.base import BatchingRunner
from schemas.features import feature_vector
from schemas.model_card import ModelCard


class RemoteModelError(RuntimeError):
    """The model server could not be reached, refused the request, or answered something unusable."""


class KServeV2Params(BaseModel):
    """The `params` of a KServeV2Runner card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, description="base URL of the server, e.g. http://127.0.0.1:18080")
    model_name: str = Field(min_length=1, description="the model's name on the server")
    model_version: str | None = Field(default=None, description="the model's version on the server; "
                                                                "unset: the server's default version")
    output_index: int = Field(default=1, ge=0, description="column of the output's first row to return "
                                                           "(1: P(fraud) of a [P(legit), P(fraud)] output)")
    output_name: str = Field(default="fraud_probability", min_length=1, description="key of the returned value")
    output_tensor: str | None = Field(default=None, description="output to request and read (e.g. "
                                      "'predict_proba' for mlserver-sklearn); unset: the server's default "
                                      "outputs, the first one is read")
    input_name: str = Field(default="input-0", min_length=1, description="name of the input tensor")
    load_timeout_s: float = Field(default=5.0, gt=0, description="budget of the readiness check in load()")


class KServeV2Runner(BatchingRunner):
    """Scores requests with a model on a KServe V2 / Open Inference Protocol server (REST). The calls in
    flight go as one request of shape [N, 10] (params.max_batch_size, default 64), not N requests."""

    def __init__(self, card: ModelCard):
        super().__init__(card)
        card = card.model_copy(update={"params": {k: v for k, v in card.params.items()
                                                  if k not in ("max_batch_size", "max_batch_wait_ms", "transport")}})
        try:
            self.params = KServeV2Params.model_validate(card.params)
        except ValidationError as e:
            problems = "; ".join(f"params.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(f"{card.key}: invalid params for KServeV2Runner: {problems}") from None
        self._client = None  # httpx.AsyncClient, opened by load(): runners are pickled before that
        self._sync = None  # httpx.Client used from a thread pool (params.transport == "thread", the default)
        self._pool = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the client belongs to
        self._probed = False  # readiness checked by prepare()

    # ---- pickling: never ship an open client -----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_client"] = None
        state["_loop"] = None
        state["_sync"] = None
        state["_pool"] = None
        return state

    # ---- addresses ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.params.url.rstrip("/")

    @property
    def model_path(self) -> str:
        p = f"/v2/models/{self.params.model_name}"
        return f"{p}/versions/{self.params.model_version}" if self.params.model_version else p

    @property
    def _what(self) -> str:
        v = f" version {self.params.model_version!r}" if self.params.model_version else ""
        return f"{self.card.key}: model {self.params.model_name!r}{v} at {self.base_url}"

    # ---- lifecycle ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check, with a client of its own, that the server is reachable and has the model ready."""
        from model_udfs.base import run_isolated

        run_isolated(self._probe())
        self._probed = True

    async def _probe(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.base_url, headers={"Accept": "application/json"}) as client:
            await self._check_ready(client)

    async def load(self) -> None:
        """Open the HTTP client and check that the server has the model loaded and ready."""
        import httpx

        if self._client is not None:
            return
        client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.card.timeout_ms / 1000.0),
            limits=httpx.Limits(max_connections=self.card.capacity, max_keepalive_connections=self.card.capacity),
            headers={"Accept": "application/json"},
        )
        try:
            if not self._probed:  # prepare() has just checked it (the model job's open())
                await self._check_ready(client)
        except BaseException:
            await client.aclose()
            raise
        self._client, self._loop = client, asyncio.get_running_loop()
        if self.card.params.get("transport", "thread") == "thread":
            from concurrent.futures import ThreadPoolExecutor

            self._sync = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(self.card.timeout_ms / 1000.0),
                                      limits=httpx.Limits(max_connections=self.card.capacity,
                                                          max_keepalive_connections=self.card.capacity),
                                      headers={"Accept": "application/json"})
            self._pool = ThreadPoolExecutor(max_workers=min(32, self.card.capacity),
                                            thread_name_prefix=f"kserve-{self.card.model_id}")

    def _sync_post(self, path: str, body: dict):
        return self._sync.post(path, json=body)

    async def _check_ready(self, client) -> None:
        import httpx

        try:
            resp = await client.get(self.model_path + "/ready", timeout=self.params.load_timeout_s)
        except httpx.TimeoutException as e:
            raise RemoteModelError(f"{self._what}: the server did not answer the readiness check within "
                                   f"{self.params.load_timeout_s:g}s ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise RemoteModelError(f"{self._what}: cannot reach the model server ({type(e).__name__}: {e}). "
                                   f"Is it running? (see control.runtime.mlserver.start)") from e
        if resp.status_code == 200:
            return
        detail = _error_detail(resp)
        if resp.status_code == 404:
            served = await _served_models(client)
            hint = f" It serves: {', '.join(served)}." if served else ""
            raise RemoteModelError(f"{self._what}: the server does not serve this model (HTTP 404: {detail}).{hint} "
                                   f"Check params.model_name / params.model_version in the card.")
        raise RemoteModelError(f"{self._what}: the model is not ready (GET {self.model_path}/ready answered "
                               f"HTTP {resp.status_code}: {detail})")

    async def close(self) -> None:
        """Close the client on the event loop it belongs to (its connections are bound to that loop)."""
        sync, self._sync = self._sync, None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if sync is not None:
            sync.close()
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is None:
            return
        if loop is None or loop is asyncio.get_running_loop():
            await client.aclose()
        elif loop.is_running():  # called from another thread's loop: close it on its own loop
            done = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            await asyncio.wait_for(asyncio.wrap_future(done), 5.0)
        # else: its loop has stopped or is closed, and so are the connections' transports; nothing can be
        # awaited on it any more, the sockets are released with the client object

    # ---- scoring -----------------------------------------------------------------------------
    def inference_request(self, request: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        """The V2 inference request body for one request."""
        return self.batch_inference_request([request], [features])

    def batch_inference_request(self, requests: list[dict[str, Any]], features: list[dict[str, Any]]) \
            -> dict[str, Any]:
        """The V2 inference request body for rows: one FP64 input of shape [N, 10], row-major."""
        vectors = [feature_vector(r, f) for r, f in zip(requests, features)]
        body: dict[str, Any] = {
            "inputs": [{"name": self.params.input_name, "shape": [len(vectors), len(vectors[0])],
                        "datatype": "FP64", "data": [v for row in vectors for v in row]}],
        }
        request_id = requests[0].get("request_id") if len(requests) == 1 else None
        if isinstance(request_id, str) and request_id:
            body["id"] = request_id
        if self.params.output_tensor:
            body["outputs"] = [{"name": self.params.output_tensor}]
        return body

    async def predict_batch(self, requests: list[dict[str, Any]], features: list[dict[str, Any]]) \
            -> list[dict[str, Any]]:
        import httpx

        if self._client is None:
            raise RuntimeError(f"{self.card.key}: KServeV2Runner.predict called before load()")
        body = self.batch_inference_request(requests, features)
        path = self.model_path + "/infer"
        try:
            if self._sync is not None:
                # one blocking call on a worker thread (socket waits release the GIL) instead of dozens of
                # event-loop steps: in PyFlink's process-mode async operator the loop thread competes for
                # the GIL with the worker's main thread, and each await step cost milliseconds there
                resp = await asyncio.get_running_loop().run_in_executor(self._pool, self._sync_post, path, body)
            else:
                resp = await self._client.post(path, json=body)
        except httpx.TimeoutException as e:
            raise RemoteModelError(f"{self._what}: no answer within {self.card.timeout_ms} ms "
                                   f"({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise RemoteModelError(f"{self._what}: POST {path} failed ({type(e).__name__}: {e})") from e
        if resp.status_code != 200:
            raise RemoteModelError(f"{self._what}: POST {path} answered HTTP {resp.status_code}: "
                                   f"{_error_detail(resp)}")
        try:
            payload = resp.json()
        except ValueError:
            raise RemoteModelError(f"{self._what}: the inference response is not JSON: "
                                   f"{resp.text[:200]!r}") from None
        values = self.parse_rows(payload)
        if len(values) != len(requests):
            raise RemoteModelError(f"{self._what}: malformed inference response: {len(values)} rows for "
                                   f"{len(requests)} inputs")
        return [{self.params.output_name: v} for v in values]

    def parse_response(self, payload: Any) -> float:
        """The value at `output_index` of the first row of the chosen output of a V2 inference response."""
        return self.parse_rows(payload)[0]

    def parse_rows(self, payload: Any) -> list[float]:
        """The value at `output_index` of every row of the chosen output of a V2 inference response."""
        bad = f"{self._what}: malformed inference response"
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise RemoteModelError(f"{bad}: no 'outputs' list in {_short(payload)}")
        wanted = self.params.output_tensor
        if wanted:
            chosen = [o for o in outputs if o.get("name") == wanted]
            if not chosen:
                names = [o.get("name") for o in outputs]
                raise RemoteModelError(f"{bad}: no output named {wanted!r} (got {names})")
            out = chosen[0]
        else:
            out = outputs[0]
        name = out.get("name")
        if out.get("datatype") == "BYTES":
            raise RemoteModelError(f"{bad}: output {name!r} is BYTES, a number is needed")
        data = _flatten(out.get("data"))
        if data is None or not data:
            raise RemoteModelError(f"{bad}: output {name!r} has no numeric 'data' ({_short(out)})")
        shape = out.get("shape")
        rows = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) and shape[0] > 0 else 1
        if len(data) % rows:
            raise RemoteModelError(f"{bad}: output {name!r} has {len(data)} values, not a multiple of its "
                                   f"{rows} rows (shape {shape})")
        width = len(data) // rows
        row = data[:width]
        i = self.params.output_index
        if i >= len(row):
            hint = ""
            if len(row) == 1 and not wanted:
                hint = (" The server returned one value per row (a label?); request the probabilities "
                        "with params.output_tensor, e.g. 'predict_proba' for mlserver-sklearn.")
            raise RemoteModelError(f"{bad}: output {name!r} has {len(row)} value(s) per row, "
                                   f"params.output_index {i} is out of range.{hint}")
        out = []
        for r in range(rows):
            value = data[r * width + i]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RemoteModelError(f"{bad}: output {name!r}[{r}][{i}] is {value!r}, not a finite number")
            out.append(float(value))
        return out


# ---------------------------------------------------------------------------------------------
def _flatten(data: Any) -> list | None:
    """V2 JSON tensors may be flat or nested row-major lists."""
    if not isinstance(data, list):
        return None
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _short(obj: Any, n: int = 200) -> str:
    text = repr(obj)
    return text if len(text) <= n else text[:n] + "..."


def _error_detail(resp) -> str:
    """The V2 error message ({"error": "..."}) of a response, else the start of its body."""
    try:
        body = resp.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
        if isinstance(body, dict) and body.get("detail"):
            return str(body["detail"])
    except ValueError:
        pass
    return resp.text[:200] or resp.reason_phrase


async def _served_models(client) -> list[str]:
    """Names of the models the server knows (V2 repository index, which MLServer and Triton offer)."""
    try:
        resp = await client.post("/v2/repository/index", json={}, timeout=2.0)
        if resp.status_code != 200:
            return []
        return sorted({f"{m['name']}" + (f"@{m['version']}" if m.get("version") else "")
                       for m in resp.json() if isinstance(m, dict) and m.get("name")})
    except Exception:
        return []
