"""``ganserve evaluate``: a checkpoint's quality metrics, written to JSON."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import LoadedCheckpoint, load_checkpoint
from .data import DataSplits, load_data
from .metrics import (
    STRONG_IC,
    WEAK_IC,
    class_consistency,
    classifier_outputs,
    feature_statistics,
    frechet_distance,
    generate_samples,
    independent_classifier_test,
)

log = logging.getLogger(__name__)


def default_metrics_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".eval.json")


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def evaluate_gan(
    ckpt: LoadedCheckpoint,
    classifier_ckpt: LoadedCheckpoint | None,
    splits: DataSplits,
    strength: str = "strong",
    samples: int = 10000,
) -> dict[str, Any]:
    generator = ckpt.generator()
    real_test = splits.test.scaled()[:samples]
    fake, requested = generate_samples(
        generator, len(real_test), ckpt.model.prior.value, ckpt.model.num_classes
    )
    ic_strength = STRONG_IC if strength == "strong" else WEAK_IC
    started = time.perf_counter()
    ic = independent_classifier_test(real_test, fake, ic_strength, seed=0)
    result: dict[str, Any] = {
        "epoch": ckpt.epoch,
        "samples": len(fake),
        "independent_classifier": {
            "error": ic.error,
            "strength": ic.strength,
            "train_size": ic.train_size,
            "test_size": ic.test_size,
            "seconds": time.perf_counter() - started,
        },
    }
    if classifier_ckpt is None:
        return result
    classifier = classifier_ckpt.classifier()
    real_train = splits.train.scaled(slice(0, len(real_test)))
    fake_features, fake_probs = classifier_outputs(classifier, fake)
    test_features, _ = classifier_outputs(classifier, real_test)
    train_features, _ = classifier_outputs(classifier, real_train)
    result["frechet_distance"] = {
        "generated_vs_test": _fd(fake_features, test_features),
        # The floor: two real samples of the same data differ by this much.
        "real_train_vs_test": _fd(train_features, test_features),
        "feature_layer": "features",
    }
    predicted = fake_probs.argmax(axis=1)
    counts = np.bincount(predicted, minlength=ckpt.model.num_classes)
    result["class_histogram"] = {
        name: float(c) / len(predicted)
        for name, c in zip(ckpt.data_info.class_names, counts, strict=True)
    }
    if requested is not None:
        result["class_consistency"] = class_consistency(fake_probs, requested)
    return result


@torch.no_grad()
def evaluate_classifier(ckpt: LoadedCheckpoint, splits: DataSplits) -> dict[str, Any]:
    classifier = ckpt.classifier()
    _, probs = classifier_outputs(classifier, splits.test.scaled())
    return {
        "epoch": ckpt.epoch,
        "test_accuracy": class_consistency(probs, splits.test.labels.numpy()),
    }


def evaluate(
    checkpoint: str | Path,
    classifier: str | Path | None = None,
    strength: str = "strong",
    samples: int = 10000,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on its own data set's test split and write the JSON report."""
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    data_cfg = ckpt.data
    data_cfg.subset = 0  # evaluation always uses the full splits
    splits = load_data(data_cfg)
    if ckpt.kind == "classifier":
        result = evaluate_classifier(ckpt, splits)
    else:
        classifier_ckpt = load_checkpoint(classifier) if classifier else None
        result = evaluate_gan(ckpt, classifier_ckpt, splits, strength, samples)
        if classifier:
            result["classifier"] = str(classifier)
    result["checkpoint"] = str(checkpoint)
    out_path = Path(out) if out else default_metrics_path(checkpoint)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", out_path)
    return result
