"""The studies' networks: MLP GAN, 28×28 DCGAN, RGB DCGAN, their conditional variants, a classifier.

At ``width=1`` the 28×28 DCGAN matches study A (D: 212,865 parameters; G: ~1.05 M at latent 2)
and the MLP GAN matches study B (2,950,161 parameters at latent 100).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ClassifierArch, DConditioning, Family, GConditioning, ModelConfig
from .layers import (
    MinibatchStdDev,
    NamedBlocks,
    Reshape,
    apply_spectral_norm,
    condition_batchnorms_on_label,
    init_gan_weights,
    make_activation,
)

# Study A used LeakyReLU 0.3 in its DCGAN; study B used 0.2 in its MLP GAN and DCGAN-style nets.
DEFAULT_SLOPE = {Family.DCGAN: 0.3, Family.MLP: 0.2, Family.DCGAN_RGB: 0.2}
RGB_SIZES = (32, 64, 128)


def _scaled(channels: int, width: float) -> int:
    return max(4, round(channels * width))


def _g_activation(cfg: ModelConfig) -> nn.Module:
    slope = cfg.activation_slope if cfg.activation_slope is not None else DEFAULT_SLOPE[cfg.family]
    return make_activation(cfg.activation, slope)


def _d_slope(cfg: ModelConfig) -> float:
    return (
        cfg.d_activation_slope if cfg.d_activation_slope is not None else DEFAULT_SLOPE[cfg.family]
    )


class LabelCode(nn.Module):
    """Class labels as a ``[N, num_classes]`` float code: integer labels become one-hot rows, float
    rows (class weights that sum to 1) pass through, so a blend of classes is a valid label.

    One-hot has the scale of the pixels and of a uniform latent: a learned embedding with the DCGAN
    N(0, 0.02) init started ~100× smaller than the image in D (the label was ignored and G collapsed
    onto it), and one with N(0, 1) swamped z in G. The first layer after it is learned anyway, so an
    embedding in front of it adds nothing but a scale to get wrong.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        # A row lookup exports as one Gather on a constant (no Cast, so FP16 conversion holds).
        self.register_buffer("rows", torch.eye(num_classes), persistent=False)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            if labels.dim() != 2 or labels.shape[1] != self.num_classes:
                raise ValueError(
                    f"soft labels must be [N, {self.num_classes}], got {list(labels.shape)}"
                )
            return labels
        return self.rows[labels.reshape(-1)]


