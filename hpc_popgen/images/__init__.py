"""Genotype matrices -> images (ImaGene steps 1-2), and readers for data users bring. No Dask here."""

from .config import ImageConfig
from .convert import images_from
from .haplotypes import Haplotypes
from .ms import read_ms
from .process import image_and_sites, make_image
from .vcf import read_vcf

__all__ = ["Haplotypes", "ImageConfig", "image_and_sites", "images_from", "make_image", "read_ms", "read_vcf"]
