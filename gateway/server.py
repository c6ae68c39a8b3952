"""The gateway: the whole rendezvous system behind one Open Inference Protocol (KServe V2 REST) endpoint.

    GET  /v2                          server metadata
    GET  /v2/health/live              200 while the process serves
    GET  /v2/health/ready             200 once Kafka is reachable, the reply topics assigned, the schedules read
    GET  /v2/models/{name}            a rendezvous's metadata (inputs, outputs, active schedule)
    GET  /v2/models/{name}/ready
    POST /v2/models/{name}/infer      one call: its rows become requests, the response is their answers

An infer call is validated (400 with the quarantine's reasons), written to the rendezvous's requests topic
with this gateway's return address, and answered when the answer comes back on the gateway's reply topic; a
call whose answer has not come by its budget + `margin_ms` gets a 504 that says so (the request is still
answered and recorded on the answers topic; asking again with the same id returns that answer). Mapping and
provenance: `gateway.protocol`. Run it with `rendezvous serve` (or `up --gateway`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from gateway import protocol
from gateway.kafka import KafkaBridge, NotReady, handing_over
from gateway.router import DeliveryFailed, Router
from gateway.settings import GatewaySettings, default_id

log = logging.getLogger("gateway")
VERSION = "0.1.0"


class Gateway:
    """The handlers, over one router and one Kafka bridge."""

    def __init__(self, settings: GatewaySettings, bridge: KafkaBridge, router: Router):
        self.settings = settings
        self.bridge = bridge
        self.router = router
        self.timeouts = 0

    # ------------------------------------------------------------------------------------------ health
    async def server_metadata(self, _req: web.Request) -> web.Response:
        return web.json_response({"name": "rendezvous-gateway", "version": VERSION, "extensions": []})

    async def live(self, _req: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, _req: web.Request) -> web.Response:
        if self.bridge.ready:
            return web.json_response({"ready": True})
        return web.json_response(protocol.error(f"not ready: {self.bridge.problem or 'reading the schedules'}",
                                                ready=False), status=503)

    def _known(self, req: web.Request) -> str:
        name = req.match_info["name"]
        if name not in self.settings.rendezvous:
            raise web.HTTPNotFound(text=_json(protocol.error(
                f"unknown model {name!r}: this gateway serves {sorted(self.settings.rendezvous)}")),
                content_type="application/json")
        return name

    async def model_metadata(self, req: web.Request) -> web.Response:
        name = self._known(req)
        return web.json_response(protocol.model_metadata(name, self.bridge.schedule(name)))

    async def model_ready(self, req: web.Request) -> web.Response:
        self._known(req)
        return await self.ready(req)

    # ------------------------------------------------------------------------------------------ infer
    async def infer(self, req: web.Request) -> web.Response:
        received_ms = int(time.time() * 1000)  # deadlines count from here unless the caller stamps its own
        name = self._known(req)
        try:
            body = await req.read()
        except web.HTTPRequestEntityTooLarge:
            return _bad([protocol.reason("too_large", None, f"the body is larger than "
                                                          f"{self.settings.max_body_bytes} bytes")], status=413)
        s = self.settings
        try:
            call = protocol.parse_infer(body, dict(req.headers), received_ms, self.bridge.reply_topics[name],
                                        s.max_batch, s.max_budget_ms)
        except protocol.BadRequest as e:
            return _bad(e.reasons)
        schedule = self.bridge.schedule(name)
        budget_ms = call.budget_ms or s.default_budget_ms or protocol.last_deadline_ms(schedule)
        keys = [(name, r.request_id) for r in call.requests]
        waits: list[tuple] = []  # (key, future or None, remembered answer)
        try:
            for key, r in zip(keys, call.requests):
                known = self.router.answered(key)
                if known is not None:
                    waits.append((key, None, known))
                    continue
                fut, new = self.router.attach(key)
                waits.append((key, fut, None))
                if new:
                    self.bridge.produce(name, key, r)
            pending = [asyncio.shield(f) for _, f, _ in waits if f is not None]
            got = iter(await asyncio.wait_for(asyncio.gather(*pending), (budget_ms + s.margin_ms) / 1000)
                       if pending else [])
            answers = [known if f is None else next(got) for _, f, known in waits]
        except asyncio.TimeoutError:
            self.timeouts += 1
            return web.json_response(protocol.error(
                f"no answer within the budget of {budget_ms:g} ms (+ {s.margin_ms:g} ms margin); the request is "
                f"still answered and recorded on the answers topic: send the call again with the same id to get "
                f"its answer", id=call.id, request_ids=call.row_ids, budget_ms=budget_ms, margin_ms=s.margin_ms),
                status=504)
        except (NotReady, DeliveryFailed, BufferError) as e:
            return web.json_response(protocol.error(f"the request could not be sent: {e}", id=call.id,
                                                    request_ids=call.row_ids), status=503)
        except Exception as e:  # noqa: BLE001 - e.g. librdkafka refusing a record: the call fails, not the gateway
            log.exception("infer %s", call.row_ids)
            return web.json_response(protocol.error(f"the request could not be sent: {type(e).__name__}: {e}",
                                                    id=call.id, request_ids=call.row_ids), status=503)
        finally:
            for key, f, _ in waits:
                if f is not None:
                    self.router.detach(key, f)
        return web.json_response(protocol.infer_response(name, str(schedule.version), call.id, answers,
                                                         call.outputs))


def _json(doc: dict) -> str:
    import json

    return json.dumps(doc)


def _bad(reasons: list[dict], status: int = 400) -> web.Response:
    first = reasons[0]
    where = f" ({first['field']})" if first.get("field") else ""
    return web.json_response(protocol.error(f"invalid inference request: {first['message']}{where}",
                                            reasons=reasons), status=status)


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every error is a V2 error body (`{"error": ...}`); nothing a caller sends stops the gateway."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        return web.json_response(protocol.error(f"{e.status} {e.reason}: {request.method} {request.path}"),
                                 status=e.status, headers={k: v for k, v in e.headers.items()
                                                           if k.lower() == "allow"})
    except Exception as e:  # noqa: BLE001
        log.exception("%s %s", request.method, request.path)
        return web.json_response(protocol.error(f"internal error: {type(e).__name__}: {e}"), status=500)


def make_app(settings: GatewaySettings, bridge: KafkaBridge, router: Router) -> web.Application:
    gw = Gateway(settings, bridge, router)
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[json_errors])
    app["gateway"] = gw
    app.router.add_get("/v2", gw.server_metadata)
    app.router.add_get("/v2/health/live", gw.live)
    app.router.add_get("/v2/health/ready", gw.ready)
    app.router.add_get("/v2/models/{name}", gw.model_metadata)
    app.router.add_get("/v2/models/{name}/ready", gw.model_ready)
    app.router.add_post("/v2/models/{name}/infer", gw.infer)

    async def start_kafka(_app) -> None:
        bridge.start(*handing_over(asyncio.get_running_loop(), router))

    async def stop_kafka(_app) -> None:
        await asyncio.get_running_loop().run_in_executor(None, bridge.close)

    app.on_startup.append(start_kafka)
    app.on_cleanup.append(stop_kafka)
    return app


def build(settings: GatewaySettings | None = None, port: int | None = None) -> tuple[web.Application, str, int]:
    """(the app, host, port) of a gateway configured by `settings` and the runtime's settings."""
    from control.kafka_io import use_credentials
    from control.settings import RuntimeSettings

    rt = RuntimeSettings()
    settings = settings or GatewaySettings()
    port = port if port is not None else rt.gateway_port
    bootstrap = settings.bootstrap_servers or rt.bootstrap_servers
    if rt.kafka_secured:
        use_credentials(bootstrap, rt.credentials_dir)
    bridge = KafkaBridge(bootstrap, settings.rendezvous, settings.id or default_id(port), settings.linger_ms,
                         settings.reply_retention_ms)
    return make_app(settings, bridge, Router(settings.recent_answers)), rt.listen_host, port


def serve(settings: GatewaySettings | None = None, host: str | None = None, port: int | None = None,
          access_log: bool = False) -> None:
    """Run a gateway until interrupted (SIGINT / SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # the admin client's connection chatter
    app, listen_host, port = build(settings, port)
    gw: Gateway = app["gateway"]
    log.info("gateway %s on http://%s:%d serving %s (reply topics %s)", gw.bridge.gateway_id, host or listen_host,
             port, sorted(gw.settings.rendezvous), sorted(gw.bridge.reply_topics.values()))
    web.run_app(app, host=host or listen_host, port=port, access_log=log if access_log else None,
                print=None, handle_signals=True)


if __name__ == "__main__":
    serve()
