"""A test chromosome with one planted hard sweep: msprime, tskit's VCF writer, bgzip + CSI index.

The chromosome is simulated whole by msprime in one population with a sudden size change, with msprime's
SweepGenicSelection (a de novo additive sweep from 1/(2N) to 1 - 1/(2N)) at a known position, ending
``sweep_end`` generations ago; the rest of the chromosome is linked neutral sequence. The output is
what a user brings to ``jobs/genome_scan.yaml``: a phased diploid VCF with INFO/AA (the ancestral
allele, tskit's allele 0) for derived polarisation, bgzipped and indexed, a popmap and a truth file.
Everything is determined by the seed. No Dask here.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import msprime
import numpy as np

from ..seeds import derive_seed
from .trajectory import generations_between
from .units import selection_coefficient

log = logging.getLogger(__name__)

AA_HEADER = '##INFO=<ID=AA,Number=1,Type=String,Description="Ancestral allele (tskit allele 0)">'


@dataclass(frozen=True)
class PlantedSweep:
    """The simulated chromosome's settings; sizes are diploids, times generations ago."""

    length: int = 3_000_000
    diploids: int = 40
    population: str = "POP"
    chrom: str = "chr1"
    size: float = 10_000  # present size N (since change_time)
    ancestral_size: float = 2_500  # before change_time
    change_time: float = 5_000
    mutation_rate: float = 1.5e-8
    recombination_rate: float = 1e-8
    S: float = 200  # the project's S = N s (msprime's s = S / N, fitnesses 1, 1 + s/2, 1 + s)
    sweep_end: float = 200  # the beneficial allele reached 1 - 1/(2N) this many generations ago
    position: float = 0.5  # the selected site as a fraction of the chromosome
    dt: float = 1e-6  # msprime's trajectory step
    seed: int = 1

    @property
    def s(self) -> float:
        """msprime's selection coefficient."""
        return selection_coefficient(self.S, self.size)

    @property
    def sweep_position(self) -> int:
        """The selected site, 1-based as in the VCF."""
        return int(self.position * self.length) + 1

    @property
    def onset(self) -> float:
        """When the sweep began by the deterministic trajectory from 1/(2N) to 1 - 1/(2N) (msprime's
        trajectory, conditioned on fixation, is stochastic and usually shorter)."""
        one = 1.0 / (2.0 * self.size)
        return self.sweep_end + generations_between(self.s, one, 1.0 - one)


def demography(cfg: PlantedSweep) -> msprime.Demography:
    """The one population's history: size ``size`` since ``change_time``, ``ancestral_size`` before."""
    dem = msprime.Demography()
    dem.add_population(name=cfg.population, initial_size=cfg.size)
    dem.add_population_parameters_change(time=cfg.change_time, initial_size=cfg.ancestral_size,
                                         population=cfg.population)
    return dem


def simulate(cfg: PlantedSweep, neutral: bool = False):
    """The chromosome's tree sequence with nucleotide mutations (msprime; sweep, then neutral).

    ``neutral``: the same history and rates without the sweep (a null chromosome for calibration checks).
    """
    models = None
    if not neutral:
        if cfg.onset >= cfg.change_time:
            raise ValueError(f"the sweep (from {cfg.onset:.0f} to {cfg.sweep_end:g} generations ago) must end "
                             f"before the size change at {cfg.change_time:g}: msprime's sweeps need a constant size")
        one = 1.0 / (2.0 * cfg.size)
        sweep = msprime.SweepGenicSelection(position=cfg.position * cfg.length, start_frequency=one,
                                            end_frequency=1.0 - one, s=cfg.s, dt=cfg.dt)
        models = [msprime.StandardCoalescent(duration=cfg.sweep_end), sweep, msprime.StandardCoalescent()]
    ts = msprime.sim_ancestry({cfg.population: cfg.diploids}, demography=demography(cfg), sequence_length=cfg.length,
                              recombination_rate=cfg.recombination_rate, model=models,
                              random_seed=derive_seed(cfg.seed, 1))
    return msprime.sim_mutations(ts, rate=cfg.mutation_rate, random_seed=derive_seed(cfg.seed, 2))


def vcf_text(ts, cfg: PlantedSweep) -> tuple[str, int]:
    """The tree sequence as VCF text with INFO/AA (1-based positions); also the number of records."""
    buf = io.StringIO()
    names = [f"ind{i}" for i in range(ts.num_individuals)]
    ts.write_vcf(buf, contig_id=cfg.chrom, individual_names=names,
                 position_transform=lambda x: np.asarray(x, dtype=np.int64) + 1)
    out, n = [], 0
    for line in buf.getvalue().splitlines():
        if line.startswith("##contig"):
            out += [line, AA_HEADER]
            continue
        if not line.startswith("#"):
            f = line.split("\t")
            f[7] = f"AA={f[3]}"  # tskit writes the ancestral state as allele 0, the REF
            line = "\t".join(f)
            n += 1
        out.append(line)
    return "\n".join(out) + "\n", n


def write(cfg: PlantedSweep, out_dir: str | Path, stem: str = "chrom", neutral: bool = False) -> dict:
    """Simulate and write ``stem.vcf.gz`` (+ ``.csi``), ``stem.popmap`` and ``stem.truth.json`` into
    ``out_dir``; returns the truth (settings, sweep position and onset, records; ``neutral``: no sweep)."""
    import pysam

    out = Path(out_dir)
    ts = simulate(cfg, neutral)
    out.mkdir(parents=True, exist_ok=True)
    text, records = vcf_text(ts, cfg)
    plain = out / f"{stem}.vcf"
    plain.write_text(text)
    gz = Path(pysam.tabix_index(str(plain), preset="vcf", csi=True, force=True))  # bgzips, removes the plain file
    (out / f"{stem}.popmap").write_text("".join(f"ind{i}\t{cfg.population}\n" for i in range(cfg.diploids)))
    truth = {**asdict(cfg), "s": cfg.s, "sweep_position": cfg.sweep_position, "deterministic_onset": round(cfg.onset, 1),
             "records": records, "vcf": gz.name, "neutral": neutral}
    (out / f"{stem}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    if neutral:
        log.info("%s: %d records, %d diploids of %s, neutral", gz, records, cfg.diploids, cfg.population)
    else:
        log.info("%s: %d records, %d diploids of %s, sweep S=%g at %s:%d from %.0f to %g generations ago", gz,
                 records, cfg.diploids, cfg.population, cfg.S, cfg.chrom, cfg.sweep_position, cfg.onset, cfg.sweep_end)
    return truth
