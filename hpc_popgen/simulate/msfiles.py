"""A simulate stage whose replicates come from ms/msms/discoal files made elsewhere, not from our engines.

Image i is the i-th replicate of the files in the order listed. The driver indexes every file once
(checksum, where each replicate starts; see :func:`hpc_popgen.readers.msformat.index_file`); a shard's
task reads only its replicates' byte range, parses it and images each replicate with the same steps
as our own simulations, so the store is the same whatever the number of workers.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError, ParamError
from ..images import ImageConfig, image_and_sites
from ..paths import input_file
from ..readers.msformat import MsIndex, header_counts, parse_ms, read_header, read_range
from ..seeds import derive_seed
from ..store import empty_shard
from .config import SimulateConfig
from .plan import split_of

GLOB_CHARS = re.compile(r"[*?\[]")


def resolve_files(patterns: tuple[str, ...], base_dir: str | Path) -> list[Path]:
    """The files of ``source.ms``: paths relative to the manifest's folder; glob patterns expanded, sorted."""
    out: list[Path] = []
    for k, entry in enumerate(patterns):
        key = f"source.ms[{k}]"
        path = input_file(entry, base_dir)
        if GLOB_CHARS.search(entry):
            matches = sorted(Path(p) for p in glob.glob(str(path)) if os.path.isfile(p))
            if not matches:
                raise ParamError(key, f"{entry!r} matches no file (in {Path(base_dir).resolve()})")
            out.extend(matches)
        elif not path.is_file():
            raise ParamError(key, f"{path}: file not found")
        else:
            out.append(path)
    seen: dict[Path, int] = {}
    for path in out:
        real = path.resolve()
        if real in seen:
            raise ParamError("source.ms", f"{path} is listed twice: each replicate would become two images")
        seen[real] = 1
    return out


def s_of_files(files: list[Path], s: dict, base_dir: str | Path) -> list[float]:
    """S of each file: from its name (``{from_name: regex with a group S}``) or a table (``{table: tsv}``)."""
    if "from_name" in s:
        return _s_from_names(files, s["from_name"])
    return _s_from_table(files, input_file(s["table"], base_dir))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _s_from_names(files: list[Path], pattern: str) -> list[float]:
    key = "source.s.from_name"
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ParamError(key, f"{pattern!r} is not a regular expression: {exc}") from None
    if "S" not in rx.groupindex:
        raise ParamError(key, f"{pattern!r} has no named group S (write (?P<S>...), e.g. _S(?P<S>[0-9.]+)\\.ms)")
    out = []
    for path in files:
        m = rx.search(path.name)
        if m is None or m.group("S") is None:
            raise ParamError(key, f"{path.name}: no match for {pattern!r}")
        value = _number(m.group("S"))
        if value is None:
            raise ParamError(key, f"{path.name}: S {m.group('S')!r} is not a number >= 0")
        out.append(value)
    return out


