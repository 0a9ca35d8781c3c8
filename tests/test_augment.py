"""The class model's training augmentation: bounded shifts, mirrored about half the time, seeded."""

import torch

from ganserve.training.augment import shift_and_flip


def test_each_image_moves_at_most_two_pixels_and_about_half_are_mirrored():
    images = torch.full((512, 1, 28, 28), -1.0)
    images[:, 0, 10, 8] = 1.0  # one bright pixel, off both axes of symmetry
    out = shift_and_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    bright = (out[:, 0] == 1.0).nonzero()
    assert bright[:, 0].tolist() == list(range(512))  # exactly one bright pixel each: none lost
    rows, cols = bright[:, 1], bright[:, 2]
    assert rows.min() >= 8 and rows.max() <= 12
    mirrored = cols >= 14  # 8 ± 2 unmirrored, 27 - (8 ± 2) mirrored
    assert ((cols[~mirrored] >= 6) & (cols[~mirrored] <= 10)).all()
    assert ((cols[mirrored] >= 17) & (cols[mirrored] <= 21)).all()
    assert 0.4 < mirrored.float().mean() < 0.6
    offsets = {
        (r, c if c < 14 else 27 - c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)
    }
    assert len(offsets) == 25  # every shift of up to 2 px on each axis occurs
    assert (out[:, 0] == -1.0).sum() == 512 * (28 * 28 - 1)  # edges repeat the background


def test_the_same_generator_state_gives_the_same_images():
    images = torch.rand(16, 1, 28, 28)
    a = shift_and_flip(images, torch.Generator().manual_seed(3))
    b = shift_and_flip(images, torch.Generator().manual_seed(3))
    c = shift_and_flip(images, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
