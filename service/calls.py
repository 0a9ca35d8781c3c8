"""The one gate every call of the generation service passes, built once per method.

It admits a call before its request body is read: it refuses calls without the bearer token when
one is configured (UNAUTHENTICATED), new calls while the server drains (UNAVAILABLE: clients
retry elsewhere) and calls beyond ``max_in_flight`` (RESOURCE_EXHAUSTED). Only then does it read
and parse the request (bytes that do not parse: INVALID_ARGUMENT). It counts the calls in flight
so the drain knows when they are done, maps errors to status codes (errors.py) and records the
per-call Prometheus metrics (method, status code, latency, in flight, images).

Why the body is read here: every method is registered as request-streaming (``handlers``), which
in grpc.aio runs the handler before any message is received (a unary handler gets the message
already read and parsed: a 60 MB body from a client without the token is held before anyone can
refuse it, and a body that does not parse is answered UNKNOWN by grpc itself). On the wire
nothing changes: clients still send one message. An error becomes the call's status (abort) only
once the error is let go: ``context.abort`` inside the error's handling chained the error
(and through its traceback the operation's frames) to the exception abort keeps on the call's
state, a reference cycle that kept each failed ClassMap's arrays until Python's cycle collector
ran.

The HTTP/JSON face passes the same gate (its calls labelled transport="http") in the same order:
its context's ``read`` reads and parses the JSON body only once the call is admitted (the gate
is given no ``parse``: what the face reads is the request), and an error ends in the face
context's ``abort`` (which raises the face's own exception) rather than a gRPC status.

One wrapper, made when the servicer is built, rather than a chain of server interceptors: an
interceptor runs on every call and builds a new handler each time (measured: two interceptors cost
~22 µs per call, 12% of what the Python gRPC stack alone can answer on two cores).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from .auth import BearerToken
from .errors import InvalidArgument, Overloaded, ShuttingDown, Unauthenticated, status_for
from .metrics import ServiceMetrics

SHUTTING_DOWN = "server is shutting down; retry on another instance"
WRONG_TOKEN = "missing or wrong bearer token"
OK = grpc.StatusCode.OK
Parse = Callable[[bytes], object]  # a request message's bytes to the request


def images_in(response) -> int:
    if hasattr(response, "images"):
        return len(response.images)
    if hasattr(response, "image") and response.HasField("image"):
        return 1
    return 0


class CallGate:
    def __init__(
        self,
        metrics: ServiceMetrics,
        token: BearerToken | None = None,
        max_in_flight: int | None = None,
    ):
        self.metrics = metrics
        self.token = token
        self.max_in_flight = max_in_flight  # of this service's calls; health stays outside
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new calls from now on; True when every in-flight call ended within ``timeout_s``."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    # -- per call --------------------------------------------------------------------------------
    def _count(self, method: str, code: grpc.StatusCode, transport: str) -> None:
        self.metrics.child(self.metrics.requests, method, code.name, transport).inc()

    def _method_metrics(self, method: str, transport: str) -> tuple[object, object]:
        """The method's in-flight gauge and latency histogram."""
        return (
            self.metrics.child(self.metrics.in_flight, method),
            self.metrics.child(self.metrics.latency, method, transport),
        )

    def count_images(self, request, response) -> None:
        if count := images_in(response):
            self.metrics.child(self.metrics.images, request.model).inc(count)

    # -- wrappers ----------------------------------------------------------------------------------
    def unary(
        self,
        method: str,
        handler: Callable[..., Awaitable],
        parse: Parse | None = None,
        transport: str = "grpc",
    ) -> Callable:
        """``guarded(_, context)``: once the call is admitted, ``context.read()`` gives the one
        request message, as bytes for ``parse`` (gRPC) or, without one, the request itself (the
        HTTP face's context reads and parses its body)."""

        async def guarded(_, context):
            async with _Call(self, method, transport, context, parse) as call:
                request = await call.admit()
                response = await handler(request, context)
                self.count_images(request, response)
                return response
            # Failed (gRPC): abort, as a status set on the context would go out with an empty
            # response message, which commits the call and stops the client's retries. Abort
            # keeps its exception, and this frame, on the call's state (a reference cycle), so
            # the request is let go first; the operation's frames went with the error.
            request = None
            await context.abort(*call.status)

        return guarded

    def streaming(
        self,
        method: str,
        handler: Callable[..., AsyncIterator],
        parse: Parse | None = None,
        transport: str = "grpc",
    ) -> Callable:
        async def guarded(_, context):
            async with _Call(self, method, transport, context, parse) as call:
                request = await call.admit()
                async for item in handler(request, context):
                    self.count_images(request, item)
                    yield item
            if call.status is not None:  # failed (gRPC): the status goes out alone
                context.set_code(call.status[0])
                context.set_details(call.status[1])

        return guarded

    def handlers(self, servicer, service) -> dict[str, grpc.RpcMethodHandler]:
        """grpc method handlers for every method of ``service`` (a ServiceDescriptor), each
        ``servicer``'s method of that name behind the gate."""
        handlers = {}
        for rpc in service.methods:
            parse = protobuf_parser(message_factory.GetMessageClass(rpc.input_type))
            serialize = message_factory.GetMessageClass(rpc.output_type).SerializeToString
            method = getattr(servicer, rpc.name)
            if rpc.server_streaming:
                guarded = self.streaming(rpc.name, method, parse, "grpc")
                handlers[rpc.name] = grpc.stream_stream_rpc_method_handler(
                    guarded, response_serializer=serialize
                )
            else:
                guarded = self.unary(rpc.name, method, parse, "grpc")
                handlers[rpc.name] = grpc.stream_unary_rpc_method_handler(
                    guarded, response_serializer=serialize
                )
        return handlers


