"""Summary statistics of a simulated region, to compare engines: diversity and haplotype structure."""

from __future__ import annotations

import numpy as np

STATS = ("segregating_sites", "pi", "distinct_haplotypes_centre", "h12_centre")


def region_stats(matrix: np.ndarray, positions: np.ndarray, sequence_length: float,
                 centre_bp: float = 10_000.0) -> dict[str, float]:
    """Segregating sites, nucleotide diversity per bp, and in the central ``centre_bp``: the number of
    distinct haplotypes and H12 (Garud et al. 2015: the two commonest haplotypes pooled)."""
    n = matrix.shape[0]
    freq = matrix.sum(axis=0, dtype=np.float64) / n
    pi = float(np.sum(2.0 * freq * (1.0 - freq)) * n / (n - 1) / sequence_length)
    mid = sequence_length / 2.0
    centre = np.abs(np.asarray(positions, dtype=np.float64) - mid) <= centre_bp / 2.0
    _, counts = np.unique(matrix[:, centre], axis=0, return_counts=True)
    f = np.sort(counts)[::-1] / n
    h12 = float((f[:2].sum()) ** 2 + np.sum(f[2:] ** 2))
    return {"segregating_sites": float(matrix.shape[1]), "pi": pi,
            "distinct_haplotypes_centre": float(len(counts)), "h12_centre": h12}
