"""``ganserve evaluate``: a checkpoint's quality metrics, written to JSON.

Every number comes with its yardstick: the Fréchet distance as a ratio to the distance between two
real samples of the same size, within-class diversity as a ratio to real images of the class.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ganserve.errors import UsageError

from .checkpoint import LoadedCheckpoint, load_checkpoint
from .data import DataSplits, load_data
from .distributed import single_process_device
from .metrics import (
    STRONG_IC,
    WEAK_IC,
    ClassHits,
    ManifoldScores,
    class_consistency,
    class_hits,
    class_manifold_scores,
    classifier_outputs,
    feature_statistics,
    frechet_distance,
    generate_samples,
    independent_classifier_test,
    recognised_diversity,
    truncation_response,
    within_class_diversity,
)
from .mode_bins import ClassBins, ModeBins, mode_bins_figure
from .models import Classifier

if TYPE_CHECKING:  # scoring a checkpoint needs neither ONNX Runtime nor the service's protos
    from .exported import ExportedGenerator

    Scored = LoadedCheckpoint | ExportedGenerator  # a checkpoint, or a generator as exported

log = logging.getLogger(__name__)
IC_STRENGTHS = {"strong": STRONG_IC, "weak": WEAK_IC}


def default_metrics_path(checkpoint: Path, exported: bool = False) -> Path:
    """Beside the checkpoint; for an exported file, in the working directory under the file's
    folder names (``fmnist-cgan-1-model.eval.json`` for ``fmnist-cgan/1/model.onnx``): nothing is
    written into a model repository that Triton reads."""
    if exported:
        parts = [p for p in checkpoint.resolve().parent.parts[-2:] if p != "/"]
        return Path("-".join([*parts, checkpoint.stem]) + ".eval.json")
    return checkpoint.with_suffix(".eval.json")


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


class RealReference:
    """What generated samples are compared with: the test split (and as many training images, for
    the real-vs-real floor) as classifier features, computed once for many checkpoints. Networks
    run on ``device`` (default: the GPU when one is usable, as training does)."""

    def __init__(
        self,
        splits: DataSplits,
        classifier: Classifier | None,
        samples: int,
        device: torch.device | None = None,
    ):
        self.device = device if device is not None else single_process_device()
        log.info("scoring on %s", self.device)
        self.images = splits.test.scaled()[:samples]
        self.labels = splits.test.labels.numpy()[: len(self.images)]
        self.classifier = classifier.to(self.device) if classifier is not None else None
        self.features = self.floor = None
        self.manifold_floor: ManifoldScores | None = None
        self.bins: ClassBins | None = None
        self.bins_floor: ModeBins | None = None
        self.hits: dict[int, ClassHits | None] = {}  # the classifier per class on these images
        if classifier is not None:
            self.features, probabilities = classifier_outputs(classifier, self.images)
            self.hits = class_hits(probabilities, self.labels, probabilities.shape[1])
            train_features, _ = classifier_outputs(
                classifier, splits.train.scaled(slice(0, len(self.images)))
            )
            # Two real samples of this size differ by this much: the floor of the distance.
            self.floor = _fd(train_features, self.features)
            # ...and cover each other this well: what recall and coverage can reach at this size.
            train_labels = splits.train.labels.numpy()[: len(self.images)]
            self.manifold_floor = class_manifold_scores(
                train_features,
                train_labels,
                self.features,
                self.labels,
                probabilities.shape[1],
            )
            # NDB's bins: cut from training images, a second real sample (the test images) beside
            # the generated one says how many bins differ by chance at this size.
            self.bins = ClassBins(train_features, train_labels, probabilities.shape[1])
            self.bins_floor = self.bins.compare(self.features, self.labels)


@dataclass
class GeneratedSamples:
    """The images a generator was scored on, their classifier features and the class each counts
    for (asked for, or seen by the classifier for an unconditional model; None without one)."""

    images: torch.Tensor
    features: np.ndarray | None = None
    classes: np.ndarray | None = None
    bins: ModeBins | None = None  # the classes against the reference's bins


def score_generator(
    ckpt: Scored, reference: RealReference, weights: str = "auto"
) -> tuple[dict[str, Any], GeneratedSamples]:
    """Fréchet ratio, within-class diversity, mode bins and class statistics (no IC), and the
    generated samples they were measured on: cheap enough to run on every checkpoint of a run."""
    generator = ckpt.generator(weights).to(reference.device)
    fake, requested = generate_samples(
        generator, len(reference.images), ckpt.model.prior.value, ckpt.model.num_classes
    )
    names = tuple(ckpt.data_info.class_names)
    num_classes = ckpt.model.num_classes
    result: dict[str, Any] = {
        "epoch": ckpt.epoch,
        "weights": ckpt.serve_weights if weights == "auto" else weights,
        "samples": len(fake),
    }
    if reference.classifier is None:
        return result, GeneratedSamples(fake)
    fake_features, fake_probs = classifier_outputs(reference.classifier, fake)
    predicted = fake_probs.argmax(axis=1)
    fd = _fd(fake_features, reference.features)
    result["frechet_distance"] = {
        "generated_vs_test": fd,
        "real_train_vs_test": reference.floor,
        "ratio": fd / max(reference.floor, 1e-12),
        "feature_layer": "features",
    }
    # Conditional: the class asked for; unconditional: the class the classifier sees.
    classes = requested if requested is not None else predicted
    result["within_class_diversity"] = {
        "classes_from": "requested labels" if requested is not None else "classifier predictions",
        "features": within_class_diversity(
            fake_features, classes, reference.features, reference.labels, num_classes
        ).as_dict(names),
        "pixels": within_class_diversity(
            fake, classes, reference.images, reference.labels, num_classes
        ).as_dict(names),
    }
    result["manifold"] = {
        "generated": class_manifold_scores(
            fake_features, classes, reference.features, reference.labels, num_classes
        ).as_dict(names),
        "real_vs_real": reference.manifold_floor.as_dict(names),
    }
    bins = reference.bins.compare(fake_features, classes)
    result["mode_bins"] = {
        "generated": bins.as_dict(names),
        "real_vs_real": reference.bins_floor.as_dict(names),
    }
    counts = np.bincount(predicted, minlength=num_classes)
    result["class_histogram"] = {
        name: float(c) / len(predicted) for name, c in zip(names, counts, strict=True)
    }
    if requested is not None:
        result["class_consistency"] = class_consistency(fake_probs, requested)
        result["class_consistency_per_class"] = _per_class_consistency(
            fake_probs, requested, reference, names
        )
    return result, GeneratedSamples(fake, fake_features, classes, bins)


def score_truncation(
    ckpt: Scored, reference: RealReference, weights: str = "auto"
) -> dict[str, Any] | None:
    """The psi sweep of a conditional generator under the reference's classifier (None for
    unconditional models or without a classifier)."""
    if reference.classifier is None or not ckpt.model.conditional:
        return None
    generator = ckpt.generator(weights).to(reference.device)
    return truncation_response(
        generator, reference.classifier, ckpt.model.prior.value, ckpt.model.num_classes
    )


def _per_class_consistency(
    fake_probs: np.ndarray, requested: np.ndarray, reference: RealReference, names: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Each class's consistency beside the classifier's own accuracy on real images of the class
    (its ceiling: a class the classifier confuses on real images cannot score higher on generated
    ones), and the class its generated images are most often taken for."""
    generated = class_hits(fake_probs, requested, len(names))
    rows = {}
    for k, name in enumerate(names):
        hits, ceiling = generated[k], reference.hits.get(k)
        if hits is None:
            continue
        rows[name] = {
            "generated": hits.share,
            "classifier_on_real": ceiling.share if ceiling else None,
            **_confusion(hits, names),
        }
    return rows


