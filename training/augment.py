"""Training-time augmentation for the class model: random shifts and horizontal flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_and_flip(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 2
) -> torch.Tensor:
    """Each image moved by its own random offset of up to ``max_shift`` pixels on each axis (edges
    repeated into the gap) and mirrored left-right with probability one half; draws from
    ``generator`` alone, so a resumed run sees the same images."""
    n, _, height, width = images.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    rows = offsets[0][:, None] + torch.arange(height)  # (n, height)
    cols = offsets[1][:, None] + torch.arange(width)  # (n, width)
    batch = torch.arange(n)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    shifted = shifted.permute(0, 3, 1, 2)
    return torch.where(flips[:, None, None, None], shifted.flip(3), shifted).contiguous()
