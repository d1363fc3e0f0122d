"""Fast, validating reader of ms / msms / discoal text: whole buffers parsed with numpy, no per-character loops.

The format: an optional command line (``ms 128 100 ...``, ``msms ... -ms 128 100``, ``discoal 128 100
...``), then per replicate a ``//`` line, any lines before ``segsites: S`` (trees, ``prob:``), a
``positions: ...`` line of S fractions of the region (absent when S = 0) and one line of S characters
0/1 per haplotype. Lines after a replicate's haplotypes up to the next ``//`` (blank lines, traces)
are ignored. Every error names the file and line.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputDataError

log = logging.getLogger(__name__)
GZIP_MAGIC = b"\x1f\x8b"
_NL, _CR, _SLASH, _ZERO, _ONE, _DOT, _SPACE = 10, 13, 47, 48, 49, 46, 32
_MAX_EXACT_DIGITS = 15  # integers below 10**15 < 2**53: mantissa / 10**k is then correctly rounded
_POW10 = 10.0 ** np.arange(23)


@dataclass
class MsReplicates:
    """Replicates parsed from one buffer: matrices (n_haps, S) uint8, positions (S,) fractions, and where
    each replicate starts (byte offset of its ``//`` line, its 1-based line number)."""

    matrices: list[np.ndarray] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.matrices)


def is_gzip(path: str | Path) -> bool:
    """Whether a file starts with the gzip magic bytes (named errors for missing/unreadable files)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == GZIP_MAGIC
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read: {exc.strerror}") from None


def read_range(path: str | Path, start: int = 0, stop: int | None = None) -> bytes:
    """Bytes [start, stop) of a file's text (gzip files decompressed; their offsets are in the text)."""
    opener = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:
            if start:
                fh.seek(start)
            return fh.read() if stop is None else fh.read(stop - start)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputDataError(f"{path}: cannot read: {exc}") from None


def header_counts(first_line: str) -> tuple[int, int] | None:
    """(haplotypes, replicates) from an ms-style command line, or None if it does not say.

    ``ms 128 100 ...`` and ``discoal 128 100 80000 ...`` give them as the first two arguments, msms
    after ``-ms`` (or first, as ms does).
    """
    parts = first_line.split()
    if "-ms" in parts:
        k = parts.index("-ms")
        pair = parts[k + 1:k + 3]
    else:
        pair = parts[1:3]
    if len(pair) == 2 and all(p.isdigit() for p in pair):
        return int(pair[0]), int(pair[1])
    return None


def read_header(path: str | Path) -> str:
    """The first line of an ms file (its command line), without reading the rest."""
    opener = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rb") as fh:
            line = fh.readline(65536)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputDataError(f"{path}: cannot read: {exc}") from None
    try:
        return line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InputDataError(f"{path}:1: not text (is this ms/msms/discoal output?)") from None


def _line_text(buf: bytes, starts: np.ndarray, lengths: np.ndarray, k: int) -> bytes:
    s = int(starts[k])
    return buf[s:s + int(lengths[k])]


