"""Domain errors of the service and the one place that maps them to gRPC status codes.

No traceback ever reaches a client: an unexpected exception is logged here and answered INTERNAL
with a generic message. Values a client sent are echoed cut (``shown``) and every message is capped,
so an error can never outgrow the status metadata a client accepts (then the client would see
RESOURCE_EXHAUSTED from its own transport while the metrics recorded another code).
"""

from __future__ import annotations

import logging

import grpc

from ganserve.errors import GanserveError

log = logging.getLogger(__name__)
SHOWN_CHARS = 64  # of a client's value echoed in a message
MAX_DETAILS_CHARS = 1000  # a client's default limit on all status metadata is 8 KiB


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the full length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value):,} chars" if isinstance(value, str | bytes) else f"{len(text):,} chars"
    return f"{text[:limit]}…({size})"


class ServiceError(GanserveError):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    """Bad input: the message names the field and the allowed range."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class ModelNotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, name: str, available: list[str]):
        super().__init__(
            f"model {shown(name)} is not served; available: {', '.join(sorted(available)) or 'none'}"
        )


class FailedPrecondition(ServiceError):
    """The request is well-formed but the served models cannot answer it (e.g. no classifier)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(ServiceError):
    """The bounded queue is full: the client should back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RequestTooLarge(ServiceError):
    """A request body over the size limit (gRPC answers an oversized message with this code too)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class BackendUnavailable(ServiceError):
    """The inference engine (Triton) cannot be reached; the service recovers when it returns."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ShuttingDown(ServiceError):
    """The server drains: the client should retry on another instance."""

    code = grpc.StatusCode.UNAVAILABLE


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for ``exc``."""
    if isinstance(exc, ServiceError):
        message = str(exc)
        if len(message) > MAX_DETAILS_CHARS:
            message = message[:MAX_DETAILS_CHARS] + "…(cut)"
        return exc.code, message
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the request ran past its deadline"
    log.exception("unexpected error while serving a request", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"
