"""NDB (number of statistically different bins), class by class: known answers on blobs."""

import numpy as np
import pytest

from ganserve.training.mode_bins import ClassBins, mode_bins_figure
from ganserve.training.monitor import to_uint8

CENTRES = np.array([[0.0, 0, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0]])  # three kinds of one class


def _blobs(rng: np.random.RandomState, kinds: list[int], per_kind: int) -> np.ndarray:
    return np.concatenate([CENTRES[k] + rng.normal(size=(per_kind, 4)) for k in kinds])


def test_mode_bins_find_the_kind_a_generator_leaves_out_and_pass_one_that_draws_like_the_data():
    rng = np.random.RandomState(0)
    # Class 0 has three kinds, class 1 two; the bins are cut from one real sample...
    real = np.concatenate([_blobs(rng, [0, 1, 2], 300), _blobs(rng, [0, 1], 450)])
    real_classes = np.repeat([0, 1], 900)
    bins = ClassBins(real, real_classes, num_classes=3, bins_per_class=3)
    assert bins.means.keys() == {0, 1}  # class 2 has no images: no bins
    # ...class 0's generated samples miss kind 2, class 1's are a fresh draw of the data.
    fake = np.concatenate([_blobs(rng, [0, 1], 300), _blobs(rng, [0, 1], 300)])
    fake_classes = np.repeat([0, 1], 600)
    scores = bins.compare(fake, fake_classes)

    missing_bin = int(bins.assign(0, CENTRES[2:3])[0])
    left_out = scores.per_class[0]
    assert left_out.share[missing_bin] == 0 and left_out.reference_share[missing_bin] > 0.3
    assert left_out.direction[missing_bin] == -1 and left_out.most_under_drawn == missing_bin
    assert (left_out.direction == 1).sum() == 2  # the two kinds drawn take its share
    assert left_out.js_divergence > 0.1
    level = scores.per_class[1]
    assert level.different == 0 and level.js_divergence < 0.01
    assert scores.per_class[2] is None
    assert scores.different == left_out.different == 3 and scores.bins == 6

    report = scores.as_dict(("a", "b", "c"))
    assert report["different_bins"] == 3 and report["share_different"] == pytest.approx(0.5)
    assert report["per_class"]["c"] is None
    row = report["per_class"]["a"]
    assert (row["bins"], row["too_few"], row["too_many"]) == (3, 1, 2)
    assert row["most_under_drawn"] == {
        "bin": missing_bin,
        "real_share": pytest.approx(1 / 3, abs=0.01),
        "share": 0.0,
    }


def test_bins_of_a_fresh_real_sample_differ_about_as_often_as_the_test_allows():
    """The z-test at 5%: samples of the data itself are flagged in about 5% of bins, not 0 (a
    test that never fires) and not most (one that always does)."""
    rng = np.random.RandomState(1)
    real = rng.normal(size=(2000, 6))
    bins = ClassBins(real, np.zeros(2000, int), num_classes=1, bins_per_class=10)
    flagged = [
        bins.compare(rng.normal(size=(1000, 6)), np.zeros(1000, int)).different for _ in range(60)
    ]
    assert 0.01 < np.mean(flagged) / 10 < 0.10


def test_a_small_class_gets_fewer_bins_and_a_tiny_one_none():
    rng = np.random.RandomState(2)
    real = rng.normal(size=(100, 3))
    classes = np.array([0] * 70 + [1] * 25 + [2] * 5)
    bins = ClassBins(real, classes, num_classes=3, bins_per_class=10)
    assert bins.means.keys() == {0} and bins.means[0].n_clusters == 3  # 70 // 20 images a bin
    scores = bins.compare(real, classes)
    assert scores.per_class[1] is None and scores.per_class[2] is None and scores.bins == 3


def test_the_figure_shows_the_missing_kind_beside_what_is_drawn_instead():
    rng = np.random.RandomState(3)
    kinds_real = np.repeat([0, 1, 2], 300)
    real = _blobs(rng, [0, 1, 2], 300)
    bins = ClassBins(real, np.zeros(900, int), num_classes=1, bins_per_class=3)
    kinds_fake = np.repeat([0, 1], [100, 500])  # kind 2 missing, kind 1 drawn too often
    fake = np.concatenate(
        [CENTRES[0] + rng.normal(size=(100, 4)), CENTRES[1] + rng.normal(size=(500, 4))]
    )
    scores = bins.compare(fake, np.zeros(600, int))

    def images(kinds):  # a flat 4x4 image whose grey level names its kind
        return np.repeat((-1 + 0.9 * kinds)[:, None, None, None], 16, axis=1).reshape(-1, 1, 4, 4)

    figure = np.asarray(
        mode_bins_figure(
            bins, scores, images(kinds_real), real, np.zeros(900, int),
            images(kinds_fake), fake, np.zeros(600, int), per_side=3,
        )
    )  # fmt: skip
    assert figure.shape == (2 + 6, 2 + 7 * 6)  # one row, 3 real + a gap + 3 generated, 2px gutter
    level = to_uint8(images(np.array([0, 1, 2])))[:, 0, 0, 0]
    tiles = [figure[2:6, 2 + 6 * i : 6 + 6 * i] for i in range(7)]
    assert all((t == level[2]).all() for t in tiles[:3])  # the kind it never draws
    assert (tiles[3] == 0).all()  # the gap
    assert all((t == level[1]).all() for t in tiles[4:])  # the kind it draws too often
