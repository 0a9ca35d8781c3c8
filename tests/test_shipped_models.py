"""The models shipped in deploy/model_repository: what `make run` serves right after install."""

from pathlib import Path

import grpc

from ganserve.description import ModelKind
from ganserve.export.onnx_export import read_description
from ganserve.export.triton_repo import read_config
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc
from tests.conftest import RunningService, serve_config
from tests.test_export import _check_config_against_onnx

REPO = Path(__file__).resolve().parent.parent / "deploy" / "model_repository"
SHIPPED = {
    "fmnist-cgan": ModelKind.CONDITIONAL_GENERATOR,
    "fmnist-2d": ModelKind.GENERATOR,
    "fmnist-classifier": ModelKind.CLASSIFIER,
}


def test_the_repository_holds_the_three_models_and_the_ensemble_small_enough_for_git():
    names = {p.parent.name for p in REPO.glob("*/config.pbtxt")}
    assert names == {*SHIPPED, "fmnist-2d__fmnist-classifier"}
    total = sum(p.stat().st_size for p in REPO.rglob("*") if p.is_file())
    assert total < 8 * 1024 * 1024, f"{total:,} bytes"


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
    assert read_description(REPO / "fmnist-2d" / "1" / "model.onnx").latent_dim == 2
    assert (
        "class_consistency" in read_description(REPO / "fmnist-cgan" / "1" / "model.onnx").metrics
    )


def test_make_run_configuration_serves_them():
    running = RunningService(serve_config(REPO))  # the defaults of `ganserve serve`, on free ports
    try:
        stub = pb_grpc.GenerationServiceStub(grpc.insecure_channel(running.address))
        assert {m.name for m in stub.ListModels(pb.ListModelsRequest()).models} == set(SHIPPED)
        images = stub.Generate(pb.GenerateRequest(model="fmnist-cgan", seeds=[0, 1], labels=[1]))
        assert len(images.images) == 2 and images.images[0].png
        classmap = stub.ClassMap(pb.ClassMapRequest(model="fmnist-2d", resolution=32))
        assert classmap.classifier == "fmnist-classifier" and len(classmap.class_ids) == 32 * 32
    finally:
        running.stop()
