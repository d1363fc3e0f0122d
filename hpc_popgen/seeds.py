"""Seeds derived from (master seed, keys), so a unit's randomness never depends on scheduling."""

from __future__ import annotations

import numpy as np

MAX_SEED = 2**32 - 1  # msprime and TensorFlow accept seeds in [1, 2**32 - 1]


def seed_sequence(master: int, *keys: int) -> np.random.SeedSequence:
    """A SeedSequence for one unit, e.g. ``seed_sequence(seed, replicate_index)``."""
    return np.random.SeedSequence(entropy=int(master), spawn_key=tuple(int(k) for k in keys))


def derive_seed(master: int, *keys: int) -> int:
    """One integer seed in [1, 2**32 - 1] for (master, *keys); stable across numpy versions."""
    word = int(seed_sequence(master, *keys).generate_state(1, dtype=np.uint32)[0])
    return word % MAX_SEED + 1


def rng(master: int, *keys: int) -> np.random.Generator:
    """A numpy Generator for one unit."""
    return np.random.default_rng(seed_sequence(master, *keys))
