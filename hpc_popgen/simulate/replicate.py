"""One replicate: msprime ancestry (neutral, or a hard sweep at the region centre) plus mutations,
returned as a 0/1 haplotype matrix straight from the tree sequence.

A replicate alone is fully determined by its seed: attempt ``a`` uses msprime seeds derived from
(seed, a), so a retried replicate (msprime refuses rare sweeps that reach back past a size change)
gives the same result on any worker. Replicates that share every parameter but the seed can come from
one batch (:func:`simulate_batch`, msprime's ``num_replicates``: its set-up paid once); member j of a
batch is redone alone from the batch seed and j (:func:`simulate_member`, msprime's ``replicate_index``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import msprime
import numpy as np
import tskit
from msprime import _msprime

from ..seeds import derive_seed
from .demographies import POPULATION, DemographyModel
from .trajectory import SweepTiming, sweep_timing
from .units import selection_coefficient

log = logging.getLogger(__name__)
BINARY = msprime.BinaryMutationModel()


class SimulationRefused(RuntimeError):
    """msprime refused every attempt for one replicate."""


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything but S and the seed that decides a replicate (defaults: the simulate stage's schema)."""

    demography: DemographyModel | None  # one population's epochs (msprime); None for models msprime cannot run
    n_haplotypes: int
    sequence_length: float
    mutation_rate: float
    recombination_rate: float
    reference_ne: float
    onset: float  # generations
    start_frequency: float
    position: float  # fraction of the region
    dt: float
    max_attempts: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["demography"] = self.demography.to_dict() if self.demography is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimConfig:
        d = dict(d)
        d["demography"] = DemographyModel.from_dict(d["demography"]) if d["demography"] else None
        return cls(**d)

    def timing(self, S: float) -> SweepTiming | None:
        """The deterministic sweep timing for S (None for neutral, S = 0)."""
        if S <= 0:
            return None
        return sweep_timing(selection_coefficient(S, self.reference_ne), self.start_frequency, self.onset,
                            self.reference_ne)


@dataclass
class Replicate:
    """A simulated region: haplotypes (n_haps, n_sites) uint8, positions in bp, attempts used."""

    matrix: np.ndarray
    positions: np.ndarray
    attempts: int
    timing: SweepTiming | None


def _models(cfg: SimConfig, S: float, timing: SweepTiming | None) -> list:
    if timing is None:
        return [msprime.StandardCoalescent()]
    sweep = msprime.SweepGenicSelection(
        position=cfg.position * cfg.sequence_length, start_frequency=timing.start_frequency,
        end_frequency=timing.end_frequency, s=selection_coefficient(S, cfg.reference_ne), dt=cfg.dt)
    models: list = []
    if timing.end_time > 0:
        models.append(msprime.StandardCoalescent(duration=timing.end_time))
    return models + [sweep, msprime.StandardCoalescent()]


def ancestry_args(cfg: SimConfig, S: float, demography: msprime.Demography | None = None,
                  timing: SweepTiming | None = None) -> dict:
    """sim_ancestry's arguments but the seed: one replicate's, or a whole batch's (they share them all)."""
    timing = timing or cfg.timing(S)
    return dict(samples=[msprime.SampleSet(cfg.n_haplotypes, population=POPULATION, ploidy=1)],
                demography=demography or cfg.demography.msprime(), ploidy=2,
                sequence_length=cfg.sequence_length, recombination_rate=cfg.recombination_rate,
                model=_models(cfg, S, timing))


def add_mutations(cfg: SimConfig, ts: tskit.TreeSequence, seed: int, attempt: int = 0) -> tskit.TreeSequence:
    """Binary infinite-sites mutations, seeded per replicate (its seed and attempt), batched or not.
    No provenance record: encoding it cost more than the mutations on small regions."""
    return msprime.sim_mutations(ts, rate=cfg.mutation_rate, model=BINARY, discrete_genome=False,
                                 random_seed=derive_seed(seed, attempt, 2), record_provenance=False)


def haplotypes(ts: tskit.TreeSequence) -> tuple[np.ndarray, np.ndarray]:
    """(n_haps, n_sites) uint8 0/1 matrix and site positions of a tree sequence from :func:`add_mutations`."""
    from .genotypes import haplotype_matrix  # numba: loaded by the workers that simulate, not the driver

    return haplotype_matrix(ts, binary=True), ts.sites_position.copy()


