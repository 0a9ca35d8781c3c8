"""Watching a run: fixed-noise image grids, loss history (CSV, TensorBoard if installed), balance."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[-1, 1] float images ``[N, C, H, W]`` → uint8 ``[N, H, W, C]``."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    array = np.clip((array + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return array.transpose(0, 2, 3, 1)


def image_grid(images: torch.Tensor | np.ndarray, columns: int, padding: int = 2) -> Image.Image:
    """One PIL image holding ``images`` in rows of ``columns``, with a dark gutter."""
    tiles = to_uint8(images)
    count, height, width, channels = tiles.shape
    rows = (count + columns - 1) // columns
    canvas = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        32,
        dtype=np.uint8,
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        canvas[top : top + height, left : left + width] = tile
    return Image.fromarray(canvas[..., 0] if channels == 1 else canvas)


class LossHistory:
    """Per-epoch rows appended to ``history.csv`` (and TensorBoard scalars when available)."""

    def __init__(self, run_dir: Path, fields: tuple[str, ...]):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "history.csv"
        self.fields = list(fields)
        self._writer = None
        try:  # optional: only when tensorboard is installed
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # noqa: BLE001 - any import problem just means no TensorBoard
            self._writer = None

    def truncate_after(self, epoch: int) -> None:
        """On resume: forget rows of epochs after the checkpoint (they will be redone)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        new_file = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, row["epoch"])
            self._writer.flush()


class CollapseWatch:
    """Warns each epoch a class's within-class pixel diversity (generated ÷ real) is below
    ``bound``, the generator drawing that class as one picture whatever its latent, and says when
    the run should stop: once that has lasted ``patience`` epochs in a row (0 = never).

    Healthy conditional runs dip below 0.5 for up to 5 epochs early on and come back; the runs
    that stayed below it longer (48 and 61 epochs on a GPU, README "Results") never did.
    """

    def __init__(self, bound: float, patience: int):
        self.bound = bound
        self.patience = patience
        self.streak = 0

    def update(self, epoch: int, minimum: float, worst_class: int) -> bool:
        """Record one epoch's worst class; True when the run should stop."""
        if minimum >= self.bound:
            self.streak = 0
            return False
        self.streak += 1
        log.warning(
            "epoch %d: within-class diversity %.2f (class %d) is below %.2f of real: "
            "the generator is ignoring its latent%s",
            epoch, minimum, worst_class, self.bound,
            f" ({self.streak} epochs in a row)" if self.streak > 1 else "",
        )  # fmt: skip
        return 0 < self.patience <= self.streak


class BalanceWatch:
    """Warns when D's loss stays outside the healthy band for ``patience`` epochs in a row.

    Study B reports a healthy balance at a discriminator loss of about 0.5–0.6 per term; a D loss
    near zero means D wins (G gets no gradient), one far above ln 2 means D has given up.
    """

    def __init__(self, band: tuple[float, float], patience: int):
        self.low, self.high = band
        self.patience = patience
        self.streak = 0

    def update(self, epoch: int, d_loss: float, g_loss: float) -> str | None:
        if self.low <= d_loss <= self.high:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.patience:
            return None
        side = "discriminator is winning" if d_loss < self.low else "discriminator is losing"
        message = (
            f"epoch {epoch}: D/G balance outside the healthy band for {self.streak} epochs "
            f"({side}: D loss {d_loss:.3f} not in [{self.low}, {self.high}], G loss {g_loss:.3f})"
        )
        log.warning(message)
        return message
