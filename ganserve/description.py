"""What a served model is, as written into its ONNX metadata and its Triton config.

The exporter writes it; the service reads everything it needs from here (no hard-coded shapes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

METADATA_KEY = "ganserve.description"  # ONNX metadata_props key and Triton config parameter
ENSEMBLE_KEY = "ganserve.ensemble"  # Triton config parameter of a ClassMap ensemble: its generator and classifier
FORMAT_VERSION = 1
# Generator inputs beside ``z``. Models exported before steering take the class as an int64
# ``label`` [N]; steerable ones take ``class_weights`` [N, classes] (a one-hot row is one class, a
# row of several weights a blend) and one ``scale_<layer>`` [N, channels] per hidden layer (ones:
# no edit). All are required: Triton's onnxruntime backend refuses optional inputs on a model that
# batches, so neutral values are sent, not left out.
LABEL_INPUT = "label"
CLASS_WEIGHTS_INPUT = "class_weights"
SCALE_PREFIX = "scale_"


def scale_input(layer: str) -> str:
    """The ONNX input that multiplies ``layer``'s channels, one row per image."""
    return SCALE_PREFIX + layer


class ModelKind(str, Enum):
    GENERATOR = "generator"
    CONDITIONAL_GENERATOR = "conditional_generator"
    CLASSIFIER = "classifier"


@dataclass
class ModelDescription:
    name: str
    kind: ModelKind
    image_shape: tuple[int, int, int]  # C, H, W
    class_names: tuple[str, ...]
    layer_names: tuple[str, ...]  # every named activation output, in network order
    latent_dim: int = 0  # generators only
    prior: str = "uniform"
    family: str = ""
    dataset: str = ""
    epoch: int = 0
    parameters: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    # Steering, empty/"label" for models exported before it: the hidden layers whose channels a
    # request may scale, with their channel counts (network order), and the class input's name.
    editable_layers: tuple[tuple[str, int], ...] = ()
    label_input: str = LABEL_INPUT
    training_config: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def is_generator(self) -> bool:
        return self.kind is not ModelKind.CLASSIFIER

    @property
    def conditional(self) -> bool:
        return self.kind is ModelKind.CONDITIONAL_GENERATOR

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def blendable(self) -> bool:
        """Takes class weights (a blend of classes), not only one integer class."""
        return self.conditional and self.label_input == CLASS_WEIGHTS_INPUT

    @property
    def editable(self) -> dict[str, int]:
        """Editable layer → its channel count."""
        return dict(self.editable_layers)

    @property
    def input_names(self) -> list[str]:
        """The exported graph's inputs, in order."""
        if self.kind is ModelKind.CLASSIFIER:
            return ["image"]
        names = ["z", self.label_input] if self.conditional else ["z"]
        return names + [scale_input(layer) for layer, _ in self.editable_layers]

    @property
    def main_output(self) -> str:
        """The output a plain request asks for: the image, or the classifier's logits."""
        return "logits" if self.kind is ModelKind.CLASSIFIER else "image"

    def to_json(self) -> str:
        data = asdict(self)
        data["kind"] = self.kind.value
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelDescription:
        data = json.loads(text)
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"model description format {data['format_version']} is newer than this ganserve"
            )
        known = cls.__dataclass_fields__
        data = {k: v for k, v in data.items() if k in known}
        data["kind"] = ModelKind(data["kind"])
        data["image_shape"] = tuple(data["image_shape"])
        data["class_names"] = tuple(data["class_names"])
        data["layer_names"] = tuple(data["layer_names"])
        data["editable_layers"] = tuple(
            (str(name), int(count)) for name, count in data.get("editable_layers", ())
        )
        return cls(**data)
