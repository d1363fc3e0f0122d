"""Genotype matrices -> images (ImaGene steps 1-2). Readers of user data live in :mod:`hpc_popgen.readers`. No Dask here."""

from .config import ImageConfig
from .convert import images_from
from .process import image_and_sites, make_image

__all__ = ["ImageConfig", "image_and_sites", "images_from", "make_image"]
