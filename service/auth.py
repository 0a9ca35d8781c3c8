"""Optional bearer-token authentication (``authorization: Bearer <token>`` metadata).

Health checks and reflection stay open so load balancers and tools work without the token.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def load_token(token_file: str, token_env: str) -> str | None:
    """The configured token, from a file (first line) or an environment variable; None when off."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"{token_file}: the auth token file is empty")
        return token
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise ValueError(f"environment variable {token_env} holds no auth token")
        return token
    return None


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails):
        if details.method.startswith(OPEN_PREFIXES):
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return await continuation(details)
        handler = await continuation(details)

        async def refuse(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        async def refuse_stream(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            yield  # pragma: no cover - makes this an async generator

        if handler is not None and handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                refuse_stream, handler.request_deserializer, handler.response_serializer
            )
        deserializer = handler.request_deserializer if handler else None
        serializer = handler.response_serializer if handler else None
        return grpc.unary_unary_rpc_method_handler(refuse, deserializer, serializer)
