"""``Client`` (blocking) and ``AsyncClient`` (asyncio) for the ganserve.v1 API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

from . import _convert as convert
from ._errors import from_rpc_error

SERVICE = "ganserve.v1.GenerationService"


@dataclass(frozen=True)
class Retry:
    """gRPC-native retries (service config) for UNAVAILABLE and RESOURCE_EXHAUSTED.

    Seeded calls are idempotent, so retrying them is safe; ``count`` calls just draw new seeds.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    codes: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

    def service_config(self) -> str:
        policy = {
            "maxAttempts": max(2, min(self.max_attempts, 5)),  # gRPC caps attempts at 5
            "initialBackoff": f"{self.initial_backoff_s}s",
            "maxBackoff": f"{self.max_backoff_s}s",
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": list(self.codes),
        }
        return json.dumps(
            {"methodConfig": [{"name": [{"service": SERVICE}], "retryPolicy": policy}]}
        )


def _channel_arguments(retry: Retry | None, max_message_bytes: int) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Reconnect soon after a refused connection, so retries meet a server that has come back.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 5000),
    ]
    if retry is not None:
        options += [("grpc.enable_retries", 1), ("grpc.service_config", retry.service_config())]
    else:
        options.append(("grpc.enable_retries", 0))
    return options


def _credentials(
    tls: bool, root_certificates: str | None, client_cert: str | None, client_key: str | None
):
    if not (tls or root_certificates or client_cert):
        return None
    read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
    return grpc.ssl_channel_credentials(
        read(root_certificates), read(client_key), read(client_cert)
    )


class _Base:
    def __init__(
        self,
        address: str = "localhost:50051",
        *,
        timeout_s: float = 30.0,
        classmap_timeout_s: float = 120.0,
        token: str | None = None,
        tls: bool = False,
        root_certificates: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        retry: Retry | None = Retry(),
        max_message_bytes: int = 64 * 1024 * 1024,
    ):
        self.address = address
        self.timeout_s = timeout_s
        # A class map is many calls' work in one: the largest (256², 65,536 generator and
        # classifier inferences) took 17-28 s on 2 cores, too close to the 30 s of the others.
        self.classmap_timeout_s = classmap_timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = _credentials(tls, root_certificates, client_cert, client_key)
        self._options = _channel_arguments(retry, max_message_bytes)

    def _call(self, timeout_s: float | None) -> dict:
        return {
            "timeout": self.timeout_s if timeout_s is None else timeout_s,
            "metadata": self._metadata,
        }


