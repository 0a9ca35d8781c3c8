#!/usr/bin/env bash
# Reproduces the shipped Fashion-MNIST models in deploy/model_repository with ganserve's own CLI.
# CPU is enough: about 40 min per GAN on 2 cores (see README "Results"). Needs the [train] extra and
# Debian's Fashion-MNIST: apt-get install -y dataset-fashion-mnist
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
REPO=${REPO:-deploy/model_repository}

ganserve train --family classifier --epochs 6 --out "$RUNS/fmnist-classifier"
ganserve train --family dcgan --conditional true --latent-dim 100 --width 0.5 --d-width 1.0 \
    --ema-decay 0.999 --epochs 15 --out "$RUNS/fmnist-cgan"
ganserve train --family dcgan --latent-dim 2 --width 0.5 --ema-decay 0.999 --epochs 20 --out "$RUNS/fmnist-2d"

CLASSIFIER="$RUNS/fmnist-classifier/checkpoints/last.pt"
ganserve evaluate "$CLASSIFIER"
for run in fmnist-cgan fmnist-2d; do
    ganserve evaluate "$RUNS/$run/checkpoints/last.pt" --classifier "$CLASSIFIER"
done

ganserve export "$CLASSIFIER" --name fmnist-classifier --triton-repo "$REPO"
ganserve export "$RUNS/fmnist-cgan/checkpoints/last.pt" --name fmnist-cgan --triton-repo "$REPO"
ganserve export "$RUNS/fmnist-2d/checkpoints/last.pt" --name fmnist-2d --triton-repo "$REPO" \
    --ensemble-with fmnist-classifier
