"""The models shipped in deploy/model_repository: what `make run` serves right after install."""

import itertools
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from ganserve.description import CLASS_WEIGHTS_INPUT, ModelKind
from ganserve.export.onnx_export import example_inputs, read_description
from ganserve.export.triton_repo import read_config
from ganserve.latents import latents_from_seeds
from ganserve.training.metrics import mean_pairwise_distance
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc
from tests.conftest import RunningService, serve_config
from tests.test_export import _check_config_against_onnx

REPO = Path(__file__).resolve().parent.parent / "deploy" / "model_repository"
SMALL_LATENT = {"fmnist-2d": 2, "fmnist-3d": 3, "fmnist-4d": 4}  # the studies' latent sizes
SHIPPED = {
    "fmnist-cgan": ModelKind.CONDITIONAL_GENERATOR,
    **dict.fromkeys(SMALL_LATENT, ModelKind.GENERATOR),
    "fmnist-classifier": ModelKind.CLASSIFIER,
}
ENSEMBLES = {f"{name}__fmnist-classifier" for name in SMALL_LATENT}
# 16 Fashion-MNIST test images per class (uint8), shipped so this test needs no data set.
REFERENCE = Path(__file__).resolve().parent / "data" / "fashion_mnist_reference.npz"


def test_the_repository_holds_the_three_models_and_the_ensemble_small_enough_for_git():
    names = {p.parent.name for p in REPO.glob("*/config.pbtxt")}
    assert names == {*SHIPPED, *ENSEMBLES}
    total = sum(p.stat().st_size for p in REPO.rglob("*") if p.is_file())
    # 24 MiB: the conditional generator (9.7 MB in ONNX) and the 3-D and 4-D generators (4.3 MB
    # each) have the studies' width; what this guards against is a model an order of magnitude
    # larger slipping into git.
    assert total < 24 * 1024 * 1024, f"{total:,} bytes"


def test_shipped_models_describe_themselves_and_carry_their_evaluation():
    for name, kind in SHIPPED.items():
        description = read_description(REPO / name / "1" / "model.onnx")
        assert description.kind is kind and description.dataset == "fashion-mnist"
        assert description.class_names[0] == "T-shirt/top" and description.epoch > 0
        _check_config_against_onnx(
            read_config(REPO / name / "config.pbtxt"), REPO / name / "1" / "model.onnx"
        )
        if kind is ModelKind.CLASSIFIER:
            assert description.metrics["test_accuracy"] > 0.85
        else:
            assert (
                "independent_classifier" in description.metrics
                and "frechet_distance" in description.metrics
            )
    for name, latent_dim in SMALL_LATENT.items():
        assert read_description(REPO / name / "1" / "model.onnx").latent_dim == latent_dim
    assert (
        "class_consistency" in read_description(REPO / "fmnist-cgan" / "1" / "model.onnx").metrics
    )


def test_make_run_configuration_serves_them():
    running = RunningService(serve_config(REPO))  # the defaults of `ganserve serve`, on free ports
    try:
        stub = pb_grpc.GenerationServiceStub(grpc.insecure_channel(running.address))
        assert {m.name for m in stub.ListModels(pb.ListModelsRequest()).models} == set(SHIPPED)
        for name, latent_dim in SMALL_LATENT.items():
            # Every class lives somewhere in the latent space: on the plane for 2-D, in one of
            # the cube's sections (the other coordinates at -0.75, 0 or 0.75) for 3-D and 4-D.
            present: set[str] = set()
            for fixed in itertools.product((-0.75, 0.0, 0.75), repeat=latent_dim - 2):
                section = stub.ClassMap(
                    pb.ClassMapRequest(model=name, resolution=48, fixed=list(fixed))
                )
                present |= {s.name for s in section.shares if s.share > 0}
            assert len(present) == 10, (name, sorted(present))
        images = stub.Generate(pb.GenerateRequest(model="fmnist-cgan", seeds=[0, 1], labels=[1]))
        assert len(images.images) == 2 and images.images[0].png
        classmap = stub.ClassMap(pb.ClassMapRequest(model="fmnist-2d", resolution=32))
        assert classmap.classifier == "fmnist-classifier" and len(classmap.class_ids) == 32 * 32
    finally:
        running.stop()


def _generate(name: str, seeds: range, label: int | None) -> np.ndarray:
    """Images in [0, 255] from the shipped ONNX file, as the service makes them."""
    path = REPO / name / "1" / "model.onnx"
    description = read_description(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(description, len(seeds))  # neutral steering inputs (no edits)
    inputs["z"] = latents_from_seeds(seeds, description.latent_dim, description.prior)
    if label is not None:
        inputs[CLASS_WEIGHTS_INPUT] = np.eye(description.num_classes, dtype=np.float32)[
            np.full(len(seeds), label)
        ]
    image = session.run([description.main_output], inputs)[0]
    return (image + 1.0) * 127.5


@pytest.mark.parametrize("label", range(10))
def test_conditional_model_uses_its_latent_in_every_class(label):
    """16 seeds of one class differ at least half as much as 16 real images of the class (the
    collapsed model of the past gave ~0.1: one picture per class whatever the seed)."""
    reference = np.load(REFERENCE)
    real = reference["images"][reference["labels"] == label][:16]
    generated = _generate("fmnist-cgan", range(16), label)
    ratio = mean_pairwise_distance(generated) / mean_pairwise_distance(real)
    assert ratio >= 0.5, f"class {label}: generated/real pairwise distance {ratio:.2f}"


@pytest.mark.parametrize("name", SMALL_LATENT)
def test_small_latent_models_vary_with_their_latent(name):
    reference = np.load(REFERENCE)
    real = reference["images"][np.arange(len(reference["images"])) % 10 == 0]  # 16 mixed classes
    ratio = mean_pairwise_distance(_generate(name, range(16), None)) / mean_pairwise_distance(real)
    assert ratio >= 0.5, f"{name}: generated/real pairwise distance {ratio:.2f}"
