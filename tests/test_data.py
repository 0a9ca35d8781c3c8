import gzip
import re

import numpy as np
import pytest
import torch

from ganserve.errors import DataError
from ganserve.training.config import DataConfig
from ganserve.training.data import DIGIT_CLASSES, load_data, read_idx
from tests.conftest import pattern_images, write_idx


def test_idx_folder_reads_gz_and_plain_and_scales_to_unit_range(idx_dir):
    splits = load_data(DataConfig(data=str(idx_dir)))
    assert len(splits.train) == 256 and len(splits.test) == 64
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape == (
        256,
        1,
        28,
        28,
    )
    expected, labels = pattern_images(256, seed=1)
    np.testing.assert_array_equal(splits.train.images[:, 0].numpy(), expected)
    np.testing.assert_array_equal(splits.train.labels.numpy(), labels)
    assert splits.train.class_names == DIGIT_CLASSES  # not a "fashion" path → digit classes
    scaled = splits.train.scaled()
    assert scaled.min() >= -1 and scaled.max() <= 1
    assert float(scaled[0, 0, 0, 0]) == pytest.approx(
        splits.train.images[0, 0, 0, 0].item() / 127.5 - 1
    )


def test_subset_keeps_the_first_n_training_images(idx_dir):
    splits = load_data(DataConfig(data=str(idx_dir), subset=100))
    assert len(splits.train) == 100 and len(splits.test) == 64


def test_missing_file_names_the_folder_and_the_file(tmp_path, idx_dir):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((idx_dir / name).read_bytes())
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte"):
        load_data(DataConfig(data=str(tmp_path)))


def test_truncated_idx_file_is_reported_with_its_path(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"hello world, not idx"))
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)


def test_missing_data_set_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data set not found"):
        load_data(DataConfig(data=str(tmp_path / "nope")))


def test_image_folder_resizes_centre_crops_and_uses_subfolders_as_classes(rgb_folder):
    splits = load_data(DataConfig(data=str(rgb_folder), image_size=32, held_out_fraction=0.25))
    assert splits.train.images.shape[1:] == (3, 32, 32)
    assert len(splits.train) + len(splits.test) == 24 and len(splits.test) == 6
    assert splits.train.class_names == ("forest", "sea")
    blue = splits.train.images[splits.train.labels == 1].float().mean(dim=(0, 2, 3))
    assert blue[2] > blue[1]  # the "sea" class is blue


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_data(DataConfig(data=str(tmp_path), image_size=32))


def test_sklearn_digits_are_upscaled():
    splits = load_data(DataConfig(data="digits", image_size=28))
    assert splits.train.images.shape[1:] == (1, 28, 28)
    assert len(splits.train) + len(splits.test) == 1797
    assert splits.train.num_classes == 10
