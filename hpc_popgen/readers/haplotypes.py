"""Haplotypes: a 0/1 matrix (haplotypes x sites) with site positions, whatever the source."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Haplotypes:
    """One region's phased haplotypes.

    matrix: (n_haps, n_sites) uint8, 1 = derived (or ALT) allele; positions: (n_sites,) float64, in bp or
    as fractions of the region (ms); length: region length in the same unit (None if unknown);
    names: one label per haplotype row (e.g. ``NA12878_0``), if the source has them; source: file:line.
    counts: for a VCF region, records read, kept, and dropped by reason (``multiallelic``, ``no_alt``,
    ``inaccessible``, ``no_ancestral``), and ``accessible_bp`` under a mask.
    """

    matrix: np.ndarray
    positions: np.ndarray
    length: float | None = None
    names: list[str] = field(default_factory=list)
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.uint8)
        self.positions = np.asarray(self.positions, dtype=np.float64)
        if self.matrix.ndim != 2 or self.matrix.shape[1] != self.positions.shape[0]:
            raise ValueError(f"haplotype matrix {self.matrix.shape} does not match {self.positions.shape[0]} positions")

    @property
    def n_haps(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_sites(self) -> int:
        return int(self.matrix.shape[1])

    def centre(self) -> float:
        """The region's centre: half its length, or the midpoint of the first and last site."""
        if self.length is not None:
            return float(self.length) / 2.0
        if self.n_sites == 0:
            return 0.0
        return float(self.positions[0] + self.positions[-1]) / 2.0
