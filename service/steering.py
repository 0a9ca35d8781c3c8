"""Steering a generator: a request's truncation (psi), class blends and channel edits, checked
(INVALID_ARGUMENT naming the field and the limit) and turned into the model's inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ganserve.description import (
    CLASS_WEIGHTS_INPUT,
    LABEL_INPUT,
    ModelDescription,
    scale_input,
)
from ganserve.v1 import generation_pb2 as pb

from . import validation as check
from .errors import FailedPrecondition, InvalidArgument

MAX_EDITS = 64  # ChannelEdits per request
MAX_SCALE = 10.0  # |ChannelEdit.scale|
MAX_BLENDS = 64  # ClassBlends of one Interpolate walk


def psi(request, field: str = "psi") -> float:
    """The request's truncation, 1 when unset; 0 < psi ≤ 1."""
    if not request.HasField(field):
        return 1.0
    value = float(getattr(request, field))
    if not (np.isfinite(value) and 0.0 < value <= 1.0):
        raise InvalidArgument(field, f"{value} is outside (0, 1]")
    return value


def _re_export(model: ModelDescription, what: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"{model.name!r} was exported before {what}; re-export it with `ganserve export`"
    )


def _class_index(key: str, model: ModelDescription, field: str) -> int:
    names = list(model.class_names)
    if key in names:
        return names.index(key)
    if key.isdigit() and int(key) < len(names):
        return int(key)
    raise InvalidArgument(
        field, f"unknown class {key!r}; {model.name!r} has {names} (or ids 0-{len(names) - 1})"
    )


def blend_weights(blend: pb.ClassBlend, model: ModelDescription, field: str) -> np.ndarray:
    """``[num_classes]`` weights of one blend, normalised to sum to 1."""
    if not model.conditional:
        raise InvalidArgument(field, f"{model.name!r} is not conditional; send no class blend")
    if not model.blendable:
        raise _re_export(model, "class blending")
    if not blend.weights:
        raise InvalidArgument(f"{field}.weights", "give at least one class weight")
    weights = np.zeros(model.num_classes, np.float64)
    seen: dict[int, str] = {}
    for key, value in sorted(blend.weights.items()):
        index = _class_index(key, model, f"{field}.weights")
        if index in seen:
            raise InvalidArgument(
                f"{field}.weights", f"{key!r} and {seen[index]!r} name the same class"
            )
        if not (np.isfinite(value) and value >= 0):
            raise InvalidArgument(
                f"{field}.weights", f"weight of {key!r} must be finite and ≥ 0, got {value}"
            )
        seen[index] = key
        weights[index] = value
    total = weights.sum()
    if total <= 0:
        raise InvalidArgument(f"{field}.weights", "the weights must not all be 0")
    return (weights / total).astype(np.float32)


@dataclass
class Classes:
    """Conditional models' class per image: ``labels`` (one class each) or ``weights`` (blends)."""

    labels: np.ndarray | None = None  # int64 [N]
    weights: np.ndarray | None = None  # float32 [N, num_classes], rows summing to 1

    def part(self, start: int, stop: int) -> Classes:
        """Images ``start:stop`` of these."""
        return Classes(*(None if a is None else a[start:stop] for a in (self.labels, self.weights)))


def classes(
    labels: Sequence[int],
    blends: Sequence[pb.ClassBlend],
    count: int,
    model: ModelDescription,
    labels_field: str = "labels",
    blends_field: str = "blends",
) -> Classes:
    """One label or blend per image (or one for all); neither for unconditional models."""
    if not len(blends):
        return Classes(labels=check.labels(labels, count, model, labels_field))
    if len(labels):
        raise InvalidArgument(blends_field, f"set {labels_field} or {blends_field}, not both")
    if len(blends) not in (1, count):
        raise InvalidArgument(
            blends_field, f"give 1 blend or one per image ({count}), got {len(blends)}"
        )
    rows = np.stack([blend_weights(b, model, f"{blends_field}[{i}]") for i, b in enumerate(blends)])
    return Classes(weights=np.broadcast_to(rows, (count, model.num_classes)).copy())