def _confusion(hits: ClassHits, names: tuple[str, ...]) -> dict[str, Any]:
    """The class a class's images are most often taken for, by name, and how often."""
    mistaken_for = None if hits.mistaken_for is None else names[hits.mistaken_for]
    return {"mistaken_for": mistaken_for, "mistaken_share": hits.mistaken_share}


def evaluate_gan(
    ckpt: Scored,
    classifier_ckpt: LoadedCheckpoint | None,
    splits: DataSplits,
    strength: str = "strong",
    samples: int = 10000,
    weights: str = "auto",
    ic_repeats: int = 3,
    bins_figure: str | Path | None = None,
) -> dict[str, Any]:
    """Scores of a GAN checkpoint (and, at ``bins_figure``, a PNG of each class's least-drawn
    real bin beside its most-drawn generated one: :func:`mode_bins_figure`). The IC is trained
    ``ic_repeats`` times (seeds 0, 1, …: its split and initial weights) and reported as the mean,
    with each error beside it: one training of the strong IC moves by ±1.5 points from seed to
    seed, as much as neighbouring epochs."""
    if ic_repeats < 1:
        raise ValueError(f"--ic-repeats must be at least 1, got {ic_repeats}")
    if bins_figure is not None and classifier_ckpt is None:
        raise UsageError("the mode-bins figure needs a classifier (--classifier)")
    classifier = classifier_ckpt.classifier() if classifier_ckpt is not None else None
    reference = RealReference(splits, classifier, samples)
    result, generated = score_generator(ckpt, reference, weights)
    if bins_figure is not None:
        _save_bins_figure(reference, generated, ckpt, Path(bins_figure))
    truncation = score_truncation(ckpt, reference, weights)
    if truncation is not None:
        result["truncation"] = truncation
    if strength != "none":
        started = time.perf_counter()
        runs = [
            independent_classifier_test(
                reference.images,
                generated.images,
                IC_STRENGTHS[strength],
                seed=seed,
                device=reference.device,
            )
            for seed in range(ic_repeats)
        ]
        errors = [ic.error for ic in runs]
        result["independent_classifier"] = {
            "error": float(np.mean(errors)),
            "errors": errors,
            "strength": runs[0].strength,
            "train_size": runs[0].train_size,
            "test_size": runs[0].test_size,
            "seconds": time.perf_counter() - started,
        }
    return result


