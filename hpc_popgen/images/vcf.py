"""A small phased-VCF reader (plain or gzip): one region, chosen samples -> Haplotypes.

Each diploid sample gives two rows (first then second haplotype of ``a|b``), in sample order.
Unphased (``/``) or missing (``.``) genotypes are errors naming the file and line; records with
more than one ALT allele are skipped (counted in the log) since images are biallelic.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from ..errors import InputDataError
from .haplotypes import Haplotypes
from .ms import open_text

log = logging.getLogger(__name__)
_REGION = re.compile(r"^([^:]+)(?::([\d,]+)-([\d,]+))?$")


def parse_region(region: str | tuple | None) -> tuple[str, int, int] | None:
    """``chr2:1,000-81,000`` (1-based, inclusive) or ``(chrom, start, end)`` -> (chrom, start, end)."""
    if region is None:
        return None
    if isinstance(region, tuple | list):
        chrom, start, end = region
        return str(chrom), int(start), int(end)
    m = _REGION.match(str(region).strip())
    if not m:
        raise InputDataError(f"region {region!r}: expected CHROM or CHROM:START-END")
    if m.group(2) is None:
        return m.group(1), 1, 2**62
    start, end = int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))
    if end < start:
        raise InputDataError(f"region {region!r}: end before start")
    return m.group(1), start, end


def read_sample_list(samples: str | Path | list[str] | None) -> list[str] | None:
    """A list of sample names, or a file with one name per line (blank lines and # comments ignored)."""
    if samples is None or isinstance(samples, list | tuple):
        return None if samples is None else [str(s) for s in samples]
    path = Path(samples)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read sample list: {exc.strerror}") from None
    names = [ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not names:
        raise InputDataError(f"{path}: sample list is empty")
    return names


def _allele(ch: str, gt: str, path: Path, lineno: int, sample: str) -> int:
    if ch == "0":
        return 0
    if ch == "1":
        return 1
    if ch == ".":
        raise InputDataError(f"{path}:{lineno}: missing genotype {gt!r} for sample {sample}")
    raise InputDataError(f"{path}:{lineno}: allele {ch!r} in genotype {gt!r} of sample {sample} is not 0 or 1")


def read_vcf(path: str | Path, region: str | tuple | None = None,
             samples: str | Path | list[str] | None = None) -> Haplotypes:
    """Phased biallelic genotypes of ``samples`` (all if None) in ``region`` (all records if None)."""
    path = Path(path)
    reg = parse_region(region)
    wanted = read_sample_list(samples)
    names: list[str] = []
    cols: list[int] = []
    positions: list[int] = []
    rows: list[list[int]] = []
    skipped = 0
    header_seen = False
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.startswith("##"):
                continue
            if line.startswith("#CHROM"):
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 10:
                    raise InputDataError(f"{path}:{lineno}: header has no sample columns")
                all_samples = fields[9:]
                chosen = wanted if wanted is not None else all_samples
                missing = [s for s in chosen if s not in all_samples]
                if missing:
                    raise InputDataError(f"{path}: sample(s) not in the VCF: {', '.join(missing[:10])}")
                index = {s: 9 + k for k, s in enumerate(all_samples)}
                cols = [index[s] for s in chosen]
                names = list(chosen)
                header_seen = True
                continue
            if not line.strip():
                continue
            if not header_seen:
                raise InputDataError(f"{path}:{lineno}: data line before the #CHROM header")
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 10:
                raise InputDataError(f"{path}:{lineno}: {len(fields)} tab-separated fields, expected at least 10")
            chrom, pos_s, _id, _ref, alt, _q, _f, _info, fmt = fields[:9]
            try:
                pos = int(pos_s)
            except ValueError:
                raise InputDataError(f"{path}:{lineno}: POS {pos_s!r} is not an integer") from None
            if reg is not None and (chrom != reg[0] or not reg[1] <= pos <= reg[2]):
                continue
            if "," in alt or alt in (".", "*"):
                skipped += 1
                continue
            keys = fmt.split(":")
            if "GT" not in keys:
                raise InputDataError(f"{path}:{lineno}: no GT in FORMAT {fmt!r}")
            gi = keys.index("GT")
            row: list[int] = []
            for c, sample in zip(cols, names, strict=True):
                gt = fields[c].split(":")[gi] if c < len(fields) else "."
                if len(gt) != 3 or gt[1] not in "|/":
                    if "." in gt:
                        raise InputDataError(f"{path}:{lineno}: missing genotype {gt!r} for sample {sample}")
                    raise InputDataError(f"{path}:{lineno}: genotype {gt!r} of sample {sample} is not diploid a|b")
                if gt[1] == "/":
                    raise InputDataError(f"{path}:{lineno}: unphased genotype {gt!r} for sample {sample}; "
                                         "phase the VCF first (e.g. with SHAPEIT or Beagle)")
                row.append(_allele(gt[0], gt, path, lineno, sample))
                row.append(_allele(gt[2], gt, path, lineno, sample))
            positions.append(pos)
            rows.append(row)
    if not header_seen:
        raise InputDataError(f"{path}: no #CHROM header line; is this a VCF?")
    if skipped:
        log.info("%s: skipped %d multi-allelic or symbolic records", path, skipped)
    if not rows:
        where = f" in region {reg[0]}:{reg[1]}-{reg[2]}" if reg else ""
        raise InputDataError(f"{path}: no biallelic records{where}")
    matrix = np.array(rows, dtype=np.uint8).T
    hap_names = [f"{s}_{k}" for s in names for k in (0, 1)]
    length = float(reg[2] - reg[1] + 1) if reg and reg[2] < 2**62 else None
    pos_arr = np.array(positions, dtype=np.float64)
    if length is not None:
        pos_arr = pos_arr - reg[1]  # region-relative, so centre() = length / 2 is the region's centre
    return Haplotypes(matrix, pos_arr, length=length, names=hap_names, source=str(path))
