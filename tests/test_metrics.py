import numpy as np
import pytest
import torch

from ganserve.training.metrics import (
    WEAK_IC,
    class_consistency,
    class_hits,
    class_manifold_scores,
    feature_statistics,
    frechet_distance,
    independent_classifier_test,
    recognised_diversity,
    truncation_response,
)


def test_frechet_distance_of_identical_sets_is_zero():
    features = np.random.RandomState(0).normal(size=(500, 6))
    stats = feature_statistics(features)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form_for_known_gaussians():
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 9.0])
    # ||mu1-mu2||^2 + sum(a + b - 2 sqrt(ab)) = 9 + (1+4-4) + (4+1-4) + 0
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(11.0, abs=1e-6)


def test_frechet_distance_grows_with_separation():
    rng = np.random.RandomState(1)
    base = feature_statistics(rng.normal(size=(2000, 4)))
    near = feature_statistics(rng.normal(loc=0.1, size=(2000, 4)))
    far = feature_statistics(rng.normal(loc=2.0, size=(2000, 4)))
    assert frechet_distance(*base, *near) < frechet_distance(*base, *far)
    assert frechet_distance(*base, *far) == pytest.approx(16.0, rel=0.1)


def _images(n, value, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 0.2 + value).clamp(-1, 1)


def test_independent_classifier_cannot_tell_identical_distributions_apart():
    real = _images(400, 0.0, seed=1)
    fake = _images(400, 0.0, seed=2)  # same distribution, other draws
    error = independent_classifier_test(real, fake, WEAK_IC, seed=0).error
    assert 0.35 <= error <= 0.65


def test_independent_classifier_separates_disjoint_sets():
    real = _images(400, 0.5, seed=1)
    fake = _images(400, -0.5, seed=2)
    result = independent_classifier_test(real, fake, WEAK_IC, seed=0)
    assert result.error <= 0.02
    assert result.train_size == 400 and result.test_size == 400


def test_independent_classifier_does_not_disturb_the_callers_random_stream():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    independent_classifier_test(_images(8, 0, 1), _images(8, 0, 2), WEAK_IC)
    torch.testing.assert_close(torch.rand(3), expected)


def test_class_consistency_counts_argmax_hits():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert class_consistency(probs, np.array([0, 1, 1, 1])) == 0.75


def test_class_hits_give_each_class_its_consistency_and_its_main_confusion():
    probs = np.eye(3)[[0, 0, 2, 1, 1, 1, 0, 2]]  # predicted classes
    requested = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    hits = class_hits(probs, requested, 4)
    assert (hits[0].share, hits[0].mistaken_for, hits[0].mistaken_share) == (2 / 3, 2, 1 / 3)
    assert (hits[1].share, hits[1].mistaken_for, hits[1].mistaken_share) == (0.75, 0, 0.25)
    assert (hits[2].share, hits[2].mistaken_for, hits[2].mistaken_share) == (1.0, None, 0.0)
    assert hits[3] is None  # no image of that class


def test_recognised_diversity_is_the_variety_left_in_what_the_classifier_gets_right():
    rng = np.random.default_rng(0)
    # Class 0 comes in two far-apart kinds and the classifier knows only one (it takes the other
    # for class 1); class 1 is one kind, all recognised.
    near, far, ones = (rng.normal(c, 1.0, size=(400, 2)) for c in ((0, 0), (20, 0), (0, 40)))
    features = np.concatenate([near, far, ones])
    labels = np.array([0] * 800 + [1] * 400)
    predicted = np.array([0] * 400 + [1] * 400 + [1] * 400)
    order = rng.permutation(len(labels))
    recognised, halves = recognised_diversity(
        features[order], labels[order], predicted[order], num_classes=2
    )
    assert recognised.per_class[0] < 0.2  # one kind of two: little of the class's variety
    assert recognised.per_class[1] == pytest.approx(1.0, abs=0.1)
    assert recognised.minimum == recognised.per_class[0]
    for k in (0, 1):  # two halves of the same data differ by sampling noise alone
        assert halves.per_class[k] == pytest.approx(1.0, abs=0.1)


def test_manifold_scores_see_a_class_that_lost_its_variety_and_a_class_that_kept_it():
    rng = np.random.RandomState(0)
    real = rng.normal(size=(400, 8)).astype(np.float32)
    real_classes = np.repeat([0, 1], 200)
    # Class 0: a fresh draw of the same distribution. Class 1: its centre only (a quarter of the
    # spread): every sample plausible, most of the real variety missing.
    fake = np.concatenate([rng.normal(size=(200, 8)), 0.25 * rng.normal(size=(200, 8))])
    scores = class_manifold_scores(fake, real_classes, real, real_classes, num_classes=3)
    kept, lost = scores.per_class[0], scores.per_class[1]
    assert scores.per_class[2] is None  # no samples of class 2 on either side
    assert kept["recall"] > 0.7 and kept["coverage"] > 0.7 and kept["precision"] > 0.7
    assert lost["precision"] > 0.95 and lost["density"] > 2  # inside, packed into its centre...
    assert lost["recall"] < 0.3 and lost["coverage"] < kept["coverage"] - 0.3  # ...not covering it
    assert scores.minimum("recall") == 0.0  # the absent class counts as nothing covered
    report = scores.as_dict(("a", "b", "c"))
    assert report["per_class"]["b"] == lost and report["nearest_k"] == 5


class _TemplateGenerator(torch.nn.Module):
    """Class k's image: its template, plus z's noise (``fading=False``) or scaled by z's mean
    magnitude (``fading=True``: the image fades as truncation shrinks z)."""

    def __init__(self, templates: torch.Tensor, fading: bool):
        super().__init__()
        self.templates = torch.nn.Parameter(templates, requires_grad=False)
        self.latent_dim, self.conditional, self.fading = templates.shape[1], True, fading

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        template = self.templates[labels]
        if self.fading:
            image = template * z.abs().mean(dim=1, keepdim=True) * 2
        else:
            image = template + 0.8 * z
        return image.view(-1, 1, 1, self.latent_dim)


class _TemplateClassifier(torch.nn.Module):
    """Features: the image; logits: its inner product with each class's template."""

    def __init__(self, templates: torch.Tensor):
        super().__init__()
        self.templates = torch.nn.Parameter(templates, requires_grad=False)

    def forward_with_activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        flat = images.flatten(1)
        return [flat, 4 * flat @ self.templates.T]


def test_truncation_response_tells_a_model_that_gets_typical_from_one_that_fades():
    torch.manual_seed(0)
    templates = torch.nn.functional.normalize(torch.randn(4, 32), dim=1) * 2
    classifier = _TemplateClassifier(templates)
    typical = truncation_response(
        _TemplateGenerator(templates, False), classifier, "uniform", 4, 32
    )
    fading = truncation_response(_TemplateGenerator(templates, True), classifier, "uniform", 4, 32)
    for report in (typical, fading):
        assert [row["psi"] for row in report["psis"]] == [1.0, 0.7, 0.5, 0.3]
        variety = [row["variety"] for row in report["psis"]]
        assert variety == sorted(variety, reverse=True)  # both lose variety as psi falls
    confidence = [row["confidence"] for row in typical["psis"]]
    assert confidence == sorted(confidence) and typical["typical_when_truncated"]
    faded = [row["confidence"] for row in fading["psis"]]
    assert faded == sorted(faded, reverse=True) and not fading["typical_when_truncated"]
