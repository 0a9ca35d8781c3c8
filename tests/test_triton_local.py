"""The real tritonserver (nvidia-pytriton's, CPU) serving the exported repository."""

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from ganserve.export.onnx_export import example_inputs, read_description
from ganserve.export.triton_repo import description_from_config

pytestmark = pytest.mark.slow


def _session(repo, name):
    return ort.InferenceSession(
        str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def _inputs(feeds, client=grpcclient):
    """Triton inputs for ``client`` (the gRPC or the HTTP module); labels are declared [N, 1]."""
    inputs = []
    for name, value in feeds.items():
        value = value.reshape(-1, 1) if name == "label" else value
        tensor = client.InferInput(
            name, list(value.shape), "INT64" if value.dtype == np.int64 else "FP32"
        )
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def test_triton_serves_every_model_with_metadata(local_triton):
    client = grpcclient.InferenceServerClient(local_triton.grpc_url)
    assert client.is_server_ready()
    for name in ("cgan", "gen2d", "classifier", "gen2d__classifier"):
        assert client.is_model_ready(name), name
    metadata = client.get_model_metadata("cgan")
    assert [i.name for i in metadata.inputs] == description_from_config(
        client.get_model_config("cgan").config
    ).input_names
    assert [i.name for i in metadata.inputs][:2] == ["z", "class_weights"]
    assert [o.name for o in metadata.outputs] == ["image", "project", "deconv1", "deconv2"]
    config = client.get_model_config("cgan").config
    description = description_from_config(config)
    assert description.conditional and description.latent_dim == 6


def test_grpc_and_http_inference_match_onnxruntime_in_process(local_triton, tiny_repo):
    description = read_description(tiny_repo / "cgan" / "1" / "model.onnx")
    feeds = example_inputs(description, 5, seed=3)
    expected = _session(tiny_repo, "cgan").run(None, feeds)

    client = grpcclient.InferenceServerClient(local_triton.grpc_url)
    result = client.infer(
        "cgan", _inputs(feeds), outputs=[grpcclient.InferRequestedOutput("image")]
    )
    assert [o.name for o in result.get_response().outputs] == ["image"]  # only what was asked for
    np.testing.assert_allclose(result.as_numpy("image"), expected[0], atol=1e-6)

    http = httpclient.InferenceServerClient(local_triton.http_url)
    inputs = _inputs(feeds, httpclient)
    outputs = [httpclient.InferRequestedOutput(n) for n in ("image", "deconv2")]
    result = http.infer("cgan", inputs, outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("image"), expected[0], atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("deconv2"), expected[3], atol=1e-6)
    assert http.get_model_metadata("cgan")["inputs"][0]["name"] == "z"


def test_classmap_ensemble_equals_generator_then_classifier(local_triton, tiny_repo):
    description = read_description(tiny_repo / "gen2d" / "1" / "model.onnx")
    feeds = example_inputs(description, 7, seed=11)
    images = _session(tiny_repo, "gen2d").run(["image"], feeds)[0]
    logits = _session(tiny_repo, "classifier").run(["logits"], {"image": images})[0]
    client = grpcclient.InferenceServerClient(local_triton.grpc_url)
    result = client.infer("gen2d__classifier", _inputs(feeds))
    np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-5)
