"""Every RPC of the real service (embedded backend, port 0), through a real gRPC client."""

import io
import json
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from ganserve.latents import latent_from_seed, latents_from_seeds
from ganserve.v1 import generation_pb2 as pb


def raw(tensor: pb.Tensor) -> np.ndarray:
    dtype = np.float32 if tensor.dtype == pb.Tensor.FLOAT32 else np.uint8
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))


def onnx_run(repo, name, feeds, outputs=("image",)):
    """The model on ``feeds`` (z, and an int ``label`` for conditional models); the steering
    inputs get their neutral values: the label as a one-hot class-weight row, scales of one."""
    session = ort.InferenceSession(
        str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    feeds = dict(feeds)
    count = len(next(iter(feeds.values())))
    for spec in session.get_inputs():
        if spec.name == "class_weights":
            feeds[spec.name] = np.eye(spec.shape[1], dtype=np.float32)[feeds.pop("label")]
        elif spec.name not in feeds:
            feeds[spec.name] = np.ones((count, spec.shape[1]), np.float32)
    return session.run(list(outputs), feeds)


def code_and_details(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# -- models ---------------------------------------------------------------------------------------


def test_list_and_get_models_carry_the_exported_metadata(stub):
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {
        "cgan",
        "gen2d",
        "classifier",
    }  # the ensemble has no ONNX file of its own
    cgan = stub.GetModel(pb.GetModelRequest(model="cgan"))
    assert (
        cgan.kind == pb.CONDITIONAL_GENERATOR and cgan.latent_dim == 6 and cgan.prior == "uniform"
    )
    assert (cgan.channels, cgan.height, cgan.width) == (1, 28, 28) and len(cgan.class_names) == 10
    assert (
        list(cgan.layer_names) == ["project", "deconv1", "deconv2", "image"]
        and cgan.backend == "embedded"
    )
    assert models["classifier"].kind == pb.CLASSIFIER and "test_accuracy" in json.loads(
        models["classifier"].metrics_json
    )
    code, details = code_and_details(lambda: stub.GetModel(pb.GetModelRequest(model="missing")))
    assert code == grpc.StatusCode.NOT_FOUND and "gen2d" in details


# -- Generate -------------------------------------------------------------------------------------


def test_seeds_give_the_same_pixels_every_time_and_match_onnxruntime(stub, tiny_repo):
    request = pb.GenerateRequest(model="gen2d", seeds=[0, 7, 123456], format=pb.RAW_FLOAT32)
    first, second = stub.Generate(request), stub.Generate(request)
    assert first == second
    expected = onnx_run(tiny_repo, "gen2d", {"z": latents_from_seeds([0, 7, 123456], 2)})[0]
    for image, want, seed in zip(first.images, expected, [0, 7, 123456], strict=True):
        assert image.seed == seed
        np.testing.assert_array_equal(
            np.array(image.latent.values, np.float32), latent_from_seed(seed, 2)
        )
        np.testing.assert_allclose(raw(image.tensor), want, atol=1e-6)


def test_png_and_uint8_formats(stub):
    png = stub.Generate(pb.GenerateRequest(model="gen2d", seeds=[3]))
    picture = Image.open(io.BytesIO(png.images[0].png))
    assert picture.size == (28, 28) and picture.mode == "L"
    u8 = (
        stub.Generate(pb.GenerateRequest(model="gen2d", seeds=[3], format=pb.RAW_UINT8))
        .images[0]
        .tensor
    )
    assert list(u8.shape) == [28, 28, 1] and u8.dtype == pb.Tensor.UINT8
    np.testing.assert_array_equal(raw(u8)[..., 0], np.asarray(picture))


def test_count_picks_fresh_seeds_and_returns_them(stub):
    response = stub.Generate(pb.GenerateRequest(model="gen2d", count=5))
    seeds = [image.seed for image in response.images]
    assert len(set(seeds)) == 5
    again = stub.Generate(pb.GenerateRequest(model="gen2d", seeds=seeds, format=pb.PNG))
    assert [i.png for i in again.images] == [i.png for i in response.images]


def test_explicit_latents_and_conditional_labels(stub, tiny_repo):
    latents = np.array([[0.1] * 6, [-0.5] * 6], np.float32)
    request = pb.GenerateRequest(
        model="cgan",
        latents=[pb.Latent(values=z) for z in latents],
        labels=[4],
        format=pb.RAW_FLOAT32,
    )
    response = stub.Generate(request)
    assert [i.label for i in response.images] == [4, 4] and not response.images[0].HasField("seed")
    expected = onnx_run(tiny_repo, "cgan", {"z": latents, "label": np.array([4, 4])})[0]
    np.testing.assert_allclose(
        np.stack([raw(i.tensor) for i in response.images]), expected, atol=1e-6
    )


@pytest.mark.parametrize(
    ("request_", "code", "pattern"),
    [
        (pb.GenerateRequest(model="nope", count=1), "NOT_FOUND", r"'nope' is not served"),
        (pb.GenerateRequest(model="", count=1), "INVALID_ARGUMENT", r"model: is required"),
        (pb.GenerateRequest(model="classifier", count=1), "INVALID_ARGUMENT", r"not a generator"),
        (
            pb.GenerateRequest(model="gen2d", count=5000),
            "INVALID_ARGUMENT",
            r"count: 5000 is outside \[1, 1024\]",
        ),
        (pb.GenerateRequest(model="gen2d"), "INVALID_ARGUMENT", r"exactly one"),
        (pb.GenerateRequest(model="gen2d", seeds=[1], count=2), "INVALID_ARGUMENT", r"exactly one"),
        (
            pb.GenerateRequest(model="gen2d", latents=[pb.Latent(values=[0.1, 0.2, 0.3])]),
            "INVALID_ARGUMENT",
            r"latents\[0\]\.values: needs exactly 2 values",
        ),
        (
            pb.GenerateRequest(model="gen2d", latents=[pb.Latent(values=[float("nan"), 0.0])]),
            "INVALID_ARGUMENT",
            r"finite",
        ),
        (
            pb.GenerateRequest(model="gen2d", latents=[pb.Latent(values=[float("inf"), 0.0])]),
            "INVALID_ARGUMENT",
            r"finite",
        ),
        (pb.GenerateRequest(model="cgan", seeds=[1]), "INVALID_ARGUMENT", r"labels: give 1 label"),
        (
            pb.GenerateRequest(model="cgan", seeds=[1], labels=[10]),
            "INVALID_ARGUMENT",
            r"label 10 out of range \[0, 9\]",
        ),
        (
            pb.GenerateRequest(model="cgan", seeds=[1], labels=[-1]),
            "INVALID_ARGUMENT",
            r"out of range",
        ),
        (
            pb.GenerateRequest(model="gen2d", seeds=[1], labels=[0]),
            "INVALID_ARGUMENT",
            r"not conditional",
        ),
        (
            pb.GenerateRequest(model="gen2d", count=400, format=pb.RAW_FLOAT32),
            "INVALID_ARGUMENT",
            r"over the 1,048,576-byte message limit",
        ),
    ],
)
def test_bad_generate_requests_name_the_field_and_range(stub, request_, code, pattern):
    got_code, details = code_and_details(lambda: stub.Generate(request_))
    assert got_code == getattr(grpc.StatusCode, code)
    assert re.search(pattern, details), details
    assert "Traceback" not in details


# -- Interpolate ----------------------------------------------------------------------------------


def test_interpolate_streams_every_frame_from_a_to_b(stub, tiny_repo):
    request = pb.InterpolateRequest(
        model="gen2d",
        keys=[pb.LatentSource(seed=1), pb.LatentSource(seed=2)],
        steps=9,
        format=pb.RAW_FLOAT32,
    )
    frames = list(stub.Interpolate(request))
    assert [f.index for f in frames] == list(range(9))
    assert frames[0].t == 0.0 and frames[-1].t == 1.0
    a, b = latent_from_seed(1, 2), latent_from_seed(2, 2)
    np.testing.assert_allclose(frames[0].image.latent.values, a)
    np.testing.assert_allclose(frames[-1].image.latent.values, b, atol=1e-6)
    np.testing.assert_allclose(frames[4].image.latent.values, (a + b) / 2, atol=1e-6)
    assert frames[0].image.seed == 1 and frames[-1].image.seed == 2
    expected = onnx_run(
        tiny_repo, "gen2d", {"z": np.array([f.image.latent.values for f in frames], np.float32)}
    )[0]
    np.testing.assert_allclose(np.stack([raw(f.image.tensor) for f in frames]), expected, atol=1e-6)


def test_interpolate_through_key_points_with_slerp_and_a_gif(stub):
    keys = [pb.LatentSource(seed=s) for s in (1, 2, 3)]
    frames = list(
        stub.Interpolate(
            pb.InterpolateRequest(
                model="cgan", keys=keys, steps=7, method=pb.SLERP, label=2, gif=True
            )
        )
    )
    assert len(frames) == 8 and frames[-1].gif and not frames[-1].HasField("image")
    np.testing.assert_allclose(frames[3].image.latent.values, latent_from_seed(2, 6), atol=1e-5)
    assert all(f.image.label == 2 for f in frames[:-1])
    gif = Image.open(io.BytesIO(frames[-1].gif))
    assert gif.format == "GIF" and gif.n_frames == 7


def test_interpolate_errors(stub):
    one_key = pb.InterpolateRequest(model="gen2d", keys=[pb.LatentSource(seed=1)], steps=5)
    code, details = code_and_details(lambda: list(stub.Interpolate(one_key)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "keys" in details
    no_label = pb.InterpolateRequest(
        model="cgan", keys=[pb.LatentSource(seed=1), pb.LatentSource(seed=2)], steps=5
    )
    code, details = code_and_details(lambda: list(stub.Interpolate(no_label)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "label" in details
    too_long = pb.InterpolateRequest(
        model="gen2d", keys=[pb.LatentSource(seed=1), pb.LatentSource(seed=2)], steps=5000
    )
    code, details = code_and_details(lambda: list(stub.Interpolate(too_long)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "[2, 1000]" in details


# -- ClassMap -------------------------------------------------------------------------------------


def _softmax_classes(tiny_repo, generator, latents, labels=None):
    feeds = {"z": latents} if labels is None else {"z": latents, "label": labels}
    images = onnx_run(tiny_repo, generator, feeds)[0]
    logits = onnx_run(tiny_repo, "classifier", {"image": images}, ("logits",))[0]
    return logits.argmax(1)


def test_class_map_of_the_whole_2d_plane_at_256(stub, tiny_repo):
    response = stub.ClassMap(pb.ClassMapRequest(model="gen2d", resolution=256, render_png=True))
    assert response.resolution == 256 and len(response.class_ids) == 256 * 256 == len(
        response.confidences
    )
    assert response.classifier == "classifier" and not response.cached
    assert sum(s.share for s in response.shares) == pytest.approx(1.0, abs=1e-5)
    ids = np.array(response.class_ids).reshape(256, 256)
    counts = np.bincount(ids.ravel(), minlength=10) / ids.size
    np.testing.assert_allclose([s.share for s in response.shares], counts, atol=1e-6)
    # Row 0 is the top (y = +1), column 0 the left (x = -1): check corners against ORT in process.
    corners = np.array([[-1, 1], [1, 1], [-1, -1], [1, -1]], np.float32)
    np.testing.assert_array_equal(
        [ids[0, 0], ids[0, -1], ids[-1, 0], ids[-1, -1]],
        _softmax_classes(tiny_repo, "gen2d", corners),
    )
    picture = Image.open(io.BytesIO(response.png))
    assert picture.width > picture.height >= 512  # map plus legend
    again = stub.ClassMap(pb.ClassMapRequest(model="gen2d", resolution=256, render_png=True))
    assert again.cached and list(again.class_ids) == list(response.class_ids)


def test_class_map_section_of_a_conditional_6d_latent(stub, tiny_repo):
    request = pb.ClassMapRequest(
        model="cgan", resolution=8, axis_x=2, axis_y=4, fixed=[0.5, -0.5, 0.1, 0.2], label=3
    )
    response = stub.ClassMap(request)
    ids = np.array(response.class_ids).reshape(8, 8)
    top_left = np.array([[0.5, -0.5, -1.0, 0.1, 1.0, 0.2]], np.float32)
    assert ids[0, 0] == _softmax_classes(tiny_repo, "cgan", top_left, np.array([3]))[0]


def test_class_map_plane_through_three_seeds(stub, tiny_repo):
    plane = [pb.LatentSource(seed=s) for s in (10, 11, 12)]
    response = stub.ClassMap(pb.ClassMapRequest(model="gen2d", resolution=5, plane=plane))
    ids = np.array(response.class_ids).reshape(5, 5)
    a, b, c = latents_from_seeds([10, 11, 12], 2)
    # Bottom-left is A (u=0, v=0), bottom-right B, top-left C.
    expected = _softmax_classes(tiny_repo, "gen2d", np.stack([a, b, c]))
    np.testing.assert_array_equal([ids[-1, 0], ids[-1, -1], ids[0, 0]], expected)


@pytest.mark.parametrize(
    ("request_", "pattern"),
    [
        (
            pb.ClassMapRequest(model="gen2d", resolution=300),
            r"resolution: 300 is outside \[2, 256\]",
        ),
        (
            pb.ClassMapRequest(model="cgan", resolution=4, fixed=[0.0], label=0),
            r"fixed: give 4 values",
        ),
        (pb.ClassMapRequest(model="cgan", resolution=4), r"label"),
        (
            pb.ClassMapRequest(model="gen2d", resolution=4, axis_x=0, axis_y=5),
            r"axis_y: 5 is outside \[0, 1\]",
        ),
        (
            pb.ClassMapRequest(model="gen2d", resolution=4, plane=[pb.LatentSource(seed=1)]),
            r"plane: give exactly three",
        ),
        (pb.ClassMapRequest(model="gen2d", resolution=4, classifier="cgan"), r"not a classifier"),
        (pb.ClassMapRequest(model="gen2d", resolution=4, range_min=1, range_max=-1), r"range_min"),
    ],
)
def test_bad_class_map_requests(stub, request_, pattern):
    code, details = code_and_details(lambda: stub.ClassMap(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and re.search(pattern, details), details


# -- LayerActivations -----------------------------------------------------------------------------


def test_layer_activations_tensors_means_and_heatmaps(stub, tiny_repo):
    request = pb.LayerActivationsRequest(
        model="cgan",
        latents=[pb.LatentSource(seed=1), pb.LatentSource(latent=pb.Latent(values=[0.2] * 6))],
        labels=[0, 9],
        layers=["deconv2", "project"],
        include_tensors=True,
        heatmap_png=True,
    )
    response = stub.LayerActivations(request)
    assert [layer.layer for layer in response.layers] == ["deconv2", "project"]
    latents = np.array([latent_from_seed(1, 6), [0.2] * 6], np.float32)
    expected = onnx_run(
        tiny_repo, "cgan", {"z": latents, "label": np.array([0, 9])}, ("deconv2", "project")
    )
    for layer, want in zip(response.layers, expected, strict=True):
        values = raw(layer.tensor)
        np.testing.assert_allclose(values, want, atol=1e-6)
        np.testing.assert_allclose(raw(layer.channel_means), want.mean(axis=(2, 3)), atol=1e-5)
        np.testing.assert_allclose(raw(layer.mean_map), want.mean(axis=1), atol=1e-5)
        assert (
            len(layer.heatmaps) == 2 and Image.open(io.BytesIO(layer.heatmaps[0])).format == "PNG"
        )


def test_layer_activations_default_to_every_layer_without_tensors(stub):
    response = stub.LayerActivations(
        pb.LayerActivationsRequest(model="gen2d", latents=[pb.LatentSource(seed=4)])
    )
    assert [layer.layer for layer in response.layers] == ["project", "deconv1", "deconv2", "image"]
    assert not response.layers[0].HasField("tensor") and response.layers[0].HasField(
        "channel_means"
    )


def test_unknown_layer_lists_the_real_ones(stub):
    request = pb.LayerActivationsRequest(
        model="gen2d", latents=[pb.LatentSource(seed=4)], layers=["conv9"]
    )
    code, details = code_and_details(lambda: stub.LayerActivations(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "conv9" in details and "deconv1" in details


# -- health, reflection, metrics, batching ---------------------------------------------------------


def test_health_and_reflection(service):
    channel = grpc.insecure_channel(service.address)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "ganserve.v1.GenerationService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=name)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"ganserve.v1.GenerationService", "grpc.health.v1.Health"} <= names
    channel.close()


def _sample(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_codes_images_and_latency(service, stub):
    before = service.metrics_text()
    for _ in range(3):
        stub.Generate(pb.GenerateRequest(model="gen2d", seeds=[1, 2]))
    code_and_details(lambda: stub.Generate(pb.GenerateRequest(model="gen2d", count=99999)))
    after = service.metrics_text()

    def delta(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert delta("ganserve_requests_total", method="Generate", code="OK") == 3
    assert delta("ganserve_requests_total", method="Generate", code="INVALID_ARGUMENT") == 1
    assert delta("ganserve_images_generated_total", model="gen2d") == 6
    assert delta("ganserve_request_latency_seconds_count", method="Generate") == 4
    assert delta("ganserve_batch_size_sum", backend="embedded", model="gen2d") == 6
    assert _sample(after, "ganserve_in_flight_requests", method="Generate") == 0
    assert _sample(after, "ganserve_model_info", model="cgan", kind="conditional_generator") == 1
    assert _sample(after, "ganserve_backend_ready", backend="embedded") == 1


def test_concurrent_single_image_requests_are_batched(service, stub):
    before = service.metrics_text()
    with ThreadPoolExecutor(32) as pool:
        futures = [
            pool.submit(stub.Generate, pb.GenerateRequest(model="cgan", seeds=[i], labels=[i % 10]))
            for i in range(64)
        ]
        results = [f.result() for f in futures]
    assert all(len(r.images) == 1 for r in results)
    after = service.metrics_text()
    images = _sample(after, "ganserve_batch_size_sum", model="cgan") - _sample(
        before, "ganserve_batch_size_sum", model="cgan"
    )
    batches = _sample(after, "ganserve_batch_size_count", model="cgan") - _sample(
        before, "ganserve_batch_size_count", model="cgan"
    )
    assert images == 64 and batches < 64  # several requests shared an inference


def test_class_map_axes_can_be_swapped(stub):
    resolution = 12
    default = np.array(
        stub.ClassMap(pb.ClassMapRequest(model="gen2d", resolution=resolution)).class_ids
    )
    swapped = np.array(
        stub.ClassMap(
            pb.ClassMapRequest(model="gen2d", resolution=resolution, axis_x=1, axis_y=0)
        ).class_ids
    )
    default, swapped = (
        default.reshape(resolution, resolution),
        swapped.reshape(resolution, resolution),
    )
    # cell (r, c) of the swapped map holds the latent of cell (R-1-c, R-1-r) of the default one
    last = resolution - 1
    expected = np.array(
        [[default[last - c, last - r] for c in range(resolution)] for r in range(resolution)]
    )
    np.testing.assert_array_equal(swapped, expected)
