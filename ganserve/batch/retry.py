"""Which call failures are worth retrying, and when to stop waiting for a server that is gone."""

from __future__ import annotations

import threading
import time

import grpc

from ganserve.client import GanserveClientError

from .errors import RequestRefused, ServerGone

# The same request gets the same answer: stop the job and say why instead of retrying.
PERMANENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
}


def refused(exc: GanserveClientError, what: str) -> RequestRefused | None:
    """The job-stopping error for a permanent failure, or None when a retry may help."""
    if exc.code not in PERMANENT_CODES:
        return None
    hint = ""
    if exc.code == grpc.StatusCode.INVALID_ARGUMENT and "count" in str(exc):
        hint = "; lower --request-size to the server's limit (its --max-images)"
    return RequestRefused(f"the server refused {what}: {exc}{hint}")


def unreachable(exc: GanserveClientError) -> bool:
    """No server (or no backend behind it) answered: the give-up clock, not the call's retries,
    bounds the wait, so a long outage does not burn through the job marking calls failed."""
    return exc.code == grpc.StatusCode.UNAVAILABLE


class Outage:
    """The time since the last successful call (or since the start, before the first one).

    Every worker reports to one ``Outage``, so a vanished server stops the job after
    ``give_up_after_s`` however many images are still to make.
    """

    def __init__(self, give_up_after_s: float, address: str, clock=time.monotonic):
        self.give_up_after_s, self.address, self._clock = give_up_after_s, address, clock
        self._lock = threading.Lock()
        self._since: float | None = clock()
        self._last_error: Exception | None = None

    def succeeded(self) -> None:
        with self._lock:
            self._since = None

    def failed(self, exc: Exception) -> None:
        with self._lock:
            self._last_error = exc
            if self._since is None:
                self._since = self._clock()

    def remaining_s(self) -> float | None:
        """Seconds left before giving up, or None while calls succeed."""
        with self._lock:
            if self._since is None:
                return None
            return self.give_up_after_s - (self._clock() - self._since)

    def call_timeout_s(self, timeout_s: float) -> float:
        """A call's deadline: never far past the give-up time, so a silent host is given up on too."""
        remaining = self.remaining_s()
        return timeout_s if remaining is None else max(1.0, min(timeout_s, remaining))

    def check(self) -> None:
        remaining = self.remaining_s()
        if remaining is not None and remaining <= 0:
            raise ServerGone(
                f"no call to {self.address} succeeded for {self.give_up_after_s:g} s "
                f"(--give-up-after-s); last error: {self._last_error or 'none yet'}. "
                "Run the same command again when the service is back: what is done is kept"
            )

    def backoff_s(self, attempt: int) -> float:
        delay = min(0.25 * 2**attempt, 5.0)
        remaining = self.remaining_s()
        return delay if remaining is None else max(0.0, min(delay, remaining))
