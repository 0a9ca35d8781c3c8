"""Admission of streamed work: a model's open Interpolate streams owe at most a bounded number of
frames, and a new stream is refused when the frames owed before it could not be made within its
deadline at the rate this server has been making them. Overload is then refused at once
(RESOURCE_EXHAUSTED) instead of every stream slowing down until all of them miss their deadlines."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from .errors import Overloaded

RATE_SMOOTHING = 0.2  # weight of the newest chunk in the seconds-per-frame average


class FrameBudget:
    """Frames promised to open streams, per model, up to ``limit``, and what a frame costs.

    A lone stream is always admitted (its length is bounded by ``--max-steps``), so the cost is
    learnt from real streams and kept between bursts.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._held: dict[str, int] = {}
        self._open: dict[str, int] = {}
        self._seconds_per_frame: dict[str, float] = {}

    def held(self, model: str) -> int:
        return self._held.get(model, 0)

    def seconds_per_frame(self, model: str) -> float | None:
        """Server time per frame with every open stream of ``model`` sharing it; None until a
        stream has sent a chunk."""
        return self._seconds_per_frame.get(model)

    def _admit(self, model: str, frames: int, timeout_s: float | None) -> None:
        held = self.held(model)
        if not held:
            return
        if held + frames > self.limit:
            raise Overloaded(
                f"{model}: open streams still owe {held:,} frames and {frames:,} more would pass "
                f"the limit of {self.limit:,}; retry later"
            )
        cost = self.seconds_per_frame(model)
        if cost is not None and timeout_s is not None and (held + frames) * cost > timeout_s:
            raise Overloaded(
                f"{model}: the {held:,} frames open streams still owe and these {frames:,} would "
                f"take about {(held + frames) * cost:.1f} s here, past this call's deadline "
                f"({timeout_s:.1f} s); retry later"
            )

    def _learn(self, model: str, seconds: float, frames: int) -> None:
        cost = seconds / frames / max(1, self._open.get(model, 1))
        old = self._seconds_per_frame.get(model)
        self._seconds_per_frame[model] = (
            cost if old is None else (1 - RATE_SMOOTHING) * old + RATE_SMOOTHING * cost
        )

    @contextlib.contextmanager
    def hold(
        self, model: str, frames: int, timeout_s: float | None = None
    ) -> Iterator[Callable[[int], None]]:
        """Reserve ``frames`` for one stream (or raise Overloaded); yields ``sent(n)``, which
        hands back ``n`` frames as they go out and learns their cost. Whatever is left is handed
        back when the stream ends, however it ends."""
        self._admit(model, frames, timeout_s)
        self._held[model] = self.held(model) + frames
        self._open[model] = self._open.get(model, 0) + 1
        left = frames
        last = time.perf_counter()

        def sent(count: int) -> None:
            nonlocal left, last
            count = min(count, left)
            if count:
                now = time.perf_counter()
                self._learn(model, now - last, count)
                last = now
            left -= count
            self._held[model] -= count

        try:
            yield sent
        finally:
            self._held[model] -= left
            self._open[model] -= 1
