"""Training throughput (images/s) per model family on this CPU, measured side by side in one run.

    python benchmarks/train_throughput.py [--steps 30] [--threads 2]

Each family trains on random data in [-1, 1] (no data loading), batch 128, for a few warm-up steps
and then ``--steps`` timed steps; the same loop as ``ganserve train`` (D step + G step). Results go
to ``benchmarks/results/train_throughput.json``, with each family's speed relative to the shipped
conditional DCGAN (width 1.0, projection D) so numbers from a busy machine still compare; beside
it, the conditional recipes issue 11 compared (width 0.5, the full-resolution block, twice the
width in G and D).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ganserve.training.config import DConditioning, Family, GConditioning, Loss, ModelConfig
from ganserve.training.models import build_gan, count_parameters
from ganserve.training.trainer import discriminator_loss, generator_loss

CGAN = dict(
    family=Family.DCGAN, conditional=True, latent_dim=100, d_conditioning=DConditioning.PROJECTION
)
CASES = [
    ("dcgan-cond w1.0 (shipped)", ModelConfig(**CGAN, width=1.0, d_width=1.0)),
    ("dcgan-cond w0.5", ModelConfig(**CGAN, width=0.5, d_width=1.0)),
    (
        "dcgan-cond w0.5 both, full-res 32",
        ModelConfig(
            **CGAN,
            width=0.5,
            d_width=1.0,
            g_conditioning=GConditioning.BOTH,
            g_full_res_channels=32,
        ),
    ),
    (
        "dcgan-cond w2.0 dw2.0 both",
        ModelConfig(**CGAN, width=2.0, d_width=2.0, g_conditioning=GConditioning.BOTH),
    ),
    ("dcgan-2d w0.5 (shipped)", ModelConfig(family=Family.DCGAN, latent_dim=2, width=0.5)),
    ("dcgan w1.0 (study A)", ModelConfig(family=Family.DCGAN, latent_dim=2, width=1.0)),
    ("mlp w1.0 (study B)", ModelConfig(family=Family.MLP, latent_dim=100, width=1.0)),
    ("mlp-cond w1.0", ModelConfig(family=Family.MLP, conditional=True, latent_dim=100, width=1.0)),
    (
        "dcgan-rgb 64px w0.5",
        ModelConfig(family=Family.DCGAN_RGB, latent_dim=100, width=0.5, image_size=64, channels=3),
    ),
]
REFERENCE = CASES[0][0]


def measure(cfg: ModelConfig, steps: int, warmup: int, batch: int = 128) -> float:
    torch.manual_seed(0)
    g, d = build_gan(cfg)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    real = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1
    labels = torch.randint(0, cfg.num_classes, (batch,)) if cfg.conditional else None

    def step() -> None:
        fake = g(torch.rand(batch, cfg.latent_dim) * 2 - 1, labels)
        opt_d.zero_grad()
        discriminator_loss(Loss.NONSATURATING, d(real, labels), d(fake.detach(), labels)).backward()
        opt_d.step()
        opt_g.zero_grad()
        generator_loss(Loss.NONSATURATING, d(fake, labels)).backward()
        opt_g.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "train_throughput.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, cfg in CASES:
        g, d = build_gan(cfg)
        rate = measure(cfg, args.steps, args.warmup)
        rows.append(
            {
                "model": name,
                "g_parameters": count_parameters(g),
                "d_parameters": count_parameters(d),
                "images_per_s": rate,
            }
        )
        print(
            f"{name:34s} G {rows[-1]['g_parameters']:>9,} D {rows[-1]['d_parameters']:>9,}  {rate:8.0f} img/s",
            flush=True,
        )
    reference = next(r["images_per_s"] for r in rows if r["model"] == REFERENCE)
    for row in rows:
        row["relative_to_shipped_cgan"] = row["images_per_s"] / reference
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "batch_size": 128,
        "steps": args.steps,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
