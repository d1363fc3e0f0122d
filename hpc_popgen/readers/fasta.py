"""Ancestral alleles from a FASTA (e.g. Ensembl/1000 Genomes ``human_ancestor``), read with pysam.

Upper case is a high-confidence call and lower case a low-confidence one: both are used, as INFO/AA
is (its case ignored). ``.``, ``N`` and ``-`` are unknown. A FASTA is read through its ``.fai`` index
(bgzipped: also ``.gzi``); pysam builds a missing index next to the file once. A sequence matches a
chromosome by name, or by the Ensembl ancestor header ``ANCESTOR_for_chromosome:GRCh37:2:...`` (the
chromosome is the third field; a ``chr`` prefix is ignored). No Dask here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError

log = logging.getLogger(__name__)
_BLOCK = 1_000_000  # bp of sequence fetched at once: memory stays bounded on any chromosome
_UNKNOWN = frozenset(".N-")


def open_fasta(path: str | Path) -> Any:
    """A pysam.FastaFile of ``path`` (its index built once if missing), or one line naming the file."""
    import pysam

    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: ancestral FASTA not found")
    verbosity = pysam.set_verbosity(0)  # htslib's own error lines would follow ours
    try:
        return pysam.FastaFile(str(path))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: cannot read it as an indexed FASTA ({exc}); a compressed FASTA must be "
                             "bgzipped (`bgzip`), and its folder writable for the index (`samtools faidx`)") from None
    finally:
        pysam.set_verbosity(verbosity)


def fasta_contig(fasta: Any, path: str | Path, chrom: str) -> str:
    """The name of ``chrom``'s sequence in the FASTA (see the module doc), or one line naming the file."""
    names = list(fasta.references)
    if chrom in names:
        return chrom
    bare = chrom.removeprefix("chr")
    for name in names:
        f = name.split(":")
        if name.startswith("ANCESTOR_for_chromosome:") and len(f) > 2 and f[2].removeprefix("chr") == bare:
            return name
    raise InputDataError(f"{path}: the ancestral FASTA has no sequence for chromosome {chrom} "
                         f"(it has {', '.join(names[:10]) or 'none'})")


def check_fasta(path: str | Path, chrom: str | None) -> None:
    """That the FASTA opens and, when ``chrom`` is given, has its sequence (for ``hpcpop validate``)."""
    with open_fasta(path) as fa:
        if chrom is not None:
            fasta_contig(fa, path, chrom)


def ancestral_alleles(fasta: Any, path: str | Path, chrom: str, positions: np.ndarray) -> np.ndarray:
    """Upper-case ancestral bases at sorted 1-based ``positions`` of ``chrom``; ``""`` where unknown
    (``.``, ``N``, ``-``, or past the sequence's end). Sequence is fetched in blocks of about 1 Mb."""
    name = fasta_contig(fasta, path, chrom)
    length = fasta.get_reference_length(name)
    pos = np.asarray(positions, dtype=np.int64)
    out = np.full(len(pos), "", dtype="<U1")
    i = 0
    while i < len(pos):
        j = int(np.searchsorted(pos, pos[i] + _BLOCK, side="left"))
        lo, hi = int(pos[i]) - 1, min(int(pos[j - 1]), length)
        if lo < hi:
            seq = np.frombuffer(fasta.fetch(name, lo, hi).upper().encode("ascii"), dtype="S1")
            rel = pos[i:j] - 1 - lo
            ok = (rel >= 0) & (rel < len(seq))
            bases = seq[rel[ok]].astype("<U1")
            out[i:j][ok] = np.where(np.isin(bases, list(_UNKNOWN)), "", bases)
        i = j
    return out
