"""Compiled image step for the common config (``sort="rows"``, ``resize="resize"``).

:func:`process.image_and_sites` spends most of its ~200 us per image in numpy call overheads
(polarise, MAF mask, row grouping, two sparse products). Here the same chain runs in two numba
kernels and gives a bit-identical image: the resize reuses the taps of the cached
:func:`process.sparse_operator` and repeats scipy's CSR x dense arithmetic (float32, same order).
"""

from __future__ import annotations

import numba
import numpy as np

from .process import sparse_operator

_NO_INDEX = np.zeros(1, dtype=np.int32)
_NO_DATA = np.zeros(0, dtype=np.float32)


@numba.njit(cache=True)
def _rows_before(words: np.ndarray, a: int, b: int) -> bool:  # pragma: no cover - compiled
    """Row ``a`` strictly before row ``b`` in lexicographic order of the packed (big-endian) words."""
    for w in range(words.shape[1]):
        x, y = words[a, w], words[b, w]
        if x != y:
            return x < y
    return False


@numba.njit(cache=True)
def _sorted_unique_rows(haps: np.ndarray, major_minor: bool,
                        threshold: float) -> tuple[int, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Polarise, MAF-filter and group rows as ``sort_rows`` does.

    Returns (sites kept, (kept sites, groups) float32 0/1 matrix of the distinct rows in output order,
    group of each output row). Only distinct rows are resized: the row-wise operator treats them alike.
    """
    n, s = haps.shape
    counts = np.zeros(s, dtype=np.int64)
    for r in range(n):
        for j in range(s):
            counts[j] += haps[r, j]
    kidx = np.empty(s, dtype=np.int64)
    kflip = np.empty(s, dtype=np.uint8)
    k = 0
    for j in range(s):
        c = counts[j]
        minor = min(c, n - c)
        if minor > 0 and minor >= threshold:
            kidx[k] = j
            kflip[k] = 1 if (major_minor and c * 2 > n) else 0
            k += 1
    if k == 0 or n == 0:
        return k, np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)

    # polarised kept sites, rows zero-padded to whole 64-bit words, then bit-packed with the first
    # kept site in the most significant bit of word 0 (8 sites -> 1 byte by one multiplication)
    nw = (k + 63) // 64
    kp = nw * 64
    bits = np.zeros((n, kp), dtype=np.uint8)
    if k == s:
        for r in range(n):
            for j in range(k):
                bits[r, j] = haps[r, j] ^ kflip[j]
    else:
        for r in range(n):
            for j in range(k):
                bits[r, j] = haps[r, kidx[j]] ^ kflip[j]
    eights = bits.reshape(n * kp).view(np.uint64)
    words = np.empty((n, nw), dtype=np.uint64)
    for r in range(n):
        for w in range(nw):
            acc = np.uint64(0)
            for t in range(8):
                b = (eights[(r * nw + w) * 8 + t] * np.uint64(0x8040201008040201)) >> np.uint64(56)
                acc |= b << np.uint64(56 - 8 * t)
            words[r, w] = acc

    # bottom-up merge sort of row indices (equal rows are identical, so stability is moot)
    order = np.arange(n)
    tmp = np.empty(n, dtype=np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, o = lo, mid, lo
            while i < mid and j < hi:
                if _rows_before(words, order[j], order[i]):
                    tmp[o] = order[j]
                    j += 1
                else:
                    tmp[o] = order[i]
                    i += 1
                o += 1
            while i < mid:
                tmp[o] = order[i]
                i += 1
                o += 1
            while j < hi:
                tmp[o] = order[j]
                j += 1
                o += 1
        order, tmp = tmp, order
        width *= 2

    # groups of identical rows in lexicographic order: first member and size
    first = np.empty(n, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    g = 0
    for p in range(n):
        if p == 0 or _rows_before(words, order[p - 1], order[p]):
            first[g] = order[p]
            g += 1
        size[g - 1] += 1

    # stable counting sort of the groups by size, largest first
    start = np.zeros(n + 2, dtype=np.int64)
    for q in range(g):
        start[n - size[q] + 1] += 1
    for c in range(1, n + 2):
        start[c] += start[c - 1]
    rank = np.empty(g, dtype=np.int64)
    for q in range(g):
        key = n - size[q]
        rank[start[key]] = q
        start[key] += 1

    rowgroup = np.empty(n, dtype=np.int64)
    src = np.empty(g, dtype=np.int64)
    p = 0
    for out in range(g):
        q = rank[out]
        src[out] = first[q]
        for _ in range(size[q]):
            rowgroup[p] = out
            p += 1
    # distinct rows as columns, (kept sites, groups), unpacked from their words
    wt = np.empty((nw, g), dtype=np.uint64)
    for out in range(g):
        for w in range(nw):
            wt[w, out] = words[src[out], w]
    xt = np.empty((k, g), dtype=np.float32)
    for j in range(k):
        shift = np.uint64(63 - (j & 63))
        wrow = wt[j >> 6]
        for out in range(g):
            xt[j, out] = np.float32((wrow[out] >> shift) & np.uint64(1))
    return k, xt, rowgroup


@numba.njit(cache=True)
def _resize_groups(xt: np.ndarray, rowgroup: np.ndarray, col_ptr: np.ndarray, col_idx: np.ndarray,
                   col_w: np.ndarray, row_ptr: np.ndarray, row_idx: np.ndarray, row_w: np.ndarray,
                   h: int, w: int) -> np.ndarray:  # pragma: no cover - compiled
    """``resize_binary`` of the matrix whose row p is distinct row ``rowgroup[p]`` (column ``xt[:, g]``).

    Each CSR product is y[i] = 0, then y[i] += data[jj] * x[indices[jj]] for jj in order, in float32,
    as scipy's csr_matvec(s); an empty ``col_w`` / ``row_w`` means that side is already the right size.
    """
    k, g = xt.shape
    n = rowgroup.shape[0]
    if col_w.shape[0] == 0:
        y1 = xt  # k == w
    else:
        y1 = np.zeros((w, g), dtype=np.float32)
        for i in range(w):
            for jj in range(col_ptr[i], col_ptr[i + 1]):
                a = col_w[jj]
                src = col_idx[jj]
                for q in range(g):
                    y1[i, q] += a * xt[src, q]
    rows = np.empty((g, w), dtype=np.float32)  # the (w, groups) product transposed
    for q in range(g):
        for i in range(w):
            rows[q, i] = y1[i, q]
    out = np.empty((h, w), dtype=np.uint8)
    if row_w.shape[0] == 0:  # n == h
        for p in range(n):
            src = rowgroup[p]
            for i in range(w):
                out[p, i] = 1 if rows[src, i] >= np.float32(0.5) else 0
        return out
    acc = np.empty(w, dtype=np.float32)
    for p in range(h):
        acc[:] = 0
        for jj in range(row_ptr[p], row_ptr[p + 1]):
            a = row_w[jj]
            src = rowgroup[row_idx[jj]]
            for i in range(w):
                acc[i] += a * rows[src, i]
        for i in range(w):
            out[p, i] = 1 if acc[i] >= np.float32(0.5) else 0
    return out


def image_rows_resized(haps: np.ndarray, major_minor: bool, maf: float,
                       size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """:func:`process.image_and_sites` for ``sort="rows"``, ``resize="resize"``, bit for bit.

    ``haps``: (n_haps, n_sites) 0/1 genotypes; returns the (H, W) uint8 image and the sites kept by MAF.
    """
    m = np.ascontiguousarray(haps, dtype=np.uint8)
    n, _ = m.shape
    h, w = int(size[0]), int(size[1])
    k, xt, rowgroup = _sorted_unique_rows(m, bool(major_minor), float(maf) * n)
    if k == 0 or n == 0:
        return np.zeros((h, w), dtype=np.uint8), int(k)
    if k != w:
        op = sparse_operator(k, w)
        col_ptr, col_idx, col_w = op.indptr, op.indices, op.data
    else:
        col_ptr, col_idx, col_w = _NO_INDEX, _NO_INDEX, _NO_DATA
    if n != h:
        op = sparse_operator(n, h)
        row_ptr, row_idx, row_w = op.indptr, op.indices, op.data
    else:
        row_ptr, row_idx, row_w = _NO_INDEX, _NO_INDEX, _NO_DATA
    return _resize_groups(xt, rowgroup, col_ptr, col_idx, col_w, row_ptr, row_idx, row_w, h, w), int(k)