class Generator(nn.Module):
    """z (and a class label when conditional) → image in [-1, 1], through named blocks.

    Conditional generators take the label as a one-hot (or soft) code: joined to z
    (``g_conditioning=input``), handed to every block, whose batch norms take their gain and
    shift from it (``batchnorm``; the body's input is then z alone), or both (``both``).
    """

    def __init__(self, cfg: ModelConfig, body: NamedBlocks):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.conditional = cfg.conditional
        self.label_code = LabelCode(cfg.num_classes) if cfg.conditional else None
        self.label_at_input = _label_at_g_input(cfg)
        self.label_in_batchnorm = _label_in_g_batchnorm(cfg)
        self.body = body

    @property
    def layer_names(self) -> list[str]:
        return self.body.layer_names

    def body_inputs(
        self, z: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the first block's input, the label code the conditioned blocks read, or None)."""
        if self.label_code is None:
            return z, None
        if labels is None:
            raise ValueError("a conditional generator needs class labels")
        code = self.label_code(labels)
        first_input = torch.cat([z, code], dim=1) if self.label_at_input else z
        return first_input, code if self.label_in_batchnorm else None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(*self.body_inputs(z, labels))

    def forward_with_activations(
        self, z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Every block's output in ``layer_names`` order; the last one is the image."""
        return self.body.forward_all(*self.body_inputs(z, labels))


class Discriminator(nn.Module):
    """image (and a class label when conditional) → one real/fake logit per image.

    Conditional, ``concat``: the one-hot label joins the flat image (MLP) or becomes one constant
    plane per class (conv), so D sees the label at the scale of the pixels from the first step.
    ``projection``: D's body sees the image alone, and the logit gains the inner product of a
    learned class embedding with the features its last layer reads (Miyato & Koyama 2018): the
    label enters one layer from the output, where its gradient is those features themselves.
    """

    def __init__(self, cfg: ModelConfig, body: NamedBlocks, flat_input: bool):
        super().__init__()
        self.flat_input = flat_input
        self.label_code = LabelCode(cfg.num_classes) if cfg.conditional else None
        self.image_shape = (cfg.channels, cfg.image_size, cfg.image_size)
        self.body = body
        self.projection: nn.Linear | None = None
        if cfg.conditional and cfg.d_conditioning is DConditioning.PROJECTION:
            # One embedding value per input of the linear layer that makes the logit: the
            # projection pairs the class with the same features that layer reads.
            last_block = list(body.blocks.values())[-1]
            logit_layer = [m for m in last_block.modules() if isinstance(m, nn.Linear)][-1]
            self.projection = nn.Linear(cfg.num_classes, logit_layer.in_features, bias=False)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.flatten(1) if self.flat_input else images
        if self.label_code is None:
            return self.body(x).reshape(-1)
        if labels is None:
            raise ValueError("a conditional discriminator needs class labels")
        code = self.label_code(labels)
        if self.projection is not None:
            *_, features, logit = self.body.forward_all(x)
            projected = (self.projection(code) * features.flatten(1)).sum(dim=1)
            return logit.reshape(-1) + projected
        if not self.flat_input:
            code = code[:, :, None, None].expand(-1, -1, *images.shape[2:])
        return self.body(torch.cat([x, code], dim=1)).reshape(-1)


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class Classifier(nn.Module):
    """A CNN: class logits, plus penultimate ``features`` for the Fréchet distance.

    ``arch`` "small" is the studies' size (one conv per block); "vgg" has two batch-normalised
    convs per block and a batch-normalised feature layer twice as wide. Both name their blocks
    conv1, conv2, features, logits.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        width: float = 1.0,
        dropout: float = 0.3,
        arch: ClassifierArch = ClassifierArch.SMALL,
    ):
        super().__init__()
        c1, c2, hidden = _scaled(32, width), _scaled(64, width), _scaled(128, width)
        if arch is ClassifierArch.VGG:
            hidden *= 2
            conv1 = nn.Sequential(*_conv_bn_relu(channels, c1), *_conv_bn_relu(c1, c1))
            conv2 = nn.Sequential(*_conv_bn_relu(c1, c2), *_conv_bn_relu(c2, c2))
            features_norm: list[nn.Module] = [nn.BatchNorm1d(hidden)]
        else:
            conv1 = nn.Sequential(nn.Conv2d(channels, c1, 3, padding=1), nn.ReLU())
            conv2 = nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU())
            features_norm = []
        self.body = NamedBlocks(
            [
                ("conv1", nn.Sequential(*conv1, nn.MaxPool2d(2))),
                ("conv2", nn.Sequential(*conv2, nn.MaxPool2d(2))),
                (
                    "features",
                    nn.Sequential(
                        nn.AdaptiveAvgPool2d(7),
                        nn.Flatten(),
                        nn.Linear(c2 * 49, hidden),
                        *features_norm,
                        nn.ReLU(),
                    ),
                ),
                ("logits", nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))),
            ]
        )

    @property
    def layer_names(self) -> list[str]:
        return self.body.layer_names

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward_with_activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body.forward_all(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body.forward_all(images)[-2]


def _d_width(cfg: ModelConfig) -> float:
    return cfg.d_width if cfg.d_width is not None else cfg.width


def _label_dim(cfg: ModelConfig) -> int:
    return cfg.num_classes if cfg.conditional else 0


def _d_label_dim(cfg: ModelConfig) -> int:
    """Label channels joined to D's input: none when D projects the label at its end."""
    return 0 if cfg.d_conditioning is DConditioning.PROJECTION else _label_dim(cfg)


def _std_maps(cfg: ModelConfig) -> int:
    """Feature maps the minibatch standard deviation adds before D's logit (0 or 1)."""
    return 1 if cfg.d_minibatch_std else 0


def _minibatch_std_block(cfg: ModelConfig) -> list[tuple[str, nn.Module]]:
    return [("minibatch_std", MinibatchStdDev(cfg.d_minibatch_std))] if cfg.d_minibatch_std else []


def _label_in_g_batchnorm(cfg: ModelConfig) -> bool:
    """Whether G's batch norms read the label."""
    return cfg.conditional and cfg.g_conditioning in (GConditioning.BATCHNORM, GConditioning.BOTH)


def _label_at_g_input(cfg: ModelConfig) -> bool:
    """Whether G's first layer reads the label code joined to z."""
    return cfg.conditional and cfg.g_conditioning in (GConditioning.INPUT, GConditioning.BOTH)


def _generator_input_dim(cfg: ModelConfig) -> int:
    """z, and the label code when G reads it at its input."""
    return cfg.latent_dim + (_label_dim(cfg) if _label_at_g_input(cfg) else 0)


def _mlp_pair(cfg: ModelConfig) -> tuple[NamedBlocks, NamedBlocks]:
    if cfg.d_minibatch_std:
        raise ValueError("--d-minibatch-std is for the conv discriminators (dcgan, dcgan-rgb)")
    pixels = cfg.channels * cfg.image_size * cfg.image_size
    g_units = [_scaled(u, cfg.width) for u in (256, 512, 1024)]
    g_blocks: list[tuple[str, nn.Module]] = []
    previous = _generator_input_dim(cfg)
    for i, units in enumerate(g_units, start=1):
        g_blocks.append(
            (
                f"fc{i}",
                nn.Sequential(
                    nn.Linear(previous, units), nn.BatchNorm1d(units), _g_activation(cfg)
                ),
            )
        )
        previous = units
    g_blocks.append(
        (
            "image",
            nn.Sequential(
                nn.Linear(previous, pixels),
                nn.Tanh(),
                Reshape(cfg.channels, cfg.image_size, cfg.image_size),
            ),
        )
    )
    d_units = [_scaled(u, _d_width(cfg)) for u in (1024, 512, 256)]
    d_blocks: list[tuple[str, nn.Module]] = []
    previous = pixels + _d_label_dim(cfg)
    for i, units in enumerate(d_units, start=1):
        d_blocks.append(
            (
                f"fc{i}",
                nn.Sequential(
                    nn.Linear(previous, units), nn.LeakyReLU(_d_slope(cfg)), nn.Dropout(cfg.dropout)
                ),
            )
        )
        previous = units
    d_blocks.append(("logit", nn.Linear(previous, 1)))
    return NamedBlocks(g_blocks), NamedBlocks(d_blocks)


def _g_block(cfg: ModelConfig, conv: nn.ConvTranspose2d) -> nn.Sequential:
    """A G block: ``conv``, batch norm over its maps, G's activation."""
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), _g_activation(cfg))


