"""Render the README's pictures through a running ganserve (``make run`` first).

    python deploy/samples/render.py [--address localhost:50051]

Writes ``deploy/samples/cgan_grid.png`` (one row per class, the same 8 seeds in every row),
``deploy/samples/classmap_2d.png`` (the 2-D generator's whole latent plane, 256×256) and
``deploy/samples/interpolation.png`` (a walk between two seeds).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import grpc
from PIL import Image

from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

HERE = Path(__file__).parent


def tile(pngs: list[bytes], columns: int, scale: int = 2) -> Image.Image:
    images = [Image.open(io.BytesIO(p)).convert("L") for p in pngs]
    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("L", (columns * width, rows * height))
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)


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

    keys = [pb.LatentSource(seed=s) for s in (3, 11, 29)]
    frames = stub.Interpolate(
        pb.InterpolateRequest(model="fmnist-cgan", keys=keys, steps=12, label=7)
    )
    tile([f.image.png for f in frames], 12).save(HERE / "interpolation.png")
    print(", ".join(f"{s.name} {100 * s.share:.1f}%" for s in classmap.shares))


if __name__ == "__main__":
    main()
