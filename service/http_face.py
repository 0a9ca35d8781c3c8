"""The HTTP/JSON face of the generation API, and the latent explorer page at ``/``.

Routes come from the proto (http_routes.py); bodies are the proto's own messages in the proto3
JSON mapping (``google.protobuf.json_format``). Every call goes to a servicer over the same
operations and the same call gate as gRPC (auth, drain, metrics with transport="http", error
mapping), so there is no second implementation of any RPC. Errors come back as the gRPC status
mapped to HTTP the way ``google/rpc/code.proto`` says, with a ``google.rpc.Status`` JSON body, as
grpc-gateway answers. ``Interpolate`` streams newline-delimited JSON, one ``{"result": frame}``
per line as frames are made (an error after the first frame arrives as ``{"error": status}``).

aiohttp serves it inside the service's own asyncio event loop (see the README for why).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from .config import ServeConfig
from .errors import InvalidArgument, RequestTooLarge, status_for
from .http_routes import Route, routes
from .servicer import GenerationServicer

log = logging.getLogger(__name__)
EXPLORER = Path(__file__).resolve().parent / "explorer"
# google/rpc/code.proto, "HTTP Mapping" of each code (what grpc-gateway and Envoy use).
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500,
}  # fmt: skip
JSON = "application/json"
NDJSON = "application/x-ndjson"
# JSON carries bytes as base64 and floats as text: allow a body this many times a gRPC request.
JSON_OVERHEAD = 3
# grpc-gateway's deadline header: "<digits><unit>", as on the gRPC wire.
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
TIMEOUT_HEADER = re.compile(r"(\d{1,8})([HMSmun])")
CORS_HEADERS = "authorization, content-type, grpc-timeout"


class CallAborted(Exception):
    """A call ended with a status other than OK (raised where gRPC's context.abort would be)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class HttpCall:
    """What the call gate and the servicer ask of a gRPC context, answered from an HTTP request.

    ``read`` is the gate's, called once the call is admitted: a client without the token, or one
    over the call limit, is refused before its body is read (as on gRPC)."""

    __slots__ = ("_deadline", "_metadata", "_request", "_route")

    def __init__(self, route: Route, request: web.Request, deadline: float | None):
        token = request.headers.get("Authorization")
        self._metadata = (("authorization", token),) if token is not None else ()
        self._deadline = deadline
        self._route, self._request = route, request

    async def read(self) -> Message:
        """The request message, from the body, query string and path."""
        try:
            return await request_message(self._route, self._request)
        except web.HTTPRequestEntityTooLarge as exc:
            raise RequestTooLarge(exc.text or "the request body is too large") from None
        except (json_format.ParseError, ValueError) as exc:
            raise InvalidArgument("request", str(exc)) from None

    def invocation_metadata(self):
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    async def abort(self, code: grpc.StatusCode, details: str):
        raise CallAborted(code, details)


# -- JSON in and out ------------------------------------------------------------------------------
def to_json(message: Message) -> str:
    """The proto3 JSON mapping, lowerCamelCase names, fields at their defaults written out."""
    return json_format.MessageToJson(
        message, indent=None, always_print_fields_with_no_presence=True
    )


def status_json(code: grpc.StatusCode, message: str) -> str:
    return json_format.MessageToJson(
        status_pb2.Status(code=code.value[0], message=message),
        indent=None,
        always_print_fields_with_no_presence=True,
    )


def error_response(code: grpc.StatusCode, message: str) -> web.Response:
    return web.Response(
        status=HTTP_STATUS[code.name], text=status_json(code, message), content_type=JSON
    )


def _query_value(field: FieldDescriptor, text: str):
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text not in ("true", "false"):
            raise json_format.ParseError(f"{field.name}: expected true or false, got {text!r}")
        return text == "true"
    return text  # json_format converts numbers and enum names given as text


def _apply_query(route: Route, request: web.Request, message: Message) -> None:
    """Fields not bound by the path or the body come from the query string (scalars only)."""
    if not request.query:
        return
    if route.body == "*":
        raise json_format.ParseError(
            f"query parameters {sorted(request.query)}: {route.rpc} takes its request in the body"
        )
    fields = message.DESCRIPTOR.fields_by_name
    by_json = {f.json_name: f for f in message.DESCRIPTOR.fields}
    values = {}
    for key in request.query:
        field = fields.get(key) or by_json.get(key)
        if field is None or field.type == FieldDescriptor.TYPE_MESSAGE:
            raise json_format.ParseError(f"query parameter {key!r}: no such scalar field")
        given = [_query_value(field, text) for text in request.query.getall(key)]
        if field.is_repeated:
            values[field.name] = given
        elif len(given) > 1:
            raise json_format.ParseError(f"query parameter {key!r}: give it once")
        else:
            values[field.name] = given[0]
    json_format.ParseDict(values, message)


async def request_message(route: Route, request: web.Request) -> Message:
    """The RPC's request message from the body, query string and path (the path wins)."""
    message = route.request()
    if route.body:
        text = await request.text()
        if text.strip():
            target = message if route.body == "*" else getattr(message, route.body)
            json_format.Parse(text, target)
    _apply_query(route, request, message)
    for name in route.path_fields:
        field = message.DESCRIPTOR.fields_by_name[name]
        value = request.match_info[name]
        json_format.ParseDict(
            {name: value if field.type == FieldDescriptor.TYPE_STRING else int(value)}, message
        )
    return message


def _deadline(request: web.Request) -> float | None:
    header = request.headers.get("Grpc-Timeout")
    if header is None:
        return None
    match = TIMEOUT_HEADER.fullmatch(header.strip())
    if match is None:
        raise json_format.ParseError(f"Grpc-Timeout: {header!r} is not <digits><H|M|S|m|u|n>")
    return time.monotonic() + int(match[1]) * TIMEOUT_UNITS[match[2]]


# -- handlers -------------------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _timeout(deadline: float | None):
    return asyncio.timeout(None if deadline is None else deadline - time.monotonic())


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """How a call ended: the gate's status, or one for what the gate did not see (the deadline)."""
    return (exc.code, exc.message) if isinstance(exc, CallAborted) else status_for(exc)


async def _answer(rpc: Callable, call: HttpCall, deadline: float | None):
    try:
        async with _timeout(deadline):
            response = await rpc(None, call)  # the gate reads the request through call.read()
    except Exception as exc:  # noqa: BLE001 - every error becomes a status
        return error_response(*_status_of(exc))
    return web.Response(text=to_json(response), content_type=JSON)


async def _stream(rpc: Callable, call: HttpCall, deadline: float | None, request: web.Request):
    items = rpc(None, call)
    response: web.StreamResponse | None = None
    try:
        async with _timeout(deadline):
            async for item in items:
                if response is None:  # errors before the first item keep their HTTP status
                    response = web.StreamResponse(headers={"Content-Type": NDJSON})
                    await response.prepare(request)
                await response.write(f'{{"result":{to_json(item)}}}\n'.encode())
    except ConnectionError:  # the client went away: the gate counts the call CANCELLED
        return response or web.Response(status=HTTP_STATUS["CANCELLED"])
    except Exception as exc:  # noqa: BLE001 - every error becomes a status line
        if response is None:
            return error_response(*_status_of(exc))
        await response.write(f'{{"error":{status_json(*_status_of(exc))}}}\n'.encode())
    finally:
        await items.aclose()
    if response is None:  # a stream with no item at all
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
    await response.write_eof()
    return response


def _handler(route: Route, rpc: Callable) -> Handler:
    """Request message and deadline from the HTTP request, then the gated RPC, unary or stream."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            deadline = _deadline(request)
        except json_format.ParseError as exc:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        call = HttpCall(route, request, deadline)
        if route.server_streaming:
            return await _stream(rpc, call, deadline, request)
        return await _answer(rpc, call, deadline)

    return handle


def _cors_middleware(allowed: set[str], verbs: str):
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allow = origin is not None and ("*" in allowed or origin in allowed)
        if allow and request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = verbs
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        if allow:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return cors


async def _explorer_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(EXPLORER / "index.html")


def build_app(servicer: GenerationServicer, config: ServeConfig) -> web.Application:
    """Every proto route bound to the servicer's (gated) method, plus the explorer's files."""
    table = routes()
    middlewares = []
    origins = {o.strip() for o in config.http_cors_origins.split(",") if o.strip()}
    if origins:
        verbs = ", ".join(sorted({r.verb for r in table} | {"OPTIONS"}))
        middlewares.append(_cors_middleware(origins, verbs))
    app = web.Application(
        client_max_size=config.max_request_bytes * JSON_OVERHEAD, middlewares=middlewares
    )
    for route in table:
        handler = _handler(route, getattr(servicer, route.rpc))
        app.router.add_route(route.verb, route.path, handler, name=route.rpc)
    app.router.add_get("/", _explorer_page)
    app.router.add_static("/explorer/", EXPLORER)
    return app


def ssl_context(config: ServeConfig) -> ssl.SSLContext | None:
    """The gRPC port's TLS settings (certificate, key, optional client CA) for HTTPS."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class HttpFace:
    runner: web.AppRunner
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_http_face(servicer: GenerationServicer, config: ServeConfig, host: str) -> HttpFace:
    """Serve the app on ``config.http_port`` (0: any free port) in the running event loop."""
    runner = web.AppRunner(build_app(servicer, config), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(
        runner, host, config.http_port, ssl_context=ssl_context(config),
        reuse_port=config.workers > 1,  # --workers share the port, as they share gRPC's
    )  # fmt: skip
    await site.start()
    port = runner.addresses[0][1]
    log.info("HTTP/JSON API and explorer on %s://%s:%d/", "https" if config.tls_cert else "http", host, port)  # fmt: skip
    return HttpFace(runner, port)
