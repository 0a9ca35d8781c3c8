import numpy as np
import pytest

from ganserve.latents import (
    MAX_SEED,
    fresh_seeds,
    latent_from_seed,
    latents_from_seeds,
    parse_seed_ranges,
    path_through,
    slerp,
)


def test_seed_fully_determines_latent_and_matches_randomstate():
    z = latent_from_seed(42, 8)
    assert z.dtype == np.float32 and z.shape == (8,)
    np.testing.assert_array_equal(z, latent_from_seed(42, 8))
    expected = np.random.RandomState(42).uniform(-1, 1, size=8).astype(np.float32)
    np.testing.assert_array_equal(z, expected)
    normal = latent_from_seed(42, 8, "normal")
    np.testing.assert_array_equal(
        normal, np.random.RandomState(42).standard_normal(8).astype(np.float32)
    )
    assert not np.array_equal(latent_from_seed(43, 8), z)


def test_stacked_latents_equal_one_randomstate_per_seed_and_bad_seeds_are_refused():
    seeds = [0, 7, MAX_SEED]
    for prior, draw in (
        ("uniform", lambda r: r.uniform(-1, 1, 5)),
        ("normal", lambda r: r.standard_normal(5)),
    ):
        expected = [draw(np.random.RandomState(s)).astype(np.float32) for s in seeds]
        np.testing.assert_array_equal(latents_from_seeds(seeds, 5, prior), np.stack(expected))
    assert latents_from_seeds([], 5).shape == (0, 5)
    with pytest.raises(ValueError, match="seed must be in"):
        latents_from_seeds([1, MAX_SEED + 1], 5)


def test_fresh_seeds_are_python_ints_in_the_seed_range():
    seeds = fresh_seeds(1000)
    assert len(seeds) == 1000 and all(type(s) is int and 0 <= s <= MAX_SEED for s in seeds)
    assert len(set(seeds)) > 990 and max(seeds) > 2**31  # the whole 32-bit range, not 31 bits
    assert fresh_seeds(0) == []


def test_uniform_prior_stays_in_the_unit_cube():
    z = latents_from_seeds(range(200), 4)
    assert z.shape == (200, 4) and z.min() >= -1 and z.max() <= 1


def test_seed_ranges_parse_like_stylegan():
    assert parse_seed_ranges("0-3,7, 10-11") == [0, 1, 2, 3, 7, 10, 11]
    with pytest.raises(ValueError):
        parse_seed_ranges("5-2")
    with pytest.raises(ValueError):
        parse_seed_ranges(str(2**32))


def test_slerp_keeps_norm_between_equal_norm_vectors_and_hits_endpoints():
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    mid = slerp(a, b, 0.5)
    assert np.linalg.norm(mid) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-7)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-7)


def test_path_through_key_points_visits_each_key():
    keys = [np.zeros(2, np.float32), np.ones(2, np.float32), np.array([2.0, 0.0], np.float32)]
    frames = path_through(keys, 5)
    np.testing.assert_allclose(frames[0], keys[0])
    np.testing.assert_allclose(frames[2], keys[1])
    np.testing.assert_allclose(frames[4], keys[2])
    np.testing.assert_allclose(frames[1], [0.5, 0.5])


def test_latents_are_the_same_from_many_threads_in_any_order():
    from concurrent.futures import ThreadPoolExecutor

    seeds = list(range(500))
    expected = np.stack(
        [np.random.RandomState(s).uniform(-1, 1, size=16).astype(np.float32) for s in seeds]
    )
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda s: latent_from_seed(s, 16), reversed(seeds)))
    np.testing.assert_array_equal(np.stack(rows[::-1]), expected)
