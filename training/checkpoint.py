"""Checkpoints: one dict that carries its configs, weights, optimiser and RNG state, and epoch.

Written atomically (temp file + rename) so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganserve.errors import CheckpointError
from ganserve.settings import dataclass_from_dict, to_plain

from .config import DataConfig, ModelConfig, TrainConfig
from .models import Classifier, Discriminator, Generator, build_classifier, build_gan

FORMAT = "ganserve-checkpoint/1"


def capture_rng_state(data_generator: torch.Generator) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "data": data_generator.get_state(),
    }
    if torch.cuda.is_available():  # dropout on the GPU draws from the GPU's generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    data_generator.set_state(state["data"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class DataInfo:
    """What the model was trained on: enough to describe it without the data set."""

    name: str
    class_names: tuple[str, ...]
    channels: int
    image_size: int
    train_images: int


@dataclass
class LoadedCheckpoint:
    kind: str  # "gan" or "classifier"
    model: ModelConfig
    train: TrainConfig
    data: DataConfig
    data_info: DataInfo
    epoch: int
    raw: dict[str, Any] = field(repr=False)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def serve_weights(self) -> str:
        """Which generator weights this checkpoint stands for: ``serve_weights`` when a selection
        chose them, else the EMA average when the run kept one, else the raw weights."""
        chosen = self.raw.get("serve_weights")
        if chosen:
            return chosen
        return "ema" if self.raw.get("ema") else "raw"

    def generator(self, weights: str = "auto") -> Generator:
        """The trained generator in eval mode: ``weights`` "raw", "ema" or "auto"
        (``serve_weights``)."""
        weights = self.serve_weights if weights == "auto" else weights
        if weights not in ("raw", "ema"):
            raise CheckpointError(f"weights must be raw, ema or auto, got {weights!r}")
        if weights == "ema" and not self.raw.get("ema"):
            raise CheckpointError("this run kept no EMA generator (trained with --ema-decay 0)")
        generator, _ = build_gan(self.model)
        generator.load_state_dict(self.raw["ema" if weights == "ema" else "generator"])
        return generator.eval()

    def discriminator(self) -> Discriminator:
        _, discriminator = build_gan(self.model)
        discriminator.load_state_dict(self.raw["discriminator"])
        return discriminator.eval()

    def classifier(self) -> Classifier:
        classifier = build_classifier(self.model)
        classifier.load_state_dict(self.raw["classifier"])
        return classifier.eval()


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganserve checkpoint (expected format {FORMAT})")
    info = raw["data_info"]
    return LoadedCheckpoint(
        kind=raw["kind"],
        model=dataclass_from_dict(ModelConfig, raw["config"]["model"]),
        train=dataclass_from_dict(TrainConfig, raw["config"]["train"]),
        data=dataclass_from_dict(DataConfig, raw["config"]["data"]),
        data_info=DataInfo(**{**info, "class_names": tuple(info["class_names"])}),
        epoch=int(raw["epoch"]),
        raw=raw,
        metrics=dict(raw.get("metrics", {})),
    )


def checkpoint_dict(
    *,
    kind: str,
    model: ModelConfig,
    train: TrainConfig,
    data: DataConfig,
    data_info: DataInfo,
    epoch: int,
    states: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": kind,
        "config": {"model": to_plain(model), "train": to_plain(train), "data": to_plain(data)},
        "data_info": to_plain(data_info),
        "epoch": epoch,
        "metrics": metrics or {},
        **states,
    }
