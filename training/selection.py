"""``ganserve select``: score every checkpoint of a run, raw and EMA weights, and keep the best.

The last epoch of a GAN run is not its best one, and a plain weight average is not always better
than the live weights, so both are decided by measurement: the lowest Fréchet ratio among the
candidates whose every class keeps at least ``min_diversity`` of the real images' variety (when none
does, the highest fraction of it, in halving steps, that some candidate keeps: a 2-D latent cannot
hold a class's whole variety; see ``choose``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ganserve.errors import CheckpointError

from .checkpoint import load_checkpoint, save_atomic
from .evaluate import RealReference, full_splits, score_generator

log = logging.getLogger(__name__)
SELECTED_NAME = "selected.pt"


def _row(path: Path, score: dict[str, Any]) -> dict[str, Any]:
    diversity = score["within_class_diversity"]
    return {
        "checkpoint": str(path),
        "epoch": score["epoch"],
        "weights": score["weights"],
        "fd_ratio": score["frechet_distance"]["ratio"],
        "diversity_min": diversity["features"]["min"],
        "diversity_mean": diversity["features"]["mean"],
        "pixel_diversity_min": diversity["pixels"]["min"],
        "class_consistency": score.get("class_consistency"),
        "smallest_class_share": min(score["class_histogram"].values()),
    }


def choose(rows: list[dict[str, Any]], min_diversity: float) -> tuple[str, dict[str, Any]]:
    """The candidate with the lowest Fréchet ratio among those whose every class keeps
    ``min_diversity`` of real variety; when none does, the bound halves (down to an eighth), so a
    model that cannot hold a class's whole variety (a 2-D latent) is still chosen for variety
    before distance: a lower Fréchet ratio bought by one class's near-copies loses. Then every
    class at least present; then any candidate."""
    tiers = [
        (f"every class's feature diversity >= {bound:g}",
         [r for r in rows if r["diversity_min"] >= bound])
        for bound in (min_diversity, min_diversity / 2, min_diversity / 4, min_diversity / 8)
    ] + [
        ("every class present (none kept an eighth of the diversity bound)",
         [r for r in rows if r["smallest_class_share"] > 0]),
        ("any candidate (none had every class)", rows),
    ]  # fmt: skip
    tier, eligible = next((name, found) for name, found in tiers if found)
    return tier, min(eligible, key=lambda r: r["fd_ratio"])


def select_checkpoint(
    run_dir: str | Path,
    classifier: str | Path,
    samples: int = 5000,
    min_diversity: float = 0.8,
    from_epoch: int = 1,
) -> dict[str, Any]:
    """Score ``run_dir/checkpoints/epoch_*.pt`` from epoch ``from_epoch`` on (a long run's early
    epochs need not be scored again); write ``selection.json`` and ``checkpoints/selected.pt``
    (the winner, marked with the weights to serve)."""
    run_dir = Path(run_dir)
    paths = [
        path
        for path in sorted((run_dir / "checkpoints").glob("epoch_*.pt"))
        if int(path.stem.removeprefix("epoch_")) >= from_epoch
    ]
    if not paths:
        raise CheckpointError(
            f"{run_dir}/checkpoints: no epoch_*.pt checkpoints from epoch {from_epoch} on"
        )
    first = load_checkpoint(paths[0])
    reference = RealReference(full_splits(first), load_checkpoint(classifier).classifier(), samples)
    rows = []
    for path in paths:
        ckpt = load_checkpoint(path)
        for weights in ("raw", "ema") if ckpt.raw.get("ema") else ("raw",):
            score, _ = score_generator(ckpt, reference, weights)
            rows.append(_row(path, score))
            log.info(
                "%s %s: Fréchet ratio %.1f, diversity min %.2f, consistency %s",
                path.name, weights, rows[-1]["fd_ratio"], rows[-1]["diversity_min"],
                rows[-1]["class_consistency"],
            )  # fmt: skip
    tier, best = choose(rows, min_diversity)
    selection = {
        "rule": f"lowest Fréchet ratio among candidates with {tier}",
        "samples": samples,
        "from_epoch": from_epoch,
        "classifier": str(classifier),
        "real_vs_real_floor": reference.floor,
        "selected": best,
        "candidates": rows,
    }
    chosen = load_checkpoint(best["checkpoint"]).raw
    chosen["serve_weights"] = best["weights"]
    save_atomic(chosen, run_dir / "checkpoints" / SELECTED_NAME)
    (run_dir / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    return selection
