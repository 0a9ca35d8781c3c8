"""Graceful drain: once draining, new calls get UNAVAILABLE (clients retry elsewhere) while the
calls already in flight run to completion; the server is stopped only after they finish."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

SHUTTING_DOWN = "server is shutting down; retry on another instance"


class DrainGate(grpc.aio.ServerInterceptor):
    def __init__(self, prefix: str = "/ganserve.v1."):
        self.prefix = prefix
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _exit(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new calls from now on; True when every in-flight call finished within ``timeout_s``."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self.prefix):
            return handler
        gate = self

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request, context):
                if gate.draining:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                gate._enter()
                try:
                    return await inner(request, context)
                finally:
                    gate._exit()

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def stream(request, context):
                if gate.draining:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                gate._enter()
                try:
                    async for response in inner_stream(request, context):
                        yield response
                finally:
                    gate._exit()

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
