import dataclasses

import pytest
import torch

from ganserve.training.config import (
    ClassifierArch,
    DConditioning,
    Family,
    GConditioning,
    ModelConfig,
)
from ganserve.training.layers import ACTIVATIONS, ClassConditionalBatchNorm, MinibatchStdDev
from ganserve.training.models import build_classifier, build_gan, count_parameters


def test_dcgan_matches_study_a_parameter_counts():
    g, d = build_gan(ModelConfig(family=Family.DCGAN, latent_dim=2))
    assert count_parameters(d) == 212_865  # study A's discriminator
    assert count_parameters(g) == 1_051_585  # "~1.1 M" at a 2-D latent


def test_mlp_gan_matches_study_b_parameter_count():
    g, d = build_gan(ModelConfig(family=Family.MLP, latent_dim=100))
    assert count_parameters(g) + count_parameters(d) == 2_950_161


@pytest.mark.parametrize(
    ("family", "conditional", "size", "channels"),
    [
        (Family.MLP, False, 28, 1),
        (Family.MLP, True, 28, 1),
        (Family.DCGAN, False, 28, 1),
        (Family.DCGAN, True, 28, 1),
        (Family.DCGAN_RGB, False, 32, 3),
        (Family.DCGAN_RGB, True, 64, 3),
        (Family.DCGAN_RGB, False, 128, 3),
    ],
)
def test_generators_make_images_in_range_and_name_every_layer(family, conditional, size, channels):
    cfg = ModelConfig(
        family=family,
        conditional=conditional,
        latent_dim=3,
        width=0.25,
        image_size=size,
        channels=channels,
    )
    g, d = build_gan(cfg)
    z = torch.rand(3, 3) * 2 - 1
    labels = torch.tensor([0, 1, 2]) if conditional else None
    g.eval()
    outputs = g.forward_with_activations(z, labels)
    image = outputs[-1]
    assert image.shape == (3, channels, size, size)
    assert image.min() >= -1 and image.max() <= 1
    assert len(outputs) == len(g.layer_names) and g.layer_names[-1] == "image"
    assert len(set(g.layer_names)) == len(g.layer_names)
    torch.testing.assert_close(g(z, labels), image)
    assert d(image, labels).shape == (3,)


def test_conditional_generator_refuses_missing_labels():
    g, _ = build_gan(ModelConfig(family=Family.DCGAN, conditional=True, latent_dim=2, width=0.25))
    with pytest.raises(ValueError, match="labels"):
        g(torch.zeros(1, 2))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds_and_runs(activation):
    g, _ = build_gan(
        ModelConfig(family=Family.DCGAN, latent_dim=2, width=0.25, activation=activation)
    )
    assert g.eval()(torch.zeros(2, 2)).shape == (2, 1, 28, 28)


def test_unknown_activation_is_refused_with_choices():
    with pytest.raises(ValueError, match="leaky_relu"):
        build_gan(ModelConfig(activation="swishy"))


def test_classifier_exposes_features_and_logits():
    classifier = build_classifier(
        ModelConfig(family=Family.CLASSIFIER, channels=1, num_classes=10)
    ).eval()
    x = torch.zeros(2, 1, 28, 28)
    assert classifier.layer_names == ["conv1", "conv2", "features", "logits"]
    assert classifier(x).shape == (2, 10)
    assert classifier.features(x).shape == (2, 128)


def test_vgg_classifier_normalises_its_convs_and_names_its_blocks_as_the_small_one():
    def build(**extra):
        cfg = ModelConfig(family=Family.CLASSIFIER, channels=1, num_classes=10, **extra)
        return build_classifier(cfg).eval()

    small, vgg = build(), build(classifier_arch=ClassifierArch.VGG)
    x = torch.zeros(2, 1, 28, 28)
    assert vgg.layer_names == small.layer_names
    assert vgg(x).shape == (2, 10) and vgg.features(x).shape == (2, 256)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in vgg.modules()) == 4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in small.modules())
    assert (count_parameters(small), count_parameters(vgg)) == (421_642, 871_338)


def test_discriminator_width_is_independent_of_the_generator_width():
    g, d = build_gan(ModelConfig(family=Family.DCGAN, latent_dim=2, width=0.5, d_width=1.0))
    assert count_parameters(d) == 212_865  # the studies' D beside a half-width G
    narrow_g, _ = build_gan(ModelConfig(family=Family.DCGAN, latent_dim=2, width=0.5))
    assert count_parameters(g) == count_parameters(narrow_g)