def _s_from_table(files: list[Path], table: Path) -> list[float]:
    key = "source.s.table"
    try:
        with open(table, newline="") as fh:
            rows = [(n, r) for n, r in enumerate(csv.reader(fh, delimiter="\t"), 1)
                    if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    except FileNotFoundError:
        raise ParamError(key, f"{table}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ParamError(key, f"{table}: cannot read: {exc}") from None
    if not rows:
        raise ParamError(key, f"{table}: empty (needs a header line with the columns file and S)")
    line, header = rows[0]
    names = [c.strip() for c in header]
    if "file" not in names or "S" not in names:
        raise ParamError(key, f"{table}:{line}: the header must name the columns file and S (tab-separated), "
                              f"not {names}")
    i_file, i_s = names.index("file"), names.index("S")
    mapping: dict[str, float] = {}
    for line, row in rows[1:]:
        if len(row) <= max(i_file, i_s):
            raise ParamError(key, f"{table}:{line}: {len(row)} columns, the header has {len(names)}")
        name, text = row[i_file].strip(), row[i_s].strip()
        value = _number(text)
        if value is None:
            raise ParamError(key, f"{table}:{line}: S {text!r} is not a number >= 0")
        if name in mapping:
            raise ParamError(key, f"{table}:{line}: {name} is listed twice")
        mapping[name] = value
    by_name: dict[str, Path] = {}
    out = []
    for path in files:
        if path.name in by_name:
            raise ParamError(key, f"{path} and {by_name[path.name]} share the name {path.name}: the table cannot "
                                  "tell them apart")
        by_name[path.name] = path
        if path.name not in mapping:
            raise ParamError(key, f"{table} has no row for {path.name}")
        out.append(mapping[path.name])
    return out


def check_headers(files: list[Path], n_haplotypes: int) -> None:
    """Each file's command line, where it states a sample size, agrees with ``n_haplotypes``."""
    for path in files:
        counts = header_counts(read_header(path))
        if counts is not None and counts[0] != n_haplotypes:
            raise ParamError("n_haplotypes", f"{n_haplotypes}, but {path}:1 (its command line) says {counts[0]} "
                                             f"haplotypes; set n_haplotypes: {counts[0]}")


def check_source(cfg: SimulateConfig, base_dir: str | Path) -> tuple[list[Path], list[float]]:
    """What validation can say without reading whole files: files exist, S resolves, headers agree."""
    assert cfg.source is not None
    files = resolve_files(cfg.source.ms, base_dir)
    values = s_of_files(files, cfg.source.s, base_dir)
    check_headers(files, cfg.n_haplotypes)
    return files, values


@dataclass(frozen=True, kw_only=True)
class MsPlan:
    """A simulate stage over ms files: every file indexed, its S, and how images become shards."""

    files: tuple[MsIndex, ...]
    s: tuple[float, ...]
    image: ImageConfig
    seed: int
    split: dict
    n_haplotypes: int
    sequence_length: float
    position: float
    s_kind: str
    s_rule: dict

    @property
    def n_images(self) -> int:
        return sum(f.n_replicates for f in self.files)

    @property
    def classes(self) -> tuple[float, ...] | None:
        """The distinct S values, sorted (``s_kind: classes``), else None."""
        return tuple(sorted(set(self.s))) if self.s_kind == "classes" else None

    def prior(self) -> dict:
        """The store's ``prior`` record: replicates per class, or the S range of a continuous S."""
        if self.classes is not None:
            counts = {S: 0 for S in self.classes}
            for f, S in zip(self.files, self.s, strict=True):
                counts[S] += f.n_replicates
            return {"kind": "classes", "source": "ms", "counts": [counts[S] for S in self.classes]}
        return {"kind": "none", "source": "ms", "min": min(self.s), "max": max(self.s)}

    def source_record(self) -> dict[str, Any]:
        """The store's ``source`` attrs: format, S rule, region length, and each file's checksum."""
        return {"format": "ms", "s": self.s_rule, "s_kind": self.s_kind, "n_haplotypes": self.n_haplotypes,
                "sequence_length": self.sequence_length, "position": self.position,
                "files": [{"path": f.path, "name": Path(f.path).name, "bytes": f.bytes, "gzip": f.gzip,
                           "sha256": f.sha256, "replicates": f.n_replicates, "S": S, "command_line": f.header}
                          for f, S in zip(self.files, self.s, strict=True)]}

    def shard_task(self, start: int, stop: int) -> dict[str, Any]:
        """What one shard's task needs: settings and the byte ranges of images [start, stop)."""
        segments = []
        first = 0
        for f, S in zip(self.files, self.s, strict=True):
            lo, hi = max(start, first), min(stop, first + f.n_replicates)
            if lo < hi:
                r0, r1 = lo - first, hi - first
                segments.append({"path": f.path, "bytes": f.bytes, "start": f.offsets[r0],
                                 "stop": f.offsets[r1] if r1 < f.n_replicates else f.text_bytes,
                                 "line": f.lines[r0], "replicates": r1 - r0, "image": lo, "S": S})
            first += f.n_replicates
        return {"image": self.image.to_dict(), "n_haplotypes": self.n_haplotypes, "position": self.position,
                "seed": self.seed, "split": dict(self.split),
                "classes": list(self.classes) if self.classes is not None else None,
                "start": start, "stop": stop, "segments": segments}


def image_shard(task: dict[str, Any]) -> dict[str, np.ndarray]:
    """Read, parse and image one shard's replicates -> the store writer's per-image arrays.

    Unknown simulation records (onset, start and end frequency) are NaN; ``seed`` derives from the stage
    seed and the image index, and decides the split as for our own simulations.
    """
    cfg = ImageConfig.from_dict(task["image"])
    start, stop = int(task["start"]), int(task["stop"])
    out = empty_shard(stop - start, cfg.size)
    for key in ("onset", "start_freq", "end_freq"):
        out[key][:] = np.nan
    out["attempts"][:] = 1
    classes = task["classes"]
    for seg in task["segments"]:
        path = seg["path"]
        try:
            size = os.path.getsize(path)
        except OSError:
            raise InputDataError(f"{path}: file not found (it was there when the stage started)") from None
        if size != seg["bytes"]:
            raise InputDataError(f"{path}: changed since the stage indexed it ({seg['bytes']} -> {size} bytes)")
        buf = read_range(path, seg["start"], seg["stop"])
        reps = parse_ms(buf, task["n_haplotypes"], path, first_line=seg["line"], base_offset=seg["start"])
        if len(reps) != seg["replicates"]:
            raise InputDataError(f"{path}:{seg['line']}: {len(reps)} replicates where the index has "
                                 f"{seg['replicates']}: the file changed since the stage indexed it")
        S = float(seg["S"])
        cls = classes.index(S) if classes is not None else -1
        for r, (matrix, positions) in enumerate(zip(reps.matrices, reps.positions, strict=True)):
            i = seg["image"] + r
            k = i - start
            img, n_sites = image_and_sites(matrix, positions, cfg, centre=task["position"])
            seed = derive_seed(task["seed"], i)
            out["images"][k] = img
            out["n_sites_raw"][k] = matrix.shape[1]
            out["n_sites"][k] = n_sites
            out["seed"][k] = seed
            out["split"][k] = split_of(seed, task["split"])
            out["s"][k] = S
            out["class_index"][k] = cls
    return out
