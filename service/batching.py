"""Dynamic batching in process: concurrent requests to one model merge into one inference.

Like Triton's dynamic batcher with an instance group: up to ``instances`` batches run at once (on
a CPU, one single-threaded inference per core does more work than one inference spread over every
core). A batch starts on a free instance when it reaches ``max_batch_size`` images or when the
oldest request has waited ``max_queue_delay_s``; requests that arrive while every instance is busy
merge. Work is spread over the free instances: a big request is cut into one chunk per instance,
and a free instance takes its share of the queue rather than all of it; while one instance is busy,
another starts only on ``MIN_SPLIT_IMAGES`` or more waiting images (a trickle of single images
gathers into batches instead of running one by one). The queue is bounded in
images; a request that would overflow it is refused at once (RESOURCE_EXHAUSTED) rather than
growing memory.

The scheduling runs as plain callbacks on the event loop, never as a task of its own: a request
that arrives schedules one dispatch (requests of the same loop turn share it), and a batch that
ends dispatches the next before its callers are answered. Each batch crosses to its executor
thread and back once (one ``call_soon_threadsafe``), so the hand-off costs the same whatever the
batch size.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np

from .backends.base import InferenceObserver, NullObserver
from .errors import BackendUnavailable, DeadlineExceeded, Overloaded

RunFn = Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]
MIN_SPLIT_IMAGES = 8  # smallest piece of work worth a second instance
CLOSE_POLL_S = 0.005


def chunk_sizes(size: int, max_batch_size: int, instances: int) -> list[int]:
    """How one request of ``size`` images is cut: no chunk over ``max_batch_size``, and as many
    chunks as instances when each still gets ``MIN_SPLIT_IMAGES`` (so every core works on it)."""
    count = max(math.ceil(size / max_batch_size), min(instances, size // MIN_SPLIT_IMAGES), 1)
    base, extra = divmod(size, count)
    return [base + 1] * extra + [base] * (count - extra)


@dataclass(slots=True)
class _Pending:
    inputs: dict[str, np.ndarray]
    outputs: Sequence[str]
    size: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        model: str,
        backend: str = "embedded",
        max_batch_size: int = 64,
        max_queue_delay_s: float = 0.002,
        max_queued_images: int = 4096,
        enabled: bool = True,
        instances: int = 1,
        observer: InferenceObserver | None = None,
    ):
        if instances < 1:
            raise ValueError(f"instances must be at least 1, got {instances}")
        self._run = run
        self._executor = executor
        self.model, self.backend = model, backend
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s if enabled else 0.0
        self.max_queued_images = max_queued_images
        self.enabled = enabled
        self.instances = instances  # the executor must have at least this many threads
        self._observer = observer or NullObserver()
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._busy = 0  # batches running
        self._dispatch_pending = False  # a dispatch is scheduled for this loop turn
        self._timer: asyncio.TimerHandle | None = None  # fills a batch for max_queue_delay_s
        self._closed = False

    @property
    def queued_images(self) -> int:
        return self._queued_images

    async def submit(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise BackendUnavailable(f"{self.model}: the batcher is closed (shutting down)")
        size = len(next(iter(inputs.values())))
        if self._queued_images + size > self.max_queued_images:
            raise Overloaded(
                f"{self.model}: queue full ({self._queued_images} images waiting, limit {self.max_queued_images})"
            )
        sizes = chunk_sizes(size, self.max_batch_size, self.instances)
        if len(sizes) > 1:  # chunks, which may share batches with others
            starts = np.cumsum([0, *sizes[:-1]])
            chunks = [
                {k: v[a : a + n] for k, v in inputs.items()}
                for a, n in zip(starts, sizes, strict=True)
            ]
            parts = await asyncio.gather(*(self.submit(c, outputs, timeout_s) for c in chunks))
            return {name: np.concatenate([p[name] for p in parts]) for name in outputs}
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append(_Pending(inputs, outputs, size, future))
        self._queued_images += size
        if not self._dispatch_pending and self._busy < self.instances:
            self._dispatch_pending = True
            loop.call_soon(self._dispatch)
        if timeout_s is None:
            return await future
        try:
            async with asyncio.timeout(timeout_s):  # on expiry the future is cancelled: skipped
                return await future
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"{self.model}: deadline passed while queued or running"
            ) from exc

    async def close(self) -> None:
        """Start nothing more (after shutdown has drained the calls); wait for running batches."""
        if self._timer is not None:
            self._timer.cancel()
        self._closed = True
        self.instances = 0  # what is still queued is not started (its callers were drained)
        while self._busy:  # rare (once per model at shutdown): a poll is simpler than an event
            await asyncio.sleep(CLOSE_POLL_S)

    # -- on the event loop ---------------------------------------------------------------------
    def _take_batch(self, limit: int) -> list[_Pending]:
        batch, size = [], 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled by its caller: drop it
                self._queue.popleft()
                self._queued_images -= item.size
                continue
            if batch and (size + item.size > limit or not self.enabled):
                break
            self._queue.popleft()
            self._queued_images -= item.size
            batch.append(item)
            size += item.size
        return batch

    def _dispatch(self) -> None:
        """Start batches on free instances while the queue and the batching rules allow."""
        self._dispatch_pending = False
        while self._queue and self._busy < self.instances:
            if self.enabled:
                waited = time.perf_counter() - self._queue[0].enqueued
                remaining = self.max_queue_delay_s - waited
                if self._queued_images < self.max_batch_size and remaining > 0:
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(
                            remaining, self._delay_over
                        )
                    return
                if self._busy and self._queued_images < MIN_SPLIT_IMAGES:
                    # Another instance is busy: let a few calls gather rather than run them one
                    # by one (small batches cost more per image); the busy one takes them when
                    # it ends.
                    return
            free = self.instances - self._busy
            share = max(MIN_SPLIT_IMAGES, math.ceil(self._queued_images / free))
            batch = self._take_batch(min(self.max_batch_size, share))
            if batch:
                self._start(batch)

    def _delay_over(self) -> None:
        self._timer = None
        self._dispatch()

    def _start(self, batch: list[_Pending]) -> None:
        self._busy += 1
        if len(batch) == 1:
            inputs, names = batch[0].inputs, list(batch[0].outputs)
        else:
            names = sorted({n for p in batch for n in p.outputs})
            inputs = {k: np.concatenate([p.inputs[k] for p in batch]) for k in batch[0].inputs}
        loop = asyncio.get_running_loop()
        started = time.perf_counter()

        def finished(done: Future) -> None:  # in the executor thread: one hop back to the loop
            ended = time.perf_counter()
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(self._deliver, batch, done, started, ended)

        try:
            self._executor.submit(self._run, inputs, names).add_done_callback(finished)
        except RuntimeError as exc:  # the executor is shut down
            failed: Future = Future()
            failed.set_exception(exc)
            self._deliver(batch, failed, started, started)

    def _deliver(self, batch: list[_Pending], done: Future, started: float, ended: float) -> None:
        self._busy -= 1
        self._dispatch()  # the next batch starts before this one's callers are answered
        error = done.exception()
        if error is not None:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        results = done.result()
        size = sum(p.size for p in batch)
        queue_s = sum(started - p.enqueued for p in batch) / len(batch)
        self._observer.batch_done(self.backend, self.model, size, queue_s, ended - started)
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result({n: results[n] for n in batch[0].outputs})
            return
        offset = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result({n: results[n][offset : offset + p.size] for n in p.outputs})
            offset += p.size
