"""Triton Inference Server over gRPC (``tritonclient.grpc.aio``).

Model descriptions come from each model's config (the ``ganserve.description`` parameter that
``ganserve export`` writes); a request asks only for the outputs it needs and passes its deadline
on as the Triton timeout. While Triton is unreachable the backend reports not ready, and a
background probe brings it back by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from ganserve.description import ENSEMBLE_KEY, METADATA_KEY, ModelDescription

from ..errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidArgument,
    ModelNotFound,
    Overloaded,
    ServiceError,
)
from .base import Backend, InferenceObserver, NullObserver

log = logging.getLogger(__name__)
NUMPY_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def _map_error(exc: InferenceServerException, model: str) -> ServiceError:
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if "UNAVAILABLE" in status or "failed to connect" in message.lower():
        return BackendUnavailable(f"Triton is unreachable: {message}")
    if "DEADLINE_EXCEEDED" in status or "timeout" in message.lower() or "Deadline" in message:
        return DeadlineExceeded(f"{model}: Triton did not answer within the deadline")
    if "RESOURCE_EXHAUSTED" in status or ("queue" in message.lower() and "full" in message.lower()):
        return Overloaded(f"{model}: Triton's queue is full")
    if "NOT_FOUND" in status or "unknown model" in message.lower():
        return BackendUnavailable(f"{model}: not loaded in Triton ({message})")
    if "INVALID_ARGUMENT" in status:
        return InvalidArgument("request", f"Triton refused the request: {message}")
    return ServiceError(f"{model}: Triton error {status}: {message}")


class TritonBackend(Backend):
    name = "triton"

    def __init__(
        self,
        url: str,
        observer: InferenceObserver | None = None,
        probe_interval_s: float = 1.0,
        ssl: bool = False,
    ):
        self.url = url
        self._observer = observer or NullObserver()
        self._probe_interval_s = probe_interval_s
        self._client = triton.InferenceServerClient(url, ssl=ssl)
        self._models: dict[str, ModelDescription] = {}
        self._max_batch: dict[str, int] = {}
        self._ensembles: dict[tuple[str, str], str] = {}
        self._ready = False
        self._probe: asyncio.Task | None = None

    async def start(self) -> None:
        try:
            await self._refresh()
        except (InferenceServerException, OSError) as exc:
            log.warning("Triton at %s is not reachable yet (%s); will keep trying", self.url, exc)
            self._ready = False
        self._probe = asyncio.get_running_loop().create_task(self._watch(), name="triton-probe")

    async def _refresh(self) -> None:
        index = await self._client.get_model_repository_index()
        models, max_batch, ensembles = {}, {}, {}
        for entry in index.models:
            if entry.state and entry.state != "READY":
                continue
            config = (await self._client.get_model_config(entry.name)).config
            if ENSEMBLE_KEY in config.parameters:
                pair = json.loads(config.parameters[ENSEMBLE_KEY].string_value)
                ensembles[(pair["generator"], pair["classifier"])] = config.name
                max_batch[config.name] = config.max_batch_size or 1
                continue
            if METADATA_KEY not in config.parameters:
                continue  # not a ganserve model
            description = ModelDescription.from_json(config.parameters[METADATA_KEY].string_value)
            description.name = config.name
            models[config.name] = description
            max_batch[config.name] = config.max_batch_size or 1
        self._models, self._max_batch, self._ensembles = models, max_batch, ensembles
        self._ready = bool(models) and await self._client.is_server_ready()
        log.info("Triton %s: %s", self.url, ", ".join(sorted(models)) or "no ganserve models")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s)
            try:
                live = await self._client.is_server_ready(client_timeout=self._probe_interval_s * 2)
            except (InferenceServerException, OSError):
                live = False
            if live and not self._ready:
                try:
                    await self._refresh()
                    log.info("Triton at %s is back", self.url)
                except (InferenceServerException, OSError):
                    self._ready = False
            elif not live and self._ready:
                log.warning("Triton at %s went away", self.url)
                self._ready = False

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._client.close()

    def models(self) -> dict[str, ModelDescription]:
        return dict(self._models)

    def is_ready(self) -> bool:
        return self._ready

    def classmap_ensemble(self, generator: str, classifier: str) -> str | None:
        return self._ensembles.get((generator, classifier))

    async def _infer_chunk(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        tensors = []
        for name, value in inputs.items():
            value = value.reshape(-1, 1) if name == "label" else value  # config dims [1], reshaped
            tensor = triton.InferInput(name, list(value.shape), NUMPY_TO_TRITON[value.dtype])
            tensor.set_data_from_numpy(np.ascontiguousarray(value))
            tensors.append(tensor)
        wanted = [triton.InferRequestedOutput(n) for n in outputs]
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        try:
            result = await self._client.infer(
                model,
                tensors,
                outputs=wanted,
                client_timeout=remaining,
                timeout=None if remaining is None else int(remaining * 1e6),
            )
        except InferenceServerException as exc:
            error = _map_error(exc, model)
            if isinstance(error, BackendUnavailable):
                self._ready = False
            raise error from exc
        return {n: result.as_numpy(n) for n in outputs}

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        if not self._ready:
            raise BackendUnavailable(f"Triton at {self.url} is not ready")
        if model not in self._max_batch:
            raise ModelNotFound(model, list(self._models))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        size = len(next(iter(inputs.values())))
        step = self._max_batch[model]
        started = time.perf_counter()
        parts = await asyncio.gather(
            *(
                self._infer_chunk(
                    model, {k: v[s : s + step] for k, v in inputs.items()}, outputs, deadline
                )
                for s in range(0, size, step)
            )
        )
        # Triton batches on its side; from here a request is one "batch" with no queue time seen.
        self._observer.batch_done(self.name, model, size, 0.0, time.perf_counter() - started)
        if len(parts) == 1:
            return parts[0]
        return {n: np.concatenate([p[n] for p in parts]) for n in outputs}