def _save_bins_figure(
    reference: RealReference, generated: GeneratedSamples, ckpt: Scored, path: Path
) -> None:
    figure = mode_bins_figure(
        reference.bins,
        generated.bins,
        reference.images.numpy(),
        reference.features,
        reference.labels,
        generated.images.numpy(),
        generated.features,
        generated.classes,
    )
    figure.save(path)
    log.info("wrote %s (one row a class: %s)", path, ", ".join(ckpt.data_info.class_names))


@torch.no_grad()
def evaluate_classifier(ckpt: LoadedCheckpoint, splits: DataSplits) -> dict[str, Any]:
    """Test accuracy, and per class what it means for a generator judged by this classifier: its
    accuracy (the ceiling of class consistency), the class it most often takes the images for, and
    the variety of the images it recognises (the diversity a generator could keep at full
    consistency; beside it, two halves of all real images, the sampling noise)."""
    classifier = ckpt.classifier().to(single_process_device())
    features, probs = classifier_outputs(classifier, splits.test.scaled())
    labels = splits.test.labels.numpy()
    names = tuple(ckpt.data_info.class_names)
    hits = class_hits(probs, labels, len(names))
    recognised, halves = recognised_diversity(features, labels, probs.argmax(axis=1), len(names))
    per_class = {
        name: {
            "accuracy": hits[k].share,
            **_confusion(hits[k], names),
            "recognised_diversity": recognised.per_class[k],
            "real_halves_diversity": halves.per_class[k],
        }
        for k, name in enumerate(names)
        if hits[k] is not None
    }
    return {
        "epoch": ckpt.epoch,
        "test_accuracy": class_consistency(probs, labels),
        "recognised_diversity_min": recognised.minimum,
        "per_class": per_class,
    }


def full_splits(ckpt: Scored) -> DataSplits:
    data_cfg = ckpt.data
    data_cfg.subset = 0  # evaluation always uses the full splits
    return load_data(data_cfg)


def evaluate(
    checkpoint: str | Path,
    classifier: str | Path | None = None,
    strength: str = "strong",
    samples: int = 10000,
    out: str | Path | None = None,
    weights: str = "auto",
    ic_repeats: int = 3,
    bins_figure: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (or an exported generator, ``.onnx``) on its own data set's test
    split and write the JSON report."""
    checkpoint = Path(checkpoint)
    exported = checkpoint.suffix == ".onnx"
    if exported:
        from .exported import load_exported

        ckpt = load_exported(checkpoint)
    else:
        ckpt = load_checkpoint(checkpoint)
    splits = full_splits(ckpt)
    if ckpt.kind == "classifier":
        result = evaluate_classifier(ckpt, splits)
    else:
        classifier_ckpt = load_checkpoint(classifier) if classifier else None
        result = evaluate_gan(
            ckpt, classifier_ckpt, splits, strength, samples, weights, ic_repeats, bins_figure
        )
        if classifier:
            result["classifier"] = str(classifier)
    result["checkpoint"] = str(checkpoint)
    out_path = Path(out) if out else default_metrics_path(checkpoint, exported)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", out_path)
    return result
