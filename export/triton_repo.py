"""The Triton model repository, written as data: ``<name>/config.pbtxt`` + ``<name>/<version>/model.onnx``.

Configs are built as ``tritonclient``'s own ``ModelConfig`` protobuf and printed in text format,
so what we write is what Triton parses; inputs and outputs are read from the ONNX graph itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ganserve.description import ENSEMBLE_KEY, METADATA_KEY, ModelDescription

from .settings import TritonSettings

ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
}


def onnx_io(
    path: Path,
) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    """(name, Triton type, dims without the batch axis) of the ONNX graph's inputs and outputs."""
    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[tuple[str, str, list[int]]]:
        rows = []
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim][1:]
            rows.append((value.name, ONNX_TO_TRITON[tensor.elem_type], dims))
        return rows

    return describe(model.graph.input), describe(model.graph.output)


def _tensor(spec_type, name: str, data_type: str, dims: list[int]):
    spec = spec_type(name=name, data_type=mc.DataType.Value(data_type))
    if dims:
        spec.dims.extend(dims)
    else:
        # A per-item scalar (the class label): Triton wants dims [1], the model sees [N].
        spec.dims.append(1)
        spec.reshape.SetInParent()
    return spec


def _scheduling(config: mc.ModelConfig, settings: TritonSettings) -> None:
    config.max_batch_size = settings.max_batch_size
    batching = config.dynamic_batching
    batching.preferred_batch_size.extend(
        s for s in settings.preferred_batch_sizes if s <= settings.max_batch_size
    )
    batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    policy = batching.default_queue_policy
    policy.max_queue_size = settings.max_queue_size
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.allow_timeout_override = True  # a client's deadline bounds its time in the queue
    config.version_policy.latest.num_versions = settings.num_versions


def model_config(
    description: ModelDescription, onnx_path: Path, settings: TritonSettings
) -> mc.ModelConfig:
    inputs, outputs = onnx_io(onnx_path)
    config = mc.ModelConfig(name=description.name, platform="onnxruntime_onnx")
    config.input.extend(_tensor(mc.ModelInput, *row) for row in inputs)
    config.output.extend(_tensor(mc.ModelOutput, *row) for row in outputs)
    _scheduling(config, settings)
    group = config.instance_group.add()
    group.count = settings.instance_count
    if settings.target == "gpu":
        group.kind = mc.ModelInstanceGroup.KIND_GPU
        if settings.tensorrt_fp16:
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
            accelerator.name = "tensorrt"
            accelerator.parameters["precision_mode"] = "FP16"
            accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)
    elif settings.target == "cpu":
        group.kind = mc.ModelInstanceGroup.KIND_CPU
    else:
        raise ValueError(f"target must be cpu or gpu, got {settings.target!r}")
    config.parameters[METADATA_KEY].string_value = description.to_json()
    return config


def write_config(config: mc.ModelConfig, model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_model(
    repo: Path, onnx_path: Path, description: ModelDescription, settings: TritonSettings
) -> Path:
    """Copy ``onnx_path`` to ``repo/<name>/<version>/model.onnx`` and write its config; returns the model dir."""
    model_dir = repo / description.name
    version_dir = model_dir / str(settings.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    if onnx_path.resolve() != (version_dir / "model.onnx").resolve():
        shutil.copyfile(onnx_path, version_dir / "model.onnx")
    write_config(model_config(description, version_dir / "model.onnx", settings), model_dir)
    return model_dir


def ensemble_name(generator: str, classifier: str) -> str:
    return f"{generator}__{classifier}"


def write_classmap_ensemble(
    repo: Path, generator: ModelDescription, classifier: ModelDescription, settings: TritonSettings
) -> Path:
    """z (+ label) → generator → image → classifier → logits, inside Triton.

    ClassMap over a 256×256 grid moves 65,536 images; the ensemble keeps them inside Triton and
    sends back only 10 logits per cell.
    """
    if tuple(generator.image_shape) != tuple(classifier.image_shape):
        raise ValueError(
            f"{generator.name} makes {generator.image_shape} images but {classifier.name} reads {classifier.image_shape}"
        )
    gen_config = read_config(repo / generator.name / "config.pbtxt")
    cls_config = read_config(repo / classifier.name / "config.pbtxt")
    name = ensemble_name(generator.name, classifier.name)
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=settings.max_batch_size)
    config.input.extend(gen_config.input)
    config.output.extend(o for o in cls_config.output if o.name == "logits")
    step = config.ensemble_scheduling.step.add(model_name=generator.name, model_version=-1)
    for spec in gen_config.input:
        step.input_map[spec.name] = spec.name
    step.output_map["image"] = "generated_image"
    step = config.ensemble_scheduling.step.add(model_name=classifier.name, model_version=-1)
    step.input_map["image"] = "generated_image"
    step.output_map["logits"] = "logits"
    config.parameters[ENSEMBLE_KEY].string_value = json.dumps(
        {"generator": generator.name, "classifier": classifier.name}
    )
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)  # Triton wants a version dir, even empty
    (model_dir / "1" / ".keep").touch()
    write_config(config, model_dir)
    return model_dir


def description_from_config(config: mc.ModelConfig) -> ModelDescription | None:
    if METADATA_KEY not in config.parameters:
        return None
    return ModelDescription.from_json(config.parameters[METADATA_KEY].string_value)
