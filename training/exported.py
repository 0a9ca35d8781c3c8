"""An exported generator, the ONNX file the service serves, scored like a checkpoint:
``ganserve evaluate model.onnx`` measures what users get, after export, not the weights it came
from (and needs no checkpoint: the file's description holds its training configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from ganserve.description import ModelDescription
from ganserve.errors import CheckpointError
from ganserve.service.steering import Classes, model_inputs
from ganserve.settings import dataclass_from_dict

from .checkpoint import DataInfo
from .config import DataConfig, ModelConfig

EXPORTED_WEIGHTS = "exported"


class OnnxGenerator(nn.Module):
    """``(z, labels) → images`` through ONNX Runtime, fed as the service feeds a plain request
    (:func:`~ganserve.service.steering.model_inputs`: one class per image, no channel edited)."""

    def __init__(self, path: Path, description: ModelDescription):
        super().__init__()
        # The metrics find a generator's device through its parameters; this one has none to move.
        self.register_parameter("device_marker", nn.Parameter(torch.zeros(0), requires_grad=False))
        self.description = description
        self.latent_dim = description.latent_dim
        self.conditional = description.conditional
        gpu = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider"] if gpu else []
        self.session = ort.InferenceSession(
            str(path), providers=[*providers, "CPUExecutionProvider"]
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional and labels is None:
            raise ValueError("a conditional generator needs labels")
        chosen = Classes(labels=None if labels is None else labels.detach().cpu().numpy())
        feeds = model_inputs(self.description, z.detach().cpu().numpy(), chosen)
        (images,) = self.session.run(["image"], feeds)
        return torch.from_numpy(images).to(self.device_marker.device)


@dataclass
class ExportedGenerator:
    """What evaluation reads of a checkpoint, from an exported file: its configuration, data set,
    epoch and a generator (the weights it was exported with, the only ones it holds)."""

    path: Path
    description: ModelDescription
    model: ModelConfig
    data: DataConfig
    data_info: DataInfo
    epoch: int
    kind: str = "gan"
    serve_weights: str = EXPORTED_WEIGHTS

    def generator(self, weights: str = "auto") -> OnnxGenerator:
        if weights not in ("auto", EXPORTED_WEIGHTS):
            raise CheckpointError(
                f"{self.path}: an exported file holds one set of weights; --weights {weights} "
                "needs the checkpoint"
            )
        return OnnxGenerator(self.path, self.description)


def load_exported(path: str | Path) -> ExportedGenerator:
    from ganserve.export.onnx_export import ExportError, read_description

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: exported model not found")
    try:
        description = read_description(path)
    except ExportError as exc:
        raise CheckpointError(str(exc)) from exc
    if not description.is_generator:
        raise CheckpointError(f"{path}: a classifier; evaluate it from its checkpoint")
    config = description.training_config
    if not config:
        raise CheckpointError(f"{path}: exported without its training configuration")
    channels, height, _ = description.image_shape
    return ExportedGenerator(
        path=path,
        description=description,
        model=dataclass_from_dict(ModelConfig, config["model"]),
        data=dataclass_from_dict(DataConfig, config["data"]),
        data_info=DataInfo(
            name=description.dataset,
            class_names=description.class_names,
            channels=channels,
            image_size=height,
            train_images=0,
        ),
        epoch=description.epoch,
    )
