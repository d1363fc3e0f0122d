"""Calibration of a genome scan: empirical p-values from neutral chromosomes, BH q-values, candidate regions.

A Bayes factor from a CNN trained on simulations is not a genome-wide error rate: windows are many,
correlated, and the network's output on real neutral data need not follow its training prior. So the
scan stage scans chromosomes simulated under the neutral history (same length, sample size, rates,
model, window plan and accessibility mask) and each real window's Bayes factor is ranked against the pooled null windows:

* p = (1 + #{null windows with BF >= BF_real}) / (1 + #null windows) (the +1 keeps p > 0 and makes the
  test valid when the real window is exchangeable with the null ones);
* q = the Benjamini–Hochberg adjusted p-value over the real windows.

Windows with q below the threshold are merged into regions when they overlap or touch. The neutral
chromosomes are simulated with msprime, which is exact for a neutral coalescent under any demes model.
No Dask, no click here: the scan stage runs :func:`scan_null_chromosome` as one task per chromosome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..readers.mask import Intervals, inside
from .scan import COLUMNS, accessible_windows, plan_windows, scan_chunk

log = logging.getLogger(__name__)


def empirical_p(values: np.ndarray, null: np.ndarray) -> np.ndarray:
    """(1 + #{null >= v}) / (1 + len(null)) for each ``v`` of ``values``; NaN values give NaN.

    ``null`` is the pooled statistic (log10 BF) of every null window; NaNs in it are left out.
    """
    v = np.asarray(values, dtype=np.float64)
    z = np.sort(np.asarray(null, dtype=np.float64))
    z = z[~np.isnan(z)]
    if len(z) == 0:
        raise ValueError("no null windows to compare with")
    at_least = len(z) - np.searchsorted(z, v, side="left")  # how many null values are >= v
    p = (1.0 + at_least) / (1.0 + len(z))
    return np.where(np.isnan(v), np.nan, p)


def qvalues(p: np.ndarray, method: str = "bh") -> np.ndarray:
    """Adjusted p-values (q-values) by ``scipy.stats.false_discovery_control``: ``bh`` (Benjamini–Hochberg,
    FDR <= q for independent or positively dependent windows) or ``by`` (Benjamini–Yekutieli, FDR <= q
    under any dependence, at a cost in power of about ln m). NaNs stay NaN and are not counted in m."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method=method)
    return q


@dataclass(frozen=True)
class Region:
    """Significant windows merged: 1-based inclusive bp, and the best evidence among them."""

    chrom: str
    start: int
    end: int
    windows: int
    best_bayes_factor: float
    max_mean: float
    min_q: float


CANDIDATE_COLUMNS = ["chrom", "start", "end", "windows", "best_bayes_factor", "max_mean", "min_q"]


def merge_windows(chrom: np.ndarray, start: np.ndarray, end: np.ndarray, bayes_factor: np.ndarray,
                  mean: np.ndarray, q: np.ndarray, fdr: float) -> list[Region]:
    """Windows with q < ``fdr``, merged into regions where they overlap or are adjacent (next start <=
    previous end + 1 on the same chromosome); regions sorted by chromosome order of appearance, then start."""
    q = np.asarray(q, dtype=np.float64)
    sig = np.flatnonzero(~np.isnan(q) & (q < fdr))
    if len(sig) == 0:
        return []
    chrom_order = {c: i for i, c in enumerate(dict.fromkeys(str(c) for c in chrom))}
    sig = sorted(sig, key=lambda i: (chrom_order[str(chrom[i])], int(start[i]), int(end[i])))
    regions: list[Region] = []
    cur: dict[str, Any] | None = None
    for i in sig:
        c, s, e = str(chrom[i]), int(start[i]), int(end[i])
        if cur is not None and c == cur["chrom"] and s <= cur["end"] + 1:
            cur["end"] = max(cur["end"], e)
            cur["windows"] += 1
            cur["bf"] = max(cur["bf"], float(bayes_factor[i]))
            cur["mean"] = np.nanmax([cur["mean"], float(mean[i])])
            cur["q"] = min(cur["q"], float(q[i]))
            continue
        if cur is not None:
            regions.append(_region(cur))
        cur = {"chrom": c, "start": s, "end": e, "windows": 1, "bf": float(bayes_factor[i]),
               "mean": float(mean[i]), "q": float(q[i])}
    assert cur is not None
    regions.append(_region(cur))
    return regions


def _region(d: dict[str, Any]) -> Region:
    return Region(d["chrom"], d["start"], d["end"], d["windows"], d["bf"], float(d["mean"]), d["q"])


def candidates_tsv(regions: list[Region]) -> str:
    """The candidates table as TSV text (header always present)."""
    rows = ["\t".join(CANDIDATE_COLUMNS)]
    for r in regions:
        rows.append("\t".join([r.chrom, str(r.start), str(r.end), str(r.windows), f"{r.best_bayes_factor:.6g}",
                               f"{r.max_mean:.6g}", f"{r.min_q:.6g}"]))
    return "\n".join(rows) + "\n"


def calibration_summary(q: np.ndarray, fdr: float, n_null_windows: int, n_null_chromosomes: int,
                        regions: list[Region], method: str = "bh") -> dict[str, Any]:
    """What the report states: windows called at ``fdr`` and the expected number of false ones among
    them (BH and BY bound the expected false fraction by ``fdr``, so at most ``fdr`` x calls are false)."""
    q = np.asarray(q, dtype=np.float64)
    calls = int(np.sum(~np.isnan(q) & (q < fdr)))
    return {"fdr": fdr, "fdr_method": method, "null_chromosomes": n_null_chromosomes, "null_windows": n_null_windows,
            "significant_windows": calls, "candidate_regions": len(regions),
            "expected_false_windows": fdr * calls,
            "min_q": float(np.nanmin(q)) if np.any(~np.isnan(q)) else None}


def calibrate_rows(rows: list[list[str]], null_bayes_factors: np.ndarray, method: str = "bh") -> None:
    """Fill the ``p`` and ``q`` fields of scan rows (TSV fields, as :func:`~hpc_popgen.infer.scan.scan_chunk`
    writes them): each window's Bayes factor ranked against the pooled null windows', then adjusted."""
    bf_col = COLUMNS.index("bayes_factor")
    p = empirical_p(np.array([float(r[bf_col]) for r in rows]), null_bayes_factors)
    q = qvalues(p, method)
    for r, pi, qi in zip(rows, p, q, strict=True):
        r[-2:] = [f"{pi:.6g}", f"{qi:.6g}"]


def call_regions(table: dict[str, np.ndarray], fdr: float, n_null_windows: int, n_null_chromosomes: int,
                 method: str = "bh") -> tuple[list[Region], dict[str, Any]]:
    """The candidate regions of a calibrated scan table (windows with q < ``fdr``, merged) and the
    calibration summary the report states."""
    regions = merge_windows(table["chrom"], table["start"], table["end"], table["bayes_factor"], table["mean"],
                            table["q"], fdr)
    return regions, calibration_summary(table["q"], fdr, n_null_windows, n_null_chromosomes, regions, method)


def scan_null_chromosome(model_dir: str, graph: dict, population: str, n_diploids: int, length: int,
                         mutation_rate: float, recombination_rate: float, window: dict, name: str,
                         out_path: str, *, level: float, seed: int, accessible: tuple | None,
                         min_accessible: float, stats_path: str | None = None) -> int:
    """One task: simulate a neutral chromosome (msprime) and scan it with the real scan's model, windows
    and mask (``accessible``: the real chromosome's intervals in the same coordinates); with ``stats_path``,
    also save its windows' model-check statistics (:mod:`hpc_popgen.infer.modelcheck`) there."""
    matrix, positions = simulate_null_chromosome(graph, population, n_diploids, length, mutation_rate=mutation_rate,
                                                 recombination_rate=recombination_rate, seed=seed,
                                                 accessible=accessible)
    planned, skipped = accessible_windows(plan_windows(positions, **window), accessible, min_accessible)
    if skipped:
        log.info("%s: %d null windows skipped (accessible share < %g)", name, skipped, min_accessible)
    windows = [(w.lo, w.hi, w.start, w.end) for w in planned]
    if stats_path:
        from .modelcheck import window_statistics, write_statistics

        write_statistics(stats_path, window_statistics(matrix, positions, windows))
    return scan_chunk(model_dir, matrix, positions, windows, name, out_path, level=level, mc_samples=0, seed=seed)


def simulate_null_chromosome(graph: dict, population: str, n_diploids: int, length: int, *, mutation_rate: float,
                             recombination_rate: float, seed: int,
                             accessible: Intervals | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One neutral chromosome under the demes ``graph`` (a dict, time in generations), sampled in
    ``population``: a (2 n, sites) uint8 haplotype matrix (1 = derived) and 1-based integer positions.
    With ``accessible`` (the real chromosome's mask, same coordinates), sites outside it are dropped,
    as the real scan drops them, so null and real windows see the same sequence.

    msprime's neutral coalescent with the demes model (exact under any history); mutations on a
    discrete genome with the binary model, so every site is biallelic with a known ancestral allele,
    as the real sites a derived-polarised scan keeps.
    """
    import demes
    import msprime

    from ..simulate.demographies import msprime_demography
    from ..simulate.genotypes import haplotype_matrix

    dem = msprime_demography(demes.Builder.fromdict(graph).resolve())
    ts = msprime.sim_ancestry(samples={population: n_diploids}, demography=dem, sequence_length=length,
                              recombination_rate=recombination_rate, ploidy=2, random_seed=seed)
    ts = msprime.sim_mutations(ts, rate=mutation_rate, model=msprime.BinaryMutationModel(),
                               discrete_genome=True, random_seed=seed)
    positions = ts.tables.sites.position.astype(np.int64) + 1
    matrix = haplotype_matrix(ts)  # rows: sample 0 hap 0, sample 0 hap 1, ...
    keep = matrix.any(axis=0) & ~matrix.all(axis=0)  # back mutations can leave a site monomorphic
    if accessible is not None:
        keep &= inside(accessible, positions)
    log.debug("null chromosome seed %d: %d sites, %d polymorphic", seed, len(positions), int(keep.sum()))
    return np.ascontiguousarray(matrix[:, keep]), positions[keep]