def protobuf_parser(request_type) -> Parse:
    """``request_type.FromString``, with bytes that do not parse answered INVALID_ARGUMENT."""

    def parse(raw: bytes):
        try:
            return request_type.FromString(raw)
        except DecodeError:
            raise InvalidArgument(
                "request", f"the bytes are not a valid {request_type.DESCRIPTOR.full_name}"
            ) from None

    return parse


class _Call:
    """One call through the gate: admitted and read by ``admit``, counted and mapped to a status
    on exit (where an error is turned into the call's status and suppressed)."""

    __slots__ = (
        "admitted", "context", "gate", "method", "metrics", "parse", "started", "status", "transport",
    )  # fmt: skip

    def __init__(
        self,
        gate: CallGate,
        method: str,
        transport: str,
        context: grpc.aio.ServicerContext,
        parse: Parse | None,
    ):
        self.gate, self.method, self.transport = gate, method, transport
        self.context, self.parse = context, parse
        self.admitted = False
        self.status: tuple[grpc.StatusCode, str] | None = None  # of a failed call

    async def __aenter__(self) -> _Call:
        return self

    async def admit(self):
        """Admit the call; then read its one request message (and parse it, given ``parse``)."""
        gate, method, context = self.gate, self.method, self.context
        if gate.token is not None and not gate.token.admits(context.invocation_metadata()):
            raise Unauthenticated(WRONG_TOKEN)
        if gate.draining:
            raise ShuttingDown(SHUTTING_DOWN)
        if gate.max_in_flight is not None and gate.in_flight >= gate.max_in_flight:
            raise Overloaded(f"{gate.in_flight} calls in flight, the limit; retry later")
        gate.in_flight += 1
        gate._idle.clear()
        self.metrics = gate._method_metrics(method, self.transport)
        self.metrics[0].inc()
        self.started = time.perf_counter()
        self.admitted = True
        raw = await context.read()
        if raw is grpc.aio.EOF:
            raise InvalidArgument("request", "the call carried no request message")
        return raw if self.parse is None else self.parse(raw)

    async def __aexit__(self, kind, error, traceback) -> bool:
        gate, method = self.gate, self.method
        if error is None:
            code = OK
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            code = grpc.StatusCode.CANCELLED
        elif isinstance(error, Exception):
            code, message = status_for(error)
        else:
            code = grpc.StatusCode.UNKNOWN
        gate._count(method, code, self.transport)
        if self.admitted:
            in_flight, latency = self.metrics
            latency.observe(time.perf_counter() - self.started)
            in_flight.dec()
            gate.in_flight -= 1
            if gate.in_flight == 0:
                gate._idle.set()
        if isinstance(error, Exception):  # mapped to a status, never a traceback
            if self.transport != "grpc":  # another face: its context raises its own exception
                await self.context.abort(code, message)
            self.status = (code, message)  # sent by the wrapper once the error is let go
            return True
        return False
