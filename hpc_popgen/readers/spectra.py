"""Allele frequency spectra in: a dadi/moments ``.fs`` file, or a VCF with a popmap, projected.

Readers only: which input a demography stage's config names is decided in :mod:`hpc_popgen.demography.afs`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError

log = logging.getLogger(__name__)

MAX_POPS = 5


def load_fs(path: str | Path, pop_ids: list[str] | None = None) -> Any:
    """Read a dadi/moments spectrum file (folded or not, mask kept) as a moments.Spectrum."""
    import moments

    path = Path(path)
    check_populations(path, pop_ids)  # sizes first: moments reads only as many values as the header asks for
    try:
        fs = moments.Spectrum.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - moments raises several types for malformed files
        raise InputDataError(f"{path}: not a dadi/moments spectrum file: {exc}") from None
    _check(fs, str(path))
    if pop_ids:
        fs.pop_ids = list(pop_ids)
    elif not fs.pop_ids:
        fs.pop_ids = [f"pop{i}" for i in range(fs.ndim)]
    return fs


def fs_header(path: str | Path) -> tuple[tuple[int, ...], list[str] | None]:
    """Dimensions and population names of a ``.fs`` file, after checking that its data line (and mask
    line, when present) holds exactly as many values as the dimensions multiply to."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: AFS file not found")
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read AFS file: {exc}") from None
    lines = [ln for ln in lines if ln.strip()]
    if len(lines) < 2:
        raise InputDataError(f"{path}: not a dadi/moments spectrum file (needs a header line and a data line)")
    head = lines[0].split()
    n_dims = next((i for i, w in enumerate(head) if w in ("folded", "unfolded")), len(head))
    try:
        shape = tuple(int(w) for w in head[:n_dims])
    except ValueError:
        raise InputDataError(f"{path}: header {lines[0].strip()!r} must start with the spectrum's dimensions") from None
    if not shape or min(shape) < 1:
        raise InputDataError(f"{path}: header {lines[0].strip()!r} gives no valid dimensions")
    pop_ids = lines[0].split('"')[1::2] or None
    want = math.prod(shape)
    for what, line in (("data", lines[1]), ("mask", lines[2] if len(lines) > 2 else None)):
        if line is not None and len(line.split()) != want:
            dims = " x ".join(map(str, shape))
            raise InputDataError(f"{path}: {what} line has {len(line.split())} values but the header's "
                                 f"dimensions {dims} need {want}")
    return shape, pop_ids


def check_populations(path: str | Path, populations: list[str] | None) -> None:
    """The ``populations`` given for an AFS file match its dimensions (and its own names, if it has any)."""
    shape, pop_ids = fs_header(path)
    if not populations:
        return
    if len(populations) != len(shape):
        raise InputDataError(f"{path}: {len(populations)} population names {list(populations)} given for a "
                             f"{len(shape)}-population spectrum")
    if pop_ids and list(pop_ids) != list(populations):
        raise InputDataError(f"{path}: the file names its populations {pop_ids}, not {list(populations)}")


def _check(fs: Any, source: str) -> None:
    """Reject spectra a model cannot be fitted to (too many populations, negative, NaN or empty)."""
    if fs.ndim < 1 or fs.ndim > MAX_POPS:
        raise InputDataError(f"{source}: spectra of 1 to {MAX_POPS} populations are supported (got {fs.ndim})")
    arr = np.ma.compressed(fs)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or arr.min() < 0:
        raise InputDataError(f"{source}: spectrum has negative, NaN or no unmasked entries")
    if float(arr.sum()) <= 0:
        raise InputDataError(f"{source}: spectrum is empty (no segregating sites)")


def read_popmap(path: str | Path) -> dict[str, str]:
    """``sample population`` per line (whitespace separated, # comments) -> {sample: population}."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: popmap file not found")
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 2:
            raise InputDataError(f"{path}: line {i}: expected 'sample population'")
        out[parts[0]] = parts[1]
    if not out:
        raise InputDataError(f"{path}: popmap has no samples")
    return out


def fs_from_vcf(vcf: str | Path, popmap: str | Path, pops: list[str], projections: list[int],
                polarized: bool = False, cache_dir: str | Path | None = None,
                ancestral_fasta: str | Path | None = None) -> Any:
    """Spectrum from a VCF and a popmap, projected to ``projections`` haploid sample sizes per population
    (:func:`fs_and_blocks_from_vcf` without blocks)."""
    return fs_and_blocks_from_vcf(vcf, popmap, pops, projections, polarized, cache_dir, ancestral_fasta)[0]


def fs_and_blocks_from_vcf(vcf: str | Path, popmap: str | Path, pops: list[str], projections: list[int],
                           polarized: bool = False, cache_dir: str | Path | None = None,
                           ancestral_fasta: str | Path | None = None, block_bp: int | None = None) -> tuple[Any, Any]:
    """Spectrum from a VCF and a popmap, projected to ``projections`` haploid sample sizes per population,
    and with ``block_bp`` the spectra of the genome's blocks of that many bp from the same read
    (:class:`~hpc_popgen.readers.vcz.BlockSpectra`; None without).

    The genotypes are read through the VCF's VCF Zarr (bio2zarr; converted once into ``cache_dir``, see
    :mod:`hpc_popgen.readers.vcz`), chunk by chunk, with the site rules of moments' own VCF reader (which
    gives the same spectrum): FILTER PASS or ``.``, biallelic SNPs (multi-allelic records are dropped
    and counted), and for ``polarized`` an INFO/AA (or ``ancestral_fasta`` base) that is REF or ALT;
    otherwise the spectrum is folded.
    """
    from .vcz import spectrum_and_blocks

    vcf, popmap = Path(vcf), Path(popmap)
    if not vcf.exists():
        raise InputDataError(f"{vcf}: VCF file not found")
    pm = read_popmap(popmap)
    missing = [p for p in pops if p not in set(pm.values())]
    if missing:
        raise InputDataError(f"{popmap}: no samples for population(s) {', '.join(missing)}")
    if len(projections) != len(pops):
        raise InputDataError(f"projections {projections}: need one sample size per population {pops}")
    counts = {p: 2 * sum(1 for v in pm.values() if v == p) for p in pops}
    for p, n in zip(pops, projections, strict=True):
        if n < 2 or n > counts[p]:
            raise InputDataError(f"projections: {p} has {counts[p]} haplotypes in {popmap}; cannot project to {n}")
    fs, sites, blocks = spectrum_and_blocks(vcf, pm, list(pops), list(projections), polarized=polarized,
                                            cache_dir=cache_dir, popmap_path=popmap, ancestral_fasta=ancestral_fasta,
                                            block_bp=block_bp)
    _check(fs, str(vcf))
    log.info("AFS from %s: %d populations, sample sizes %s, S = %.1f; records %s", vcf, fs.ndim, fs.sample_sizes,
             fs.S(), sites)
    return fs, blocks
