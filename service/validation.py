"""Request checks: every refusal names the field and the allowed range (INVALID_ARGUMENT)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ganserve.description import ModelDescription, ModelKind
from ganserve.latents import MAX_SEED, latent_from_seed
from ganserve.v1 import generation_pb2 as pb

from .backends.base import Backend
from .errors import FailedPrecondition, InvalidArgument, ModelNotFound, shown


def served_model(backend: Backend, name: str, field: str = "model") -> ModelDescription:
    if not name:
        raise InvalidArgument(field, "is required")
    models = backend.models()
    if name not in models:
        raise ModelNotFound(name, list(models))
    return models[name]


def generator(backend: Backend, name: str) -> ModelDescription:
    description = served_model(backend, name)
    if not description.is_generator:
        raise InvalidArgument("model", f"{name!r} is a {description.kind.value}, not a generator")
    return description


def classifier_for(
    backend: Backend, generator_model: ModelDescription, name: str
) -> ModelDescription:
    """The named classifier, or the one served classifier for the generator's images."""
    if name:
        description = served_model(backend, name, "classifier")
        if description.kind is not ModelKind.CLASSIFIER:
            raise InvalidArgument(
                "classifier", f"{name!r} is a {description.kind.value}, not a classifier"
            )
    else:
        matches = [
            m
            for m in backend.models().values()
            if m.kind is ModelKind.CLASSIFIER
            and tuple(m.image_shape) == tuple(generator_model.image_shape)
        ]
        same_data = [m for m in matches if m.dataset == generator_model.dataset]
        matches = same_data or matches
        if not matches:
            raise FailedPrecondition(
                f"no classifier is served for {generator_model.name}'s {generator_model.image_shape} images"
            )
        description = sorted(matches, key=lambda m: m.name)[0]
    if tuple(description.image_shape) != tuple(generator_model.image_shape):
        raise InvalidArgument(
            "classifier",
            f"{description.name!r} reads {description.image_shape} images but {generator_model.name!r} makes "
            f"{generator_model.image_shape}",
        )
    return description


def latent_vector(values: Sequence[float], model: ModelDescription, field: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (model.latent_dim,):
        raise InvalidArgument(
            field, f"needs exactly {model.latent_dim} values for {model.name!r}, got {len(vector)}"
        )
    if not np.isfinite(vector).all():
        raise InvalidArgument(field, "values must be finite (no NaN or infinity)")
    return vector


def latent_sources(
    sources: Sequence[pb.LatentSource], model: ModelDescription, field: str
) -> tuple[np.ndarray, list[int | None]]:
    """Latents ``[N, d]`` and the seed each came from (None for explicit latents)."""
    vectors, seeds = [], []
    for i, source in enumerate(sources):
        kind = source.WhichOneof("source")
        if kind == "seed":
            vectors.append(latent_from_seed(source.seed, model.latent_dim, model.prior))
            seeds.append(source.seed)
        elif kind == "latent":
            vectors.append(
                latent_vector(source.latent.values, model, f"{field}[{i}].latent.values")
            )
            seeds.append(None)
        else:
            raise InvalidArgument(f"{field}[{i}]", "set either seed or latent")
    if not vectors:
        return np.zeros((0, model.latent_dim), np.float32), []
    return np.stack(vectors), seeds


def labels(
    values: Sequence[int], count: int, model: ModelDescription, field: str = "labels"
) -> np.ndarray | None:
    """One label per item (or one for all) for conditional models; none for the others."""
    if not model.conditional:
        if len(values):
            raise InvalidArgument(field, f"{model.name!r} is not conditional; send no labels")
        return None
    given = len(values)
    if given not in (1, count):
        raise InvalidArgument(field, f"give 1 label or one per image ({count}), got {given}")
    if given == 1:  # the common case, without NumPy's conversion of a protobuf field
        value = int(values[0])
        if not 0 <= value < model.num_classes:
            raise InvalidArgument(field, f"label {value} out of range [0, {model.num_classes - 1}]")
        return np.full(count, value, np.int64)
    array = np.asarray(values, dtype=np.int64)
    bad = array[(array < 0) | (array >= model.num_classes)]
    if bad.size:
        raise InvalidArgument(
            field, f"label {int(bad[0])} out of range [0, {model.num_classes - 1}]"
        )
    return array


def single_label(
    value: int | None, model: ModelDescription, field: str = "label"
) -> np.ndarray | None:
    if not model.conditional:
        if value is not None:
            raise InvalidArgument(field, f"{model.name!r} is not conditional; send no label")
        return None
    if value is None:
        raise InvalidArgument(
            field,
            f"{model.name!r} is conditional; a label in [0, {model.num_classes - 1}] is required",
        )
    return labels([value], 1, model, field)


def in_range(value: int, low: int, high: int, field: str) -> int:
    if not low <= value <= high:
        raise InvalidArgument(field, f"{value} is outside [{low}, {high}]")
    return value


def enum_value(value: int, enum, field: str) -> int:
    """A proto3 enum field holds any int32 a client sends: refuse the ones the API does not name."""
    if value not in enum.DESCRIPTOR.values_by_number:
        names = ", ".join(f"{v.name} ({v.number})" for v in enum.DESCRIPTOR.values)
        raise InvalidArgument(field, f"{value} is not one of {names}")
    return value


def known_names(values: Sequence[str], known: Sequence[str], field: str, owner: str) -> None:
    """Every value is one of ``known``; the refusal shows a few unknown ones, each cut short."""
    unknown = [v for v in values if v not in known]
    if unknown:
        listed = ", ".join(shown(v) for v in unknown[:3]) + (" …" if len(unknown) > 3 else "")
        raise InvalidArgument(field, f"unknown {listed}; {owner} has {list(known)}")


def fits_message(estimated_bytes: int, limit_bytes: int, what: str) -> None:
    if estimated_bytes > limit_bytes:
        raise InvalidArgument(
            what,
            f"the response would be about {estimated_bytes:,} bytes, over the {limit_bytes:,}-byte message limit; "
            "ask for fewer items or a smaller format",
        )


def seeds(values: Sequence[int], field: str = "seeds") -> list[int]:
    for value in values:
        if not 0 <= value <= MAX_SEED:
            raise InvalidArgument(field, f"seed {value} outside [0, {MAX_SEED}]")
    return list(values)