@pytest.mark.parametrize(
    ("family", "conditioning", "bound"),
    # The N(0, 0.02) embedding → linear label plane scored ~0.004 (conv) and ~0.008 (MLP) here:
    # D ignored the label from the start and G collapsed onto it as its only code.
    # Projection (measured ~0.83 conv, ~0.99 MLP) hears it without any planes at the input.
    [
        (Family.DCGAN, DConditioning.CONCAT, 0.5),
        (Family.MLP, DConditioning.CONCAT, 0.04),
        (Family.DCGAN, DConditioning.PROJECTION, 0.5),
        (Family.MLP, DConditioning.PROJECTION, 0.5),
    ],
)
def test_conditional_discriminator_hears_the_label_at_initialisation(family, conditioning, bound):
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, conditional=True, latent_dim=100, width=0.5, d_width=1.0,
                      d_conditioning=conditioning)  # fmt: skip
    _, d = build_gan(cfg)
    d.eval()
    images = torch.rand(64, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        logits = torch.stack([d(images, torch.full((64,), k)) for k in range(10)])  # [label, image]
    across_labels = logits.std(dim=0).mean()  # same image, another label
    across_images = logits.std(dim=1).mean()  # same label, another image
    assert across_labels / across_images > bound


@pytest.mark.parametrize("family", [Family.DCGAN, Family.MLP, Family.DCGAN_RGB])
def test_spectral_norm_holds_every_discriminator_layer_at_one_and_keeps_the_label(family):
    torch.manual_seed(0)
    size, channels = (32, 3) if family is Family.DCGAN_RGB else (28, 1)
    cfg = ModelConfig(family=family, conditional=True, latent_dim=4, width=0.5, image_size=size,
                      channels=channels, d_conditioning=DConditioning.PROJECTION,
                      d_spectral_norm=True)  # fmt: skip
    _, d = build_gan(cfg)
    _, plain = build_gan(dataclasses.replace(cfg, d_spectral_norm=False))
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())
    assert count_parameters(d) == count_parameters(plain)  # a constraint, not a new weight

    def largest_singular_values(net):
        return [
            float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2))
            for m in net.modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
        ]

    images = torch.rand(32, channels, size, size) * 2 - 1
    labels = torch.arange(32) % 10
    d.train()
    for _ in range(30):  # each training pass takes one power-iteration step
        d(images, labels)
    assert largest_singular_values(d) == pytest.approx([1.0] * len(layers), abs=0.02)
    assert min(largest_singular_values(plain)) < 0.8  # N(0, 0.02) leaves them anywhere (0.2–1.2)
    d.eval()
    with torch.no_grad():  # the label still moves the logit: the embedding is normalised too
        logits = torch.stack([d(images, torch.full((32,), k)) for k in range(10)])
    assert logits.std(dim=0).mean() > 0.1 * logits.std(dim=1).mean()


@pytest.mark.parametrize("family", [Family.DCGAN, Family.MLP, Family.DCGAN_RGB])
def test_projection_discriminator_reads_the_image_alone_and_adds_the_label_at_its_end(family):
    size, channels = (32, 3) if family is Family.DCGAN_RGB else (28, 1)
    cfg = ModelConfig(family=family, conditional=True, latent_dim=4, width=0.25, image_size=size,
                      channels=channels, d_conditioning=DConditioning.PROJECTION)  # fmt: skip
    _, d = build_gan(cfg)
    _, unconditional = build_gan(dataclasses.replace(cfg, conditional=False))
    d.eval()
    # The body is the unconditional D's; the label costs one embedding row per class.
    assert count_parameters(d) == count_parameters(unconditional) + d.projection.weight.numel()
    images = torch.rand(5, channels, size, size) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3, 4])
    with torch.no_grad():
        d.projection.weight.zero_()  # no embedding: the label changes nothing
        plain = d(images, labels)
        torch.testing.assert_close(plain, d(images, (labels + 1) % 10))
        d.projection.weight[:, 2] = 1.0  # class 2's row all ones: its logit gains sum(features)
        moved = d(images, labels)
    assert torch.equal(moved[labels != 2], plain[labels != 2]) and (moved[2] != plain[2])


@pytest.mark.parametrize("g_conditioning", list(GConditioning))
def test_soft_labels_blend_what_integer_labels_give(g_conditioning):
    cfg = ModelConfig(family=Family.DCGAN, conditional=True, latent_dim=4, width=0.25,
                      g_conditioning=g_conditioning)  # fmt: skip
    g, d = build_gan(cfg)
    g.eval()
    d.eval()
    z = torch.rand(3, 4) * 2 - 1
    labels = torch.tensor([0, 3, 9])
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(g(z, one_hot), g(z, labels))
    torch.testing.assert_close(d(g(z, labels), one_hot), d(g(z, labels), labels))
    with pytest.raises(ValueError, match=r"\[N, 10\]"):
        g(z, torch.ones(3, 4))