def channel_scales(
    edits: Sequence[pb.ChannelEdit], model: ModelDescription, field: str = "edits"
) -> dict[str, np.ndarray]:
    """Edited layer → ``[channels]`` scales (edits of one channel multiply); unedited layers absent."""
    if not len(edits):
        return {}
    if not model.editable_layers:
        raise _re_export(model, "activation editing")
    if len(edits) > MAX_EDITS:
        raise InvalidArgument(field, f"at most {MAX_EDITS} edits, got {len(edits)}")
    editable = model.editable
    rows: dict[str, np.ndarray] = {}
    for i, edit in enumerate(edits):
        if edit.layer not in editable:
            raise InvalidArgument(
                f"{field}[{i}].layer",
                f"{edit.layer!r} is not editable; {model.name!r} has {list(editable)}",
            )
        channels = editable[edit.layer]
        if not (np.isfinite(edit.scale) and abs(edit.scale) <= MAX_SCALE):
            raise InvalidArgument(
                f"{field}[{i}].scale", f"{edit.scale} is outside [-{MAX_SCALE}, {MAX_SCALE}]"
            )
        if len(edit.channels) > channels:
            raise InvalidArgument(
                f"{field}[{i}].channels",
                f"{len(edit.channels)} entries; {edit.layer!r} has {channels} channels",
            )
        index = np.asarray(edit.channels, np.int64) if len(edit.channels) else slice(None)
        if len(edit.channels) and int(index.max()) >= channels:
            raise InvalidArgument(
                f"{field}[{i}].channels",
                f"channel {int(index.max())} is outside [0, {channels - 1}] of {edit.layer!r}",
            )
        row = rows.setdefault(edit.layer, np.ones(channels, np.float32))
        row[index] *= np.float32(edit.scale)
    return rows


def model_inputs(
    model: ModelDescription,
    latents: np.ndarray,
    chosen: Classes | None = None,
    scales: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The generator's inputs: z, the class (int label or class weights, as the model was
    exported), and a scale row per editable layer, ones where nothing is edited."""
    count = len(latents)
    feeds = {"z": np.ascontiguousarray(latents, dtype=np.float32)}
    chosen = chosen or Classes()
    constants = _constants(model)
    if constants.one_hot is not None:
        weights = chosen.weights
        if weights is None:
            weights = constants.one_hot[chosen.labels]
        feeds[CLASS_WEIGHTS_INPUT] = np.ascontiguousarray(weights, dtype=np.float32)
    elif model.conditional:
        feeds[LABEL_INPUT] = chosen.labels.astype(np.int64)
    for layer, name, ones in constants.unedited:
        row = scales.get(layer) if scales else None
        row = ones if row is None else row
        # A view: no [N, channels] array is made per request (the batcher and the Triton client
        # copy the inputs into one contiguous batch anyway); one image, the row as one.
        feeds[name] = row[np.newaxis] if count == 1 else np.broadcast_to(row, (count, len(row)))
    return feeds


@dataclass(frozen=True)
class _ModelConstants:
    """What every request to a model shares: the one-hot rows of its classes (blendable
    models) and, per editable layer, its input's name and a row of ones (nothing edited)."""

    one_hot: np.ndarray | None
    unedited: tuple[tuple[str, str, np.ndarray], ...]  # (layer, input name, ones)


_CONSTANTS: dict[tuple, _ModelConstants] = {}  # keyed by what they are made of


def _constants(model: ModelDescription) -> _ModelConstants:
    blended = model.conditional and model.blendable
    key = (blended, model.num_classes, model.editable_layers)
    found = _CONSTANTS.get(key)
    if found is None:
        one_hot = None
        if blended:
            one_hot = np.eye(model.num_classes, dtype=np.float32)
            one_hot.flags.writeable = False
        unedited = []
        for layer, channels in model.editable_layers:
            ones = np.ones(channels, np.float32)
            ones.flags.writeable = False  # shared by every request: views of it stay read-only
            unedited.append((layer, scale_input(layer), ones))
        found = _CONSTANTS[key] = _ModelConstants(one_hot, tuple(unedited))
    return found


def report(image: pb.GeneratedImage, chosen: Classes, i: int) -> None:
    """Write image ``i``'s class (label or blend weights) into its GeneratedImage."""
    if chosen.labels is not None:
        image.label = int(chosen.labels[i])
    elif chosen.weights is not None:
        image.class_weights.extend(chosen.weights[i].tolist())
