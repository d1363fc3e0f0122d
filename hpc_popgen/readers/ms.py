"""Read ms / msms / discoal text output (plain or gzip) into Haplotypes, one per replicate.

One parser for the format, :func:`hpc_popgen.readers.msformat.parse_ms` (numpy over the whole text,
errors naming file and line); this module finds the sample size (the command line's, or the first
replicate's row count for files without one) and wraps the replicates as Haplotypes.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from ..errors import InputDataError
from .haplotypes import Haplotypes
from .msformat import header_counts, parse_ms, read_range

log = logging.getLogger(__name__)


def _first_replicate_rows(buf: bytes) -> int:
    """Haplotype rows of the first replicate (files without a command line); 0 if it has no sites."""
    lines = io.BytesIO(buf)  # lazily: only the first replicate is read
    for line in lines:
        if line.startswith(b"positions:"):
            break
        if line.startswith(b"segsites:") and line.split(b":", 1)[1].strip() == b"0":
            return 0
    rows = 0
    for line in lines:
        if line[:1] not in (b"0", b"1"):
            break
        rows += 1
    return rows


def read_ms(path: str | Path) -> list[Haplotypes]:
    """All replicates of an ms-format file; positions are fractions of the region (length 1.0).

    A command line that asks for more replicates than the file holds means a truncated file: refused, as
    :func:`~hpc_popgen.readers.msformat.index_file` refuses it (more is fine: concatenated runs).
    """
    buf = read_range(path)
    end = buf.find(b"\n")
    counts = header_counts(buf[:end if end >= 0 else len(buf)].decode("ascii", errors="replace"))
    n = counts[0] if counts else _first_replicate_rows(buf)
    reps = parse_ms(buf, n, str(path))
    if counts is not None and len(reps) < counts[1]:
        raise InputDataError(f"{path}: the command line asks for {counts[1]} replicates, the file holds "
                             f"{len(reps)} (truncated?)")
    out = [Haplotypes(m, p, length=1.0, source=f"{path}:{line}")
           for m, p, line in zip(reps.matrices, reps.positions, reps.lines, strict=True)]
    log.debug("read %d replicates from %s", len(out), path)
    return out
