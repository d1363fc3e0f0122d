"""A demography stage's spectrum: the AFS its config's ``input`` names (read by :mod:`hpc_popgen.readers.spectra`),
and the ``.fs`` file the generated model code reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputDataError
from ..readers.spectra import fs_and_blocks_from_vcf, load_fs
from .config import DemographyConfig


def load_input(cfg: DemographyConfig, resolve: Callable[[str], str], cache_dir: str | Path | None = None) -> Any:
    """The AFS of ``cfg.input`` (an .fs file, or a VCF + popmap projected); ``resolve`` turns its paths into
    files; ``cache_dir``: where a VCF's VCF Zarr is cached (None: the default cache)."""
    return load_input_blocks(cfg, resolve, cache_dir)[0]


def load_input_blocks(cfg: DemographyConfig, resolve: Callable[[str], str], cache_dir: str | Path | None = None,
                      block_bp: int | None = None) -> tuple[Any, Any]:
    """:func:`load_input`, and for a VCF with ``block_bp`` its block spectra from the same read
    (:class:`~hpc_popgen.readers.vcz.BlockSpectra`; None for an AFS or without ``block_bp``)."""
    inp = cfg.input
    blocks = None
    if inp.afs:
        fs = load_fs(resolve(inp.afs), list(inp.populations) if inp.populations else None)
    else:
        fs, blocks = fs_and_blocks_from_vcf(
            resolve(inp.vcf), resolve(inp.popmap), list(inp.populations),  # type: ignore[arg-type]
            list(inp.projections), polarized=inp.polarized, cache_dir=cache_dir,  # type: ignore[arg-type]
            ancestral_fasta=resolve(inp.ancestral_fasta) if inp.ancestral_fasta else None, block_bp=block_bp)
    structure = list(cfg.initial_structure)
    if fs.ndim != len(structure):
        raise InputDataError(f"{inp.afs or inp.vcf}: {fs.ndim}-population spectrum but "
                             f"initial_structure {structure} has {len(structure)} entries")
    return fs, blocks


def spectrum_file(cfg: DemographyConfig, data: Any, resolve: Callable[[str], str], out_dir: Path) -> str:
    """The .fs file generated code reads: the input AFS, or ``out_dir/data.fs`` written from the VCF's spectrum."""
    if cfg.input.afs:
        return str(Path(resolve(cfg.input.afs)).resolve())
    path = out_dir / "data.fs"
    data.to_file(str(path))
    return str(path.resolve())
