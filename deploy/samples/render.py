"""Render the README's pictures through a running ganserve (``make run`` first).

    python deploy/samples/render.py [--address localhost:50051]

Writes into ``deploy/samples/``:
- ``cgan_grid.png``: ``fmnist-cgan``, one row per class, the same 8 seeds in every row;
- ``classmap_2d.png``: the class map of ``fmnist-2d``'s whole latent plane [-1, 1]², 256×256;
- ``cube_sections_3d.png``: ``fmnist-3d``'s cube [-1, 1]³ as 16 parallel class-map sections
  (the studies' figure), the third coordinate from -1 to 1;
- ``interpolation.png``: walks between seeds, one row per model (conditional: a fixed label).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import grpc
import numpy as np
from PIL import Image, ImageDraw

from ganserve.service.imaging import PALETTE
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

HERE = Path(__file__).parent
SECTIONS = 16


def tile(pngs: list[bytes], columns: int, scale: int = 2) -> Image.Image:
    images = [Image.open(io.BytesIO(p)).convert("L") for p in pngs]
    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("L", (columns * width, rows * height))
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)


def cube_sections(stub, model: str, resolution: int = 96) -> tuple[Image.Image, list[str]]:
    """4×4 sections of a 3-D latent cube along its third axis, each a class map."""
    gutter, label_height = 4, 14
    cell = resolution + gutter
    sheet = Image.new("RGB", (4 * cell + gutter, 4 * (cell + label_height) + gutter), "white")
    draw = ImageDraw.Draw(sheet)
    seen: set[str] = set()
    names: list[str] = []
    for i, value in enumerate(np.linspace(-1.0, 1.0, SECTIONS)):
        section = stub.ClassMap(
            pb.ClassMapRequest(model=model, resolution=resolution, fixed=[float(value)])
        )
        names = list(section.class_names)
        ids = np.asarray(section.class_ids).reshape(resolution, resolution)
        seen.update(names[k] for k in np.unique(ids))
        left, top = gutter + (i % 4) * cell, gutter + (i // 4) * (cell + label_height)
        draw.text((left, top), f"z3 = {value:+.2f}", fill="black")
        colours = PALETTE[ids % len(PALETTE)].astype(np.uint8)
        sheet.paste(Image.fromarray(colours), (left, top + label_height))
    return sheet, sorted(seen)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default="localhost:50051")
    args = parser.parse_args()
    stub = pb_grpc.GenerationServiceStub(grpc.insecure_channel(args.address))

    rows = []
    for label in range(10):
        response = stub.Generate(
            pb.GenerateRequest(model="fmnist-cgan", seeds=list(range(8)), labels=[label])
        )
        rows.extend(image.png for image in response.images)
    tile(rows, 8).save(HERE / "cgan_grid.png")

    classmap = stub.ClassMap(pb.ClassMapRequest(model="fmnist-2d", resolution=256, render_png=True))
    (HERE / "classmap_2d.png").write_bytes(classmap.png)
    print("fmnist-2d plane:", ", ".join(f"{s.name} {100 * s.share:.1f}%" for s in classmap.shares))

    sheet, seen = cube_sections(stub, "fmnist-3d")
    sheet.save(HERE / "cube_sections_3d.png")
    print(f"fmnist-3d cube: {len(seen)} classes over {SECTIONS} sections: {', '.join(seen)}")

    strips = []
    for model, label in (("fmnist-cgan", 7), ("fmnist-cgan", 2), ("fmnist-2d", None)):
        keys = [pb.LatentSource(seed=s) for s in (3, 11, 29)]
        request = pb.InterpolateRequest(model=model, keys=keys, steps=12)
        if label is not None:
            request.label = label
        strips.extend(frame.image.png for frame in stub.Interpolate(request))
    tile(strips, 12).save(HERE / "interpolation.png")


if __name__ == "__main__":
    main()
