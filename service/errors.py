"""Domain errors of the service and the one place that maps them to gRPC status codes.

No traceback ever reaches a client: an unexpected exception is logged here and answered INTERNAL
with a generic message.
"""

from __future__ import annotations

import logging

import grpc

from ganserve.errors import GanserveError

log = logging.getLogger(__name__)


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
            f"model {name!r} is not served; available: {', '.join(sorted(available)) or 'none'}"
        )


class FailedPrecondition(ServiceError):
    """The request is well-formed but the served models cannot answer it (e.g. no classifier)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Overloaded(ServiceError):
    """The bounded queue is full: the client should back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class BackendUnavailable(ServiceError):
    """The inference engine (Triton) cannot be reached; the service recovers when it returns."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for ``exc``."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the request ran past its deadline"
    log.exception("unexpected error while serving a request", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"
