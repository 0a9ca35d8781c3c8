"""Which parts of a class a generator draws too seldom or too often: the number of statistically
different bins (NDB, Richardson & Weiss 2018, "On GANs and GMMs"), class by class.

Each class's real features are cut into bins by k-means; a generator that draws the class as the
data does puts the same share of its samples in each bin. A two-proportion z-test per bin counts
the bins where it does not, and says which way. Mean pairwise distance (within-class diversity)
falls when mass gathers in a few bins, but cannot say which ones; the bins can, and
:func:`mode_bins_figure` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import stats
from sklearn.cluster import KMeans

from .metrics import by_class_name
from .monitor import image_grid

BINS_PER_CLASS = 10  # ~100 real images a bin at 1,000 a class: enough for the z-test's normal law
MIN_PER_BIN = 20  # a class with fewer real images gets fewer bins (at least two)
SIGNIFICANCE = 0.05  # NDB's


@dataclass
class ClassBinScores:
    """One class: each bin's share of the reference images and of the compared ones, which bins
    differ significantly (+1 too many, -1 too few, 0 level) and the Jensen-Shannon divergence
    between the two histograms (bits: 0 = same, 1 = disjoint)."""

    reference_share: np.ndarray
    share: np.ndarray
    direction: np.ndarray

    @property
    def different(self) -> int:
        return int(np.count_nonzero(self.direction))

    @property
    def js_divergence(self) -> float:
        middle = (self.reference_share + self.share) / 2
        return float((_kl_bits(self.reference_share, middle) + _kl_bits(self.share, middle)) / 2)

    @property
    def most_under_drawn(self) -> int:
        """The bin drawn least often relative to the reference."""
        return int(np.argmin(self.share / np.maximum(self.reference_share, 1e-12)))

    @property
    def most_over_drawn(self) -> int:
        return int(np.argmax(self.share / np.maximum(self.reference_share, 1e-12)))

    def as_dict(self) -> dict[str, Any]:
        under, over = self.most_under_drawn, self.most_over_drawn
        return {
            "bins": len(self.reference_share),
            "different_bins": self.different,
            "too_few": int(np.count_nonzero(self.direction < 0)),
            "too_many": int(np.count_nonzero(self.direction > 0)),
            "js_divergence": self.js_divergence,
            "most_under_drawn": _bin_dict(under, self),
            "most_over_drawn": _bin_dict(over, self),
        }


def _bin_dict(b: int, scores: ClassBinScores) -> dict[str, float | int]:
    return {
        "bin": b,
        "real_share": float(scores.reference_share[b]),
        "share": float(scores.share[b]),
    }


def _kl_bits(p: np.ndarray, q: np.ndarray) -> float:
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log2(p[nonzero] / q[nonzero])))


@dataclass
class ModeBins:
    """NDB over every class: per class its :class:`ClassBinScores` (None with too few samples)."""

    per_class: dict[int, ClassBinScores | None]

    @property
    def different(self) -> int:
        return sum(s.different for s in self.per_class.values() if s is not None)

    @property
    def bins(self) -> int:
        return sum(len(s.reference_share) for s in self.per_class.values() if s is not None)

    def as_dict(self, class_names: tuple[str, ...] | None = None) -> dict[str, Any]:
        per_class = {k: None if s is None else s.as_dict() for k, s in self.per_class.items()}
        present = [s for s in self.per_class.values() if s is not None]
        return {
            "different_bins": self.different,
            "bins": self.bins,
            "share_different": self.different / self.bins if self.bins else 0.0,
            "mean_js_divergence": float(np.mean([s.js_divergence for s in present]))
            if present
            else 0.0,
            "per_class": by_class_name(per_class, class_names),
        }


class ClassBins:
    """k-means bins of each class's real features, fitted once, and each bin's share of the
    images they were fitted on (the reference histogram: NDB's training-set proportions).
    ``bins_per_class`` bins, fewer for a class with under :data:`MIN_PER_BIN` images a bin, none
    for a class with under two bins' worth."""

    def __init__(
        self,
        features: np.ndarray,
        classes: np.ndarray,
        num_classes: int,
        bins_per_class: int = BINS_PER_CLASS,
        seed: int = 0,
    ):
        self.means: dict[int, KMeans] = {}
        self.reference: dict[int, tuple[np.ndarray, int]] = {}
        features, classes = np.asarray(features, np.float64), np.asarray(classes)
        for k in range(num_classes):
            rows = features[classes == k]
            bins = min(bins_per_class, len(rows) // MIN_PER_BIN)
            if bins < 2:
                continue
            means = KMeans(bins, n_init=4, random_state=seed).fit(rows)
            self.means[k] = means
            counts = np.bincount(means.labels_, minlength=bins)
            self.reference[k] = (counts / len(rows), len(rows))
        self.num_classes = num_classes

    def assign(self, k: int, features: np.ndarray) -> np.ndarray:
        """The bin of each row of ``features`` (rows of class ``k``)."""
        return self.means[k].predict(np.asarray(features, np.float64))

    def compare(self, features: np.ndarray, classes: np.ndarray) -> ModeBins:
        """Each class's samples in ``features`` (class of each row in ``classes``) against the
        reference histogram of that class."""
        features, classes = np.asarray(features), np.asarray(classes)
        per_class: dict[int, ClassBinScores | None] = {}
        for k in range(self.num_classes):
            rows = features[classes == k]
            if k not in self.means or len(rows) < 2:
                per_class[k] = None
                continue
            reference_share, reference_count = self.reference[k]
            counts = np.bincount(self.assign(k, rows), minlength=len(reference_share))
            share = counts / len(rows)
            direction = _different_proportions(share, len(rows), reference_share, reference_count)
            per_class[k] = ClassBinScores(reference_share, share, direction)
        return ModeBins(per_class)


def _different_proportions(
    share: np.ndarray, count: int, reference_share: np.ndarray, reference_count: int
) -> np.ndarray:
    """Per bin, +1 / -1 where ``share`` is significantly above / below ``reference_share``
    (two-proportion z-test, pooled, two-sided at :data:`SIGNIFICANCE`), else 0."""
    pooled = (share * count + reference_share * reference_count) / (count + reference_count)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / count + 1 / reference_count))
    z = (share - reference_share) / np.maximum(spread, 1e-12)
    p_values = 2 * stats.norm.sf(np.abs(z))
    return np.where(p_values < SIGNIFICANCE, np.sign(z), 0).astype(int)


