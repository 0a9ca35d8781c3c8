"""ONNX export parity, model metadata, Triton configs checked against the real ONNX graphs."""

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tritonclient.grpc import model_config_pb2 as mc

from ganserve.cli import main
from ganserve.description import ModelKind
from ganserve.export.onnx_export import MAX_ABS_DIFF, example_inputs, export_onnx, read_description
from ganserve.export.triton_repo import (
    TritonSettings,
    description_from_config,
    model_config,
    onnx_io,
    read_config,
)
from ganserve.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoints):
    out = tmp_path_factory.mktemp("onnx")
    return {
        name: export_onnx(path, name, out / f"{name}.onnx", fp16=(name == "cgan"))
        for name, path in tiny_checkpoints.items()
    }


def test_onnx_models_pass_the_checker_with_opset_17_or_later(exported):
    for report in exported.values():
        model = onnx.load(str(report.path))
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_generator_io_names_and_dynamic_batch(exported):
    session = ort.InferenceSession(str(exported["cgan"].path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["z", "class_weights", "scale_project", "scale_deconv1", "scale_deconv2"]
    assert all(i.type == "tensor(float)" for i in inputs.values())
    assert isinstance(inputs["z"].shape[0], str) and inputs["z"].shape[1] == 6
    assert inputs["class_weights"].shape[1] == 10
    outputs = [o.name for o in session.get_outputs()]
    assert outputs == ["image", "project", "deconv1", "deconv2"]
    for batch in (1, 3, 130):
        feeds = example_inputs(exported["cgan"].description, batch)
        image = session.run(["image"], feeds)[0]
        assert image.shape == (batch, 1, 28, 28) and image.min() >= -1 and image.max() <= 1


@pytest.mark.parametrize(
    "name", ["cgan", "cgan-cbn", "cgan-both", "cgan-fullres", "gen2d", "classifier"]
)
def test_every_output_matches_pytorch_at_batch_1_and_64(exported, tiny_checkpoints, name):
    report = exported[name]
    assert set(report.max_abs_diff) == {1, 64} and max(report.max_abs_diff.values()) <= MAX_ABS_DIFF
    # Independently of the exporter's own check: fresh session vs the checkpoint's PyTorch model.
    ckpt = load_checkpoint(tiny_checkpoints[name])
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    for batch in (1, 64):
        feeds = example_inputs(report.description, batch, seed=7)
        with torch.no_grad():
            if ckpt.kind == "classifier":
                activations = ckpt.classifier().forward_with_activations(
                    torch.from_numpy(feeds["image"])
                )
            else:  # unedited (scales of one): the generator itself, class weights as its labels
                names = ["z", "class_weights"] if report.description.conditional else ["z"]
                tensors = [torch.from_numpy(feeds[n]) for n in names]
                activations = ckpt.generator().forward_with_activations(*tensors)
        expected = dict(zip(report.description.layer_names, activations, strict=True))
        got = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True)
        )
        assert got.keys() == expected.keys()
        for layer, value in expected.items():
            np.testing.assert_allclose(
                got[layer], value.numpy(), atol=MAX_ABS_DIFF, rtol=0, err_msg=layer
            )


