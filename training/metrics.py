"""Quality metrics: the studies' independent-classifier test, a classifier-feature Fréchet distance,
and class consistency of conditional generators."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import linalg
from torch import nn

from ganserve.latents import latents_from_seeds, truncate

from .models import Classifier, Generator


@dataclass(frozen=True)
class ICStrength:
    """How hard the independent classifier tries: the studies' "weak" (every few epochs) or "strong"."""

    name: str
    max_per_side: int
    width: float
    steps: int  # optimiser steps, not epochs: a small set must not leave the classifier untrained


WEAK_IC = ICStrength("weak", max_per_side=2000, width=0.25, steps=300)
STRONG_IC = ICStrength("strong", max_per_side=10000, width=0.5, steps=2000)


@dataclass
class ICResult:
    error: float  # test error of the real-vs-fake classifier; 0.5 means indistinguishable
    train_size: int
    test_size: int
    strength: str


def independent_classifier_test(
    real: torch.Tensor,
    fake: torch.Tensor,
    strength: ICStrength = WEAK_IC,
    seed: int = 0,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> ICResult:
    """Train a fresh CNN to tell ``real`` from ``fake`` images ([-1, 1]) and report its test error.

    Each side is split 50/50 into train and test halves; the sides are balanced, so chance is 50%.
    Runs under its own RNG so calling it never changes the caller's random stream. The CNN trains
    on ``device``; the images may live anywhere (batches are moved there).
    """
    n = min(len(real), len(fake), strength.max_per_side)
    if n < 4:
        raise ValueError(f"the independent classifier needs at least 4 images per side, got {n}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        order = torch.randperm(n)
        half = n // 2
        train_idx, test_idx = order[:half], order[half : 2 * half]
        x_train = torch.cat([real[:n][train_idx], fake[:n][train_idx]])
        y_train = torch.cat([torch.ones(half), torch.zeros(half)]).long()
        x_test = torch.cat([real[:n][test_idx], fake[:n][test_idx]])
        y_test = torch.cat([torch.ones(half), torch.zeros(half)]).long()

        model = Classifier(real.shape[1], 2, width=strength.width).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        step = 0
        while step < strength.steps:
            perm = torch.randperm(len(x_train))
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x_train[idx].to(device)), y_train[idx].to(device)).backward()
                optimizer.step()
                step += 1
                if step == strength.steps:
                    break
        model.eval()
        with torch.no_grad():
            predictions = torch.cat(
                [
                    model(x_test[s : s + 512].to(device)).argmax(1).cpu()
                    for s in range(0, len(x_test), 512)
                ]
            )
    error = float((predictions != y_test).float().mean())
    return ICResult(
        error=error, train_size=len(x_train), test_size=len(x_test), strength=strength.name
    )


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``features`` ``[N, D]`` (float64)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2) (as in FID)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(
        max(0.0, diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    )


@torch.no_grad()
def classifier_outputs(
    classifier: Classifier, images: torch.Tensor, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features ``[N, D]`` and class probabilities ``[N, K]`` for ``images``, computed
    on the classifier's device."""
    classifier.eval()
    device = _device_of(classifier)
    features, probabilities = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        activations = classifier.forward_with_activations(batch)
        features.append(activations[-2].cpu().numpy())
        probabilities.append(torch.softmax(activations[-1], dim=1).cpu().numpy())
    return np.concatenate(features), np.concatenate(probabilities)


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def class_consistency(probabilities: np.ndarray, requested: np.ndarray) -> float:
    """Share of samples whose most likely class is the requested one."""
    return float((probabilities.argmax(axis=1) == requested).mean())


@dataclass
class ClassHits:
    """How one class's images are classified: the share put in the class itself, and the class
    they are most often put in instead (``None`` when never wrong) with its share."""

    share: float
    mistaken_for: int | None
    mistaken_share: float


def class_hits(
    probabilities: np.ndarray, classes: np.ndarray, num_classes: int
) -> dict[int, ClassHits | None]:
    """Per class ``k`` of ``classes`` (requested labels, or real labels for the classifier's own
    accuracy): class consistency within ``k`` and its most frequent confusion; ``None`` for a class
    with no images."""
    predicted = probabilities.argmax(axis=1)
    classes = np.asarray(classes)
    hits: dict[int, ClassHits | None] = {}
    for k in range(num_classes):
        mine = predicted[classes == k]
        if len(mine) == 0:
            hits[k] = None
            continue
        counts = np.bincount(mine, minlength=num_classes)
        wrong = counts.copy()
        wrong[k] = 0
        other = int(wrong.argmax())
        hits[k] = ClassHits(
            share=float(counts[k]) / len(mine),
            mistaken_for=other if wrong[other] else None,
            mistaken_share=float(wrong[other]) / len(mine),
        )
    return hits


@torch.no_grad()
def generate_samples(
    generator: Generator,
    count: int,
    prior: str,
    num_classes: int,
    first_seed: int = 0,
    batch_size: int = 512,
    psi: float = 1.0,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """``count`` images from seeds ``first_seed…``; conditional models get labels 0, 1, 2, … cyclically.
    ``psi`` < 1 truncates the latents as the service does. Generated on the generator's device,
    returned on the CPU."""
    generator.eval()
    device = _device_of(generator)
    seeds = range(first_seed, first_seed + count)
    latents = torch.from_numpy(
        truncate(latents_from_seeds(seeds, generator.latent_dim, prior), psi)
    )
    labels = np.arange(count) % num_classes if generator.conditional else None
    images = []
    for start in range(0, count, batch_size):
        batch_labels = (
            None
            if labels is None
            else torch.from_numpy(labels[start : start + batch_size]).to(device)
        )
        images.append(generator(latents[start : start + batch_size].to(device), batch_labels).cpu())
    return torch.cat(images), labels


TRUNCATION_PSIS = (1.0, 0.7, 0.5, 0.3)


@torch.no_grad()
def truncation_response(
    generator: Generator,
    classifier: Classifier,
    prior: str,
    num_classes: int,
    per_class: int = 64,
    psis: tuple[float, ...] = TRUNCATION_PSIS,
) -> dict[str, Any]:
    """What truncation (``z' = psi · z``, the service's psi) does to a conditional generator: for
    each psi, the same ``per_class`` seeds of every class, scored by ``classifier``: its mean
    confidence in the asked-for class, class consistency, within-class variety (mean pairwise
    distance of its features, averaged over classes) and the mean pixel in [0, 1]. Truncation is
    meant to trade variety for typical images; ``typical_when_truncated`` says whether the
    confidence at the smallest psi is at least that at psi 1 (a model whose garments fade as z
    shrinks fails it)."""
    rows = []
    for psi in psis:  # the same seeds at every psi
        images, labels = generate_samples(
            generator, per_class * num_classes, prior, num_classes, psi=psi
        )
        features, probabilities = classifier_outputs(classifier, images)
        variety = [mean_pairwise_distance(features[labels == k]) for k in range(num_classes)]
        rows.append(
            {
                "psi": psi,
                "confidence": float(probabilities[np.arange(len(labels)), labels].mean()),
                "class_consistency": class_consistency(probabilities, labels),
                "variety": float(np.mean(variety)),
                "mean_pixel": float(images.add(1).div(2).mean()),
            }
        )
    return {
        "per_class": per_class,
        "psis": rows,
        "typical_when_truncated": rows[-1]["confidence"] >= rows[0]["confidence"],
    }


def mean_pairwise_distance(vectors: torch.Tensor | np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of rows of ``vectors`` ``[N, D]`` (N ≥ 2)."""
    x = torch.as_tensor(np.asarray(vectors), dtype=torch.float64).flatten(1)
    if len(x) < 2:
        raise ValueError("pairwise distance needs at least two vectors")
    return float(torch.pdist(x).mean())


def by_class_name(per_class: dict[int, Any], class_names: tuple[str, ...] | None) -> dict:
    """``per_class`` keyed by class name (by the class index as text without names)."""
    return {(class_names[k] if class_names else str(k)): v for k, v in per_class.items()}


def _class_samples(
    fake: np.ndarray,
    fake_classes: np.ndarray,
    real: np.ndarray,
    real_classes: np.ndarray,
    num_classes: int,
    max_per_class: int,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(class, its generated rows, its real rows), at most ``max_per_class`` of each."""
    fake_classes, real_classes = np.asarray(fake_classes), np.asarray(real_classes)
    for k in range(num_classes):
        yield k, fake[fake_classes == k][:max_per_class], real[real_classes == k][:max_per_class]


@dataclass
class Diversity:
    """Within-class diversity: each class's mean pairwise distance among generated samples divided
    by the same among real samples of that class (1.0 = as varied as the data; a generator that
    ignores its latent scores near 0). ``None`` for a class with fewer than two samples."""

    per_class: dict[int, float | None]

    @property
    def present(self) -> list[float]:
        return [v for v in self.per_class.values() if v is not None]

    @property
    def minimum(self) -> float:
        """The worst class; a class the generator never produces counts as 0."""
        values = [0.0 if v is None else v for v in self.per_class.values()]
        return min(values) if values else 0.0

    @property
    def mean(self) -> float:
        return float(np.mean(self.present)) if self.present else 0.0

    def as_dict(self, class_names: tuple[str, ...] | None = None) -> dict:
        return {
            "per_class": by_class_name(self.per_class, class_names),
            "min": self.minimum,
            "mean": self.mean,
        }


def within_class_diversity(
    fake: torch.Tensor | np.ndarray,
    fake_classes: np.ndarray,
    real: torch.Tensor | np.ndarray,
    real_classes: np.ndarray,
    num_classes: int,
    max_per_class: int = 500,
) -> Diversity:
    """Per-class diversity ratio of ``fake`` against ``real`` (pixels or features, ``[N, ...]``).

    ``fake_classes`` are the requested labels of a conditional generator, or the classifier's
    predictions for an unconditional one; at most ``max_per_class`` of each side are compared.
    """
    fake_np, real_np = np.asarray(fake), np.asarray(real)
    fake_np = fake_np.reshape(len(fake_np), -1)
    real_np = real_np.reshape(len(real_np), -1)
    per_class: dict[int, float | None] = {}
    for k, f, r in _class_samples(
        fake_np, fake_classes, real_np, real_classes, num_classes, max_per_class
    ):
        if len(f) < 2 or len(r) < 2:
            per_class[k] = None
            continue
        per_class[k] = mean_pairwise_distance(f) / max(mean_pairwise_distance(r), 1e-12)
    return Diversity(per_class)


def recognised_diversity(
    features: np.ndarray, labels: np.ndarray, predicted: np.ndarray, num_classes: int
) -> tuple[Diversity, Diversity]:
    """What a generator whose every sample the classifier recognises could keep of a class's
    variety, and the yardstick beside it: per class, the diversity of the real images of the first
    half that the classifier gets right against all real images of the second half, and of all of
    the first half against the second (sampling noise alone: near 1). Halves, so that no image is
    compared with itself."""
    features, labels, predicted = np.asarray(features), np.asarray(labels), np.asarray(predicted)
    half = len(labels) // 2
    first, first_labels = features[:half], labels[:half]
    second, second_labels = features[half:], labels[half:]
    right = predicted[:half] == first_labels
    return (
        within_class_diversity(
            first[right], first_labels[right], second, second_labels, num_classes
        ),
        within_class_diversity(first, first_labels, second, second_labels, num_classes),
    )


MANIFOLD_NEAREST_K = 5  # Naeem et al.'s choice for density and coverage


@dataclass
class ManifoldScores:
    """Per class, how generated and real samples cover each other (k-nearest-neighbour manifolds:
    Kynkäänniemi et al. 2019's precision and recall, Naeem et al. 2020's density and coverage,
    computed by the authors' ``prdc``): precision is the share of generated samples inside the
    real manifold (fidelity), recall the share of real samples inside the generated one, coverage
    the share of real samples with a generated sample among their nearest real neighbours. Recall
    and coverage fall when a class's variety is missing, whichever part of it. ``None`` for a
    class with too few samples on either side."""

    per_class: dict[int, dict[str, float] | None]
    nearest_k: int

    def minimum(self, score: str) -> float:
        values = [0.0 if v is None else v[score] for v in self.per_class.values()]
        return min(values) if values else 0.0

    def as_dict(self, class_names: tuple[str, ...] | None = None) -> dict:
        return {
            "nearest_k": self.nearest_k,
            "per_class": by_class_name(self.per_class, class_names),
            "min_recall": self.minimum("recall"),
            "min_coverage": self.minimum("coverage"),
        }


def class_manifold_scores(
    fake: np.ndarray,
    fake_classes: np.ndarray,
    real: np.ndarray,
    real_classes: np.ndarray,
    num_classes: int,
    nearest_k: int = MANIFOLD_NEAREST_K,
    max_per_class: int = 1000,
) -> ManifoldScores:
    """:class:`ManifoldScores` of ``fake`` against ``real`` features, class by class (at most
    ``max_per_class`` a side: the scores depend on the sample size, so compare equal sizes)."""
    import contextlib
    import io

    from prdc import compute_prdc

    fake, real = np.asarray(fake, np.float32), np.asarray(real, np.float32)
    per_class: dict[int, dict[str, float] | None] = {}
    for k, f, r in _class_samples(
        fake, fake_classes, real, real_classes, num_classes, max_per_class
    ):
        if min(len(f), len(r)) < nearest_k + 2:  # each side needs k neighbours besides itself
            per_class[k] = None
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
            scores = compute_prdc(real_features=r, fake_features=f, nearest_k=nearest_k)
        per_class[k] = {name: float(value) for name, value in scores.items()}
    return ManifoldScores(per_class, nearest_k)
