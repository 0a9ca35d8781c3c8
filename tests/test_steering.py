"""Steering generation end to end: truncation (psi), class blends and channel edits, from the
exported graph through the service's validation, batching and backends."""

import asyncio

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch

from ganserve.description import CLASS_WEIGHTS_INPUT, scale_input
from ganserve.export.onnx_export import MAX_ABS_DIFF, example_inputs, export_onnx, read_description
from ganserve.export.triton_repo import read_config
from ganserve.latents import latents_from_seeds
from ganserve.training.checkpoint import load_checkpoint
from ganserve.v1 import generation_pb2 as pb

EDITED = ["project", "deconv1", "deconv2"]


def _session(repo, name):
    return ort.InferenceSession(
        str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )


def _pixels(response):
    return np.stack([np.frombuffer(i.tensor.data, np.float32) for i in response.images])


def _raw(response):
    return [i.tensor.data for i in response.images]


# -- the exported graph ---------------------------------------------------------------------------
def test_steerable_generators_take_class_weights_and_a_scale_per_hidden_layer(tiny_repo):
    cgan = read_description(tiny_repo / "cgan" / "1" / "model.onnx")
    assert cgan.blendable and [layer for layer, _ in cgan.editable_layers] == EDITED
    session = _session(tiny_repo, "cgan")
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["z", CLASS_WEIGHTS_INPUT, *(scale_input(n) for n in EDITED)]
    assert inputs[CLASS_WEIGHTS_INPUT].shape[1] == 10
    shapes = {o.name: o.shape for o in session.get_outputs()}
    for layer, channels in cgan.editable_layers:  # one scale per channel of the layer
        assert inputs[scale_input(layer)].shape[1] == channels == shapes[layer][1]
    gen2d = read_description(tiny_repo / "gen2d" / "1" / "model.onnx")
    assert not gen2d.blendable and len(gen2d.editable_layers) == 3
    # Triton: every steering input is declared (required: the onnxruntime backend refuses
    # optional inputs on a batching model), per image, so different edits batch together.
    config = read_config(tiny_repo / "cgan" / "config.pbtxt")
    declared = {i.name: list(i.dims) for i in config.input}
    assert declared[CLASS_WEIGHTS_INPUT] == [10] and not any(i.optional for i in config.input)
    assert all(declared[scale_input(n)] == [c] for n, c in cgan.editable_layers)
    ensemble = read_config(tiny_repo / "gen2d__classifier" / "config.pbtxt")
    assert [i.name for i in ensemble.input] == gen2d.input_names


