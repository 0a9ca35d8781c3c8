"""The seam between the service and an inference engine."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ganserve.description import ModelDescription


class InferenceObserver(Protocol):
    """Told about every batch a backend runs (the metrics module implements it)."""

    def batch_done(
        self, backend: str, model: str, batch_size: int, queue_s: float, inference_s: float
    ) -> None: ...


class NullObserver:
    def batch_done(
        self, backend: str, model: str, batch_size: int, queue_s: float, inference_s: float
    ) -> None:
        pass


class Backend(abc.ABC):
    """Runs exported models: named float/int inputs in, the requested named outputs back."""

    name: str = "backend"

    @abc.abstractmethod
    async def start(self) -> None:
        """Load or discover the models; raise if none can be served."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def models(self) -> dict[str, ModelDescription]:
        """The served models by name (may change while a backend recovers)."""

    @abc.abstractmethod
    def is_ready(self) -> bool:
        """False while the engine is unreachable (health reports NOT_SERVING)."""

    @abc.abstractmethod
    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on a batch; any batch size, the backend splits what it must."""

    def classmap_ensemble(self, generator: str, classifier: str) -> str | None:
        """A model that maps latents straight to classifier logits, when the engine has one."""
        return None
