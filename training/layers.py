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

    @staticmethod
    def run_block(block: nn.Module, x: torch.Tensor, code: torch.Tensor | None) -> torch.Tensor:
        """One block's output: a label-conditioned block also reads the label ``code``."""
        return block(x, code) if isinstance(block, LabelConditionedSequential) else block(x)

    def forward_all(self, x: torch.Tensor, code: torch.Tensor | None = None) -> list[torch.Tensor]:
        outputs = []
        for block in self.blocks.values():
            x = self.run_block(block, x, code)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks.values():
            x = self.run_block(block, x, code)
        return x


class ClassConditionalBatchNorm(nn.Module):
    """Batch norm whose gain and shift are the class's own (de Vries et al. 2017; the generator of
    Miyato & Koyama's projection cGAN and of BigGAN): statistics shared by every class, then
    ``gain = code @ gains`` and ``shift = code @ shifts`` per image and channel. ``code`` is the
    ``[N, num_classes]`` label code, so a soft row (a blend of classes) blends the classes' gains
    and shifts. Gains start at 1 and shifts at 0 for every class: at initialisation this is the
    plain batch norm it replaces, and each class learns its own departure from it."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm, num_classes: int):
        super().__init__()
        channels = norm.num_features
        self.norm = type(norm)(channels, eps=norm.eps, momentum=norm.momentum, affine=False)
        self.gains = nn.Parameter(torch.ones(num_classes, channels))
        self.shifts = nn.Parameter(torch.zeros(num_classes, channels))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gains, 1.0, 0.02)
        nn.init.zeros_(self.shifts)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        per_channel = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        gain = (code @ self.gains).reshape(per_channel)
        shift = (code @ self.shifts).reshape(per_channel)
        return self.norm(x) * gain + shift


class LabelConditionedSequential(nn.Sequential):
    """A block whose batch norms are :class:`ClassConditionalBatchNorm`: ``forward(x, code)``
    hands the label code to them and runs every other layer as ``nn.Sequential`` would."""

    def forward(self, x: torch.Tensor, code: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        if code is None:
            raise ValueError("a label-conditioned block needs the class label code")
        for layer in self:
            x = layer(x, code) if isinstance(layer, ClassConditionalBatchNorm) else layer(x)
        return x


def condition_batchnorms_on_label(blocks: NamedBlocks, num_classes: int) -> NamedBlocks:
    """``blocks`` with every batch norm made class-conditional (same names, same layers
    otherwise); a block that has no batch norm stays as it was."""
    conditioned: list[tuple[str, nn.Module]] = []
    for name, block in blocks.blocks.items():
        layers = list(block) if isinstance(block, nn.Sequential) else [block]
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers):
            block = LabelConditionedSequential(
                *(
                    ClassConditionalBatchNorm(m, num_classes)
                    if isinstance(m, nn.modules.batchnorm._BatchNorm)
                    else m
                    for m in layers
                )
            )
        conditioned.append((name, block))
    return NamedBlocks(conditioned)


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
    """DCGAN initialisation: N(0, 0.02) weights, BN scale N(1, 0.02) (each class's, when
    class-conditional), zero biases and shifts."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ClassConditionalBatchNorm):
            m.reset_parameters()


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation (Miyato et al. 2018) of every convolution and linear layer: each
    weight divided by its largest singular value, estimated by one power-iteration step per
    training forward pass, so the network's Lipschitz constant stays near 1. The iteration's
    vectors are buffers: they travel in the state dict, and a resumed run goes on exactly."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(m)
