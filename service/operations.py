"""What each RPC does: request → validate → latents → backend.infer → postprocess → response."""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from ganserve.description import ModelDescription
from ganserve.latents import fresh_seeds, latents_from_seeds, path_through, truncate
from ganserve.v1 import generation_pb2 as pb

from . import imaging, steering
from . import validation as check
from .admission import FrameBudget
from .backends.base import Backend
from .config import ServeConfig
from .errors import InvalidArgument

KIND_TO_PROTO = {
    "generator": pb.GENERATOR,
    "conditional_generator": pb.CONDITIONAL_GENERATOR,
    "classifier": pb.CLASSIFIER,
}
INTERPOLATION_CHUNK = 16  # frames per inference while streaming
CLASSMAP_CHUNK = 4096  # cells per inference: bounds memory at 256² and above
OFFLOAD_IMAGES = 8  # from this many images on, encode in a worker thread beside the event loop
GIF_SCALE = 4  # GIF frames are upscaled so 28×28 images are visible
GIF_FRAME_MS = (20, 10_000)  # browsers show shorter frames at 100 ms; PIL overflows past 655 s
TENSOR_OVERHEAD_BYTES = 48  # a Tensor message's tags, lengths and shape, beyond its data


def tensor(array: np.ndarray) -> pb.Tensor:
    array = np.ascontiguousarray(array)
    dtype = pb.Tensor.UINT8 if array.dtype == np.uint8 else pb.Tensor.FLOAT32
    data = array.astype("<f4" if dtype == pb.Tensor.FLOAT32 else np.uint8, copy=False).tobytes()
    return pb.Tensor(shape=list(array.shape), dtype=dtype, data=data)


def model_info(description: ModelDescription, backend: str) -> pb.ModelInfo:
    channels, height, width = description.image_shape
    return pb.ModelInfo(
        name=description.name,
        kind=KIND_TO_PROTO[description.kind.value],
        latent_dim=description.latent_dim,
        prior=description.prior,
        class_names=list(description.class_names),
        channels=channels,
        height=height,
        width=width,
        layer_names=list(description.layer_names),
        dataset=description.dataset,
        epoch=description.epoch,
        family=description.family,
        parameters=description.parameters,
        metrics_json=json.dumps(description.metrics, sort_keys=True),
        backend=backend,
        editable_layers=[
            pb.EditableLayer(layer=layer, channels=channels)
            for layer, channels in description.editable_layers
        ],
        class_blending=description.blendable,
    )


def _image_bytes_per_item(model: ModelDescription, image_format: int) -> int:
    channels, height, width = model.image_shape
    pixels = channels * height * width
    per_pixel = 4 if image_format == pb.RAW_FLOAT32 else 1  # PNG is at most about the raw size
    return pixels * per_pixel + 4 * (model.latent_dim + model.num_classes) + 64


def _images(model: ModelDescription, images: np.ndarray, image_format: int) -> list[dict]:
    """One dict of GeneratedImage fields (png or tensor) per image."""
    if image_format == pb.RAW_FLOAT32:
        return [{"tensor": tensor(img.astype(np.float32))} for img in images]
    pixels = imaging.to_uint8_hwc(images)
    if image_format == pb.RAW_UINT8:
        return [{"tensor": tensor(p)} for p in pixels]
    return [{"png": png} for png in imaging.png_images(pixels)]


async def _encoded(model: ModelDescription, images: np.ndarray, image_format: int) -> list[dict]:
    """``_images``; a big set is encoded in a thread (the PNG encoder releases the GIL), so the
    event loop goes on serving other calls meanwhile. A few images cost less than the hand-off."""
    if len(images) < OFFLOAD_IMAGES:
        return _images(model, images, image_format)
    return await asyncio.to_thread(_images, model, images, image_format)


def _tensor_bytes(shape: tuple[int, ...]) -> int:
    return 4 * math.prod(shape) + TENSOR_OVERHEAD_BYTES


