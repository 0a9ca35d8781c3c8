"""Typed results and the conversions between them and the protobuf messages (sync and async share these)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ganserve.v1 import generation_pb2 as pb

ImageFormat = Literal["png", "float32", "uint8"]
FORMATS = {"png": pb.PNG, "float32": pb.RAW_FLOAT32, "uint8": pb.RAW_UINT8}
KINDS = {
    pb.GENERATOR: "generator",
    pb.CONDITIONAL_GENERATOR: "conditional_generator",
    pb.CLASSIFIER: "classifier",
}
LatentLike = int | Sequence[float] | np.ndarray  # a seed, or the latent itself


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    latent_dim: int
    prior: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # C, H, W
    layer_names: tuple[str, ...]
    dataset: str
    epoch: int
    family: str
    parameters: int
    metrics: dict[str, Any]
    backend: str

    @property
    def conditional(self) -> bool:
        return self.kind == "conditional_generator"


@dataclass
class GeneratedImage:
    """One image: ``array`` is uint8 ``[H, W, C]`` for PNG/uint8, float32 ``[C, H, W]`` in [-1, 1] for float32."""

    latent: np.ndarray
    seed: int | None = None
    label: int | None = None
    png: bytes = b""
    array: np.ndarray | None = field(default=None, repr=False)

    def to_pil(self):
        """The image as a PIL image."""
        from PIL import Image

        if self.png:
            return Image.open(io.BytesIO(self.png))
        pixels = self.array
        if pixels.dtype != np.uint8:  # float32 [C, H, W] in [-1, 1]
            pixels = (
                np.clip(np.rint((pixels + 1) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)
            )
        return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


@dataclass
class Frame:
    index: int
    t: float
    image: GeneratedImage


@dataclass
class ClassMap:
    class_ids: np.ndarray  # [R, R] int, row 0 at the top
    confidences: np.ndarray  # [R, R] float
    shares: dict[str, float]  # class name → share of the cells
    class_names: tuple[str, ...]
    classifier: str
    png: bytes
    cached: bool


@dataclass
class LayerActivation:
    layer: str
    shape: tuple[int, ...]
    tensor: np.ndarray | None
    channel_means: np.ndarray
    mean_map: np.ndarray | None
    heatmaps: list[bytes]


def tensor_to_array(tensor: pb.Tensor) -> np.ndarray:
    dtype = np.uint8 if tensor.dtype == pb.Tensor.UINT8 else np.dtype("<f4")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))


def model_info(message: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=message.name,
        kind=KINDS.get(message.kind, "unknown"),
        latent_dim=message.latent_dim,
        prior=message.prior,
        class_names=tuple(message.class_names),
        image_shape=(message.channels, message.height, message.width),
        layer_names=tuple(message.layer_names),
        dataset=message.dataset,
        epoch=message.epoch,
        family=message.family,
        parameters=message.parameters,
        metrics=json.loads(message.metrics_json) if message.metrics_json else {},
        backend=message.backend,
    )


def generated_image(message: pb.GeneratedImage) -> GeneratedImage:
    return GeneratedImage(
        latent=np.asarray(message.latent.values, dtype=np.float32),
        seed=message.seed if message.HasField("seed") else None,
        label=message.label if message.HasField("label") else None,
        png=message.png,
        array=tensor_to_array(message.tensor) if message.HasField("tensor") else None,
    )


def latent_source(value: LatentLike) -> pb.LatentSource:
    if isinstance(value, (int, np.integer)):
        return pb.LatentSource(seed=int(value))
    return pb.LatentSource(
        latent=pb.Latent(values=np.asarray(value, dtype=np.float32).ravel().tolist())
    )


def generate_request(
    model: str,
    seeds: Sequence[int] | None,
    latents: Sequence[Sequence[float]] | np.ndarray | None,
    count: int | None,
    labels: int | Sequence[int] | None,
    image_format: ImageFormat,
) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=model, format=FORMATS[image_format])
    if seeds is not None:
        request.seeds.extend(int(s) for s in seeds)
    if latents is not None:
        request.latents.extend(
            pb.Latent(values=np.asarray(z, np.float32).tolist()) for z in latents
        )
    if count:
        request.count = count
    if labels is not None:
        request.labels.extend(
            [labels] if isinstance(labels, (int, np.integer)) else [int(x) for x in labels]
        )
    return request


def interpolate_request(
    model: str,
    keys: Sequence[LatentLike],
    steps: int,
    method: Literal["lerp", "slerp"],
    label: int | None,
    image_format: ImageFormat,
) -> pb.InterpolateRequest:
    request = pb.InterpolateRequest(
        model=model,
        keys=[latent_source(k) for k in keys],
        steps=steps,
        method=pb.SLERP if method == "slerp" else pb.LERP,
        format=FORMATS[image_format],
    )
    if label is not None:
        request.label = label
    return request


def class_map_request(
    model: str,
    resolution: int,
    classifier: str,
    axes: tuple[int, int] | None,
    fixed: Sequence[float] | None,
    value_range: tuple[float, float] | None,
    plane: Sequence[LatentLike] | None,
    label: int | None,
    render_png: bool,
) -> pb.ClassMapRequest:
    request = pb.ClassMapRequest(
        model=model, resolution=resolution, classifier=classifier, render_png=render_png
    )
    if axes is not None:
        request.axis_x, request.axis_y = axes
    if fixed is not None:
        request.fixed.extend(float(v) for v in fixed)
    if value_range is not None:
        request.range_min, request.range_max = value_range
    if plane is not None:
        request.plane.extend(latent_source(p) for p in plane)
    if label is not None:
        request.label = label
    return request


def layer_activations_request(
    model: str,
    latents: Sequence[LatentLike],
    layers: Sequence[str],
    labels: int | Sequence[int] | None,
    include_tensors: bool,
    heatmaps: bool,
) -> pb.LayerActivationsRequest:
    request = pb.LayerActivationsRequest(
        model=model,
        latents=[latent_source(z) for z in latents],
        layers=list(layers),
        include_tensors=include_tensors,
        heatmap_png=heatmaps,
    )
    if labels is not None:
        request.labels.extend(
            [labels] if isinstance(labels, (int, np.integer)) else [int(x) for x in labels]
        )
    return request


def class_map(message: pb.ClassMapResponse) -> ClassMap:
    side = message.resolution
    return ClassMap(
        class_ids=np.asarray(message.class_ids, dtype=np.int64).reshape(side, side),
        confidences=np.asarray(message.confidences, dtype=np.float32).reshape(side, side),
        shares={s.name: s.share for s in message.shares},
        class_names=tuple(message.class_names),
        classifier=message.classifier,
        png=message.png,
        cached=message.cached,
    )


def layer_activations(message: pb.LayerActivationsResponse) -> dict[str, LayerActivation]:
    return {
        layer.layer: LayerActivation(
            layer=layer.layer,
            shape=tuple(layer.shape),
            tensor=tensor_to_array(layer.tensor) if layer.HasField("tensor") else None,
            channel_means=tensor_to_array(layer.channel_means),
            mean_map=tensor_to_array(layer.mean_map) if layer.HasField("mean_map") else None,
            heatmaps=list(layer.heatmaps),
        )
        for layer in message.layers
    }