@pytest.mark.parametrize("family", [Family.DCGAN, Family.DCGAN_RGB])
def test_minibatch_std_lets_the_discriminator_see_a_batch_without_variety(family):
    torch.manual_seed(0)
    size, channels = (32, 3) if family is Family.DCGAN_RGB else (28, 1)
    cfg = ModelConfig(family=family, conditional=True, latent_dim=4, width=0.5, image_size=size,
                      channels=channels, d_conditioning=DConditioning.PROJECTION,
                      d_minibatch_std=4)  # fmt: skip
    _, d = build_gan(cfg)
    _, plain = build_gan(dataclasses.replace(cfg, d_minibatch_std=0))
    assert d.body.layer_names[-2:] == ["minibatch_std", "logit"]
    d.eval()
    plain.eval()
    image = torch.rand(1, channels, size, size) * 2 - 1
    varied = torch.cat([image, torch.rand(7, channels, size, size) * 2 - 1])
    alike = image.expand(8, -1, -1, -1)
    labels = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        # The feature map reaches the logit: weight it 1 there (it starts at N(0, 0.02) like
        # every weight, so its share is small but trainable).
        std_map = d.body.forward_all(varied)[-2][:, -1]
        d.body.blocks["logit"][-1].weight[0, -std_map[0].numel() :] = 1.0
        # The same image with the same label scores otherwise among copies of itself...
        gap = float(d(varied, labels)[0] - d(alike, labels)[0])
        copies_map = d.body.forward_all(alike)[-2][:, -1]  # sqrt(1e-8): no spread at all
        assert float(std_map[0].min()) > 10 * float(copies_map.max())
        assert gap == pytest.approx(float(std_map[0].sum() - copies_map[0].sum()), rel=0.02)
        # ...which a D without the feature cannot tell.
        torch.testing.assert_close(plain(varied, labels)[0], plain(alike, labels)[0])


def test_full_resolution_block_draws_the_image_from_28x28_maps():
    cfg = ModelConfig(family=Family.DCGAN, conditional=True, latent_dim=4, width=0.5,
                      g_conditioning=GConditioning.BOTH, g_full_res_channels=32)  # fmt: skip
    g, _ = build_gan(cfg)
    plain, _ = build_gan(dataclasses.replace(cfg, g_full_res_channels=0))
    assert g.layer_names == [*plain.layer_names[:-1], "deconv3", "image"]
    with torch.no_grad():
        *_, maps, image = g.eval().forward_with_activations(torch.zeros(3, 4), torch.arange(3))
    assert maps.shape == (3, 16, 28, 28) and image.shape == (3, 1, 28, 28)  # 32 maps × width 0.5
    assert float(image.abs().max()) <= 1.0
    # The image comes from a plain conv that sees 28×28 maps, not from a transposed conv at 14×14.
    assert type(g.body.blocks["image"][0]) is torch.nn.Conv2d
    assert type(plain.body.blocks["image"][0]) is torch.nn.ConvTranspose2d
    for family in (Family.MLP, Family.DCGAN_RGB):
        with pytest.raises(ValueError, match="dcgan family"):
            build_gan(
                ModelConfig(family=family, latent_dim=2, image_size=32, g_full_res_channels=8)
            )


def test_minibatch_std_feature_is_each_groups_spread_and_zero_for_copies():
    layer = MinibatchStdDev(4)
    copies = torch.rand(1, 2, 3, 3).expand(8, -1, -1, -1)
    assert layer(copies)[:, -1].abs().max() < 1e-3
    assert layer(copies).shape == (8, 3, 3, 3) and torch.equal(layer(copies)[:, :2], copies)
    # 6 images, groups of 4 impossible: groups of 3, strided (images 0, 2, 4 and 1, 3, 5).
    x = torch.tensor([0.0, 0.0, 0.0, 1.0, 5.0, 9.0]).view(6, 1, 1, 1)
    spread = layer(x)[:, -1, 0, 0]
    first, second = (
        torch.tensor(g).std(unbiased=False) for g in ([0.0, 0.0, 5.0], [0.0, 1.0, 9.0])
    )
    torch.testing.assert_close(spread, torch.stack([first, second] * 3), atol=1e-4, rtol=0)
    assert layer(torch.rand(1, 2, 3, 3)).shape == (1, 3, 3, 3)  # a lone image: a group of one
    with pytest.raises(ValueError, match="groups of 2"):
        MinibatchStdDev(1)
    with pytest.raises(ValueError, match="conv discriminators"):
        build_gan(ModelConfig(family=Family.MLP, latent_dim=2, d_minibatch_std=4))


