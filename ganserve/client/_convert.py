"""Typed results and the conversions between them and the protobuf messages (sync and async share these)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
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
# A class: its id, or a blend of classes by name or id ({"Shirt": 0.7, "Pullover": 0.3}).
ClassLike = int | Mapping[str | int, float]


@dataclass(frozen=True)
class ChannelEdit:
    """Multiply ``channels`` (all when empty) of a hidden ``layer`` by ``scale`` (0: off)."""

    layer: str
    channels: Sequence[int] = ()
    scale: float = 0.0


EditLike = ChannelEdit | tuple[str, Sequence[int], float]


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
    editable_layers: dict[str, int] = field(default_factory=dict)  # layer → channels
    class_blending: bool = False

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
    class_weights: np.ndarray | None = None  # a blend: the weights used, per class id

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
        editable_layers={e.layer: e.channels for e in message.editable_layers},
        class_blending=message.class_blending,
    )


def generated_image(message: pb.GeneratedImage) -> GeneratedImage:
    return GeneratedImage(
        latent=np.asarray(message.latent.values, dtype=np.float32),
        seed=message.seed if message.HasField("seed") else None,
        label=message.label if message.HasField("label") else None,
        png=message.png,
        array=tensor_to_array(message.tensor) if message.HasField("tensor") else None,
        class_weights=(
            np.asarray(message.class_weights, np.float32) if len(message.class_weights) else None
        ),
    )


def class_blend(value: ClassLike) -> pb.ClassBlend:
    if isinstance(value, Mapping):
        return pb.ClassBlend(weights={str(k): float(w) for k, w in value.items()})
    return pb.ClassBlend(weights={str(int(value)): 1.0})


def _set_classes(request, labels: ClassLike | Sequence[ClassLike] | None) -> None:
    """Integer labels go in ``labels``; as soon as one is a blend, all go in ``blends``."""
    if labels is None:
        return
    items = [labels] if isinstance(labels, (int, np.integer, Mapping)) else list(labels)
    if any(isinstance(item, Mapping) for item in items):
        request.blends.extend(class_blend(item) for item in items)
    else:
        request.labels.extend(int(item) for item in items)


def _set_steering(request, psi: float | None, edits: Sequence[EditLike] = ()) -> None:
    if psi is not None:
        request.psi = psi
    for edit in edits:
        layer, channels, scale = (
            (edit.layer, edit.channels, edit.scale) if isinstance(edit, ChannelEdit) else edit
        )
        request.edits.append(
            pb.ChannelEdit(layer=layer, channels=[int(c) for c in channels], scale=float(scale))
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
    labels: ClassLike | Sequence[ClassLike] | None,
    image_format: ImageFormat,
    psi: float | None = None,
    edits: Sequence[EditLike] = (),
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
    _set_classes(request, labels)
    _set_steering(request, psi, edits)
    return request


def interpolate_request(
    model: str,
    keys: Sequence[LatentLike],
    steps: int,
    method: Literal["lerp", "slerp"],
    label: ClassLike | Sequence[ClassLike] | None,
    image_format: ImageFormat,
    psi: float | None = None,
) -> pb.InterpolateRequest:
    """``label``: one class or blend held along the path, or a list of them to walk between."""
    request = pb.InterpolateRequest(
        model=model,
        keys=[latent_source(k) for k in keys],
        steps=steps,
        method=pb.SLERP if method == "slerp" else pb.LERP,
        format=FORMATS[image_format],
    )
    if isinstance(label, (int, np.integer)):
        request.label = int(label)
    elif isinstance(label, Mapping):
        request.blends.append(class_blend(label))
    elif label is not None:
        request.blends.extend(class_blend(item) for item in label)
    _set_steering(request, psi)
    return request


def class_map_request(
    model: str,
    resolution: int,
    classifier: str,
    axes: tuple[int, int] | None,
    fixed: Sequence[float] | None,
    value_range: tuple[float, float] | None,
    plane: Sequence[LatentLike] | None,
    label: ClassLike | None,
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
    if isinstance(label, Mapping):
        request.blend.CopyFrom(class_blend(label))
    elif label is not None:
        request.label = int(label)
    return request


def layer_activations_request(
    model: str,
    latents: Sequence[LatentLike],
    layers: Sequence[str],
    labels: ClassLike | Sequence[ClassLike] | None,
    include_tensors: bool,
    heatmaps: bool,
    psi: float | None = None,
    edits: Sequence[EditLike] = (),
) -> pb.LayerActivationsRequest:
    request = pb.LayerActivationsRequest(
        model=model,
        latents=[latent_source(z) for z in latents],
        layers=list(layers),
        include_tensors=include_tensors,
        heatmap_png=heatmaps,
    )
    _set_classes(request, labels)
    _set_steering(request, psi, edits)
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
