"""Read ms / msms / discoal text output (plain or gzip) into Haplotypes, one per replicate."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

from ..errors import InputDataError
from .haplotypes import Haplotypes

log = logging.getLogger(__name__)


def open_text(path: str | Path):
    """Open a text file, transparently gunzipping when it starts with the gzip magic bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read: {exc.strerror}") from None
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt")
    return open(path)


def _matrix(rows: list[str], path: Path, first_line: int, n_sites: int) -> np.ndarray:
    """Haplotype lines -> (n, n_sites) uint8; each line must be n_sites characters of 0/1."""
    for k, row in enumerate(rows):
        if len(row) != n_sites:
            raise InputDataError(f"{path}:{first_line + k}: haplotype has {len(row)} sites, 'segsites:' says {n_sites}")
    if not rows:
        return np.zeros((0, n_sites), dtype=np.uint8)
    raw = np.frombuffer("".join(rows).encode("ascii", errors="replace"), dtype=np.uint8) - ord("0")
    m = raw.reshape(len(rows), n_sites)
    if m.size and m.max() > 1:
        bad = int(np.argmax((m > 1).any(axis=1)))
        raise InputDataError(f"{path}:{first_line + bad}: haplotype characters other than 0/1")
    return np.ascontiguousarray(m)


def _header_nsam(lines: list[str]) -> int:
    """Sample size from the command line (``ms 128 1000 ...``), or 0 if there is no such line."""
    for line in lines[:3]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit() and not line.startswith("//"):
            return int(parts[1])
    return 0


def read_ms(path: str | Path) -> list[Haplotypes]:
    """All replicates of an ms-format file; positions are fractions of the region (length 1.0).

    The format (ms, msms and discoal share it): per replicate a ``//`` line, ``segsites: S``, then
    ``positions: ...`` (absent when S = 0) and one line of S characters 0/1 per haplotype.
    """
    path = Path(path)
    out: list[Haplotypes] = []
    with open_text(path) as fh:
        try:
            lines = fh.read().splitlines()
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise InputDataError(f"{path}: cannot read as ms text: {exc}") from None
    i, n = 0, len(lines)
    nsam = _header_nsam(lines)
    while i < n:
        if not lines[i].startswith("//"):
            i += 1
            continue
        start = i + 1
        i += 1
        while i < n and not lines[i].strip():
            i += 1
        if i >= n or not lines[i].startswith("segsites:"):
            raise InputDataError(f"{path}:{start + 1}: expected 'segsites:' after '//'")
        try:
            n_sites = int(lines[i].split(":", 1)[1])
        except ValueError:
            raise InputDataError(f"{path}:{i + 1}: bad 'segsites:' line {lines[i]!r}") from None
        i += 1
        positions = np.zeros(0)
        if n_sites > 0:
            while i < n and not lines[i].startswith("positions:"):
                i += 1
            if i >= n:
                raise InputDataError(f"{path}:{start}: replicate without a 'positions:' line")
            try:
                positions = np.array(lines[i].split(":", 1)[1].split(), dtype=np.float64)
            except ValueError:
                raise InputDataError(f"{path}:{i + 1}: positions are not numbers") from None
            if positions.shape[0] != n_sites:
                raise InputDataError(f"{path}:{i + 1}: {positions.shape[0]} positions but segsites: {n_sites}")
            i += 1
        first = i + 1
        rows = []
        while i < n and lines[i].strip() and not lines[i].startswith("//"):
            rows.append(lines[i].strip())
            i += 1
        if n_sites == 0:
            rows = [""] * nsam if nsam else []
        elif nsam and len(rows) != nsam:
            raise InputDataError(f"{path}:{start}: {len(rows)} haplotypes, the command line says {nsam}")
        out.append(Haplotypes(_matrix(rows, path, first, n_sites), positions, length=1.0,
                              source=f"{path}:{start}"))
    if not out:
        raise InputDataError(f"{path}: no replicates found (no '//' line); is this ms/msms/discoal output?")
    log.debug("read %d replicates from %s", len(out), path)
    return out
