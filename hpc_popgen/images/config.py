"""How a genotype matrix becomes an image: polarisation, MAF filter, sorting and the fixed output size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ManifestError

POLARISATIONS = ("major_minor", "derived")
SORTS = ("none", "rows", "columns", "both", "rows_distance", "columns_distance")
RESIZES = ("resize", "crop_pad")


@dataclass(frozen=True)
class ImageConfig:
    """Image processing settings, recorded in the store so an image can be remade from its replicate.

    polarisation: ``major_minor`` (1 = minor allele) or ``derived`` (1 = derived allele).
    maf: drop sites whose minor allele frequency is below this (0 keeps every segregating site).
    sort: ``none``, ``rows`` (identical haplotypes grouped, most frequent first), ``columns`` (sites by
    allele frequency, highest first), ``both`` (rows then columns), ``rows_distance`` / ``columns_distance``
    (rows or columns by distance to the most frequent row or column).
    size: (height, width) of the output; resize: ``resize`` (anti-aliased resize then threshold at 0.5)
    or ``crop_pad`` (the central sites, zero-padded).
    """

    polarisation: str = "major_minor"
    maf: float = 0.0
    sort: str = "rows"
    size: tuple[int, int] = (128, 128)
    resize: str = "resize"

    def __post_init__(self) -> None:
        if self.polarisation not in POLARISATIONS:
            raise ManifestError(f"image.polarisation: {self.polarisation!r} is not one of {', '.join(POLARISATIONS)}")
        if self.sort not in SORTS:
            raise ManifestError(f"image.sort: {self.sort!r} is not one of {', '.join(SORTS)}")
        if self.resize not in RESIZES:
            raise ManifestError(f"image.resize: {self.resize!r} is not one of {', '.join(RESIZES)}")
        if not 0.0 <= float(self.maf) < 0.5:
            raise ManifestError(f"image.maf: {self.maf!r} must be in [0, 0.5)")
        size = tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) < 1:
            raise ManifestError(f"image.size: {list(self.size)!r} must be [height, width] with both >= 1")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "maf", float(self.maf))

    def to_dict(self) -> dict:
        """JSON-ready form (size as a list), as stored in the image store's attrs."""
        d = asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImageConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {"polarisation", "maf", "sort", "size", "resize"}
        extra = set(d) - known
        if extra:
            raise ManifestError(f"image: unknown key(s) {', '.join(sorted(extra))} (allowed: {', '.join(sorted(known))})")
        return cls(**d)
