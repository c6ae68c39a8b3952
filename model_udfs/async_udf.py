"""One generic Flink AsyncFunction that hosts any ModelRunner.

Input: an AugmentedRequest as JSON. Output: a Score as JSON — with the output, or with an error when
the model raises, exceeds its timeout, or the input cannot be read. It never raises, so the job keeps
running whatever the model does. With `skip_older_than_ms`, a request older than that when it reaches
the model job is not scored at all (load shedding under overload; counted in the `skipped_stale` metric).

Metrics, in the operator's group `model` with the variable `model` = the card's `id@version` (a Prometheus label):
`scores` and `errors` (scores written, of them error scores), `latency_ms_sum` (the sum of each score's time
in the UDF, from taking the request to the score: the model's latency; `latency_ms_sum / scores` is its mean,
`rate(latency_ms_sum) / rate(scores)` over a window), `skipped_stale`, and `peak_rss_mb` (the Python worker's
peak resident memory, what `rendezvous replay` reports). They are plain ints kept on the event
loop and exported as gauges: PyFlink reads a gauge at the end of each bundle, on the bundle's thread, while a
counter incremented on the async function's event loop thread is dropped (Beam's metrics container is
per thread; seen here: `skipped_stale` as a counter never reached Flink).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import List

from pyflink.datastream.functions import AsyncFunction

from model_udfs.base import ModelRunner
from schemas.model_card import ModelCard
from schemas.records import MAX_RECORD_BYTES, TRANSITION_TOKEN_PREFIX, Score


def _peak_rss_mb() -> int:
    """The peak resident memory of this process (the Python worker, in process mode), in MiB (Linux: KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


def error_score(card: ModelCard, raw: str, error: str, received_ms: int, started_ms: int | None = None) -> str:
    """The error score of an input the UDF could not score (unreadable input, a model that failed to load)."""
    try:
        req = json.loads(raw)["request"]
        request_id, request_time = str(req["request_id"]), int(req["event_time_ms"])
    except Exception:  # noqa: BLE001 - unreadable input still gets an accounted-for score
        request_id, request_time = "", 0
    return Score(request_id=request_id, model_id=card.model_id, model_version=card.version, output=None,
                 error=error[:500], request_time_ms=request_time, received_at_ms=received_ms,
                 started_at_ms=started_ms if started_ms is not None else received_ms,
                 finished_at_ms=_now_ms()).to_json()


class ModelAsyncFunction(AsyncFunction):
    """Hosts the runner named by `card`. The runner is created and loaded lazily on the operator's
    event loop (clients must be made on the loop that uses them), once per worker."""

    def __init__(self, card: ModelCard, skip_older_than_ms: int | None = None):
        self.card = card
        self.skip_older_than_ms = skip_older_than_ms
        self._runner: ModelRunner | None = None
        self._lock: asyncio.Lock | None = None
        self._prepared: ModelRunner | None = None
        self.skipped = 0
        self.scores = 0
        self.errors = 0
        self.latency_ms_sum = 0

    def open(self, runtime_context) -> None:
        """Ready before serving: the runner is made and prepared (artifact checked and loaded, model server
        probed) here, before the operator takes its first record. If it cannot serve, this raises and the
        job fails to start (deploy reports why) instead of answering every request with an error score."""
        from model_udfs.base import make_runner

        self._runner = None
        self._lock = None
        self._prepared = make_runner(self.card)
        self._prepared.prepare()
        self.skipped = self.scores = self.errors = self.latency_ms_sum = 0
        try:
            group = runtime_context.get_metrics_group().add_group("model", self.card.key)
            group.gauge("scores", lambda: self.scores)
            group.gauge("errors", lambda: self.errors)
            group.gauge("latency_ms_sum", lambda: self.latency_ms_sum)
            group.gauge("skipped_stale", lambda: self.skipped)
            group.gauge("peak_rss_mb", _peak_rss_mb)
        except Exception:  # noqa: BLE001 - metrics are optional
            pass

    def _scored(self, received_ms: int, error: bool) -> None:
        """Accounts one score (on the event loop, like every caller: no lock needed)."""
        self.scores += 1
        self.errors += error
        self.latency_ms_sum += _now_ms() - received_ms

    async def _ensure_runner(self) -> ModelRunner:
        if self._runner is not None:
            return self._runner
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._runner is None:
                from model_udfs.base import make_runner

                runner = getattr(self, "_prepared", None) or make_runner(self.card)
                await runner.load()
                self._runner = runner
        return self._runner

    async def async_invoke(self, value: str) -> List[str]:
        received = _now_ms()
        if value is not None and value.startswith(TRANSITION_TOKEN_PREFIX):
            return []  # a transition token between two versions of the rendezvous: not a request (nothing to score)
        try:
            aug = json.loads(value)
            request, features = aug["request"], aug["features"]
            request_id, request_time = str(request["request_id"]), int(request["event_time_ms"])
        except Exception as e:  # noqa: BLE001
            self._scored(received, True)
            return [error_score(self.card, value, f"unreadable input: {type(e).__name__}: {e}", received)]
        if aug.get("inputs_missing"):  # a cascade's join timed out (jobs.models.inputs)
            self._scored(received, True)
            return [error_score(self.card, value, f"inputs missing after {self.card.inputs_timeout_ms} ms: "
                                                  f"{', '.join(aug['inputs_missing'])}", received)]
        if "inputs" in aug:  # a cascade: the upstream models' scores are part of this model's external state
            features = {**features, "inputs": aug["inputs"]}
        if self.skip_older_than_ms is not None and received - request_time > self.skip_older_than_ms:
            # load shedding: too old to be answered in time, its score could only be a late score
            self.skipped += 1
            return []
        try:
            runner = await self._ensure_runner()
        except Exception as e:  # noqa: BLE001
            self._scored(received, True)
            return [error_score(self.card, value, f"model failed to load: {type(e).__name__}: {e}", received)]
        started = _now_ms()
        try:
            output = await asyncio.wait_for(runner.predict(request, features), self.card.timeout_ms / 1000.0)
            if not isinstance(output, dict):
                raise TypeError(f"predict returned {type(output).__name__}, not dict")
            error = None
        except asyncio.TimeoutError:
            output, error = None, f"timeout after {self.card.timeout_ms} ms"
        except Exception as e:  # noqa: BLE001 - a failing model yields an error score
            output, error = None, f"{type(e).__name__}: {e}"
        try:
            score = Score(request_id=request_id, model_id=self.card.model_id, model_version=self.card.version,
                          output=output, error=error, request_time_ms=request_time, received_at_ms=received,
                          started_at_ms=started, finished_at_ms=_now_ms()).to_json()
            if len(score) > MAX_RECORD_BYTES:  # would exceed the producer's limit and fail the job
                self._scored(received, True)
                return [error_score(self.card, value, f"model output too large: a {len(score)}-character score "
                                                      f"(at most {MAX_RECORD_BYTES})", received, started)]
            self._scored(received, error is not None)
            return [score]
        except Exception as e:  # noqa: BLE001 - e.g. an output that is not JSON: an error score, never a crash
            self._scored(received, True)
            return [error_score(self.card, value, f"invalid model output: {type(e).__name__}: {e}", received,
                                started)]

    def timeout(self, value: str) -> List[str]:
        # the operator-level timeout (a safety net above the card's timeout_ms)
        return [error_score(self.card, value, "operator timeout", _now_ms())]

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                asyncio.run(runner.close())
            except Exception:  # noqa: BLE001
                pass