def _same_deconv5(
    in_channels: int, out_channels: int, stride: int, bias: bool = False
) -> nn.ConvTranspose2d:
    """The studies' 5×5 transposed conv with TF "same" padding: padding 2, and output padding 1
    at stride 2 (the output is ``stride`` times the input's side)."""
    return nn.ConvTranspose2d(
        in_channels, out_channels, 5, stride, 2, output_padding=stride - 1, bias=bias
    )


def _dcgan28_output_blocks(cfg: ModelConfig, c3: int) -> list[tuple[str, nn.Module]]:
    """14×14 features → the 28×28 image: the studies' one transposed conv, or with
    ``g_full_res_channels`` a block at full resolution (transposed conv, batch norm, activation)
    and a 5×5 conv over its maps, so that fine detail is drawn by a layer that sees 28×28."""
    if not cfg.g_full_res_channels:
        upsample = _same_deconv5(c3, cfg.channels, stride=2, bias=True)
        return [("image", nn.Sequential(upsample, nn.Tanh()))]
    c4 = _scaled(cfg.g_full_res_channels, cfg.width)
    return [
        ("deconv3", _g_block(cfg, _same_deconv5(c3, c4, stride=2))),
        ("image", nn.Sequential(nn.Conv2d(c4, cfg.channels, 5, 1, 2), nn.Tanh())),
    ]


def _dcgan28_pair(cfg: ModelConfig) -> tuple[NamedBlocks, NamedBlocks]:
    if cfg.image_size != 28:
        raise ValueError(
            f"the dcgan family is for 28×28 images, got {cfg.image_size}; use dcgan-rgb"
        )
    c1, c2, c3 = (_scaled(c, cfg.width) for c in (256, 128, 64))
    g = NamedBlocks(
        [
            (
                "project",
                nn.Sequential(
                    nn.Linear(_generator_input_dim(cfg), 7 * 7 * c1, bias=False),
                    Reshape(c1, 7, 7),
                    nn.BatchNorm2d(c1),
                    _g_activation(cfg),
                ),
            ),
            ("deconv1", _g_block(cfg, _same_deconv5(c1, c2, stride=1))),
            ("deconv2", _g_block(cfg, _same_deconv5(c2, c3, stride=2))),
            *_dcgan28_output_blocks(cfg, c3),
        ]
    )
    d1, d2 = _scaled(64, _d_width(cfg)), _scaled(128, _d_width(cfg))
    in_channels = cfg.channels + _d_label_dim(cfg)
    slope = _d_slope(cfg)
    d = NamedBlocks(
        [
            (
                "conv1",
                nn.Sequential(
                    nn.Conv2d(in_channels, d1, 5, 2, 2),
                    nn.LeakyReLU(slope),
                    nn.Dropout(cfg.dropout),
                ),
            ),
            (
                "conv2",
                nn.Sequential(
                    nn.Conv2d(d1, d2, 5, 2, 2), nn.LeakyReLU(slope), nn.Dropout(cfg.dropout)
                ),
            ),
            *_minibatch_std_block(cfg),
            ("logit", nn.Sequential(nn.Flatten(), nn.Linear((d2 + _std_maps(cfg)) * 7 * 7, 1))),
        ]
    )
    return g, d


