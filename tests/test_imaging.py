"""The hand-written PNG encoder of Generate and Interpolate images: decoders read back the exact
pixels, for grey, grey+alpha, RGB and RGBA images of any size."""

import io

import numpy as np
import pytest
from PIL import Image

from ganserve.service.imaging import png_images, to_uint8_hwc


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_images_decode_to_the_exact_pixels(channels):
    rng = np.random.default_rng(channels)
    smooth = np.linspace(0, 255, 28 * 30).reshape(1, 28, 30, 1).astype(np.uint8)
    noise = rng.integers(0, 256, (4, 28, 30, channels), dtype=np.uint8)
    pixels = np.concatenate([np.repeat(smooth, channels, axis=3), noise])
    pngs = png_images(pixels)
    assert len(pngs) == len(pixels)
    for png, expected in zip(pngs, pixels, strict=True):
        picture = Image.open(io.BytesIO(png))
        picture.load()  # checks the zlib stream and every chunk's CRC
        decoded = np.asarray(picture)
        assert decoded.reshape(expected.shape).tolist() == expected.tolist()


def test_png_images_of_a_transposed_view_and_one_pixel():
    images = np.random.default_rng(0).uniform(-1, 1, (3, 1, 5, 7)).astype(np.float32)
    pixels = to_uint8_hwc(images)  # a transposed view, not contiguous
    for png, expected in zip(png_images(pixels), pixels, strict=True):
        assert np.asarray(Image.open(io.BytesIO(png))).tolist() == expected[..., 0].tolist()
    (single,) = png_images(np.full((1, 1, 1, 1), 200, np.uint8))
    assert np.asarray(Image.open(io.BytesIO(single))).tolist() == [[200]]


def test_to_uint8_hwc_rounds_and_clips():
    images = np.array([-1.5, -1.0, -0.002, 0.0, 0.002, 1.0, 2.0], np.float32).reshape(1, 1, 1, 7)
    assert to_uint8_hwc(images)[0, 0, :, 0].tolist() == [0, 0, 127, 128, 128, 255, 255]
