"""Accessibility masks: BED files of accessible sequence, shared by the region reader and the scan.

Intervals are read per chromosome, sorted and merged, 0-based half-open as in BED. A site at 1-based
POS is accessible when POS - 1 lies in an interval; a window's accessible share is its accessible bp
over its length. No Dask here.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import InputDataError

Intervals = tuple[np.ndarray, np.ndarray]  # merged (starts, ends), 0-based half-open


def no_mask_error(mask: str | Path, chrom: str, covered: list[str]) -> InputDataError:
    """A mask without intervals on the chromosome read: most likely the mask of another chromosome or assembly."""
    return InputDataError(f"{mask}: the mask has no intervals on chromosome {chrom} "
                          f"(it covers {', '.join(covered[:10]) or 'nothing'})")


def read_mask(path: str | Path, chroms: set[str] | None = None) -> dict[str, Intervals]:
    """Accessible intervals of a BED file (plain or gzip) per chromosome: sorted, merged, 0-based half-open
    (starts, ends). With ``chroms``, only those are kept, and each must have intervals."""
    path = Path(path)
    raw: dict[str, list[tuple[int, int]]] = {}
    seen: dict[str, None] = {}
    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as fh:
            for lineno, line in enumerate(fh, start=1):
                fields = line.split()
                if not fields or fields[0].startswith(("#", "track", "browser")):
                    continue
                seen[fields[0]] = None
                if chroms is not None and fields[0] not in chroms:
                    continue
                try:
                    start, end = int(fields[1]), int(fields[2])
                except (IndexError, ValueError):
                    raise InputDataError(f"{path}:{lineno}: expected CHROM START END (BED), got {line.strip()[:60]!r}") from None
                raw.setdefault(fields[0], []).append((start, end))
    except FileNotFoundError:
        raise InputDataError(f"{path}: mask file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read mask: {exc}") from None
    for chrom in sorted((chroms or set()) - set(raw)):
        raise no_mask_error(path, chrom, list(seen))
    if not raw:
        raise InputDataError(f"{path}: the mask has no intervals")
    out = {}
    for chrom, ivs in raw.items():
        a = np.array(sorted(ivs), dtype=np.int64)
        reach = np.maximum.accumulate(a[:, 1])
        first = np.concatenate([[True], a[1:, 0] > reach[:-1]])  # not touching any interval before it
        last = np.concatenate([np.flatnonzero(first)[1:] - 1, [len(a) - 1]])
        out[chrom] = (a[first, 0], reach[last])
    return out


def accessible_bp(ivs: Intervals, start0: int, end0: int) -> int:
    """Accessible base pairs of [start0, end0) (0-based, half-open)."""
    lo, hi = np.clip(ivs[0], start0, end0), np.clip(ivs[1], start0, end0)
    return int(np.sum(hi - lo))


def inside(ivs: Intervals, positions: np.ndarray) -> np.ndarray:
    """Whether each 1-based ``position`` is accessible (its 0-based base lies in an interval)."""
    p0 = np.asarray(positions, dtype=np.int64) - 1
    i = np.searchsorted(ivs[0], p0, side="right") - 1
    return (i >= 0) & (p0 < ivs[1][np.maximum(i, 0)])


def accessible_shares(ivs: Intervals, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Accessible share of each window [start, end] (1-based, inclusive), from the cumulative interval lengths."""
    s, e = ivs
    cum = np.concatenate([[0], np.cumsum(e - s)])

    def covered(x: np.ndarray) -> np.ndarray:  # accessible bp of [0, x) (0-based)
        i = np.searchsorted(s, x, side="right")  # intervals starting before x
        partial = np.clip(x - s[np.maximum(i - 1, 0)], 0, (e - s)[np.maximum(i - 1, 0)])
        return np.where(i > 0, cum[np.maximum(i - 1, 0)] + partial, 0)

    a = np.asarray(starts, dtype=np.int64) - 1
    b = np.asarray(ends, dtype=np.int64)
    return (covered(b) - covered(a)) / np.maximum(b - a, 1)


def clip(ivs: Intervals, end0: int) -> Intervals:
    """The intervals of [0, end0): what a null chromosome of ``end0`` bp needs of a chromosome's mask."""
    keep = ivs[0] < end0
    return ivs[0][keep].copy(), np.minimum(ivs[1][keep], end0)