class Client(_Base):
    """Blocking client. Every call has a deadline (``timeout_s``) and raises ``GanserveClientError``s.

    >>> with Client("localhost:50051") as client:
    ...     images = client.generate("fmnist-cgan", seeds=[0, 1], labels=3)
    ...     images[0].to_pil().save("bag.png")
    """

    def __init__(self, address: str = "localhost:50051", **options):
        super().__init__(address, **options)
        self._channel = (
            grpc.secure_channel(address, self._credentials, options=self._options)
            if self._credentials
            else grpc.insecure_channel(address, options=self._options)
        )
        self._stub = pb_grpc.GenerationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _unary(self, method, request, timeout_s):
        try:
            return method(request, **self._call(timeout_s))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def list_models(self, timeout_s: float | None = None) -> list[convert.ModelInfo]:
        reply = self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout_s)
        return [convert.model_info(m) for m in reply.models]

    def get_model(self, model: str, timeout_s: float | None = None) -> convert.ModelInfo:
        return convert.model_info(
            self._unary(self._stub.GetModel, pb.GetModelRequest(model=model), timeout_s)
        )

    def generate(
        self,
        model: str,
        seeds: Sequence[int] | None = None,
        *,
        latents: Sequence[Sequence[float]] | np.ndarray | None = None,
        count: int | None = None,
        labels: convert.ClassLike | Sequence[convert.ClassLike] | None = None,
        image_format: convert.ImageFormat = "png",
        psi: float | None = None,
        edits: Sequence[convert.EditLike] = (),
        timeout_s: float | None = None,
    ) -> list[convert.GeneratedImage]:
        """Images from ``seeds``, explicit ``latents``, or ``count`` fresh seeds (exactly one of them).

        ``labels``: a class id, or a blend ``{"Shirt": 0.7, "Pullover": 0.3}``, for all images or
        one per image; ``psi``: truncation in (0, 1]; ``edits``: :class:`ChannelEdit` s (or
        ``(layer, channels, scale)`` tuples) applied inside the generator.
        """
        request = convert.generate_request(
            model, seeds, latents, count, labels, image_format, psi, edits
        )
        return [
            convert.generated_image(i)
            for i in self._unary(self._stub.Generate, request, timeout_s).images
        ]

    def interpolate(
        self,
        model: str,
        keys: Sequence[convert.LatentLike],
        steps: int = 16,
        *,
        method: Literal["lerp", "slerp"] = "lerp",
        label: convert.ClassLike | Sequence[convert.ClassLike] | None = None,
        image_format: convert.ImageFormat = "png",
        psi: float | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[convert.Frame]:
        """Frames from the first key to the last (seeds or latents), yielded as the server makes them."""
        request = convert.interpolate_request(model, keys, steps, method, label, image_format, psi)
        try:
            for frame in self._stub.Interpolate(request, **self._call(timeout_s)):
                yield convert.Frame(frame.index, frame.t, convert.generated_image(frame.image))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def class_map(
        self,
        model: str,
        resolution: int = 100,
        *,
        classifier: str = "",
        axes: tuple[int, int] | None = None,
        fixed: Sequence[float] | None = None,
        value_range: tuple[float, float] | None = None,
        plane: Sequence[convert.LatentLike] | None = None,
        label: convert.ClassLike | None = None,
        render_png: bool = False,
        timeout_s: float | None = None,
    ) -> convert.ClassMap:
        request = convert.class_map_request(
            model, resolution, classifier, axes, fixed, value_range, plane, label, render_png
        )
        timeout_s = self.classmap_timeout_s if timeout_s is None else timeout_s
        return convert.class_map(self._unary(self._stub.ClassMap, request, timeout_s))

    def layer_activations(
        self,
        model: str,
        latents: Sequence[convert.LatentLike],
        layers: Sequence[str] = (),
        *,
        labels: convert.ClassLike | Sequence[convert.ClassLike] | None = None,
        include_tensors: bool = True,
        heatmaps: bool = False,
        psi: float | None = None,
        edits: Sequence[convert.EditLike] = (),
        timeout_s: float | None = None,
    ) -> dict[str, convert.LayerActivation]:
        request = convert.layer_activations_request(
            model, latents, layers, labels, include_tensors, heatmaps, psi, edits
        )
        return convert.layer_activations(
            self._unary(self._stub.LayerActivations, request, timeout_s)
        )


class AsyncClient(_Base):
    """asyncio client with the same methods as :class:`Client`, awaitable (``interpolate`` is an async iterator).

    >>> async with AsyncClient("localhost:50051") as client:
    ...     async for frame in client.interpolate("fmnist-2d", [1, 2], steps=32):
    ...         ...
    """

    def __init__(self, address: str = "localhost:50051", **options):
        super().__init__(address, **options)
        self._channel = (
            grpc.aio.secure_channel(address, self._credentials, options=self._options)
            if self._credentials
            else grpc.aio.insecure_channel(address, options=self._options)
        )
        self._stub = pb_grpc.GenerationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _unary(self, method, request, timeout_s):
        try:
            return await method(request, **self._call(timeout_s))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def list_models(self, timeout_s: float | None = None) -> list[convert.ModelInfo]:
        reply = await self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout_s)
        return [convert.model_info(m) for m in reply.models]

    async def get_model(self, model: str, timeout_s: float | None = None) -> convert.ModelInfo:
        return convert.model_info(
            await self._unary(self._stub.GetModel, pb.GetModelRequest(model=model), timeout_s)
        )

    async def generate(
        self,
        model: str,
        seeds: Sequence[int] | None = None,
        *,
        latents: Sequence[Sequence[float]] | np.ndarray | None = None,
        count: int | None = None,
        labels: convert.ClassLike | Sequence[convert.ClassLike] | None = None,
        image_format: convert.ImageFormat = "png",
        psi: float | None = None,
        edits: Sequence[convert.EditLike] = (),
        timeout_s: float | None = None,
    ) -> list[convert.GeneratedImage]:
        request = convert.generate_request(
            model, seeds, latents, count, labels, image_format, psi, edits
        )
        reply = await self._unary(self._stub.Generate, request, timeout_s)
        return [convert.generated_image(i) for i in reply.images]

    async def interpolate(
        self,
        model: str,
        keys: Sequence[convert.LatentLike],
        steps: int = 16,
        *,
        method: Literal["lerp", "slerp"] = "lerp",
        label: convert.ClassLike | Sequence[convert.ClassLike] | None = None,
        image_format: convert.ImageFormat = "png",
        psi: float | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[convert.Frame]:
        request = convert.interpolate_request(model, keys, steps, method, label, image_format, psi)
        try:
            async for frame in self._stub.Interpolate(request, **self._call(timeout_s)):
                yield convert.Frame(frame.index, frame.t, convert.generated_image(frame.image))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def class_map(
        self,
        model: str,
        resolution: int = 100,
        *,
        classifier: str = "",
        axes: tuple[int, int] | None = None,
        fixed: Sequence[float] | None = None,
        value_range: tuple[float, float] | None = None,
        plane: Sequence[convert.LatentLike] | None = None,
        label: convert.ClassLike | None = None,
        render_png: bool = False,
        timeout_s: float | None = None,
    ) -> convert.ClassMap:
        request = convert.class_map_request(
            model, resolution, classifier, axes, fixed, value_range, plane, label, render_png
        )
        timeout_s = self.classmap_timeout_s if timeout_s is None else timeout_s
        return convert.class_map(await self._unary(self._stub.ClassMap, request, timeout_s))

    async def layer_activations(
        self,
        model: str,
        latents: Sequence[convert.LatentLike],
        layers: Sequence[str] = (),
        *,
        labels: convert.ClassLike | Sequence[convert.ClassLike] | None = None,
        include_tensors: bool = True,
        heatmaps: bool = False,
        psi: float | None = None,
        edits: Sequence[convert.EditLike] = (),
        timeout_s: float | None = None,
    ) -> dict[str, convert.LayerActivation]:
        request = convert.layer_activations_request(
            model, latents, layers, labels, include_tensors, heatmaps, psi, edits
        )
        return convert.layer_activations(
            await self._unary(self._stub.LayerActivations, request, timeout_s)
        )
