"""Genotype matrix -> fixed-size 0/1 image: polarise, filter by MAF, sort, then resize or crop/pad.

Everything is vectorised numpy; the resize is a pair of cached linear operators (Gaussian
anti-aliasing followed by linear interpolation, the same maths as an anti-aliased image resize) applied
as matrix products, then thresholded at 0.5. The output depends only on the input, so the same
replicate gives a bit-identical image on any worker.
"""

from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
from scipy import sparse

from .config import ImageConfig


def polarise(m: np.ndarray, how: str) -> np.ndarray:
    """``derived``: unchanged; ``major_minor``: flip sites where 1 is the majority, so 1 = minor allele."""
    if how == "derived":
        return m
    n = m.shape[0]
    flip = (m.sum(axis=0, dtype=np.int64) * 2 > n).astype(np.uint8)
    return m ^ flip[None, :]


def site_mask(m: np.ndarray, maf: float) -> np.ndarray:
    """Sites that segregate in the sample and whose minor allele frequency is at least ``maf``."""
    n = m.shape[0]
    c = m.sum(axis=0, dtype=np.int64)
    minor = np.minimum(c, n - c)
    return (minor > 0) & (minor >= maf * n)


def row_groups(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Identical rows of a 0/1 matrix: (first row index of each group, group sizes, group id per row).

    Groups come in lexicographic order of the rows. Rows are bit-packed into big-endian 64-bit words
    and lexsorted, which is much faster than ``np.unique(axis=0)`` on wide uint8 rows.
    """
    n = m.shape[0]
    packed = np.packbits(m, axis=1)
    width = -(-packed.shape[1] // 8) * 8
    if width != packed.shape[1]:
        buf = np.zeros((n, width), dtype=np.uint8)
        buf[:, :packed.shape[1]] = packed
        packed = buf
    words = np.ascontiguousarray(packed).view(">u8").astype(np.uint64)
    order = np.lexsort(words.T[::-1]) if words.shape[1] else np.arange(n)
    ranked = words[order]
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n))
    gid_sorted = np.cumsum(new) - 1
    gid = np.empty(n, dtype=np.int64)
    gid[order] = gid_sorted
    return order[starts], counts, gid


def sort_rows(m: np.ndarray) -> np.ndarray:
    """Group identical haplotypes, most frequent group first (ties: lexicographic order of the rows)."""
    if m.shape[0] == 0 or m.shape[1] == 0:
        return m
    first, counts, _ = row_groups(m)
    order = np.argsort(-counts, kind="stable")
    return np.repeat(m[first[order]], counts[order], axis=0)


def sort_rows_distance(m: np.ndarray) -> np.ndarray:
    """Rows by Hamming distance to the most frequent haplotype (identical haplotypes kept together)."""
    if m.shape[0] == 0 or m.shape[1] == 0:
        return m
    first, counts, _ = row_groups(m)
    uniq = m[first]
    top = uniq[int(np.argmax(counts))]
    dist = np.count_nonzero(uniq != top[None, :], axis=1)
    order = np.argsort(dist, kind="stable")
    return np.repeat(uniq[order], counts[order], axis=0)


def sort_columns(m: np.ndarray) -> np.ndarray:
    """Sites by allele frequency (count of 1s), highest first; ties keep genomic order."""
    if m.shape[1] == 0:
        return m
    order = np.argsort(-m.sum(axis=0, dtype=np.int64), kind="stable")
    return m[:, order]


def sort_columns_distance(m: np.ndarray) -> np.ndarray:
    """Sites by Hamming distance to the most frequent site pattern; identical sites kept together."""
    if m.shape[1] == 0 or m.shape[0] == 0:
        return m
    first, counts, gid = row_groups(np.ascontiguousarray(m.T))
    top = m[:, first[int(np.argmax(counts))]]
    dist = np.count_nonzero(m != top[:, None], axis=0)
    order = np.lexsort((gid, dist))
    return m[:, order]


SORTERS = {
    "none": lambda m: m,
    "rows": sort_rows,
    "columns": sort_columns,
    "both": lambda m: sort_columns(sort_rows(m)),
    "rows_distance": sort_rows_distance,
    "columns_distance": sort_columns_distance,
}


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Input columns and weights, (n_out, taps) each, of the resize operator (see resize_operator)."""
    factor = n_in / n_out
    # interpolation: output i reads blurred rows lo (weight 1 - frac) and lo + 1 (weight frac)
    if n_in == 1:
        lo = np.zeros(n_out, dtype=np.int64)
        frac = np.zeros(n_out)
    else:
        x = _mirror((np.arange(n_out) + 0.5) * factor - 0.5, n_in)
        lo = np.clip(np.floor(x).astype(np.int64), 0, n_in - 2)
        frac = x - lo
    rows = np.stack([lo, np.minimum(lo + 1, n_in - 1)], axis=1)  # (n_out, 2)
    row_w = np.stack([1.0 - frac, frac], axis=1)
    # blur: blurred row r reads inputs mirror(r + k) with Gaussian weights w_k, k in [-R, R]
    sigma = max(0.0, (factor - 1.0) / 2.0)
    radius = int(4.0 * sigma + 0.5) if sigma > 0 else 0
    k = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (k / sigma) ** 2) if sigma > 0 else np.ones(1)
    w = w / w.sum()
    cols = _mirror(rows[:, :, None] + k[None, None, :], n_in).astype(np.int64).reshape(n_out, -1)
    weights = (row_w[:, :, None] * w[None, None, :]).reshape(n_out, -1)
    return cols, weights