def test_fp16_variant_stays_close(exported):
    report = exported["cgan"]
    assert report.fp16_path.exists() and max(report.fp16_max_abs_diff.values()) <= 5e-2
    half = onnx.load(str(report.fp16_path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in half.graph.initializer)


def test_metadata_describes_the_model(exported, tiny_checkpoints):
    cgan = read_description(exported["cgan"].path)
    assert (
        cgan.kind is ModelKind.CONDITIONAL_GENERATOR
        and cgan.latent_dim == 6
        and cgan.prior == "uniform"
    )
    assert cgan.image_shape == (1, 28, 28) and cgan.num_classes == 10 and cgan.epoch == 1
    assert (
        cgan.layer_names == ("project", "deconv1", "deconv2", "image") and cgan.dataset == "mnist"
    )
    assert cgan.training_config["model"]["conditional"] is True and cgan.parameters > 0
    classifier = read_description(exported["classifier"].path)
    assert classifier.kind is ModelKind.CLASSIFIER and "features" in classifier.layer_names
    assert "test_accuracy" in classifier.metrics


def _check_config_against_onnx(config: mc.ModelConfig, onnx_path):
    inputs, outputs = onnx_io(onnx_path)
    assert [(i.name, mc.DataType.Name(i.data_type)) for i in config.input] == [
        (n, t) for n, t, _ in inputs
    ]
    assert [(o.name, mc.DataType.Name(o.data_type)) for o in config.output] == [
        (n, t) for n, t, _ in outputs
    ]
    for spec, (_, _, dims) in zip(
        [*config.input, *config.output], [*inputs, *outputs], strict=True
    ):
        if dims:
            assert list(spec.dims) == dims
        else:  # a per-item scalar is declared [1] and reshaped to [] for the model
            assert list(spec.dims) == [1] and spec.HasField("reshape") and not spec.reshape.shape


def test_every_generated_config_parses_and_matches_its_onnx_model(tiny_repo):
    configs = sorted(tiny_repo.glob("*/config.pbtxt"))
    assert {p.parent.name for p in configs} == {"cgan", "gen2d", "classifier", "gen2d__classifier"}
    for path in configs:
        config = read_config(path)
        assert config.name == path.parent.name
        if config.platform == "ensemble":
            steps = [s.model_name for s in config.ensemble_scheduling.step]
            assert steps == ["gen2d", "classifier"] and [o.name for o in config.output] == [
                "logits"
            ]
            continue
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 256
        _check_config_against_onnx(config, path.parent / "1" / "model.onnx")
        batching = config.dynamic_batching
        assert (
            list(batching.preferred_batch_size) == [16, 64, 256]
            and batching.max_queue_delay_microseconds > 0
        )
        assert batching.default_queue_policy.max_queue_size == 1024
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert config.version_policy.latest.num_versions == 1
        assert description_from_config(config).name == config.name


def test_gpu_target_asks_for_gpu_instances_and_tensorrt_fp16(exported):
    report = exported["gen2d"]
    settings = TritonSettings(target="gpu", instance_count=2, tensorrt_fp16=True, max_batch_size=64)
    config = model_config(report.description, report.path, settings)
    assert (
        config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        and config.instance_group[0].count == 2
    )
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert list(config.dynamic_batching.preferred_batch_size) == [
        16,
        64,
    ]  # none above max_batch_size
    with pytest.raises(ValueError, match="target"):
        model_config(report.description, report.path, dataclasses.replace(settings, target="tpu"))


def test_export_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.pt"), "--name", "x"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cgan", "cgan-both", "gen2d"])
def test_an_exported_generator_scores_as_its_checkpoint(
    exported, tiny_checkpoints, name, tmp_path, monkeypatch
):
    """`ganserve evaluate model.onnx` measures the served file: the same numbers as the
    checkpoint it came from, up to ONNX Runtime's rounding."""
    from ganserve.training import mode_bins
    from ganserve.training.evaluate import evaluate

    monkeypatch.setattr(mode_bins, "MIN_PER_BIN", 3)  # a few test images a class: two bins each
    monkeypatch.chdir(tmp_path)
    judge = tiny_checkpoints["classifier"]
    scores = {
        source: evaluate(path, judge, strength="none", samples=64, out=tmp_path / f"{source}.json")
        for source, path in (("checkpoint", tiny_checkpoints[name]), ("onnx", exported[name].path))
    }
    checkpoint, onnx_file = scores["checkpoint"], scores["onnx"]
    assert onnx_file["weights"] == "exported" and onnx_file["epoch"] == checkpoint["epoch"] == 1
    assert onnx_file["frechet_distance"]["ratio"] == pytest.approx(
        checkpoint["frechet_distance"]["ratio"], rel=1e-3
    )
    for space in ("features", "pixels"):
        ours, theirs = (s["within_class_diversity"][space]["per_class"] for s in scores.values())
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():  # None: a class with under two samples
            assert theirs[key] == (None if value is None else pytest.approx(value, rel=1e-3))
    assert onnx_file["class_histogram"] == pytest.approx(checkpoint["class_histogram"], abs=0.02)
    assert onnx_file["mode_bins"]["real_vs_real"] == checkpoint["mode_bins"]["real_vs_real"]
    assert (
        onnx_file["mode_bins"]["generated"]["bins"] == checkpoint["mode_bins"]["generated"]["bins"]
    )
    if name.startswith("cgan"):  # classes asked for through the file's class input
        assert onnx_file["class_consistency"] == pytest.approx(
            checkpoint["class_consistency"], abs=0.02
        )
        for ours, theirs in zip(
            checkpoint["truncation"]["psis"], onnx_file["truncation"]["psis"], strict=True
        ):
            assert theirs["variety"] == pytest.approx(ours["variety"], rel=1e-3)
            assert theirs["mean_pixel"] == pytest.approx(ours["mean_pixel"], abs=1e-4)
    else:
        assert "class_consistency" not in onnx_file and "truncation" not in onnx_file

    # Without --out the report lands in the working directory, named after the file's folders:
    # nothing is written into a model repository that Triton reads.
    path = exported[name].path
    assert main(["evaluate", str(path), "--classifier", str(judge), "--ic", "none",
                 "--samples", "64"]) == 0  # fmt: skip
    expected = f"{path.parent.parent.name}-{path.parent.name}-{path.stem}.eval.json"
    assert [p.name for p in tmp_path.glob("*.eval.json")] == [expected]
    assert not list(path.parent.glob("*.eval.json"))


def test_evaluate_refuses_what_an_exported_file_cannot_answer(exported, tiny_checkpoints, capsys):
    judge = str(tiny_checkpoints["classifier"])
    assert main(["evaluate", str(exported["cgan"].path), "--classifier", judge, "--ic", "none",
                 "--weights", "raw"]) == 2  # fmt: skip
    assert "one set of weights" in capsys.readouterr().err
    assert main(["evaluate", str(exported["classifier"].path)]) == 2
    assert "from its checkpoint" in capsys.readouterr().err
    # The figure's bins are cut in a classifier's features: refused before any image is drawn.
    assert main(["evaluate", str(exported["cgan"].path), "--bins-figure", "bins.png"]) == 2
    assert "needs a classifier" in capsys.readouterr().err