def _activations_bytes(
    shapes: list[tuple[int, ...]], latent_dim: int, include_tensors: bool
) -> int:
    """What a LayerActivations response of these layer shapes carries before heat maps: every
    tensor sent (float32 data plus framing) and the latents; not the full activations unless
    they are asked for."""
    count = shapes[0][0]
    size = count * (4 * latent_dim + 8)
    for shape in shapes:
        size += 64  # the layer's name, shape and framing
        if include_tensors:
            size += _tensor_bytes(shape)
        if len(shape) == 4:  # conv: channel means [N, C] and mean maps [N, H, W]
            size += _tensor_bytes(shape[:2]) + _tensor_bytes((count, *shape[2:]))
        else:
            size += _tensor_bytes(shape)
    return size


@dataclass
class Operations:
    backend: Backend
    config: ServeConfig

    def __post_init__(self) -> None:
        self._classmap_cache: OrderedDict[bytes, pb.ClassMapResponse] = OrderedDict()
        self._streams = FrameBudget(self.config.max_queued_images)

    # -- models ----------------------------------------------------------------------------------
    def list_models(self) -> pb.ListModelsResponse:
        models = sorted(self.backend.models().values(), key=lambda m: m.name)
        return pb.ListModelsResponse(models=[model_info(m, self.backend.name) for m in models])

    def get_model(self, request: pb.GetModelRequest) -> pb.ModelInfo:
        return model_info(check.served_model(self.backend, request.model), self.backend.name)

    # -- Generate --------------------------------------------------------------------------------
    async def generate(
        self, request: pb.GenerateRequest, timeout_s: float | None
    ) -> pb.GenerateResponse:
        model = check.generator(self.backend, request.model)
        given = [name for name in ("seeds", "latents") if len(getattr(request, name))] + (
            ["count"] if request.count else []
        )
        if len(given) != 1:
            raise InvalidArgument(
                "seeds|latents|count", f"set exactly one of them, got {given or 'none'}"
            )
        limit = self.config.max_images
        if request.count:
            check.in_range(request.count, 1, limit, "count")
            seeds: list[int | None] = fresh_seeds(request.count)
            latents = latents_from_seeds(seeds, model.latent_dim, model.prior)
        elif len(request.seeds):
            check.in_range(len(request.seeds), 1, limit, "seeds (count)")
            seeds = check.seeds(request.seeds)
            latents = latents_from_seeds(seeds, model.latent_dim, model.prior)
        else:
            check.in_range(len(request.latents), 1, limit, "latents (count)")
            latents = np.stack(
                [
                    check.latent_vector(z.values, model, f"latents[{i}].values")
                    for i, z in enumerate(request.latents)
                ]
            )
            seeds = [None] * len(latents)
        latents = truncate(latents, steering.psi(request))
        chosen = steering.classes(request.labels, request.blends, len(latents), model)
        scales = steering.channel_scales(request.edits, model)
        check.enum_value(request.format, pb.ImageFormat, "format")
        check.fits_message(
            len(latents) * _image_bytes_per_item(model, request.format),
            self.config.max_message_bytes,
            "count",
        )
        feeds = steering.model_inputs(model, latents, chosen, scales)
        result = await self.backend.infer(model.name, feeds, ["image"], timeout_s)
        response = pb.GenerateResponse(model=model.name)
        add = response.images.add  # built in place: a message passed to a constructor is copied
        for i, fields in enumerate(await _encoded(model, result["image"], request.format)):
            image = add(**fields)
            image.latent.values.extend(latents[i].tolist())
            if seeds[i] is not None:
                image.seed = seeds[i]
            steering.report(image, chosen, i)
        return response

    # -- Interpolate -----------------------------------------------------------------------------
    async def interpolate(
        self, request: pb.InterpolateRequest, timeout_s: float | None
    ) -> AsyncIterator[pb.InterpolateFrame]:
        model = check.generator(self.backend, request.model)
        walk = len(request.blends) > 1  # a path between classes: keys may be one fixed latent
        if walk and not 2 <= len(request.blends) <= steering.MAX_BLENDS:
            raise InvalidArgument(
                "blends", f"give 1, or 2 to {steering.MAX_BLENDS} blends, got {len(request.blends)}"
            )
        if walk and len(request.keys) not in (1, len(request.blends)):
            raise InvalidArgument(
                "keys",
                f"walking between {len(request.blends)} blends: give 1 key (held) or one per "
                f"blend, got {len(request.keys)}",
            )
        if not walk and not 2 <= len(request.keys) <= 64:
            raise InvalidArgument(
                "keys", f"give between 2 and 64 key points, got {len(request.keys)}"
            )
        steps = check.in_range(request.steps or 16, 2, self.config.max_steps, "steps")
        keys, key_seeds = check.latent_sources(request.keys, model, "keys")
        keys = truncate(keys, steering.psi(request))
        if len(request.blends):
            if request.HasField("label"):
                raise InvalidArgument("blends", "set label or blends, not both")
            rows = [
                steering.blend_weights(b, model, f"blends[{i}]")
                for i, b in enumerate(request.blends)
            ]
            weights = path_through(rows, steps) if walk else np.repeat(rows, steps, axis=0)
            chosen = steering.Classes(weights=weights)
        else:
            label = check.single_label(request.label if request.HasField("label") else None, model)
            chosen = steering.Classes(labels=None if label is None else np.repeat(label, steps))
        check.enum_value(request.method, pb.InterpolationMethod, "method")
        check.enum_value(request.format, pb.ImageFormat, "format")
        method = "slerp" if request.method == pb.SLERP else "lerp"
        check.fits_message(
            _image_bytes_per_item(model, request.format), self.config.max_message_bytes, "format"
        )
        frame_ms = request.gif_frame_ms or 80
        if request.gif_frame_ms:
            check.in_range(request.gif_frame_ms, *GIF_FRAME_MS, "gif_frame_ms")
        if request.gif:  # bounded before the first frame is sent, not after the last
            pixels = math.prod(model.image_shape[1:]) * GIF_SCALE**2
            check.fits_message(
                steps * (pixels * 3 // 2 + 1024), self.config.max_message_bytes, "gif"
            )
        path = (
            path_through(list(keys), steps, method) if len(keys) > 1 else np.repeat(keys, steps, 0)
        )
        gif_frames: list[np.ndarray] = []
        with self._streams.hold(model.name, steps, timeout_s) as sent:
            for start in range(0, steps, INTERPOLATION_CHUNK):
                chunk = path[start : start + INTERPOLATION_CHUNK]
                part = chosen.part(start, start + INTERPOLATION_CHUNK)
                feeds = steering.model_inputs(model, chunk, part)
                result = await self.backend.infer(model.name, feeds, ["image"], timeout_s)
                if request.gif:
                    gif_frames.extend(imaging.to_uint8_hwc(result["image"]))
                encoded = await _encoded(model, result["image"], request.format)
                for offset, fields in enumerate(encoded):
                    index = start + offset
                    # Built in place, as Generate's images: a message given to a constructor
                    # is copied.
                    frame = pb.InterpolateFrame(index=index, t=index / (steps - 1), image=fields)
                    image = frame.image
                    image.latent.values.extend(chunk[offset].tolist())
                    at_key = index * (len(keys) - 1) / (steps - 1)
                    if at_key == int(at_key) and key_seeds[int(at_key)] is not None:
                        image.seed = key_seeds[int(at_key)]
                    steering.report(image, part, offset)
                    yield frame
                sent(len(chunk))
        if request.gif:
            gif = await asyncio.to_thread(imaging.gif_bytes, gif_frames, frame_ms, GIF_SCALE)
            check.fits_message(len(gif), self.config.max_message_bytes, "gif")
            yield pb.InterpolateFrame(index=steps, t=1.0, gif=gif)

    # -- ClassMap --------------------------------------------------------------------------------
    def _plane(
        self, request: pb.ClassMapRequest, model: ModelDescription, resolution: int
    ) -> Callable[[int, int], np.ndarray]:
        """Checks the plane, then returns ``cells(start, stop)``: the latents of those cells,
        row-major, row 0 at the top. Made a chunk at a time: a 512² map of a 100-d latent would
        be 105 MB at once."""
        if len(request.plane):
            if len(request.plane) != 3:
                raise InvalidArgument(
                    "plane", f"give exactly three points A, B, C, got {len(request.plane)}"
                )
            a, b, c = check.latent_sources(request.plane, model, "plane")[0]
            u = np.linspace(0.0, 1.0, resolution, dtype=np.float32)
            v = np.linspace(1.0, 0.0, resolution, dtype=np.float32)

            def through_points(start: int, stop: int) -> np.ndarray:
                rows, columns = np.divmod(np.arange(start, stop), resolution)
                uu, vv = u[columns].reshape(-1, 1), v[rows].reshape(-1, 1)
                return (a + uu * (b - a) + vv * (c - a)).astype(np.float32)

            return through_points
        dim = model.latent_dim
        axis_x = request.axis_x if request.HasField("axis_x") else 0
        axis_y = request.axis_y if request.HasField("axis_y") else 1
        check.in_range(axis_x, 0, dim - 1, "axis_x")
        check.in_range(axis_y, 0, dim - 1, "axis_y")
        if axis_x == axis_y:
            raise InvalidArgument("axis_y", f"must differ from axis_x ({axis_x})")
        others = [i for i in range(dim) if i not in (axis_x, axis_y)]
        if len(request.fixed) not in (0, len(others)):
            raise InvalidArgument(
                "fixed",
                f"give {len(others)} values (latent axes {others}) or none, got {len(request.fixed)}",
            )
        fixed = np.asarray(request.fixed or [0.0] * len(others), dtype=np.float32)
        if not np.isfinite(fixed).all():
            raise InvalidArgument("fixed", "values must be finite")
        low = request.range_min if request.HasField("range_min") else -1.0
        high = request.range_max if request.HasField("range_max") else 1.0
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise InvalidArgument(
                "range_min", f"need finite range_min < range_max, got [{low}, {high}]"
            )
        xs = np.linspace(low, high, resolution, dtype=np.float32)
        ys = np.linspace(high, low, resolution, dtype=np.float32)

        def section(start: int, stop: int) -> np.ndarray:
            rows, columns = np.divmod(np.arange(start, stop), resolution)
            grid = np.zeros((stop - start, dim), dtype=np.float32)
            grid[:, axis_x], grid[:, axis_y] = xs[columns], ys[rows]
            if others:
                grid[:, others] = fixed
            return grid

        return section

    async def class_map(
        self, request: pb.ClassMapRequest, timeout_s: float | None
    ) -> pb.ClassMapResponse:
        model = check.generator(self.backend, request.model)
        classifier = check.classifier_for(self.backend, model, request.classifier)
        resolution = check.in_range(
            request.resolution or 100, 2, self.config.max_grid, "resolution"
        )
        if request.HasField("blend"):
            if request.HasField("label"):
                raise InvalidArgument("blend", "set label or blend, not both")
            blend = steering.blend_weights(request.blend, model, "blend")[None]
            label = None
        else:
            blend = None
            label = check.single_label(request.label if request.HasField("label") else None, model)
        cells = resolution * resolution
        key = request.SerializeToString(deterministic=True) + classifier.name.encode()
        if key in self._classmap_cache:
            self._classmap_cache.move_to_end(key)
            cached = pb.ClassMapResponse()
            cached.CopyFrom(self._classmap_cache[key])
            cached.cached = True
            return cached
        plane = self._plane(request, model, resolution)
        ensemble = self.backend.classmap_ensemble(model.name, classifier.name)
        class_ids = np.empty(cells, dtype=np.int64)
        confidences = np.empty(cells, dtype=np.float32)
        for start in range(0, cells, CLASSMAP_CHUNK):
            stop = min(start + CLASSMAP_CHUNK, cells)
            chunk = plane(start, stop)
            chosen = steering.Classes(
                labels=None if label is None else np.repeat(label, len(chunk)),
                weights=None if blend is None else np.repeat(blend, len(chunk), axis=0),
            )
            feeds = steering.model_inputs(model, chunk, chosen)
            if ensemble:  # inside Triton: only logits come back
                out = await self.backend.infer(ensemble, feeds, ["logits"], timeout_s)
            else:
                images = (await self.backend.infer(model.name, feeds, ["image"], timeout_s))[
                    "image"
                ]
                out = await self.backend.infer(
                    classifier.name, {"image": images}, ["logits"], timeout_s
                )
            logits = out["logits"].astype(np.float64)
            probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            ids = probabilities.argmax(axis=1)
            class_ids[start:stop] = ids
            confidences[start:stop] = probabilities[np.arange(len(ids)), ids]
        counts = np.bincount(class_ids, minlength=classifier.num_classes)
        shares = (counts / cells).tolist()
        names = list(classifier.class_names)
        response = pb.ClassMapResponse(
            resolution=resolution,
            class_ids=class_ids.tolist(),
            confidences=confidences.tolist(),
            shares=[
                pb.ClassShare(class_id=i, name=n, share=s)
                for i, (n, s) in enumerate(zip(names, shares, strict=True))
            ],
            class_names=names,
            classifier=classifier.name,
        )
        if request.render_png:
            response.png = await asyncio.to_thread(
                imaging.render_class_map,
                class_ids.reshape(resolution, resolution),
                confidences.reshape(resolution, resolution),
                names,
                shares,
            )
        # The work is bounded by max_grid; the size is known exactly only now (PNG included).
        check.fits_message(response.ByteSize(), self.config.max_message_bytes, "resolution")
        self._classmap_cache[key] = response
        while len(self._classmap_cache) > self.config.classmap_cache_entries:
            self._classmap_cache.popitem(last=False)
        return response

    # -- LayerActivations ------------------------------------------------------------------------
    async def layer_activations(
        self, request: pb.LayerActivationsRequest, timeout_s: float | None
    ) -> pb.LayerActivationsResponse:
        model = check.generator(self.backend, request.model)
        check.in_range(len(request.latents), 1, self.config.max_images, "latents (count)")
        latents, _ = check.latent_sources(request.latents, model, "latents")
        latents = truncate(latents, steering.psi(request))
        chosen = steering.classes(request.labels, request.blends, len(latents), model)
        scales = steering.channel_scales(request.edits, model)
        layers = list(request.layers) or list(model.layer_names)
        check.known_names(layers, model.layer_names, "layers", repr(model.name))
        feeds = steering.model_inputs(model, latents, chosen, scales)
        result = await self.backend.infer(model.name, feeds, layers, timeout_s)
        size = _activations_bytes(
            [result[name].shape for name in layers], model.latent_dim, request.include_tensors
        )
        check.fits_message(size, self.config.max_message_bytes, "latents (count)")
        response = pb.LayerActivationsResponse(
            latents=[pb.Latent(values=z.tolist()) for z in latents]
        )
        for name in layers:
            values = result[name].astype(np.float32)
            entry = pb.LayerActivation(layer=name, shape=list(values.shape))
            if request.include_tensors:
                entry.tensor.CopyFrom(tensor(values))
            if values.ndim == 4:  # conv: [N, C, H, W]
                entry.channel_means.CopyFrom(tensor(values.mean(axis=(2, 3))))
                mean_map = values.mean(axis=1)
                entry.mean_map.CopyFrom(tensor(mean_map))
                if request.heatmap_png:
                    entry.heatmaps.extend(imaging.heatmap_png(m) for m in mean_map)
            else:  # dense: the units are the channels
                entry.channel_means.CopyFrom(tensor(values.reshape(len(values), -1)))
            response.layers.append(entry)
        if request.heatmap_png:  # their PNG sizes are known only now
            check.fits_message(
                response.ByteSize(), self.config.max_message_bytes, "latents (count)"
            )
        return response