@lru_cache(maxsize=4096)
def sparse_operator(n_in: int, n_out: int) -> sparse.csr_matrix:
    """:func:`resize_operator` as a CSR matrix (a few taps per output pixel; repeated columns are
    summed by the product): fast, BLAS-free, summed in a fixed order whatever the thread count."""
    cols, weights = _taps(n_in, n_out)
    taps = cols.shape[1]
    indptr = np.arange(0, n_out * taps + 1, taps, dtype=np.int64)
    return sparse.csr_matrix((weights.astype(np.float32).reshape(-1), cols.reshape(-1), indptr),
                             shape=(n_out, n_in))


def _mirror(x: np.ndarray, n: int) -> np.ndarray:
    """Fold coordinates into [0, n-1] by reflection about the edge pixel centres (scipy's 'mirror')."""
    if n == 1:
        return np.zeros_like(x)
    period = 2 * (n - 1)
    x = np.abs(np.mod(x, period))
    return np.where(x > n - 1, period - x, x)


@lru_cache(maxsize=64)
def resize_operator(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix: Gaussian anti-aliasing (sigma = (n_in/n_out - 1)/2, radius
    int(4 sigma + 0.5), mirror edges) then linear interpolation at pixel centres
    ((i + 0.5) * n_in/n_out - 0.5, mirrored into range); the dense form of :func:`sparse_operator`."""
    cols, weights = _taps(n_in, n_out)
    flat = (np.arange(n_out)[:, None] * n_in + cols).reshape(-1)
    out = np.bincount(flat, weights=weights.reshape(-1), minlength=n_out * n_in).reshape(n_out, n_in)
    out = out.astype(np.float32)
    out.setflags(write=False)
    return out


def resize_binary(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of a 0/1 matrix to ``size``, thresholded at 0.5 back to 0/1 uint8."""
    h, w = size
    if m.shape[1] == 0 or m.shape[0] == 0:
        return np.zeros((h, w), dtype=np.uint8)
    xt = m.T.astype(np.float32)  # (sites, haps)
    if m.shape[1] != w:
        xt = sparse_operator(m.shape[1], w) @ xt  # (w, haps)
    x = np.ascontiguousarray(xt.T)
    if m.shape[0] != h:
        x = sparse_operator(m.shape[0], h) @ x
    return (x >= 0.5).astype(np.uint8)


def central_window(positions: np.ndarray, width: int, centre: float) -> slice:
    """The ``width`` consecutive sites closest to ``centre`` (all sites if there are fewer)."""
    n = positions.shape[0]
    if n <= width:
        return slice(0, n)
    mid = int(np.searchsorted(positions, centre))
    start = min(max(mid - width // 2, 0), n - width)
    return slice(start, start + width)


def pad_to(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Keep the first ``h`` rows; centre the columns, padding with zeros (minor/derived absent)."""
    h, w = size
    out = np.zeros((h, w), dtype=np.uint8)
    rows = min(h, m.shape[0])
    cols = min(w, m.shape[1])
    left = (w - cols) // 2
    out[:rows, left:left + cols] = m[:rows, :cols]
    return out


def image_and_sites(haps: np.ndarray, positions: np.ndarray, cfg: ImageConfig,
                    centre: float | None = None) -> tuple[np.ndarray, int]:
    """The (H, W) uint8 image and the number of sites kept after the MAF filter (the common settings,
    rows sorted and resized, through the compiled :mod:`.kernels`, bit for bit the same; their bit
    packing reads bytes as little-endian words, so a big-endian machine takes the numpy chain)."""
    if cfg.sort == "rows" and cfg.resize == "resize" and sys.byteorder == "little":
        from .kernels import image_rows_resized  # kernels reuses this module's resize operators

        return image_rows_resized(haps, cfg.polarisation == "major_minor", cfg.maf, cfg.size)
    return numpy_image_and_sites(haps, positions, cfg, centre)


def numpy_image_and_sites(haps: np.ndarray, positions: np.ndarray, cfg: ImageConfig,
                          centre: float | None = None) -> tuple[np.ndarray, int]:
    """:func:`image_and_sites` in numpy for any settings (the reference the compiled kernel matches)."""
    m = np.asarray(haps, dtype=np.uint8)
    positions = np.asarray(positions, dtype=np.float64)
    m = polarise(m, cfg.polarisation)
    keep = site_mask(m, cfg.maf)
    if not keep.all():
        m = m[:, keep]
        positions = positions[keep]
    n_sites = int(m.shape[1])
    sorter = SORTERS[cfg.sort]
    if cfg.resize == "crop_pad":
        if centre is None:
            centre = float(positions[0] + positions[-1]) / 2.0 if n_sites else 0.0
        m = m[:, central_window(positions, cfg.size[1], centre)]
        return pad_to(sorter(m), cfg.size), n_sites
    return resize_binary(sorter(m), cfg.size), n_sites


def make_image(haps: np.ndarray, positions: np.ndarray, cfg: ImageConfig,
               centre: float | None = None) -> np.ndarray:
    """(n_haps, n_sites) 0/1 genotypes (1 = derived) -> (H, W) uint8 0/1 image (see module doc)."""
    return image_and_sites(haps, positions, cfg, centre)[0]
