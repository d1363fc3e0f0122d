"""How a genotype matrix becomes an image: polarisation, MAF filter, sorting and the fixed output size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..config import from_params
from ..errors import ParamError

POLARISATIONS = ("major_minor", "derived")
SORTS = ("none", "rows", "columns", "both", "rows_distance", "columns_distance")
RESIZES = ("resize", "crop_pad")


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """Image processing settings, recorded in the store so an image can be remade from its replicate.

    The defaults live in the simulate stage's schema (``image``); errors name keys relative to it.
    polarisation: ``major_minor`` (1 = minor allele) or ``derived`` (1 = derived allele).
    maf: drop sites whose minor allele frequency is below this (0 keeps every segregating site).
    sort: ``none``, ``rows`` (identical haplotypes grouped, most frequent first), ``columns`` (sites by
    allele frequency, highest first), ``both`` (rows then columns), ``rows_distance`` / ``columns_distance``
    (rows or columns by distance to the most frequent row or column).
    size: (height, width) of the output; resize: ``resize`` (anti-aliased resize then threshold at 0.5)
    or ``crop_pad`` (the central sites, zero-padded).
    """

    polarisation: str
    maf: float
    sort: str
    size: tuple[int, int]
    resize: str

    def __post_init__(self) -> None:
        for key, allowed in (("polarisation", POLARISATIONS), ("sort", SORTS), ("resize", RESIZES)):
            if getattr(self, key) not in allowed:
                raise ParamError(key, f"{getattr(self, key)!r} is not one of {', '.join(allowed)}")
        if not 0.0 <= float(self.maf) < 0.5:
            raise ParamError("maf", f"{self.maf!r} must be in [0, 0.5)")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ParamError("size", f"{list(self.size)!r} must be [height, width] with both >= 1")

    def to_dict(self) -> dict:
        """JSON-ready form (size as a list), as stored in the image store's attrs."""
        d = asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImageConfig:
        """Inverse of :meth:`to_dict` (e.g. a store's attrs); unknown or missing keys are an error."""
        known = {f.name for f in fields(cls)}
        extra, missing = set(d) - known, known - set(d)
        if extra or missing:
            what = f"unknown key(s) {', '.join(sorted(extra))}" if extra else f"missing {', '.join(sorted(missing))}"
            raise ParamError("", f"{what} (keys: {', '.join(sorted(known))})")
        return from_params(cls, d)
