"""Checkpoint → ONNX: every named layer as an extra output, a description in the metadata, a
checker pass, ONNX Runtime graph optimisation, and a parity check against PyTorch."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ganserve.description import (
    CLASS_WEIGHTS_INPUT,
    LABEL_INPUT,
    METADATA_KEY,
    ModelDescription,
    ModelKind,
    scale_input,
)
from ganserve.errors import GanserveError
from ganserve.latents import latents_from_seeds
from ganserve.settings import to_plain
from ganserve.training.checkpoint import LoadedCheckpoint, load_checkpoint
from ganserve.training.evaluate import default_metrics_path
from ganserve.training.models import count_parameters

log = logging.getLogger(__name__)
OPSET = 18
MAX_ABS_DIFF = 1e-4  # parity bound on CPU, float32
MAX_ABS_DIFF_FP16 = 5e-2  # the FP16 variant: images are in [-1, 1], so this is 2.5% of the range
PARITY_BATCHES = (1, 64)


class ExportError(GanserveError):
    """The exported graph does not reproduce the PyTorch model."""


class _ExportedGenerator(nn.Module):
    """(z[, class_weights], *channel scales) → (image, *hidden activations).

    One graph serves plain Generate, LayerActivations and steered requests: class weights go
    through the generator's label code (a one-hot row is one class, other rows blend classes), and
    each hidden layer's output is multiplied per image and channel by its ``scale_<layer>`` input
    before the next layer sees it (and before it is reported). Ones are exact in float32
    (x * 1.0 == x), so an unedited request gives the image of the unedited network, bit for bit.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator
        self.edited = generator.layer_names[:-1]  # every hidden layer; not the image itself

    def forward(self, z: torch.Tensor, *rest: torch.Tensor):
        if self.generator.conditional:
            (x, code), scales = self.generator.body_inputs(z, rest[0]), rest[1:]
        else:
            x, code, scales = z, None, rest
        outputs = []
        body = self.generator.body
        for i, block in enumerate(body.blocks.values()):
            x = body.run_block(block, x, code)
            if i < len(scales):
                scale = scales[i]
                x = x * (scale[:, :, None, None] if x.dim() == 4 else scale)
            outputs.append(x)
        *hidden, image = outputs
        return (image, *hidden)

    def channel_counts(self) -> tuple[tuple[str, int], ...]:
        """(layer, channels) of every edited layer, from one forward pass."""
        z = torch.zeros(1, self.generator.latent_dim)
        labels = torch.zeros(1, dtype=torch.int64) if self.generator.conditional else None
        with torch.no_grad():
            activations = self.generator.forward_with_activations(z, labels)
        return tuple(
            (name, int(a.shape[1])) for name, a in zip(self.edited, activations, strict=False)
        )


