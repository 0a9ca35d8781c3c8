"""A unit's images as file bytes (PNG as the service sent it, or an NPZ) and its manifest entry."""

from __future__ import annotations

import io

import numpy as np

from ganserve.client import GeneratedImage

from .plan import Unit


def identity(unit: Unit) -> dict:
    """What an entry must say to be this unit's: model, class and seeds (an NPZ: first, last, count)."""
    seeds = (
        {"seed": unit.seeds[0]}
        if unit.file.endswith(".png")
        else {
            "seeds": [unit.seeds[0], unit.seeds[-1]],
            "count": len(unit.seeds),
        }
    )
    return {"model": unit.model, "class": unit.label, **seeds, "file": unit.file}


def encode_png(unit: Unit, images: list[GeneratedImage]) -> tuple[bytes, dict]:
    (image,) = images
    return image.png, {"latent": [round(float(v), 8) for v in image.latent]}


def encode_npz(unit: Unit, images: list[GeneratedImage]) -> tuple[bytes, dict]:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        images=np.stack([np.asarray(i.to_pil()) for i in images]),
        seeds=np.array(unit.seeds, np.int64),
        latents=np.stack([i.latent for i in images]),
        labels=np.array([-1 if i.label is None else i.label for i in images], np.int64),
    )
    return buffer.getvalue(), {}


ENCODERS = {"png": encode_png, "npz": encode_npz}
