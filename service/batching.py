"""Dynamic batching in process: concurrent requests to one model merge into one inference.

Like Triton's dynamic batcher: a batch runs when it reaches ``max_batch_size`` images or when the
oldest request has waited ``max_queue_delay_s``. The queue is bounded in images; a request that
would overflow it is refused at once (RESOURCE_EXHAUSTED) rather than growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .backends.base import InferenceObserver, NullObserver
from .errors import DeadlineExceeded, Overloaded

RunFn = Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]


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
        observer: InferenceObserver | None = None,
    ):
        self._run = run
        self._executor = executor
        self.model, self.backend = model, backend
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s if enabled else 0.0
        self.max_queued_images = max_queued_images
        self.enabled = enabled
        self._observer = observer or NullObserver()
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None

    @property
    def queued_images(self) -> int:
        return self._queued_images

    async def submit(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        size = len(next(iter(inputs.values())))
        if (
            size > self.max_batch_size
        ):  # one big request: chunks, which may share batches with others
            chunks = [
                {k: v[s : s + self.max_batch_size] for k, v in inputs.items()}
                for s in range(0, size, self.max_batch_size)
            ]
            if self._queued_images + size > self.max_queued_images:
                raise Overloaded(f"{self.model}: queue full ({self._queued_images} images waiting)")
            parts = await asyncio.gather(*(self.submit(c, outputs, timeout_s) for c in chunks))
            return {name: np.concatenate([p[name] for p in parts]) for name in outputs}
        if self._queued_images + size > self.max_queued_images:
            raise Overloaded(
                f"{self.model}: queue full ({self._queued_images} images waiting, limit {self.max_queued_images})"
            )
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, outputs, size, future))
        self._queued_images += size
        self._ensure_worker()
        self._wakeup.set()
        try:
            return (
                await asyncio.wait_for(asyncio.shield(future), timeout_s)
                if timeout_s
                else await future
            )
        except TimeoutError as exc:
            future.cancel()  # the worker skips it if it has not started
            raise DeadlineExceeded(
                f"{self.model}: deadline passed while queued or running"
            ) from exc

    async def close(self) -> None:
        """Stop the worker (after shutdown has drained the calls)."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"batcher-{self.model}"
            )

    def _take_batch(self) -> list[_Pending]:
        batch, size = [], 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled by its caller: drop it
                self._queue.popleft()
                self._queued_images -= item.size
                continue
            if batch and (size + item.size > self.max_batch_size or not self.enabled):
                break
            self._queue.popleft()
            self._queued_images -= item.size
            batch.append(item)
            size += item.size
        return batch

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=30.0)
                except TimeoutError:
                    return  # idle: the next submit starts a new worker
                continue
            oldest = self._queue[0].enqueued
            waiting = sum(p.size for p in self._queue)
            remaining = self.max_queue_delay_s - (time.perf_counter() - oldest)
            if self.enabled and waiting < self.max_batch_size and remaining > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
                continue
            batch = self._take_batch()
            if batch:
                await self._run_batch(batch)

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
