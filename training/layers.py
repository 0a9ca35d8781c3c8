"""Building blocks: configurable activations and a stack of named blocks whose outputs are kept."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "elu", "selu")


def make_activation(name: str, slope: float = 0.2) -> nn.Module:
    """The activation module called ``name`` (``slope`` for leaky_relu / prelu's start)."""
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    if name == "prelu":
        return nn.PReLU(init=slope)
    if name == "elu":
        return nn.ELU()
    if name == "selu":
        return nn.SELU()
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class NamedBlocks(nn.Module):
    """Blocks run in order; each block's name is the stable name of its output activation.

    The names are what ONNX export turns into extra outputs and what LayerActivations asks for,
    so renaming a block is an API change.
    """

    def __init__(self, blocks: list[tuple[str, nn.Module]]):
        super().__init__()
        self.blocks = nn.ModuleDict(blocks)

    @property
    def layer_names(self) -> list[str]:
        return list(self.blocks.keys())

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for block in self.blocks.values():
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return x


class Reshape(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class MinibatchStdDev(nn.Module):
    """Appends one feature map: the standard deviation of every feature across a group of the
    batch's images, averaged (Karras et al. 2018, "minibatch standard deviation"). A batch whose
    images are alike scores near 0 there, so D can tell a low-variety batch of fakes from real
    images, and G gains a gradient towards variety. Groups are ``group_size`` images (the largest
    divisor of the batch size not above it), strided through the batch; each image gets its
    group's value. No weights."""

    def __init__(self, group_size: int):
        super().__init__()
        if group_size < 2:
            raise ValueError(
                f"a minibatch standard deviation needs groups of 2 or more, got {group_size}"
            )
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        group = next(g for g in range(min(self.group_size, n), 0, -1) if n % g == 0)
        members = x.reshape(group, n // group, *x.shape[1:])  # members[g, m] = x[g * M + m]
        std = torch.sqrt(members.var(dim=0, unbiased=False) + 1e-8)  # [M, C, H, W]
        per_image = std.mean(dim=(1, 2, 3)).repeat(group)  # x[i] belongs to group member i % M
        return torch.cat([x, per_image.view(n, 1, 1, 1).expand(n, 1, height, width)], dim=1)


def init_gan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) weights, BN scale N(1, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation (Miyato et al. 2018) of every convolution and linear layer: each
    weight divided by its largest singular value, estimated by one power-iteration step per
    training forward pass, so the network's Lipschitz constant stays near 1. The iteration's
    vectors are buffers: they travel in the state dict, and a resumed run goes on exactly."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)
