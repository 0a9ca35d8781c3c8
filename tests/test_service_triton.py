"""The service on the Triton backend, against the real local tritonserver."""

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganserve.export.triton_local import LocalTriton
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc
from tests.conftest import RunningService, serve_config

pytestmark = pytest.mark.slow


def _stub(running):
    return pb_grpc.GenerationServiceStub(grpc.insecure_channel(running.address))


def _pixels(response):
    return np.stack([np.frombuffer(i.tensor.data, np.float32) for i in response.images])


@pytest.fixture(scope="module")
def triton_service(local_triton, tiny_repo):
    running = RunningService(
        serve_config(tiny_repo, backend="triton", triton_url=local_triton.grpc_url)
    )
    yield running
    running.stop()


def test_both_backends_give_the_same_pixels(triton_service, service):
    triton_stub, embedded_stub = _stub(triton_service), _stub(service)
    assert triton_stub.GetModel(pb.GetModelRequest(model="cgan")).backend == "triton"
    for request in (
        pb.GenerateRequest(model="cgan", seeds=[0, 1, 2, 3], labels=[5], format=pb.RAW_FLOAT32),
        pb.GenerateRequest(
            model="gen2d", seeds=list(range(300)), format=pb.RAW_FLOAT32
        ),  # > max_batch_size 256
    ):
        np.testing.assert_allclose(
            _pixels(triton_stub.Generate(request)),
            _pixels(embedded_stub.Generate(request)),
            atol=1e-5,
        )
    same = pb.GenerateRequest(model="gen2d", seeds=[42])
    assert triton_stub.Generate(same).images[0].png == embedded_stub.Generate(same).images[0].png


def test_class_map_and_activations_agree_across_backends(triton_service, service):
    request = pb.ClassMapRequest(model="gen2d", resolution=40)  # served by the Triton ensemble
    triton_map, embedded_map = (
        _stub(triton_service).ClassMap(request),
        _stub(service).ClassMap(request),
    )
    assert list(triton_map.class_ids) == list(embedded_map.class_ids)
    np.testing.assert_allclose(triton_map.confidences, embedded_map.confidences, atol=1e-4)
    layers = pb.LayerActivationsRequest(
        model="gen2d", latents=[pb.LatentSource(seed=9)], include_tensors=True
    )
    a, b = _stub(triton_service).LayerActivations(layers), _stub(service).LayerActivations(layers)
    for x, y in zip(a.layers, b.layers, strict=True):
        np.testing.assert_allclose(
            np.frombuffer(x.tensor.data, np.float32),
            np.frombuffer(y.tensor.data, np.float32),
            atol=1e-5,
        )


def test_one_model_file_serves_plain_and_steered_requests_on_both_backends(triton_service, service):
    triton_stub, embedded_stub = _stub(triton_service), _stub(service)
    off = pb.ChannelEdit(layer="deconv2", channels=[1, 3], scale=0.0)
    blend = pb.ClassBlend(weights={"2": 0.6, "5": 0.4})
    for request in (
        pb.GenerateRequest(model="cgan", seeds=[0, 1], labels=[5], format=pb.RAW_FLOAT32),
        pb.GenerateRequest(
            model="cgan", seeds=[0, 1], blends=[blend], psi=0.6, edits=[off], format=pb.RAW_FLOAT32
        ),
        pb.GenerateRequest(model="gen2d", seeds=[2], edits=[off], format=pb.RAW_FLOAT32),
    ):
        np.testing.assert_allclose(
            _pixels(triton_stub.Generate(request)),
            _pixels(embedded_stub.Generate(request)),
            atol=1e-5,
        )
    plain = pb.GenerateRequest(model="cgan", seeds=[0], labels=[5], format=pb.RAW_FLOAT32)
    edited = pb.GenerateRequest(
        model="cgan", seeds=[0], labels=[5], edits=[off], format=pb.RAW_FLOAT32
    )
    assert _pixels(triton_stub.Generate(plain)).tobytes() != (
        _pixels(triton_stub.Generate(edited)).tobytes()
    )


def test_triton_batches_requests_with_different_edits_together(triton_service, local_triton):
    """32 Generate calls at once, each switching off a different channel: Triton's dynamic
    batcher runs them in fewer executions than requests (the steering inputs have the same
    shapes whatever the edit)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(local_triton.grpc_url)

    def counts():
        stats = client.get_inference_statistics("cgan").model_stats[0]
        return stats.inference_count, stats.execution_count

    stub = _stub(triton_service)
    inferences, executions = counts()
    calls = [
        stub.Generate.future(
            pb.GenerateRequest(
                model="cgan",
                seeds=[i],
                labels=[i % 10],
                edits=[pb.ChannelEdit(layer="deconv1", channels=[i % 8], scale=0.0)],
            )
        )
        for i in range(32)
    ]
    assert all(len(call.result(timeout=120).images) == 1 for call in calls)
    after_inferences, after_executions = counts()
    assert after_inferences - inferences == 32
    assert after_executions - executions < 32


def _health(running) -> int:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(running.address))
    return stub.Check(
        health_pb2.HealthCheckRequest(service="ganserve.v1.GenerationService"), timeout=5
    ).status


def _wait(predicate, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_triton_down_gives_unavailable_and_the_service_recovers(tiny_repo, tmp_path):
    triton = LocalTriton(tiny_repo, workspace=tmp_path / "triton").start()
    running = RunningService(serve_config(tiny_repo, backend="triton", triton_url=triton.grpc_url))
    try:
        stub = _stub(running)
        request = pb.GenerateRequest(model="gen2d", seeds=[1])
        assert stub.Generate(request).images
        triton.stop()
        with pytest.raises(grpc.RpcError) as info:
            stub.Generate(request, timeout=10)
        assert (
            info.value.code() == grpc.StatusCode.UNAVAILABLE
            and "Traceback" not in info.value.details()
        )
        assert _wait(lambda: _health(running) == health_pb2.HealthCheckResponse.NOT_SERVING)
        assert 'ganserve_backend_ready{backend="triton"} 0.0' in running.metrics_text()
        triton.start()  # same ports
        assert _wait(lambda: _health(running) == health_pb2.HealthCheckResponse.SERVING)
        assert stub.Generate(request).images
    finally:
        running.stop()
        triton.close()