def simulate_tree_sequence(cfg: SimConfig, S: float, seed: int, attempt: int,
                           demography: msprime.Demography | None = None, timing: SweepTiming | None = None):
    """One msprime attempt -> tree sequence with mutations; raises msprime's LibraryError if it refuses.
    ``timing`` replaces the deterministic sweep timing (the engines bench ends sweeps when fwdpy11's fixed)."""
    ts = msprime.sim_ancestry(**ancestry_args(cfg, S, demography, timing), random_seed=derive_seed(seed, attempt, 1))
    return add_mutations(cfg, ts, seed, attempt)


def simulate_once(cfg: SimConfig, S: float, seed: int, attempt: int,
                  demography: msprime.Demography | None = None, timing: SweepTiming | None = None):
    """One msprime attempt -> (matrix, positions); raises msprime's LibraryError if it refuses."""
    return haplotypes(simulate_tree_sequence(cfg, S, seed, attempt, demography, timing))


def simulate_member(cfg: SimConfig, S: float, seed: int, batch_seed: int, batch_index: int,
                    demography: msprime.Demography | None = None):
    """Replicate ``batch_index`` of the batch ``batch_seed`` alone (msprime's replicate_index), mutated
    with its own seed: the same (matrix, positions) :func:`simulate_batch` gave it."""
    ts = msprime.sim_ancestry(**ancestry_args(cfg, S, demography), random_seed=batch_seed,
                              replicate_index=batch_index)
    return haplotypes(add_mutations(cfg, ts, seed))


def simulate_replicate(cfg: SimConfig, S: float, seed: int, demography: msprime.Demography | None = None,
                       timing: SweepTiming | None = None, first_attempt: int = 0) -> Replicate:
    """Simulate with retries: attempt a = first_attempt, ... until msprime accepts (at most ``max_attempts``
    in all; a batched replicate msprime refused was attempt 0, so its retries start at 1)."""
    timing = timing or cfg.timing(S)
    last = None
    for attempt in range(first_attempt, cfg.max_attempts):
        try:
            matrix, positions = simulate_once(cfg, S, seed, attempt, demography, timing)
        except _msprime.LibraryError as exc:
            last = exc
            log.info("replicate seed %d S=%g attempt %d refused by msprime: %s", seed, S, attempt, exc)
            continue
        return Replicate(matrix, positions, attempt + 1, timing)
    raise SimulationRefused(f"msprime refused replicate (seed {seed}, S={S:g}) {cfg.max_attempts} times; "
                            f"last error: {last}")


@dataclass
class BatchMember:
    """One replicate of a batch: its position in the caller's list, its data, and how to redo it alone."""

    position: int
    replicate: Replicate
    batch_seed: int  # 0: simulated alone (msprime refused it in the batch)
    batch_index: int


def simulate_batch(cfg: SimConfig, S: float, seeds: list[int], batch_seed: Callable[[int], int],
                   demography: msprime.Demography | None = None) -> Iterator[BatchMember]:
    """Replicates sharing every parameter but the seed, from one sim_ancestry call (num_replicates):
    msprime builds its simulator once. ``seeds`` are the replicate seeds (mutations, retries);
    ``batch_seed(p)`` is the ancestry seed of the batch that starts at position p.

    If msprime refuses position p (attempt 0), that replicate is retried alone from attempt 1 (as
    :func:`simulate_replicate` does) and a new batch starts at p + 1 with seed ``batch_seed(p + 1)``.
    """
    timing = cfg.timing(S)
    args = ancestry_args(cfg, S, demography, timing)
    start = 0
    while start < len(seeds):
        bseed = batch_seed(start)
        batch = msprime.sim_ancestry(**args, random_seed=bseed, num_replicates=len(seeds) - start)
        done = 0  # replicates of this batch msprime gave so far
        try:
            for ts in batch:
                matrix, positions = haplotypes(add_mutations(cfg, ts, seeds[start + done]))
                yield BatchMember(start + done, Replicate(matrix, positions, 1, timing), bseed, done)
                done += 1
            return
        except _msprime.LibraryError as exc:
            p = start + done
            log.info("replicate seed %d S=%g refused by msprime in batch %d: %s", seeds[p], S, bseed, exc)
        yield BatchMember(p, simulate_replicate(cfg, S, seeds[p], demography, timing, first_attempt=1), 0, 0)
        start = p + 1