@pytest.mark.parametrize("g_conditioning", [GConditioning.BATCHNORM, GConditioning.BOTH])
@pytest.mark.parametrize(
    ("family", "size", "channels"),
    [(Family.DCGAN, 28, 1), (Family.MLP, 28, 1), (Family.DCGAN_RGB, 32, 3)],
)
def test_batchnorm_conditioning_gives_each_class_its_own_gain_and_shift_in_every_layer(
    family, size, channels, g_conditioning
):
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, conditional=True, latent_dim=8, width=0.25, image_size=size,
                      channels=channels, g_conditioning=g_conditioning)  # fmt: skip
    g, _ = build_gan(cfg)
    plain_input, _ = build_gan(dataclasses.replace(cfg, g_conditioning=GConditioning.INPUT))
    unconditional, _ = build_gan(dataclasses.replace(cfg, conditional=False))
    norms = [m for m in g.modules() if isinstance(m, ClassConditionalBatchNorm)]
    plain_norms = [m for m in unconditional.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]  # fmt: skip
    # Every batch norm of the unconditional G, and only those, became class-conditional; the
    # first layer reads z alone (batchnorm) or z and the one-hot code (both, as input does).
    assert len(norms) == len(plain_norms) == len(g.layer_names) - 1
    first = next(m for m in g.modules() if isinstance(m, torch.nn.Linear))
    first_input = next(m for m in plain_input.modules() if isinstance(m, torch.nn.Linear))
    label_at_input = g_conditioning is GConditioning.BOTH
    assert (first.in_features, first_input.in_features) == (8 + 10 * label_at_input, 8 + 10)
    # Its weights: the unconditional G's, less the shared affine pair, plus one pair per class
    # (and, for both, the first layer's weights for the code).
    channels_normed = sum(m.num_features for m in plain_norms)
    code_weights = 10 * first.out_features * label_at_input
    assert count_parameters(g) == (
        count_parameters(unconditional) + 2 * channels_normed * (10 - 1) + code_weights
    )
    # At initialisation each class's gain is ~1 and shift 0: the plain batch norm it replaced.
    assert all(
        float((m.gains.detach() - 1).abs().max()) < 0.1 and not m.shifts.any() for m in norms
    )

    z = torch.rand(16, 8) * 2 - 1
    labels = torch.arange(16) % 10
    g.eval()
    with torch.no_grad():
        before = g.forward_with_activations(z, labels)
        for m in norms:  # class 3 alone gains a shift: only its images, and in every layer
            m.shifts[3] = 0.5
        after = g.forward_with_activations(z, labels)
    for layer, (a, b) in enumerate(zip(before, after, strict=True)):
        moved = (a - b).flatten(1).abs().amax(dim=1) > 1e-6
        assert moved.tolist() == (labels == 3).tolist(), g.layer_names[layer]
    with pytest.raises(ValueError, match="needs class labels"):
        g(z)


@pytest.mark.parametrize(
    ("g_conditioning", "classes_differ_at_centre"),
    [(GConditioning.INPUT, True), (GConditioning.BATCHNORM, False), (GConditioning.BOTH, True)],
)
def test_the_latent_centre_gives_each_class_its_own_image_unless_only_batch_norms_read_the_label(
    g_conditioning, classes_differ_at_centre
):
    # Truncation (psi → 0) walks every latent to z = 0. With the label in the batch norms alone,
    # all classes meet there at one input pattern, told apart only by per-channel gains and
    # shifts: with those equal, as at initialisation, every class gives the same image. Joined
    # to z (input, both), the label still shapes the first layer's output at the centre.
    torch.manual_seed(0)
    cfg = ModelConfig(family=Family.DCGAN, conditional=True, latent_dim=8, width=0.25,
                      g_conditioning=g_conditioning)  # fmt: skip
    g, _ = build_gan(cfg)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, ClassConditionalBatchNorm):
                m.gains.fill_(1.0)
                m.shifts.zero_()
        g.train()
        g(torch.rand(64, 8) * 2 - 1, torch.arange(64) % 10)  # running statistics of real use
        g.eval()
        images = g(torch.zeros(10, 8), torch.arange(10))
    spread = float((images - images[:1]).abs().amax())
    assert (spread > 1e-3) is classes_differ_at_centre, spread


def test_class_conditional_batchnorm_blends_classes_and_normalises_with_shared_statistics():
    norm = ClassConditionalBatchNorm(torch.nn.BatchNorm2d(3), num_classes=4)
    with torch.no_grad():
        norm.gains.copy_(torch.arange(12.0).view(4, 3))
        norm.shifts.copy_(-torch.arange(12.0).view(4, 3))
    x = torch.randn(5, 3, 2, 2) * 3 + 1
    code = torch.tensor(
        [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 1], [1, 0, 0, 0]]
    )
    out = norm(x, code)
    normalised = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
        x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    gain, shift = code @ norm.gains, code @ norm.shifts  # row 2: the mean of classes 2 and 3
    torch.testing.assert_close(gain[2], (norm.gains[2] + norm.gains[3]) / 2)
    expected = normalised * gain[:, :, None, None] + shift[:, :, None, None]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert norm.norm.running_mean.abs().sum() > 0  # the shared statistics are tracked