def mode_bins_figure(
    bins: ClassBins,
    scores: ModeBins,
    real_images: np.ndarray,
    real_features: np.ndarray,
    real_classes: np.ndarray,
    fake_images: np.ndarray,
    fake_features: np.ndarray,
    fake_classes: np.ndarray,
    per_side: int = 8,
) -> Image.Image:
    """One row a class: real images of the bin the generator draws least often (what it misses),
    then generated images of the bin it draws most often (what it makes instead)."""
    rows = []
    if not any(s is not None for s in scores.per_class.values()):
        raise ValueError("no class has enough real images for bins")
    blank = np.full((1, *real_images.shape[1:]), -1.0, np.float32)
    for k, class_scores in scores.per_class.items():
        if class_scores is None:
            continue
        real_k, fake_k = real_classes == k, fake_classes == k
        real_bins = bins.assign(k, real_features[real_k])
        fake_bins = bins.assign(k, fake_features[fake_k])
        missed = real_images[real_k][real_bins == class_scores.most_under_drawn][:per_side]
        made = fake_images[fake_k][fake_bins == class_scores.most_over_drawn][:per_side]
        rows.append(
            np.concatenate([_pad(missed, per_side, blank), blank, _pad(made, per_side, blank)])
        )
    return image_grid(np.concatenate(rows), columns=2 * per_side + 1)


def _pad(images: np.ndarray, count: int, blank: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    return np.concatenate([images] + [blank] * (count - len(images)))
