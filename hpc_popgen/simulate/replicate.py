"""One replicate: msprime ancestry (neutral, or a hard sweep at the region centre) plus mutations,
returned as a 0/1 haplotype matrix straight from the tree sequence.

A replicate is fully determined by its seed: attempt ``a`` uses msprime seeds derived from
(seed, a), so a retried replicate (msprime refuses rare sweeps that reach back past a size change)
gives the same result on any worker.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import msprime
import numpy as np
from msprime import _msprime

from ..seeds import derive_seed
from .demographies import POPULATION, DemographyModel
from .trajectory import SweepTiming, sweep_timing
from .units import selection_coefficient

log = logging.getLogger(__name__)


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


def simulate_tree_sequence(cfg: SimConfig, S: float, seed: int, attempt: int,
                           demography: msprime.Demography | None = None, timing: SweepTiming | None = None):
    """One msprime attempt -> tree sequence with mutations; raises msprime's LibraryError if it refuses.
    ``timing`` replaces the deterministic sweep timing (the engines bench ends sweeps when fwdpy11's fixed)."""
    timing = timing or cfg.timing(S)
    ts = msprime.sim_ancestry(
        samples=[msprime.SampleSet(cfg.n_haplotypes, population=POPULATION, ploidy=1)],
        demography=demography or cfg.demography.msprime(), ploidy=2,
        sequence_length=cfg.sequence_length, recombination_rate=cfg.recombination_rate,
        model=_models(cfg, S, timing), random_seed=derive_seed(seed, attempt, 1))
    return msprime.sim_mutations(ts, rate=cfg.mutation_rate, model=msprime.BinaryMutationModel(),
                                 discrete_genome=False, random_seed=derive_seed(seed, attempt, 2))


def simulate_once(cfg: SimConfig, S: float, seed: int, attempt: int,
                  demography: msprime.Demography | None = None, timing: SweepTiming | None = None):
    """One msprime attempt -> (matrix, positions); raises msprime's LibraryError if it refuses."""
    ts = simulate_tree_sequence(cfg, S, seed, attempt, demography, timing)
    matrix = ts.genotype_matrix().T.astype(np.uint8)
    return matrix, ts.sites_position.copy()


def simulate_replicate(cfg: SimConfig, S: float, seed: int, demography: msprime.Demography | None = None,
                       timing: SweepTiming | None = None) -> Replicate:
    """Simulate with retries: attempt a = 0, 1, ... until msprime accepts (at most ``max_attempts``)."""
    timing = timing or cfg.timing(S)
    last = None
    for attempt in range(cfg.max_attempts):
        try:
            matrix, positions = simulate_once(cfg, S, seed, attempt, demography, timing)
        except _msprime.LibraryError as exc:
            last = exc
            log.info("replicate seed %d S=%g attempt %d refused by msprime: %s", seed, S, attempt, exc)
            continue
        return Replicate(matrix, positions, attempt + 1, timing)
    raise SimulationRefused(f"msprime refused replicate (seed {seed}, S={S:g}) {cfg.max_attempts} times; "
                            f"last error: {last}")
