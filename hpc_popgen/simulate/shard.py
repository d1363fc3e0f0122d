"""Simulate and image one shard's replicates: the per-image arrays the store's writer takes."""

from __future__ import annotations

import logging

import numpy as np

from ..images import image_and_sites
from ..store import empty_shard
from .forward import simulate_forward
from .plan import Plan
from .replicate import simulate_replicate

log = logging.getLogger(__name__)


def simulate_range(plan: Plan, start: int, stop: int) -> dict[str, np.ndarray]:
    """Replicates [start, stop) -> {images, s, class_index, onset, ..., attempts, split} arrays."""
    out = empty_shard(stop - start, plan.image.size)
    demography = plan.sim.demography.msprime() if plan.engine == "msprime" else None
    centre = plan.sim.position * plan.sim.sequence_length
    for k, i in enumerate(range(start, stop)):
        seed = plan.replicate_seed(i)
        S, cls = plan.s_of(i, seed)
        forward = plan.forward_of(seed)
        if forward is not None:
            fwd = simulate_forward(forward, S, seed, end_frequency=plan.end_frequency(S))
            matrix, positions, attempts = fwd.matrix, fwd.positions, fwd.attempts
            start_freq, end_freq = fwd.start_frequency, fwd.frequency
        else:
            rep = simulate_replicate(plan.sim, S, seed, demography)
            matrix, positions, attempts = rep.matrix, rep.positions, rep.attempts
            start_freq = rep.timing.start_frequency if rep.timing else 0.0
            end_freq = rep.timing.end_frequency if rep.timing else 0.0
        img, n_sites = image_and_sites(matrix, positions, plan.image, centre=centre)
        out["images"][k] = img
        out["s"][k] = S
        out["class_index"][k] = cls
        out["onset"][k] = plan.sim.onset
        out["start_freq"][k] = start_freq
        out["end_freq"][k] = end_freq
        out["n_sites_raw"][k] = matrix.shape[1]
        out["n_sites"][k] = n_sites
        out["seed"][k] = seed
        out["attempts"][k] = attempts
        out["split"][k] = plan.split_of(seed)
        out["model_index"][k] = plan.model_of(seed)
    return out
