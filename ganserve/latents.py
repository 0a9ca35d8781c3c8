"""Seed → latent, the same from training, the service and the SDK (NumPy only, no torch).

A seed fully determines a latent through ``np.random.RandomState(seed)``, as in NVlabs/stylegan3,
so the same request gives the same latent whatever framework or backend runs the generator.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Sequence
from enum import Enum

import numpy as np

from ganserve.errors import UsageError

MAX_SEED = 2**32 - 1
# Re-seeding one RandomState gives the same numbers as a new RandomState(seed) at a fraction of the
# cost (constructing one takes ~85 µs); one per thread, as callers may run in several threads.
_per_thread = threading.local()


def _random_state(seed: int) -> np.random.RandomState:
    state = getattr(_per_thread, "state", None)
    if state is None:
        state = _per_thread.state = np.random.RandomState()
    state.seed(seed)
    return state


class Prior(str, Enum):
    """The latent distribution a generator was trained with."""

    UNIFORM = "uniform"  # uniform on [-1, 1]^d, as in the small-latent studies
    NORMAL = "normal"  # standard normal


def latent_from_seed(seed: int, latent_dim: int, prior: Prior | str = Prior.UNIFORM) -> np.ndarray:
    """The float32 latent vector of shape ``[latent_dim]`` that ``seed`` stands for."""
    return latents_from_seeds((seed,), latent_dim, prior)[0]


def latents_from_seeds(
    seeds: Iterable[int], latent_dim: int, prior: Prior | str = Prior.UNIFORM
) -> np.ndarray:
    """Stacked latents ``[len(seeds), latent_dim]`` for ``seeds``."""
    seeds = list(seeds)
    uniform = Prior(prior) is Prior.UNIFORM
    out = np.empty((len(seeds), latent_dim), dtype=np.float32)
    for row, seed in enumerate(seeds):
        if not 0 <= int(seed) <= MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
        rng = _random_state(int(seed))
        # Drawn in float64 as RandomState always does, then rounded to float32 on assignment.
        out[row] = (
            rng.uniform(-1.0, 1.0, size=latent_dim) if uniform else rng.standard_normal(latent_dim)
        )
    return out


def fresh_seeds(count: int) -> list[int]:
    """``count`` seeds from the system's secure random source, in one read (``secrets`` asks the
    system once per number)."""
    return np.frombuffer(secrets.token_bytes(4 * count), dtype="<u4").tolist()


def truncate(latents: np.ndarray, psi: float) -> np.ndarray:
    """The truncation trick: latents pulled toward the prior's centre, ``z' = psi · z``.

    Both priors are centred at 0 (the mean of uniform [-1, 1]^d and of the standard normal), so the
    BigGAN/StyleGAN form ``centre + psi · (z - centre)`` is a plain scaling. For the uniform prior
    it maps the cube onto the smaller cube [-psi, psi]^d: every truncated latent stays inside the
    support the generator was trained on, and psi = 1 is the identity, bit for bit. Scaling rather
    than BigGAN's resampling keeps a seed's latent continuous in psi (a psi sweep of one seed
    morphs one image toward the typical one) and needs no rejection loop.
    """
    if not 0.0 < psi <= 1.0:
        raise ValueError(f"psi must be in (0, 1], got {psi}")
    if psi == 1.0:
        return latents
    return (np.float32(psi) * latents).astype(np.float32)


def parse_seed_ranges(text: str) -> list[int]:
    """``"0-3,7,10-11"`` → ``[0, 1, 2, 3, 7, 10, 11]`` (ranges are inclusive, as in stylegan3)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.replace("-", "").isdigit():
            raise UsageError(f"not a seed or seed range: {part!r} (use e.g. 0-99,120)")
        if "-" in part:
            lo_text, hi_text = part.split("-", 1)
            lo, hi = int(lo_text), int(hi_text)
            if hi < lo:
                raise UsageError(f"seed range {part!r} ends before it starts")
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(part))
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise UsageError(f"seed {seed} outside [0, {MAX_SEED}]")
    return seeds


def lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Straight-line interpolation between latents."""
    return ((1.0 - t) * a + t * b).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation; keeps the norm profile of high-dimensional normal latents."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norm_a, norm_b = np.linalg.norm(a64), np.linalg.norm(b64)
    if norm_a == 0.0 or norm_b == 0.0:
        return lerp(a, b, t)
    cos = np.clip(np.dot(a64 / norm_a, b64 / norm_b), -1.0, 1.0)
    omega = np.arccos(cos)
    if omega < 1e-6:
        return lerp(a, b, t)
    s = np.sin(omega)
    out = (np.sin((1.0 - t) * omega) / s) * a64 + (np.sin(t * omega) / s) * b64
    return out.astype(np.float32)


def path_through(keys: Sequence[np.ndarray], steps: int, method: str = "lerp") -> np.ndarray:
    """``steps`` latents evenly spaced along the piecewise path through ``keys`` (ends included)."""
    if len(keys) < 2:
        raise ValueError("an interpolation path needs at least two key latents")
    if steps < 2:
        raise ValueError("an interpolation path needs at least two steps")
    interpolate = slerp if method == "slerp" else lerp
    segments = len(keys) - 1
    frames = []
    for i in range(steps):
        position = i * segments / (steps - 1)
        segment = min(int(position), segments - 1)
        frames.append(interpolate(keys[segment], keys[segment + 1], position - segment))
    return np.stack(frames)
