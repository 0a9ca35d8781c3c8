"""Render the README's steering pictures through a running ganserve (``make run`` first).

    python deploy/samples/render_steering.py [--address localhost:50051] [--model fmnist-cgan]

Writes, all through Generate/Interpolate calls to the service:
``deploy/samples/steering_psi.png``: a psi sweep (columns psi = 1 → 0.1), one row per seed;
``deploy/samples/steering_blend.png``: one latent walking from one class to another (rows: pairs);
``deploy/samples/steering_channels.png``: the first channels of a layer switched off one at a time
(first tile: no edit), with the change each makes (mean absolute pixel difference) printed.
Then prints, for psi 1, 0.7, 0.5 and 0.3, the README's measure of what truncation does: per class
24 seeds, their variety (mean pairwise distance of the shipped classifier's features) and the
classifier's confidence in the asked-for class, averaged over the classes.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ganserve.client import ChannelEdit, Client

HERE = Path(__file__).parent
PSIS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1)
PAIRS = (("Shirt", "Pullover"), ("Sneaker", "Ankle boot"), ("T-shirt/top", "Dress"))
MEASURED_PSIS = (1.0, 0.7, 0.5, 0.3)
SEEDS_PER_CLASS = 24


def truncation_effect(client, model: str, classifier_onnx: Path, classes: int) -> dict:
    """psi → (variety, confidence): the classifier's feature spread within a class and its
    probability of the asked-for class, each averaged over the classes."""
    import onnxruntime as ort

    classifier = ort.InferenceSession(str(classifier_onnx), providers=["CPUExecutionProvider"])
    effect = {}
    for psi in MEASURED_PSIS:
        spread, sure = [], []
        for label in range(classes):
            images = client.generate(
                model, list(range(SEEDS_PER_CLASS)), labels=label, psi=psi, image_format="float32"
            )
            batch = np.stack([image.array for image in images]).astype(np.float32)
            logits, features = classifier.run(["logits", "features"], {"image": batch})
            probabilities = np.exp(logits - logits.max(1, keepdims=True))
            probabilities /= probabilities.sum(1, keepdims=True)
            sure.append(probabilities[:, label].mean())
            distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
            spread.append(distances.sum() / (SEEDS_PER_CLASS * (SEEDS_PER_CLASS - 1)))
        effect[psi] = (float(np.mean(spread)), float(np.mean(sure)))
    return effect


def tile(pngs: list[bytes], columns: int, scale: int = 2, labels: list[str] | None = None):
    images = [Image.open(io.BytesIO(p)).convert("L") for p in pngs]
    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    top = 12 if labels else 0
    sheet = Image.new("L", (columns * width * scale, rows * height * scale + top), 0)
    for i, image in enumerate(images):
        image = image.resize((width * scale, height * scale), Image.NEAREST)
        sheet.paste(image, ((i % columns) * width * scale, top + (i // columns) * height * scale))
    if labels:
        draw = ImageDraw.Draw(sheet)
        for i, text in enumerate(labels):
            draw.text((i * width * scale + 2, 0), text, fill=255)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", default="localhost:50051")
    parser.add_argument("--model", default="fmnist-cgan")
    parser.add_argument("--layer", default="", help="layer to edit (default: the last hidden one)")
    parser.add_argument("--channels", type=int, default=11, help="channels switched off, one each")
    parser.add_argument(
        "--classifier-onnx",
        type=Path,
        default=HERE.parent / "model_repository" / "fmnist-classifier" / "1" / "model.onnx",
        help="the classifier that judges variety and class under truncation",
    )
    args = parser.parse_args()
    with Client(args.address, timeout_s=60) as client:
        info = client.get_model(args.model)
        names = info.class_names

        seeds, label = (3, 17, 40), names.index("Shirt") if "Shirt" in names else 0
        sweep = [
            client.generate(args.model, [seed], labels=label, psi=psi)[0].png
            for seed in seeds
            for psi in PSIS
        ]
        tile(sweep, len(PSIS), labels=[f"psi {p}" for p in PSIS]).save(HERE / "steering_psi.png")

        strip = []
        for a, b in PAIRS:
            if a in names and b in names:
                frames = client.interpolate(args.model, [7], steps=8, label=[{a: 1}, {b: 1}])
                strip.extend(f.image.png for f in frames)
        tile(strip, 8).save(HERE / "steering_blend.png")

        layer = args.layer or list(info.editable_layers)[-1]
        count = min(args.channels, info.editable_layers[layer])
        plain = client.generate(args.model, [3], labels=label, image_format="float32")[0]
        tiles, changes = [plain], []
        for channel in range(count):
            edit = ChannelEdit(layer, [channel], 0.0)
            edited = client.generate(
                args.model, [3], labels=label, edits=[edit], image_format="float32"
            )[0]
            tiles.append(edited)
            changes.append(float(np.abs(edited.array - plain.array).mean()))
        pngs = []
        for image in tiles:
            buffer = io.BytesIO()
            image.to_pil().save(buffer, "PNG")
            pngs.append(buffer.getvalue())
        tile(pngs, len(pngs), labels=["none", *(f"-{c}" for c in range(count))]).save(
            HERE / "steering_channels.png"
        )
        print(f"{layer}: mean |Δpixel| per channel off:", [round(c, 4) for c in changes])
        for psi, (variety, confidence) in truncation_effect(
            client, args.model, args.classifier_onnx, len(names)
        ).items():
            print(f"psi {psi}: within-class variety {variety:.1f}, confidence {confidence:.2f}")


if __name__ == "__main__":
    main()