def _dcgan_rgb_pair(cfg: ModelConfig) -> tuple[NamedBlocks, NamedBlocks]:
    if cfg.image_size not in RGB_SIZES:
        raise ValueError(f"dcgan-rgb supports image sizes {RGB_SIZES}, got {cfg.image_size}")
    stages = int(math.log2(cfg.image_size // 4))  # 4×4 → image_size, one doubling per stage
    base = _scaled(64, cfg.width)
    channels = [base * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. 512, 256, 128, 64
    g_blocks: list[tuple[str, nn.Module]] = [
        (
            "project",
            nn.Sequential(
                nn.Linear(_generator_input_dim(cfg), 4 * 4 * channels[0], bias=False),
                Reshape(channels[0], 4, 4),
                nn.BatchNorm2d(channels[0]),
                _g_activation(cfg),
            ),
        )
    ]
    for i in range(stages - 1):
        g_blocks.append(
            (
                f"up{i + 1}",
                _g_block(
                    cfg, nn.ConvTranspose2d(channels[i], channels[i + 1], 4, 2, 1, bias=False)
                ),
            )
        )
    g_blocks.append(
        ("image", nn.Sequential(nn.ConvTranspose2d(channels[-1], cfg.channels, 4, 2, 1), nn.Tanh()))
    )

    slope = _d_slope(cfg)
    d_base = _scaled(64, _d_width(cfg))
    d_channels = [d_base * 2**i for i in range(stages)]  # e.g. 64, 128, 256, 512
    previous = cfg.channels + _d_label_dim(cfg)
    d_blocks: list[tuple[str, nn.Module]] = []
    for i, out in enumerate(d_channels):
        norm: nn.Module = nn.BatchNorm2d(out) if i > 0 else nn.Identity()
        d_blocks.append(
            (
                f"conv{i + 1}",
                nn.Sequential(nn.Conv2d(previous, out, 4, 2, 1), norm, nn.LeakyReLU(slope)),
            )
        )
        previous = out
    d_blocks.extend(_minibatch_std_block(cfg))
    previous += _std_maps(cfg)
    d_blocks.append(
        ("logit", nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(previous * 16, 1)))
    )
    return NamedBlocks(g_blocks), NamedBlocks(d_blocks)


def build_gan(cfg: ModelConfig) -> tuple[Generator, Discriminator]:
    """A freshly initialised (N(0, 0.02)) generator and discriminator for ``cfg``."""
    builders = {
        Family.MLP: _mlp_pair,
        Family.DCGAN: _dcgan28_pair,
        Family.DCGAN_RGB: _dcgan_rgb_pair,
    }
    if cfg.family not in builders:
        raise ValueError(f"{cfg.family.value} is not a GAN family")
    if cfg.g_full_res_channels and cfg.family is not Family.DCGAN:
        raise ValueError("--g-full-res-channels is for the 28×28 dcgan family")
    g_body, d_body = builders[cfg.family](cfg)
    if _label_in_g_batchnorm(cfg):
        g_body = condition_batchnorms_on_label(g_body, cfg.num_classes)
    generator = Generator(cfg, g_body)
    discriminator = Discriminator(cfg, d_body, flat_input=cfg.family is Family.MLP)
    init_gan_weights(generator)
    init_gan_weights(discriminator)
    if cfg.d_spectral_norm:
        apply_spectral_norm(discriminator)
    return generator, discriminator


def build_classifier(cfg: ModelConfig) -> Classifier:
    return Classifier(
        cfg.channels, cfg.num_classes, cfg.width, cfg.dropout, arch=cfg.classifier_arch
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
