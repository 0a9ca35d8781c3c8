"""The SDK's exceptions, one per gRPC status a caller may want to handle differently."""

from __future__ import annotations

import grpc


class GanserveClientError(Exception):
    """Base of every error the client raises; ``code`` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgumentError(GanserveClientError):
    """The request was refused; the message names the field and the allowed range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFoundError(GanserveClientError):
    code = grpc.StatusCode.NOT_FOUND


class OverloadedError(GanserveClientError):
    """RESOURCE_EXHAUSTED after the retries: the server's queue stayed full."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(GanserveClientError):
    """UNAVAILABLE after the retries: the service or its Triton is down."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(GanserveClientError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class AuthenticationError(GanserveClientError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PreconditionError(GanserveClientError):
    """The request is valid but the served models cannot answer it (e.g. no classifier)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        ModelNotFoundError,
        OverloadedError,
        UnavailableError,
        DeadlineExceededError,
        AuthenticationError,
        PreconditionError,
    )
}


def from_rpc_error(error: grpc.RpcError) -> GanserveClientError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, GanserveClientError)
    return cls(f"{code.name}: {details}", code)
