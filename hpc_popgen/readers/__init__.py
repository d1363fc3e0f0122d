"""Readers of the genotype data users bring: VCF/BCF, VCF Zarr, ms, FASTA ancestral alleles, masks, spectra.

Each turns a file into plain arrays or :class:`Haplotypes`; the image steps (:mod:`hpc_popgen.images`) and
the science packages read through them. No Dask here.
"""

from .haplotypes import Haplotypes
from .mask import read_mask
from .ms import read_ms
from .spectra import fs_from_vcf, load_fs, read_popmap
from .vcf import read_vcf

__all__ = ["Haplotypes", "fs_from_vcf", "load_fs", "read_mask", "read_ms", "read_popmap", "read_vcf"]
