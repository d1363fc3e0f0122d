"""Images from data users bring (ms/msms/discoal replicates, VCF regions), through the same steps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..readers.haplotypes import Haplotypes
from .config import ImageConfig
from .process import image_and_sites


def images_from(regions: Iterable[Haplotypes], cfg: ImageConfig) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint8 images and (N,) sites kept, for regions read by ``read_ms`` or ``read_vcf``.

    Each region is centred on its own centre (half its length when known), as simulated regions are.
    """
    regions = list(regions)
    images = np.zeros((len(regions), *cfg.size), dtype=np.uint8)
    sites = np.zeros(len(regions), dtype=np.int32)
    for k, h in enumerate(regions):
        images[k], sites[k] = image_and_sites(h.matrix, h.positions, cfg, centre=h.centre())
    return images, sites
