"""The client SDK against the real service."""

import asyncio
import subprocess
import sys

import grpc
import numpy as np
import pytest

from ganserve.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    DeadlineExceededError,
    InvalidArgumentError,
    ModelNotFoundError,
    OverloadedError,
    Retry,
    UnavailableError,
)
from ganserve.latents import latent_from_seed
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc
from tests.conftest import RunningService, serve_config


def test_sdk_and_service_import_without_torch_or_onnx():
    code = (
        "import sys, ganserve.client, ganserve.service.server, ganserve.service.backends.embedded;"
        "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def client(service):
    with Client(service.address, timeout_s=30) as c:
        yield c


def test_models_and_generate_return_typed_results(client):
    models = {m.name: m for m in client.list_models()}
    assert models["cgan"].conditional and models["cgan"].image_shape == (1, 28, 28)
    assert client.get_model("gen2d").layer_names[-1] == "image"
    images = client.generate("cgan", seeds=[3, 4], labels=7)
    assert [i.seed for i in images] == [3, 4] and [i.label for i in images] == [7, 7]
    np.testing.assert_array_equal(images[0].latent, latent_from_seed(3, 6))
    assert images[0].to_pil().size == (28, 28)
    floats = client.generate("gen2d", latents=np.zeros((2, 2)), image_format="float32")
    assert floats[0].array.shape == (1, 28, 28) and floats[0].array.dtype == np.float32
    assert floats[0].seed is None and floats[0].to_pil().size == (28, 28)
    assert len(client.generate("gen2d", count=3)) == 3


def test_interpolate_class_map_and_activations(client):
    frames = list(client.interpolate("gen2d", [1, [0.5, -0.5]], steps=6))
    assert [f.index for f in frames] == list(range(6)) and frames[0].image.seed == 1
    np.testing.assert_allclose(frames[-1].image.latent, [0.5, -0.5])
    cmap = client.class_map("gen2d", 16, render_png=True)
    assert (
        cmap.class_ids.shape == (16, 16)
        and cmap.png
        and sum(cmap.shares.values()) == pytest.approx(1)
    )
    activations = client.layer_activations(
        "cgan", [1, 2], ["deconv1"], labels=[0, 1], heatmaps=True
    )
    assert activations["deconv1"].tensor.shape[0] == 2 and len(activations["deconv1"].heatmaps) == 2


def test_status_codes_become_typed_exceptions(client):
    with pytest.raises(ModelNotFoundError):
        client.generate("nope", seeds=[1])
    with pytest.raises(InvalidArgumentError, match=r"count: 5000 is outside"):
        client.generate("gen2d", count=5000)
    with pytest.raises(DeadlineExceededError):
        client.class_map("gen2d", 256, plane=[1, 2, 3], timeout_s=0.001)


def test_async_client_mirrors_the_sync_one(service):
    async def scenario():
        async with AsyncClient(service.address) as client:
            assert await client.healthy()
            models = await client.list_models()
            images = await client.generate("gen2d", seeds=[5])
            frames = [f async for f in client.interpolate("gen2d", [1, 2], steps=4)]
            cmap = await client.class_map("gen2d", 8)
            layers = await client.layer_activations("gen2d", [1], ["project"])
            with pytest.raises(InvalidArgumentError):
                await client.generate("gen2d", latents=[[0.0] * 3])
            return models, images, frames, cmap, layers

    models, images, frames, cmap, layers = asyncio.run(scenario())
    assert {m.name for m in models} >= {"gen2d"} and images[0].seed == 5
    assert len(frames) == 4 and cmap.class_ids.shape == (8, 8) and "project" in layers


class FailingTwice(pb_grpc.GenerationServiceServicer):
    """A real gRPC server whose ListModels answers UNAVAILABLE twice, then succeeds."""

    def __init__(self):
        self.calls = 0

    def ListModels(self, request, context):
        self.calls += 1
        if self.calls <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return pb.ListModelsResponse(models=[pb.ModelInfo(name="m")])


def test_retries_ride_out_unavailable_answers():
    from concurrent.futures import ThreadPoolExecutor

    servicer = FailingTwice()
    server = grpc.server(ThreadPoolExecutor(2))
    pb_grpc.add_GenerationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", retry=None) as no_retry, pytest.raises(UnavailableError):
            no_retry.list_models()
        assert servicer.calls == 1
        servicer.calls = 0
        with Client(
            f"127.0.0.1:{port}", retry=Retry(max_attempts=4, initial_backoff_s=0.05)
        ) as client:
            assert [m.name for m in client.list_models()] == ["m"]
        assert servicer.calls == 3  # two refusals retried by gRPC itself, then the answer
    finally:
        server.stop(0)


def test_a_queue_that_stays_full_ends_in_overloaded_after_retries(tiny_repo):
    running = RunningService(serve_config(tiny_repo, max_queued_images=2))
    try:
        retry = Retry(max_attempts=3, initial_backoff_s=0.05)
        with Client(running.address, retry=retry) as client, pytest.raises(OverloadedError):
            client.generate("gen2d", count=10)
        assert (
            'ganserve_requests_total{code="RESOURCE_EXHAUSTED",method="Generate",transport="grpc"} 3.0'
            in running.metrics_text()
        )
    finally:
        running.stop()


def test_token_option(tiny_repo, monkeypatch):
    monkeypatch.setenv("TEST_SDK_TOKEN", "abc123")
    running = RunningService(serve_config(tiny_repo, auth_token_env="TEST_SDK_TOKEN"))
    try:
        with Client(running.address) as anonymous, pytest.raises(AuthenticationError):
            anonymous.list_models()
        with Client(running.address, token="abc123") as client:
            assert client.list_models()
    finally:
        running.stop()


def test_class_map_has_its_own_default_deadline(service):
    # The others' short default does not cut a class map short; its own default applies to it.
    with Client(service.address, timeout_s=0.001) as quick:
        assert quick.class_map("gen2d", 64).class_ids.shape == (64, 64)
    with Client(service.address, classmap_timeout_s=0.001) as impatient:
        with pytest.raises(DeadlineExceededError):
            impatient.class_map("gen2d", 256, plane=[4, 5, 6])
        assert impatient.generate("gen2d", seeds=[1])

    async def scenario():
        async with AsyncClient(service.address, classmap_timeout_s=0.001) as client:
            with pytest.raises(DeadlineExceededError):
                await client.class_map("gen2d", 256, plane=[7, 8, 9])

    asyncio.run(scenario())