def _fixed_width(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray] | None:
    """The common case in bulk: every token ``d.ddddd`` of one width, single spaces (ms, msms, discoal
    and tskit print fixed precision); None if the texts are not all like that."""
    stripped = [t.strip() for t in texts]
    joined = b" ".join(t for t in stripped if t)
    width = joined.find(b" ") if b" " in joined else len(joined)
    dot = joined.find(b".")
    if not joined or not 0 <= dot < width or width > _MAX_EXACT_DIGITS + 1 or (len(joined) + 1) % (width + 1):
        return None
    counts = np.array([(len(t) + 1) // (width + 1) if t else 0 for t in stripped], dtype=np.int64)
    if any(t and (len(t) + 1) % (width + 1) for t in stripped):
        return None
    c = np.frombuffer(joined + b" ", dtype=np.uint8).reshape(-1, width + 1)
    if (c[:, width] != _SPACE).any() or (c[:, dot] != _DOT).any():
        return None
    d = np.delete(c[:, :width], dot, axis=1).astype(np.int64) - _ZERO
    if d.size and (d.min() < 0 or d.max() > 9):
        return None
    mantissa = d @ (10 ** np.arange(width - 2, -1, -1, dtype=np.int64))
    return mantissa.astype(np.float64) / _POW10[width - 1 - dot], counts


def parse_positions(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Space-separated decimals of each text -> (all values as float64, number of values per text).

    Values are exactly what ``float()`` reads: plain decimals (``0.012729``, at most 15 digits) are
    parsed in bulk with integer arithmetic (an exact mantissa divided by an exact power of ten is
    correctly rounded); anything else (exponents, signs, longer numbers) goes through ``float()``.
    Raises ValueError on a token that is not a number.
    """
    fixed = _fixed_width(texts)
    if fixed is not None:
        return fixed
    joined = b" ".join(texts)
    c = np.frombuffer(joined, dtype=np.uint8)
    if c.size == 0:
        return np.zeros(0), np.zeros(len(texts), dtype=np.int64)
    sep = (c == _SPACE) | (c == 9)
    begin = ~sep & np.concatenate(([True], sep[:-1]))
    text_starts = np.cumsum([0, *[len(t) + 1 for t in texts[:-1]]])
    counts = np.bincount(np.searchsorted(text_starts, np.flatnonzero(begin), side="right") - 1,
                         minlength=len(texts)).astype(np.int64)
    digit = (c >= _ZERO) & (c <= _ZERO + 9)
    dot = c == _DOT
    idx = np.flatnonzero(~sep)
    tid = (np.cumsum(begin) - 1)[idx]
    n_tok = int(counts.sum())
    n_digits = np.bincount(tid, weights=digit[idx], minlength=n_tok)
    n_dots = np.bincount(tid, weights=dot[idx], minlength=n_tok)
    if (not (sep | digit | dot).all() or (n_dots > 1).any() or (n_digits == 0).any()
            or (n_digits > _MAX_EXACT_DIGITS).any()):
        return np.array([float(t) for t in joined.split()], dtype=np.float64), counts
    cum_dot = np.cumsum(dot[idx])
    first_char = np.flatnonzero(begin[idx])
    after_dot = (cum_dot - (cum_dot[first_char] - dot[idx][first_char])[tid]) > 0
    is_d = digit[idx]
    frac_digits = np.bincount(tid, weights=after_dot & is_d, minlength=n_tok).astype(np.int64)
    d_tok = tid[is_d]
    place = np.cumsum(n_digits).astype(np.int64)[d_tok] - 1 - np.arange(d_tok.size)
    # each term and partial sum is an integer below 2**53: exact in float64
    mantissa = np.bincount(d_tok, weights=(c[idx[is_d]] - _ZERO) * _POW10[place], minlength=n_tok)
    return mantissa / _POW10[frac_digits], counts


def _fail(where: str, line: int, what: str) -> InputDataError:
    return InputDataError(f"{where}:{line}: {what}")


def parse_ms(buf: bytes, n_haplotypes: int, where: str, first_line: int = 1, base_offset: int = 0) -> MsReplicates:
    """Every replicate of ``buf`` (a whole file's text, or a slice starting at a ``//`` line).

    ``n_haplotypes`` rows per replicate are required; ``where`` (the file) and ``first_line`` (the line
    number of the slice's first line) name errors; ``base_offset`` is added to the recorded offsets.
    """
    a = np.frombuffer(buf, dtype=np.uint8)
    size = a.size
    nl = np.flatnonzero(a == _NL)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    ends = np.concatenate((nl, [size])).astype(np.int64)
    if starts.size and starts[-1] == size:  # text ends with a newline
        starts, ends = starts[:-1], ends[:-1]
    lengths = ends - starts
    if size:
        last = a[np.maximum(ends - 1, 0)]
        lengths -= (lengths > 0) & (last == _CR)
        first = np.where(lengths > 0, a[np.minimum(starts, size - 1)], 0)
        second = np.where(lengths > 1, a[np.minimum(starts + 1, size - 1)], 0)
    else:
        first = second = np.zeros(0, dtype=np.uint8)
    n_lines = starts.size
    blocks = np.flatnonzero((first == _SLASH) & (second == _SLASH))
    if blocks.size == 0:
        raise InputDataError(f"{where}: no replicates found (no '//' line); is this ms/msms/discoal output?")
    seg = np.array([k for k in np.flatnonzero(first == ord("s"))
                    if _line_text(buf, starts, lengths, k).startswith(b"segsites:")], dtype=np.int64)
    pos = np.array([k for k in np.flatnonzero(first == ord("p"))
                    if _line_text(buf, starts, lengths, k).startswith(b"positions:")], dtype=np.int64)
    rowlike = (first == _ZERO) | (first == _ONE)
    bounds = np.append(blocks, n_lines)
    out = MsReplicates(offsets=starts[blocks] + base_offset, lines=blocks + first_line)
    pos_texts: list[bytes] = []
    pos_lines: list[int] = []
    n_sites_of: list[int] = []
    cols = np.arange(0)
    for r in range(blocks.size):
        b, nxt = int(blocks[r]), int(bounds[r + 1])
        k = int(np.searchsorted(seg, b))
        if k >= seg.size or seg[k] >= nxt:
            raise _fail(where, b + first_line, "expected a 'segsites:' line after '//'")
        s_line = int(seg[k])
        text = _line_text(buf, starts, lengths, s_line)
        try:
            n_sites = int(text.split(b":", 1)[1])
        except ValueError:
            raise _fail(where, s_line + first_line, f"bad 'segsites:' line {text.decode(errors='replace')!r}") from None
        if n_sites < 0:
            raise _fail(where, s_line + first_line, f"negative 'segsites:' {n_sites}")
        if n_sites == 0:
            out.matrices.append(np.zeros((n_haplotypes, 0), dtype=np.uint8))
            pos_texts.append(b"")
            pos_lines.append(s_line + first_line)
            n_sites_of.append(0)
            continue
        k = int(np.searchsorted(pos, s_line))
        if k >= pos.size or pos[k] >= nxt:
            raise _fail(where, b + first_line, "replicate without a 'positions:' line")
        p_line = int(pos[k])
        pos_texts.append(_line_text(buf, starts, lengths, p_line)[len(b"positions:"):])
        pos_lines.append(p_line + first_line)
        n_sites_of.append(n_sites)
        r0, r1 = p_line + 1, p_line + 1 + n_haplotypes
        have = int(np.argmin(np.append(rowlike[r0:min(r1, nxt)], False)))
        if have < n_haplotypes:
            raise _fail(where, b + first_line, f"{have} haplotypes, expected {n_haplotypes} (n_haplotypes)")
        if r1 < nxt and rowlike[r1]:
            raise _fail(where, r1 + first_line, f"more than {n_haplotypes} haplotypes (n_haplotypes)")
        bad_len = np.flatnonzero(lengths[r0:r1] != n_sites)
        if bad_len.size:
            j = r0 + int(bad_len[0])
            raise _fail(where, j + first_line, f"haplotype has {int(lengths[j])} sites, 'segsites:' says {n_sites}")
        s0 = int(starts[r0])
        stride = int(starts[r0 + 1] - s0) if n_haplotypes > 1 else n_sites + 1
        if (n_haplotypes > 1 and stride >= n_sites and s0 + stride * n_haplotypes <= size
                and int(starts[r1 - 1]) == s0 + stride * (n_haplotypes - 1)):
            m = a[s0:s0 + stride * n_haplotypes].reshape(n_haplotypes, stride)[:, :n_sites]
        else:
            if cols.size != n_sites:
                cols = np.arange(n_sites)
            m = a[starts[r0:r1, None] + cols[None, :]]
        m = m - np.uint8(_ZERO)
        if m.max() > 1:
            j = r0 + int(np.argmax((m > 1).any(axis=1)))
            raise _fail(where, j + first_line, "haplotype characters other than 0/1")
        out.matrices.append(np.ascontiguousarray(m))
    try:
        values, counts = parse_positions(pos_texts)
    except ValueError:
        values, counts = None, np.array([len(t.split()) for t in pos_texts])
    cuts = np.cumsum([0, *counts])
    for r, n_sites in enumerate(n_sites_of):
        if counts[r] != n_sites:
            raise _fail(where, pos_lines[r], f"{int(counts[r])} positions but segsites: {n_sites}")
        if values is None:
            try:
                p = np.array([float(t) for t in pos_texts[r].split()], dtype=np.float64)
            except ValueError:
                raise _fail(where, pos_lines[r], "positions are not numbers") from None
        else:
            p = values[cuts[r]:cuts[r + 1]]
        if not np.isfinite(p).all():
            bad = float(p[~np.isfinite(p)][0])
            raise _fail(where, pos_lines[r], f"positions must be finite numbers (found {bad})")
        if p.size and (p[0] < 0 or p[-1] > 1 or (np.diff(p) < 0).any()):
            raise _fail(where, pos_lines[r], "positions must be increasing fractions of the region in [0, 1]")
        out.positions.append(p)
    return out


@dataclass(frozen=True)
class MsIndex:
    """What a whole-file pass learns: checksum, size, gzip or not, the command line's counts, and the
    byte offset and line number of every replicate's ``//`` line (in the decompressed text)."""

    path: str
    sha256: str
    bytes: int
    gzip: bool
    header: str
    offsets: tuple[int, ...]
    lines: tuple[int, ...]
    text_bytes: int

    @property
    def n_replicates(self) -> int:
        return len(self.offsets)


def index_file(path: str | Path, n_haplotypes: int) -> MsIndex:
    """Read and fully check one ms file; its checksum and where each replicate starts.

    The command line, when it states them, must agree with ``n_haplotypes`` and hold no more
    replicates than the file has (fewer means a truncated file); files concatenated from several runs
    may hold more.
    """
    path = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read: {exc.strerror}") from None
    gz = raw[:2] == GZIP_MAGIC
    try:
        text = gzip.decompress(raw) if gz else raw
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{path}: cannot decompress: {exc}") from None
    header = text[:text.find(b"\n") if b"\n" in text[:65536] else 65536].decode("ascii", errors="replace").strip()
    counts = header_counts(header) if not header.startswith("//") else None
    if counts is not None and counts[0] != n_haplotypes:
        raise InputDataError(f"{path}:1: the command line says {counts[0]} haplotypes, n_haplotypes is {n_haplotypes}")
    reps = parse_ms(text, n_haplotypes, path)
    if counts is not None and len(reps) < counts[1]:
        raise InputDataError(f"{path}: the command line asks for {counts[1]} replicates, the file holds "
                             f"{len(reps)} (truncated?)")
    log.debug("indexed %s: %d replicates", path, len(reps))
    return MsIndex(path=path, sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw), gzip=gz, header=header,
                   offsets=tuple(int(x) for x in reps.offsets), lines=tuple(int(x) for x in reps.lines),
                   text_bytes=len(text))

