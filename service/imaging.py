"""Pixels out: PNG and GIF encoding, the class-map picture with its legend, activation heat maps."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import imagecodecs
import numpy as np
from PIL import Image, ImageDraw, ImageFont

PICTURE_PNG_LEVEL = 6  # class maps and heat maps: one picture per call, so smaller beats faster
# Tableau-20: distinct colours for up to 20 classes (cycled beyond).
PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
        (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
        (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
    ],
    dtype=np.float32,
)  # fmt: skip
# Anchors of a perceptually ordered dark-to-bright map (viridis-like) for heat maps.
HEAT_ANCHORS = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float32
)


def to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float ``[N, C, H, W]`` → uint8 ``[N, H, W, C]`` (rounded, clipped)."""
    scaled = np.add(images, 1.0, dtype=np.float32)  # one scratch array, then in place
    scaled *= 127.5
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels → grey, grey+alpha, RGB, RGBA
PNG_END = _chunk(b"IEND", b"")
_IDAT_CRC = zlib.crc32(b"IDAT")
# zlib-ng's level 1 (its "quick" strategy) deflates a 28×28 image in a quarter of the time of
# zlib or libpng at level 1, for ~6% more bytes; it releases the GIL like the other codecs.
_deflate = (
    (lambda data: imagecodecs.zlibng_encode(data, level=1))
    if imagecodecs.ZLIBNG.available
    else (lambda data: zlib.compress(data, 1))
)


@functools.lru_cache(maxsize=64)
def _png_header(width: int, height: int, channels: int) -> bytes:
    return PNG_SIGNATURE + _chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    )


def png_images(pixels: np.ndarray) -> list[bytes]:
    """One PNG per uint8 ``[N, H, W, C]`` image, written here rather than through libpng: every
    row of every image gets its filter byte in one NumPy step, then per image one deflate and a
    few bytes of framing. Filter "none": on the shipped generators' images zlib-ng's level 1
    makes smaller files from unfiltered rows than from "up"-filtered ones (560 vs 582 bytes per
    28×28 image, measured) and the subtraction is saved (one image ~15 µs all told; libpng ~32)."""
    count, height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(count, height, width * channels)
    filtered = np.zeros((count, height, 1 + width * channels), np.uint8)  # filter byte 0: none
    filtered[:, :, 1:] = rows
    header = _png_header(width, height, channels)
    pack, crc32, deflate = struct.pack, zlib.crc32, _deflate
    pngs = []
    for image in filtered:
        data = deflate(image)
        pngs.append(
            b"".join(
                (
                    header,
                    pack(">I", len(data)),
                    b"IDAT",
                    data,
                    pack(">I", crc32(data, _IDAT_CRC)),
                    PNG_END,
                )
            )
        )
    return pngs


def png_bytes(image_hwc: np.ndarray, level: int = PICTURE_PNG_LEVEL) -> bytes:
    """One PNG of a single picture (class maps, heat maps) through imagecodecs (libpng), which
    chooses the row filters per picture: smaller files for big pictures; the many small images
    of Generate and Interpolate go through ``png_images``."""
    pixels = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
    return imagecodecs.png_encode(np.ascontiguousarray(pixels), level=level)


def gif_bytes(frames_hwc: list[np.ndarray], frame_ms: int, scale: int = 4) -> bytes:
    """An endlessly looping animated GIF, upscaled so 28×28 frames are visible."""
    pictures = []
    for frame in frames_hwc:
        pixels = frame[..., 0] if frame.shape[-1] == 1 else frame
        picture = Image.fromarray(pixels)
        pictures.append(
            picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
        )
    buffer = io.BytesIO()
    pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0
    )
    return buffer.getvalue()


def class_colours(class_ids: np.ndarray, confidences: np.ndarray) -> np.ndarray:
    """Each cell's class colour, darkened where the classifier is unsure."""
    colours = PALETTE[class_ids % len(PALETTE)]
    shade = 0.35 + 0.65 * np.clip(confidences, 0.0, 1.0)[..., None]
    return (colours * shade).astype(np.uint8)


def render_class_map(
    class_ids: np.ndarray, confidences: np.ndarray, class_names: list[str], shares: list[float]
) -> bytes:
    """The map (row 0 on top) at about 512 px, with a legend of colours, names and area shares."""
    resolution = class_ids.shape[0]
    scale = max(1, 512 // resolution)
    cells = Image.fromarray(class_colours(class_ids, confidences))
    side = resolution * scale
    cells = cells.resize((side, side), Image.NEAREST)
    font = ImageFont.load_default()
    row_height, legend_width = 18, 190
    height = max(side, row_height * len(class_names) + 16)
    canvas = Image.new("RGB", (side + legend_width, height), (255, 255, 255))
    canvas.paste(cells, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, share) in enumerate(zip(class_names, shares, strict=True)):
        top = 8 + i * row_height
        colour = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        draw.rectangle([side + 10, top, side + 24, top + 12], fill=colour, outline=(0, 0, 0))
        draw.text((side + 32, top), f"{name}  {100 * share:.1f}%", fill=(0, 0, 0), font=font)
    return png_bytes(np.asarray(canvas))


def heatmap_png(values: np.ndarray, scale: int = 8) -> bytes:
    """A 2-D map, min–max normalised, coloured dark (low) to bright (high)."""
    low, high = float(values.min()), float(values.max())
    normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)
    position = normalised * (len(HEAT_ANCHORS) - 1)
    index = np.clip(position.astype(int), 0, len(HEAT_ANCHORS) - 2)
    fraction = (position - index)[..., None]
    rgb = HEAT_ANCHORS[index] * (1 - fraction) + HEAT_ANCHORS[index + 1] * fraction
    picture = Image.fromarray(rgb.astype(np.uint8))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return png_bytes(np.asarray(picture))