class _ExportedClassifier(nn.Module):
    """image → (logits, *earlier activations, penultimate ``features`` among them)."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor):
        *hidden, logits = self.classifier.forward_with_activations(image)
        return (logits, *hidden)


@dataclass
class ExportReport:
    path: Path
    description: ModelDescription
    max_abs_diff: dict[int, float]  # batch size → worst difference over all outputs
    nodes_before: int
    nodes_after: int
    fp16_path: Path | None = None
    fp16_max_abs_diff: dict[int, float] = field(default_factory=dict)


def _describe(
    ckpt: LoadedCheckpoint, name: str, module: nn.Module, metrics: dict
) -> ModelDescription:
    model = ckpt.model
    steering = {}
    if ckpt.kind == "classifier":
        kind = ModelKind.CLASSIFIER
    else:
        kind = ModelKind.CONDITIONAL_GENERATOR if model.conditional else ModelKind.GENERATOR
        steering = {"editable_layers": module.channel_counts(), "label_input": CLASS_WEIGHTS_INPUT}
    inner = getattr(module, "generator", None) or module.classifier
    return ModelDescription(
        name=name,
        kind=kind,
        image_shape=(model.channels, model.image_size, model.image_size),
        class_names=tuple(ckpt.data_info.class_names),
        layer_names=tuple(inner.layer_names),
        latent_dim=model.latent_dim if kind is not ModelKind.CLASSIFIER else 0,
        prior=model.prior.value,
        family=model.family.value,
        dataset=ckpt.data_info.name,
        epoch=ckpt.epoch,
        parameters=count_parameters(inner),
        metrics=metrics,
        training_config={
            "model": to_plain(ckpt.model),
            "train": to_plain(ckpt.train),
            "data": to_plain(ckpt.data),
        },
        **steering,
    )


def output_names(description: ModelDescription) -> list[str]:
    """ONNX output order: the main output first, then the other named layers in network order."""
    main = description.main_output
    return [main, *(n for n in description.layer_names if n != main)]


def example_inputs(
    description: ModelDescription, batch: int, seed: int = 0, steered: bool = False
) -> dict[str, np.ndarray]:
    """Deterministic inputs for parity checks and warm-up: one class per image and no edits, or
    (``steered``) random class blends and random channel scales, a quarter of them zero."""
    rng = np.random.RandomState(seed)
    if description.kind is ModelKind.CLASSIFIER:
        return {
            "image": rng.uniform(-1, 1, size=(batch, *description.image_shape)).astype(np.float32)
        }
    inputs = {
        "z": latents_from_seeds(
            range(seed, seed + batch), description.latent_dim, description.prior
        )
    }
    classes = np.arange(batch) % max(description.num_classes, 1)
    if description.conditional and not description.blendable:
        inputs[LABEL_INPUT] = classes.astype(np.int64)
    elif description.conditional:
        weights = np.eye(description.num_classes, dtype=np.float32)[classes]
        if steered:
            weights = rng.dirichlet(np.full(description.num_classes, 0.5), batch)
        inputs[CLASS_WEIGHTS_INPUT] = weights.astype(np.float32)
    for layer, channels in description.editable_layers:
        scale = np.ones((batch, channels), np.float32)
        if steered:
            scale = rng.uniform(0.0, 2.0, (batch, channels)) * (rng.rand(batch, channels) > 0.25)
        inputs[scale_input(layer)] = scale.astype(np.float32)
    return inputs


def _torch_outputs(module: nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = module(*(torch.from_numpy(v) for v in inputs.values()))
    return [o.numpy() for o in outputs]


def parity(
    session: ort.InferenceSession, module: nn.Module, description: ModelDescription
) -> dict[int, float]:
    """Worst absolute difference between ONNX Runtime and PyTorch, per batch size."""
    worst = {}
    for batch in PARITY_BATCHES:
        worst[batch] = 0.0
        for steered in (False, True) if description.editable_layers else (False,):
            inputs = example_inputs(description, batch, seed=1000, steered=steered)
            expected = _torch_outputs(module, inputs)
            got = session.run(None, inputs)
            worst[batch] = max(
                worst[batch],
                *(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)),
            )
    return worst


def _ort_optimise(source: Path, target: Path) -> None:
    """Apply ONNX Runtime's basic (provider-independent) graph rewrites offline.

    Basic level only: constant folding and redundant-node removal keep the file portable to the
    CUDA/TensorRT providers in Triton; fused, provider-specific kernels are left to run time.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def read_description(path: str | Path) -> ModelDescription:
    """The description stored in an exported ONNX file's metadata."""
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelDescription.from_json(prop.value)
    raise ExportError(f"{path}: no {METADATA_KEY} metadata; not exported by ganserve")


def _set_metadata(model: onnx.ModelProto, description: ModelDescription) -> None:
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, description.to_json()
    model.doc_string = (
        f"ganserve {description.kind.value} {description.name} ({description.dataset})"
    )
    model.producer_name = "ganserve"


