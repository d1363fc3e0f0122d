"""Simulate and image one shard's replicates: the per-image arrays the store's writer takes.

With classes (or a prior on a grid) on msprime, each class's (grid value's) replicates of the range come
from one msprime call (its set-up paid once per shard and class); the batch seeds derive from the stage
seed, the range's first image and the class, so a shard's content depends on the plan and its range
alone, never on the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from ..images import image_and_sites
from ..store import empty_shard
from .forward import simulate_forward
from .plan import Plan
from .replicate import Replicate, simulate_batch, simulate_replicate

log = logging.getLogger(__name__)


def _batched(plan: Plan, start: int, stop: int, seeds: list[int], S: np.ndarray,
             demography) -> Iterator[tuple[int, Replicate, int, int]]:
    """(k, replicate, batch seed, batch index) for every image k of [start, stop), batch by batch (one per
    class, or per grid value of the prior)."""
    groups: dict[int, list[int]] = {}
    for k, i in enumerate(range(start, stop)):
        groups.setdefault(plan.batch_key(i, seeds[k]), []).append(k)
    for key in sorted(groups):
        ks = groups[key]
        sim = plan.part(key).sim if plan.classes is not None else plan.sim  # the key is the class (or grid value)
        members = simulate_batch(sim, float(S[ks[0]]), [seeds[k] for k in ks],
                                 lambda p, key=key: plan.batch_seed(start, key, p), demography)
        for m in members:
            yield ks[m.position], m.replicate, m.batch_seed, m.batch_index


def _alone(plan: Plan, start: int, stop: int, seeds: list[int], demography) -> Iterator[tuple[int, Replicate, int, int]]:
    """(k, replicate, 0, 0) for every image k of [start, stop), each replicate from its own engine call."""
    for k, i in enumerate(range(start, stop)):
        S, cls = plan.s_of(i, seeds[k])
        yield k, simulate_replicate(plan.part(cls).sim, S, seeds[k], demography), 0, 0


def _drawn(plan: Plan, start: int, stop: int, seeds: list[int],
           model_index: np.ndarray) -> Iterator[tuple[int, Replicate, int, int]]:
    """(k, replicate, 0, 0) for every image k of [start, stop), each alone under its own drawn history."""
    assert plan.models is not None
    built: dict[int, object] = {}  # msprime Demography per history index, built once per shard
    for k, i in enumerate(range(start, stop)):
        m = int(model_index[k])
        if m not in built:
            built[m] = plan.models[m].msprime()
        S, cls = plan.s_of(i, seeds[k])
        yield k, simulate_replicate(plan.part(cls).sim, S, seeds[k], built[m]), 0, 0


def simulate_range(plan: Plan, start: int, stop: int) -> dict[str, np.ndarray]:
    """Replicates [start, stop) -> {images, s, class_index, onset, ..., attempts, split, batch_seed,
    batch_index} arrays."""
    n = stop - start
    out = empty_shard(n, plan.image.size)
    seeds = [plan.replicate_seed(i) for i in range(start, stop)]
    centre = plan.sim.position * plan.sim.sequence_length
    for k, i in enumerate(range(start, stop)):
        S, cls = plan.s_of(i, seeds[k])
        out["s"][k] = S
        out["class_index"][k] = cls
        out["split"][k] = plan.split_of(seeds[k])
        out["model_index"][k] = plan.model_of(seeds[k])
        out["onset"][k] = plan.part(cls).sim.onset
    out["seed"][:] = seeds
    if plan.engine != "msprime":
        for k in range(n):
            part = plan.part(int(out["class_index"][k]))
            forward = part.forward_of(seeds[k])
            assert forward is not None
            S = float(out["s"][k])
            fwd = simulate_forward(forward, S, seeds[k], end_frequency=part.end_frequency(S))
            _record(out, k, plan, centre, fwd.matrix, fwd.positions, fwd.attempts, fwd.start_frequency,
                    fwd.frequency)
        return out
    if plan.models:
        reps = _drawn(plan, start, stop, seeds, out["model_index"])
    else:
        demography = plan.sim.demography.msprime()
        reps = (_batched(plan, start, stop, seeds, out["s"], demography) if plan.batched
                else _alone(plan, start, stop, seeds, demography))
    for k, rep, batch_seed, batch_index in reps:
        start_freq = rep.timing.start_frequency if rep.timing else 0.0
        end_freq = rep.timing.end_frequency if rep.timing else 0.0
        _record(out, k, plan, centre, rep.matrix, rep.positions, rep.attempts, start_freq, end_freq)
        out["batch_seed"][k] = batch_seed
        out["batch_index"][k] = batch_index
    return out


def _record(out: dict[str, np.ndarray], k: int, plan: Plan, centre: float, matrix: np.ndarray,
            positions: np.ndarray, attempts: int, start_freq: float, end_freq: float) -> None:
    """Image replicate k and fill its engine-dependent fields."""
    img, n_sites = image_and_sites(matrix, positions, plan.image, centre=centre)
    out["images"][k] = img
    out["start_freq"][k] = start_freq
    out["end_freq"][k] = end_freq
    out["n_sites_raw"][k] = matrix.shape[1]
    out["n_sites"][k] = n_sites
    out["attempts"][k] = attempts
