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
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .backends.base import InferenceObserver, NullObserver
from .errors import DeadlineExceeded, Overloaded

RunFn = Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]
MIN_SPLIT_IMAGES = 8  # smallest piece of work worth a second instance
IDLE_EXIT_S = 30.0  # a worker with nothing queued or running for this long ends


def chunk_sizes(size: int, max_batch_size: int, instances: int) -> list[int]:
    """How one request of ``size`` images is cut: no chunk over ``max_batch_size``, and as many
    chunks as instances when each still gets ``MIN_SPLIT_IMAGES`` (so every core works on it)."""
    count = max(math.ceil(size / max_batch_size), min(instances, size // MIN_SPLIT_IMAGES), 1)
    base, extra = divmod(size, count)
    return [base + 1] * extra + [base] * (count - extra)


@dataclass
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
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    @property
    def queued_images(self) -> int:
        return self._queued_images

    async def submit(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
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
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, outputs, size, future))
        self._queued_images += size
        self._ensure_worker()
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout_s):  # on expiry the future is cancelled: skipped
                return await future
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"{self.model}: deadline passed while queued or running"
            ) from exc

    async def close(self) -> None:
        """Stop the worker (after shutdown has drained the calls) and wait for running batches."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"batcher-{self.model}"
            )

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

    async def _wait(self, timeout_s: float | None) -> bool:
        """Until something changes (a request arrives, a batch ends): True, or False when
        ``timeout_s`` passed first. No task per wait: this runs once per call under load."""
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()
            return True
        except TimeoutError:
            return False

    async def _work(self) -> None:
        while True:
            if not self._queue and not self._running:
                if not await self._wait(IDLE_EXIT_S):
                    return  # idle: the next submit starts a new worker
                continue
            if not self._queue or len(self._running) >= self.instances:
                await self._wait(None)
                continue
            remaining = self.max_queue_delay_s - (time.perf_counter() - self._queue[0].enqueued)
            if self.enabled and self._queued_images < self.max_batch_size and remaining > 0:
                await self._wait(remaining)
                continue
            if self.enabled and self._running and self._queued_images < MIN_SPLIT_IMAGES:
                # Another instance is busy: let a few calls gather rather than run them one by
                # one (small batches cost more per image); the busy one takes them when it ends.
                await self._wait(None)
                continue
            free = self.instances - len(self._running)
            share = max(MIN_SPLIT_IMAGES, math.ceil(self._queued_images / free))
            batch = self._take_batch(min(self.max_batch_size, share))
            if batch:
                task = asyncio.get_running_loop().create_task(self._run_batch(batch))
                self._running.add(task)
                task.add_done_callback(self._batch_ended)

    def _batch_ended(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._wakeup.set()

    async def _run_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        names = sorted({n for p in batch for n in p.outputs})
        inputs = {k: np.concatenate([p.inputs[k] for p in batch]) for k in batch[0].inputs}
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run, inputs, names)
        except Exception as exc:  # noqa: BLE001 - delivered to every caller of the batch
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finished = time.perf_counter()
        size = sum(p.size for p in batch)
        queue_s = sum(started - p.enqueued for p in batch) / len(batch)
        self._observer.batch_done(self.backend, self.model, size, queue_s, finished - started)
        offset = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result({n: results[n][offset : offset + p.size] for n in p.outputs})
            offset += p.size
