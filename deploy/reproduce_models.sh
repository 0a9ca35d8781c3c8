#!/usr/bin/env bash
# Reproduces the shipped Fashion-MNIST models in deploy/model_repository with ganserve's own CLI.
# Needs the [train] extra and Debian's Fashion-MNIST: apt-get install -y dataset-fashion-mnist.
# CPU is enough but slow on 2 shared cores (README "Results" gives the epochs and times); the runs
# checkpoint every epoch and `--resume` continues exactly, so they can be stopped and extended.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
REPO=${REPO:-deploy/model_repository}
# The shipped models' epochs (README "Results"): the conditional model and the 2-D model ran
# longer than the 3-D and 4-D ones; every run can be extended with --resume.
CGAN_EPOCHS=${CGAN_EPOCHS:-64}
CGAN_DECAY_START=${CGAN_DECAY_START:-42}  # the learning rates fall linearly over its last epochs
CGAN_SELECT_FROM=${CGAN_SELECT_FROM:-57}  # the shipped selection scored its last 8 epochs
# The conditional model has the studies' width too (G 2.41 M, projection D 276 k): trained on one
# GPU (an H200, ~5 s an epoch beside two other runs); ~210 s an epoch on 2 CPU cores (~3.7 h).
# The 3-D and 4-D models have the studies' width (1.0: G 1.06-1.08 M, D 212,865 parameters): the
# 4-D one was trained on one GPU (an H200, ~4.5 s an epoch; README "Training"), the 3-D one on the
# 2 CPU cores (~190 s an epoch alone); the 2-D model is the narrower CPU model (width 0.5), which
# keeps full-plane class maps 3x cheaper.
EPOCHS_2D=${EPOCHS_2D:-38}
DECAY_START_2D=${DECAY_START_2D:-30}
WIDTH_2D=${WIDTH_2D:-0.5}
EPOCHS_3D=${EPOCHS_3D:-38}
DECAY_START_3D=${DECAY_START_3D:-25}
WIDTH_3D=${WIDTH_3D:-1.0}
EPOCHS_4D=${EPOCHS_4D:-37}
DECAY_START_4D=${DECAY_START_4D:-24}
WIDTH_4D=${WIDTH_4D:-1.0}

# The class model ClassMap paints with (small: a 256x256 map stays a few seconds).
ganserve train --family classifier --epochs 7 --checkpoint-every 1 --out "$RUNS/fmnist-classifier"
CLASSIFIER="$RUNS/fmnist-classifier/checkpoints/epoch_0007.pt"
# The judge that selection and evaluation use: sharper than the class model, so that class
# consistency can be measured above the small classifier's own accuracy (not served).
ganserve train --family classifier --classifier-arch vgg --augment --epochs 16 --lr-decay-start 6 \
    --checkpoint-every 1 --out "$RUNS/fmnist-judge"
JUDGE="$RUNS/fmnist-judge/checkpoints/epoch_0016.pt"

# Conditional: one-hot label code joined to z in G, a projection discriminator (the label enters
# D's logit through a class embedding of its features), one-sided label smoothing, EMA (warm-up,
# own batch-norm statistics); every epoch kept for `ganserve select`.
ganserve train --family dcgan --conditional true --latent-dim 100 --width 1.0 --d-width 1.0 \
    --d-conditioning projection --real-target 0.9 --ema-decay 0.999 --epochs "$CGAN_EPOCHS" \
    --lr-decay-start "$CGAN_DECAY_START" --checkpoint-every 1 --weak-ic-every 5 --stop-on-collapse 10 \
    --out "$RUNS/fmnist-cgan"
# The studies' small latents: 2-D (the class-map plane), 3-D and 4-D (cube sections).
for d in 2 3 4; do
    epochs_var=EPOCHS_${d}D decay_var=DECAY_START_${d}D width_var=WIDTH_${d}D
    ganserve train --family dcgan --latent-dim "$d" --width "${!width_var}" --real-target 0.9 \
        --ema-decay 0.999 --epochs "${!epochs_var}" --lr-decay-start "${!decay_var}" \
        --checkpoint-every 1 --weak-ic-every 4 --out "$RUNS/fmnist-${d}d"
done

ganserve evaluate "$CLASSIFIER" --out "$RUNS/fmnist-classifier/selected.eval.json"
ganserve export "$CLASSIFIER" --name fmnist-classifier --triton-repo "$REPO" \
    --metrics "$RUNS/fmnist-classifier/selected.eval.json"
for run in fmnist-cgan fmnist-2d fmnist-3d fmnist-4d; do
    # The best checkpoint and weights (raw or EMA) by measurement, not the last epoch.
    from=1
    [ "$run" = fmnist-cgan ] && from=$CGAN_SELECT_FROM
    ganserve select "$RUNS/$run" --classifier "$JUDGE" --from-epoch "$from"
    # ...and what it draws too seldom and too often, class by class (deploy/samples/cgan_mode_bins.png)
    ganserve evaluate "$RUNS/$run/checkpoints/selected.pt" --classifier "$JUDGE" \
        --bins-figure "$RUNS/$run/mode_bins.png"
    ensemble=()
    [ "$run" = fmnist-cgan ] || ensemble=(--ensemble-with fmnist-classifier)
    ganserve export "$RUNS/$run/checkpoints/selected.pt" --name "$run" --triton-repo "$REPO" \
        "${ensemble[@]}"
done