def _pytorch_edited(generator, feeds, layers):
    """Independently of the exporter's wrapper: forward hooks scale each block's output."""
    hooks = []
    for name, block in generator.body.blocks.items():
        if name in layers:
            scale = torch.from_numpy(np.ascontiguousarray(feeds[scale_input(name)]))

            def hook(_module, _inputs, output, s=scale):
                return output * s.reshape(*s.shape, *([1] * (output.dim() - 2)))

            hooks.append(block.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return generator.forward_with_activations(
                torch.from_numpy(feeds["z"]), torch.from_numpy(feeds[CLASS_WEIGHTS_INPUT])
            )
    finally:
        for h in hooks:
            h.remove()


@pytest.fixture(scope="module")
def steerable_graphs(tiny_repo, tiny_checkpoints, tmp_path_factory):
    """The ONNX graph of each conditional generator: the served one (label at the input), one
    whose label sets every batch norm's gain and shift, one with the label in both places, and one
    with a block at full resolution (a fourth editable layer)."""
    out = tmp_path_factory.mktemp("steerable")
    graphs = {"cgan": tiny_repo / "cgan" / "1" / "model.onnx"}
    for name in ("cgan-cbn", "cgan-both", "cgan-fullres"):
        graphs[name] = export_onnx(
            tiny_checkpoints[name], name, out / f"{name}.onnx", fp16=False
        ).path
    return graphs


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("name", ["cgan", "cgan-cbn", "cgan-both", "cgan-fullres"])
def test_edited_and_blended_outputs_match_pytorch(steerable_graphs, tiny_checkpoints, name, batch):
    description = read_description(steerable_graphs[name])
    feeds = example_inputs(description, batch, seed=5, steered=True)
    assert (feeds[scale_input("deconv1")] == 0).any() and (feeds[CLASS_WEIGHTS_INPUT] < 1).all()
    editable = [layer for layer, _ in description.editable_layers]
    assert editable == ([*EDITED, "deconv3"] if name == "cgan-fullres" else EDITED)
    expected = _pytorch_edited(load_checkpoint(tiny_checkpoints[name]).generator(), feeds, editable)
    session = ort.InferenceSession(str(steerable_graphs[name]), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    for layer, value in zip(description.layer_names, expected, strict=True):
        np.testing.assert_allclose(got[layer], value.numpy(), atol=MAX_ABS_DIFF, rtol=0)
    assert not np.allclose(
        got["image"], session.run(["image"], example_inputs(description, batch, 5))[0]
    )


# -- the service: psi ------------------------------------------------------------------------------
def test_psi_pulls_latents_to_the_centre_and_the_response_reproduces_the_image(stub):
    plain = pb.GenerateRequest(model="gen2d", seeds=[3, 4], format=pb.RAW_FLOAT32)
    truncated = pb.GenerateRequest(model="gen2d", seeds=[3, 4], psi=0.5, format=pb.RAW_FLOAT32)
    reply = stub.Generate(truncated)
    used = np.array([i.latent.values for i in reply.images], np.float32)
    np.testing.assert_array_equal(used, np.float32(0.5) * latents_from_seeds([3, 4], 2))
    assert [i.seed for i in reply.images] == [3, 4]
    again = stub.Generate(
        pb.GenerateRequest(
            model="gen2d", latents=[pb.Latent(values=z) for z in used], format=pb.RAW_FLOAT32
        )
    )
    assert _raw(again) == _raw(reply)  # the reported latent gives the same image, bit for bit
    assert _raw(stub.Generate(plain)) != _raw(reply)
    one = pb.GenerateRequest(model="gen2d", seeds=[3, 4], psi=1.0, format=pb.RAW_FLOAT32)
    assert _raw(stub.Generate(one)) == _raw(stub.Generate(plain))
    frames = list(
        stub.Interpolate(
            pb.InterpolateRequest(
                model="gen2d",
                keys=[pb.LatentSource(seed=3), pb.LatentSource(seed=4)],
                steps=3,
                psi=0.5,
            )
        )
    )
    np.testing.assert_array_equal(frames[0].image.latent.values, used[0])
    layers = stub.LayerActivations(
        pb.LayerActivationsRequest(model="gen2d", latents=[pb.LatentSource(seed=3)], psi=0.5)
    )
    np.testing.assert_array_equal(layers.latents[0].values, used[0])


# -- the service: class blends ------------------------------------------------------------------------
def test_a_blend_of_one_class_is_that_label_and_a_mix_is_the_graph_run_on_its_weights(
    stub, tiny_repo
):
    names = list(read_description(tiny_repo / "cgan" / "1" / "model.onnx").class_names)
    labelled = stub.Generate(
        pb.GenerateRequest(model="cgan", seeds=[1, 2], labels=[4], format=pb.RAW_FLOAT32)
    )
    one = pb.ClassBlend(weights={names[4]: 2.0})  # normalised: weight 2 of one class is the class
    blended = stub.Generate(
        pb.GenerateRequest(model="cgan", seeds=[1, 2], blends=[one], format=pb.RAW_FLOAT32)
    )
    assert _raw(blended) == _raw(labelled)
    assert labelled.images[0].label == 4 and not labelled.images[0].class_weights
    mix = pb.ClassBlend(weights={names[6]: 0.7, "2": 0.3})  # by name or by id
    reply = stub.Generate(
        pb.GenerateRequest(model="cgan", seeds=[1, 2], blends=[mix], format=pb.RAW_FLOAT32)
    )
    weights = np.zeros((2, 10), np.float32)
    weights[:, 6], weights[:, 2] = 0.7, 0.3
    np.testing.assert_allclose([i.class_weights for i in reply.images], weights, atol=1e-6)
    assert not reply.images[0].HasField("label")
    feeds = example_inputs(read_description(tiny_repo / "cgan" / "1" / "model.onnx"), 2, seed=1)
    feeds["z"], feeds[CLASS_WEIGHTS_INPUT] = latents_from_seeds([1, 2], 6), weights
    expected = _session(tiny_repo, "cgan").run(["image"], feeds)[0]
    np.testing.assert_allclose(_pixels(reply).reshape(expected.shape), expected, atol=1e-6)


def test_interpolate_walks_between_classes_at_a_fixed_latent(stub):
    a, b = pb.ClassBlend(weights={"3": 1}), pb.ClassBlend(weights={"8": 1})
    frames = list(
        stub.Interpolate(
            pb.InterpolateRequest(
                model="cgan", keys=[pb.LatentSource(seed=9)], blends=[a, b], steps=5,
                format=pb.RAW_FLOAT32,
            )
        )
    )  # fmt: skip
    weights = np.array([f.image.class_weights for f in frames])
    np.testing.assert_allclose(weights[:, 3], [1, 0.75, 0.5, 0.25, 0], atol=1e-6)
    np.testing.assert_allclose(weights[:, 8], [0, 0.25, 0.5, 0.75, 1], atol=1e-6)
    assert all(f.image.seed == 9 for f in frames)
    assert len({tuple(f.image.latent.values) for f in frames}) == 1
    ends = stub.Generate(
        pb.GenerateRequest(model="cgan", seeds=[9, 9], labels=[3, 8], format=pb.RAW_FLOAT32)
    )
    assert [frames[0].image.tensor.data, frames[-1].image.tensor.data] == _raw(ends)


def test_class_map_of_a_blend(stub):
    label = stub.ClassMap(pb.ClassMapRequest(model="cgan", resolution=8, label=2))
    same = stub.ClassMap(
        pb.ClassMapRequest(model="cgan", resolution=8, blend=pb.ClassBlend(weights={"2": 1}))
    )
    assert list(same.class_ids) == list(label.class_ids) and not same.cached
    mixed = stub.ClassMap(
        pb.ClassMapRequest(
            model="cgan", resolution=8, blend=pb.ClassBlend(weights={"2": 0.5, "7": 0.5})
        )
    )
    assert len(mixed.class_ids) == 64


# -- the service: channel edits ---------------------------------------------------------------------
def test_every_channel_scaled_by_one_is_bit_identical_to_no_edit(stub, tiny_repo):
    description = read_description(tiny_repo / "cgan" / "1" / "model.onnx")
    plain = pb.GenerateRequest(model="cgan", seeds=[5, 6, 7], labels=[1], format=pb.RAW_FLOAT32)
    edited = pb.GenerateRequest()
    edited.CopyFrom(plain)
    for layer, channels in description.editable_layers:
        edited.edits.add(layer=layer, scale=1.0)  # every channel (empty list)
        edited.edits.add(layer=layer, channels=list(range(channels)), scale=1.0)
    assert _raw(stub.Generate(edited)) == _raw(stub.Generate(plain))


def test_switched_off_channels_are_zero_downstream_sees_the_edit(stub, tiny_repo):
    off = pb.ChannelEdit(layer="deconv1", channels=[0, 2], scale=0.0)
    request = pb.LayerActivationsRequest(
        model="cgan", latents=[pb.LatentSource(seed=4)], labels=[1], include_tensors=True,
        layers=["deconv1", "image"], edits=[off],
    )  # fmt: skip
    reply = stub.LayerActivations(request)
    shape = tuple(reply.layers[0].shape)
    deconv1 = np.frombuffer(reply.layers[0].tensor.data, np.float32).reshape(shape)
    assert (deconv1[:, [0, 2]] == 0).all() and (deconv1[:, 1] != 0).any()
    description = read_description(tiny_repo / "cgan" / "1" / "model.onnx")
    feeds = example_inputs(description, 1)
    feeds["z"] = latents_from_seeds([4], 6)
    feeds[CLASS_WEIGHTS_INPUT] = np.eye(10, dtype=np.float32)[[1]]  # label 1
    feeds[scale_input("deconv1")][:, [0, 2]] = 0.0
    image = _session(tiny_repo, "cgan").run(["image"], feeds)[0]
    got = np.frombuffer(reply.layers[1].tensor.data, np.float32).reshape(image.shape)
    np.testing.assert_allclose(got, image, atol=1e-6)
    generated = stub.Generate(
        pb.GenerateRequest(model="cgan", seeds=[4], labels=[1], edits=[off], format=pb.RAW_FLOAT32)
    )
    assert _raw(generated)[0] == got.tobytes()


def test_requests_with_different_edits_batch_together(tiny_repo):
    """On the embedded backend: one instance, a queue delay that gathers the calls, four calls
    each with its own edit → one inference of four images, each image as if run alone."""
    from ganserve.service.backends.embedded import EmbeddedBackend, EmbeddedSettings
    from ganserve.service.steering import channel_scales, classes, model_inputs

    batches = []

    class Observer:
        def batch_done(self, backend, model, batch_size, queue_s, inference_s):
            batches.append(batch_size)

    async def run():
        backend = EmbeddedBackend(
            EmbeddedSettings(tiny_repo, instances=1, max_queue_delay_ms=300), Observer()
        )
        await backend.start()
        model = backend.models()["cgan"]
        z = latents_from_seeds([11], 6)
        feeds = [
            model_inputs(
                model, z, classes([c], [], 1, model),
                channel_scales([pb.ChannelEdit(layer=layer, channels=[c], scale=0.0)], model),
            )
            for c, layer in enumerate(["project", "deconv1", "deconv2", "deconv2"])
        ]  # fmt: skip
        together = await asyncio.gather(*(backend.infer("cgan", f, ["image"]) for f in feeds))
        alone = [await backend.infer("cgan", f, ["image"]) for f in feeds]
        await backend.close()
        return together, alone

    together, alone = asyncio.run(run())
    assert batches[0] == 4 and batches[1:] == [1, 1, 1, 1]
    for t, a in zip(together, alone, strict=True):
        np.testing.assert_allclose(t["image"], a["image"], atol=1e-6)
    assert len({t["image"].tobytes() for t in together}) == 4


# -- validation ------------------------------------------------------------------------------------
def _edit(**fields):
    return pb.ChannelEdit(**{"layer": "deconv1", "channels": [0], "scale": 0.0, **fields})


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[0], psi=0.0), "psi: 0.0 is outside (0, 1]"),
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[0], psi=1.5), "psi: 1.5 is outside"),
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[0], psi=float("nan")), "psi: nan"),
        (pb.GenerateRequest(model="cgan", seeds=[1], blends=[pb.ClassBlend(weights={"Frog": 1})]), "blends[0].weights: unknown class 'Frog'"),
        (pb.GenerateRequest(model="cgan", seeds=[1], blends=[pb.ClassBlend(weights={"1": -1})]), "blends[0].weights: weight of '1' must be finite and ≥ 0"),
        (pb.GenerateRequest(model="cgan", seeds=[1], blends=[pb.ClassBlend(weights={"1": 0})]), "blends[0].weights: the weights must not all be 0"),
        (pb.GenerateRequest(model="cgan", seeds=[1], blends=[pb.ClassBlend()]), "blends[0].weights: give at least one"),
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[1], blends=[pb.ClassBlend(weights={"1": 1})]), "blends: set labels or blends, not both"),
        (pb.GenerateRequest(model="cgan", seeds=[1, 2, 3], blends=[pb.ClassBlend(weights={"1": 1})] * 2), "blends: give 1 blend or one per image (3), got 2"),
        (pb.GenerateRequest(model="gen2d", seeds=[1], blends=[pb.ClassBlend(weights={"1": 1})]), "blends[0]: 'gen2d' is not conditional"),
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[0], edits=[_edit(layer="image")]), "edits[0].layer: 'image' is not editable"),
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[0], edits=[_edit(channels=[999])]), "edits[0].channels: channel 999 is outside"),
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[0], edits=[_edit(), _edit(scale=11)]), "edits[1].scale: 11.0 is outside [-10.0, 10.0]"),
        (pb.GenerateRequest(model="cgan", seeds=[1], labels=[0], edits=[_edit()] * 65), "edits: at most 64 edits, got 65"),
        (pb.InterpolateRequest(model="cgan", keys=[pb.LatentSource(seed=1)] * 3, blends=[pb.ClassBlend(weights={"1": 1})] * 2), "keys: walking between 2 blends"),
        (pb.InterpolateRequest(model="cgan", keys=[pb.LatentSource(seed=1)] * 2, label=1, psi=2.0), "psi: 2.0 is outside"),
        (pb.ClassMapRequest(model="cgan", label=1, blend=pb.ClassBlend(weights={"1": 1})), "blend: set label or blend, not both"),
        (pb.LayerActivationsRequest(model="cgan", latents=[pb.LatentSource(seed=1)], labels=[1], edits=[_edit(scale=float("inf"))]), "edits[0].scale: inf"),
    ],
)  # fmt: skip
def test_bad_steering_is_invalid_argument_naming_the_field(stub, request_, field):
    method = {
        pb.GenerateRequest: stub.Generate,
        pb.ClassMapRequest: stub.ClassMap,
        pb.LayerActivationsRequest: stub.LayerActivations,
    }.get(type(request_))
    with pytest.raises(grpc.RpcError) as error:
        if method is None:
            list(stub.Interpolate(request_))
        else:
            method(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.value.details(), error.value.details()


# -- the shipped conditional model ------------------------------------------------------------------
def test_lower_psi_gives_less_variety_and_more_confident_classes_on_the_shipped_model():
    """Through the service on deploy/model_repository: per class, 24 seeds at psi 1 and 0.5;
    variety is the mean pairwise distance of the classifier's features within a class."""
    from tests.conftest import RunningService, serve_config
    from tests.test_shipped_models import REPO

    classifier = _session(REPO, "fmnist-classifier")
    running = RunningService(serve_config(REPO))
    try:
        channel = grpc.insecure_channel(running.address)
        from ganserve.v1 import generation_pb2_grpc as pb_grpc

        stub = pb_grpc.GenerationServiceStub(channel)
        variety, confidence = {}, {}
        for psi in (1.0, 0.5):
            spread, sure = [], []
            for label in range(10):
                reply = stub.Generate(
                    pb.GenerateRequest(
                        model="fmnist-cgan", seeds=range(24), labels=[label], psi=psi,
                        format=pb.RAW_FLOAT32,
                    )
                )  # fmt: skip
                images = _pixels(reply).reshape(24, 1, 28, 28)
                logits, features = classifier.run(["logits", "features"], {"image": images})
                probabilities = np.exp(logits - logits.max(1, keepdims=True))
                probabilities /= probabilities.sum(1, keepdims=True)
                sure.append(probabilities[:, label].mean())
                distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
                spread.append(distances.sum() / (24 * 23))
            variety[psi], confidence[psi] = float(np.mean(spread)), float(np.mean(sure))
        channel.close()
    finally:
        running.stop()
    assert variety[0.5] < 0.9 * variety[1.0], variety
    assert confidence[0.5] > confidence[1.0], confidence