def _dynamic_batch(module: nn.Module, count: int, batch) -> tuple:
    """Axis 0 of every input is the batch, in the structure of ``forward``'s signature
    (the generator's ``(z, *rest)``: z, then a tuple)."""
    axes = [{0: batch} for _ in range(count)]
    return (axes[0], tuple(axes[1:])) if isinstance(module, _ExportedGenerator) else tuple(axes)


def export_onnx(
    checkpoint: str | Path,
    name: str,
    out: str | Path,
    *,
    fp16: bool = False,
    metrics_path: str | Path | None = None,
) -> ExportReport:
    """Export ``checkpoint`` as ``out`` (and ``out`` with ``.fp16.onnx`` when ``fp16``)."""
    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load_checkpoint(checkpoint)
    module: nn.Module = (
        _ExportedClassifier(ckpt.classifier())
        if ckpt.kind == "classifier"
        else _ExportedGenerator(ckpt.generator())
    )
    module.eval()
    metrics_file = Path(metrics_path) if metrics_path else default_metrics_path(checkpoint)
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else dict(ckpt.metrics)
    description = _describe(ckpt, name, module, metrics)

    inputs = example_inputs(description, 2)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        module,
        tuple(torch.from_numpy(v) for v in inputs.values()),
        input_names=list(inputs),
        output_names=output_names(description),
        dynamic_shapes=_dynamic_batch(module, len(inputs), batch),
        opset_version=OPSET,
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        program.save(str(raw_path))
        raw = onnx.load(str(raw_path))
        onnx.checker.check_model(raw, full_check=True)
        optimised_path = Path(tmp) / "optimised.onnx"
        _ort_optimise(raw_path, optimised_path)
        model = onnx.load(str(optimised_path))
    _set_metadata(model, description)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))

    diffs = parity(_session(out), module, description)
    if max(diffs.values()) > MAX_ABS_DIFF:
        raise ExportError(f"{out}: ONNX differs from PyTorch by {diffs} (bound {MAX_ABS_DIFF})")
    report = ExportReport(out, description, diffs, len(raw.graph.node), len(model.graph.node))
    if fp16:
        report.fp16_path, report.fp16_max_abs_diff = _export_fp16(model, out, module, description)
    log.info(
        "exported %s → %s (parity %s, nodes %d → %d)",
        checkpoint,
        out,
        diffs,
        report.nodes_before,
        report.nodes_after,
    )
    return report


def _feed_layers_in_half_precision(model: onnx.ModelProto) -> None:
    """Our hidden activations are graph outputs *and* inputs of the next layer. The converter
    casts each output back to float32 under the output's name, so the next layer would get a
    float32 tensor; point such consumers at the float16 tensor in front of the cast instead."""
    outputs = {o.name for o in model.graph.output}
    half_source = {
        node.output[0]: node.input[0]
        for node in model.graph.node
        if node.op_type == "Cast" and node.output[0] in outputs
    }
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in outputs:
            continue
        for i, name in enumerate(node.input):
            if name in half_source:
                node.input[i] = half_source[name]


def _export_fp16(
    model: onnx.ModelProto, out: Path, module: nn.Module, description: ModelDescription
) -> tuple[Path, dict[int, float]]:
    """Half-precision weights and arithmetic for GPUs; inputs and outputs stay float32."""
    from onnxconverter_common import float16

    source = onnx.ModelProto()
    source.CopyFrom(model)
    # Stale intermediate type annotations make the converter leave some inputs in float32.
    del source.graph.value_info[:]
    half = float16.convert_float_to_float16(source, keep_io_types=True)
    _feed_layers_in_half_precision(half)
    _set_metadata(half, description)
    onnx.checker.check_model(half)
    path = out.with_suffix(".fp16.onnx")
    onnx.save(half, str(path))
    diffs = parity(_session(path), module, description)
    if max(diffs.values()) > MAX_ABS_DIFF_FP16:
        raise ExportError(
            f"{path}: FP16 model differs from PyTorch by {diffs} (bound {MAX_ABS_DIFF_FP16})"
        )
    return path, diffs
