"""Data sets as in-memory uint8 tensors: IDX (MNIST / Fashion-MNIST), image folders, sklearn digits.

Images are kept as uint8 ``[N, C, H, W]`` and scaled to [-1, 1] per batch, so a 9,000-image
128×128 RGB folder costs 440 MB, not 1.8 GB.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganserve.errors import DataError

from .config import DataConfig

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(d) for d in range(10))
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """One split of a data set: uint8 images ``[N, C, H, W]``, int64 labels ``[N]``."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def scaled(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Float images in [-1, 1] for ``index`` (all when None)."""
        batch = self.images if index is None else self.images[index]
        return batch.float().div_(127.5).sub_(1.0)

    def head(self, n: int) -> Dataset:
        return Dataset(self.name, self.images[:n], self.labels[:n], self.class_names)


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain) into an array with the shape its header gives."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX element type 0x{dtype_code:02x}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = np.dtype(IDX_DTYPES[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise DataError(
            f"{path}: IDX header promises {shape} ({expected} bytes) but the file holds "
            f"{len(raw) - header_end} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).copy()


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")


def _idx_split(folder: Path, prefix: str, name: str, classes: tuple[str, ...]) -> Dataset:
    images = read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3:
        raise DataError(f"{folder}: {prefix} images should be [N, H, W], got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{folder}: {len(labels)} {prefix} labels for {images.shape[0]} images")
    if labels.size and int(labels.max()) >= len(classes):
        raise DataError(f"{folder}: label {int(labels.max())} but only {len(classes)} classes")
    return Dataset(
        name,
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        classes,
    )


def load_idx_folder(folder: Path, name: str | None = None) -> DataSplits:
    """An MNIST-layout folder: train-/t10k- images and labels, gzipped or not."""
    if not folder.is_dir():
        raise DataError(f"{folder}: IDX data folder does not exist")
    classes = FASHION_MNIST_CLASSES if "fashion" in str(folder).lower() else DIGIT_CLASSES
    name = name or ("fashion-mnist" if classes is FASHION_MNIST_CLASSES else "mnist")
    return DataSplits(
        _idx_split(folder, "train", name, classes), _idx_split(folder, "t10k", name, classes)
    )


def _split_held_out(dataset: Dataset, fraction: float, seed: int = 0) -> DataSplits:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)
    n_test = max(1, round(len(dataset) * fraction)) if len(dataset) > 1 else 0
    test_index, train_index = order[:n_test], order[n_test:]
    take = lambda idx: Dataset(  # noqa: E731
        dataset.name, dataset.images[idx], dataset.labels[idx], dataset.class_names
    )
    return DataSplits(take(train_index), take(test_index))


def _resize_square(image, size: int):
    """Resize the shorter side to ``size`` and centre-crop to ``size``×``size``."""
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def load_image_folder(folder: Path, image_size: int, fraction: float) -> DataSplits:
    """RGB images from ``folder``; sub-folders, if any, are the classes (sorted by name)."""
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise DataError(f"{folder}: image folder does not exist")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    groups = [(p.name, p) for p in class_dirs] if class_dirs else [("image", folder)]
    images, labels = [], []
    for label, (_, directory) in enumerate(groups):
        for path in sorted(directory.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    square = _resize_square(img.convert("RGB"), image_size)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{path}: not a readable image ({exc})") from exc
            images.append(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataError(
            f"{folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    dataset = Dataset(
        folder.name,
        torch.from_numpy(np.stack(images)),
        torch.tensor(labels, dtype=torch.int64),
        tuple(name for name, _ in groups),
    )
    return _split_held_out(dataset, fraction)


def load_sklearn_digits(image_size: int, fraction: float) -> DataSplits:
    """scikit-learn's bundled 8×8 digits (0–16 grey levels), upscaled to ``image_size``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    resized = np.stack(
        [
            np.asarray(Image.fromarray(img).resize((image_size, image_size), Image.BILINEAR))
            for img in small
        ]
    )
    dataset = Dataset(
        "digits",
        torch.from_numpy(resized).unsqueeze(1),
        torch.from_numpy(bunch.target.astype(np.int64)),
        DIGIT_CLASSES,
    )
    return _split_held_out(dataset, fraction)


def load_data(cfg: DataConfig) -> DataSplits:
    """The train/test splits ``cfg.data`` names, with ``cfg.subset`` applied to the train split."""
    source = cfg.data
    if source == "fashion-mnist":
        splits = load_idx_folder(FASHION_MNIST_DIR, "fashion-mnist")
    elif source == "digits":
        splits = load_sklearn_digits(cfg.image_size or 28, cfg.held_out_fraction)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"{path}: data set not found (use fashion-mnist, digits, an IDX folder or an image folder)"
            )
        looks_idx = (
            any(p.name.startswith("train-images") for p in path.iterdir())
            if path.is_dir()
            else False
        )
        if looks_idx:
            splits = load_idx_folder(path)
        else:
            splits = load_image_folder(path, cfg.image_size or 64, cfg.held_out_fraction)
    if cfg.subset:
        splits.train = splits.train.head(cfg.subset)
    if len(splits.train) == 0:
        raise DataError(f"{source}: the training split is empty")
    return splits
