"""Phased VCF/BCF regions through htslib (cyvcf2): a region and chosen samples -> Haplotypes.

A region query needs a bgzipped VCF or a BCF with a tabix/CSI index: htslib then reads only that
region's blocks and decodes only the chosen samples. Each diploid sample gives two rows (first, then
second haplotype of ``a|b``), in the order the samples were asked for.

Policies (each dropped record is counted in ``Haplotypes.counts`` and logged):

- **No index, plain text or plain gzip:** the file is bgzipped and/or indexed once into a cache folder
  (``cache_dir``, else ``$HPCPOP_CACHE_DIR/vcf``, else ``~/.cache/hpcpop/vcf``), keyed by its path,
  size and mtime, and reused; the user's file is never touched. Reading a whole file (``region=None``)
  needs no index.
- **Multi-allelic records are dropped** (``multiallelic``): images are biallelic, and a split record
  would put two columns of related patterns at one position. Records without a concrete ALT
  (``.``, ``*``, ``<DEL>``) are dropped too (``no_alt``).
- **``derived=True``:** 1 = the derived allele, by INFO/AA (its first ``|`` field, either case: 1000
  Genomes writes low-confidence calls in lower case). A site whose AA is missing or is neither REF nor
  ALT is dropped (``no_ancestral``); a file whose header has no INFO/AA is refused.
- **``mask``:** a BED of accessible sequence. Sites outside it are dropped (``inaccessible``), and a
  region whose accessible share is below ``min_accessible`` is refused: its image would be sparser
  than the simulated ones the model learnt from.
- Unphased, missing or non-diploid genotypes are errors naming the file, record and sample.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InputDataError
from .haplotypes import Haplotypes
from .mask import accessible_bp, no_mask_error, read_mask

log = logging.getLogger(__name__)
_REGION = re.compile(r"^([^:]+)(?::([\d,]+)-([\d,]+))?$")
_WHOLE = 2**62  # the end of a region given as a chromosome only
_BLOCK = 4096  # records whose genotypes are checked and packed in one numpy step


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
        return m.group(1), 1, _WHOLE
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


def cache_root(cache_dir: str | Path | None = None, kind: str = "vcf") -> Path:
    """Where derived copies of inputs live (``kind``: ``vcf`` indexed copies, ``vcz`` VCF Zarrs):
    ``cache_dir``, else $HPCPOP_CACHE_DIR/kind, else ~/.cache/hpcpop/kind."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HPCPOP_CACHE_DIR"):
        return Path(os.environ["HPCPOP_CACHE_DIR"]) / kind
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpcpop" / kind


def _probe(path: Path) -> tuple[str, str, list[str] | None]:
    """(``VCF``/``BCF``, ``BGZF``/``GZIP``/``NONE``, chromosomes in its index or None) as htslib sees the file."""
    import pysam

    if not path.is_file():
        raise InputDataError(f"{path}: file not found")
    verbosity = pysam.set_verbosity(0)  # a missing index is an answer here, not an htslib error line
    try:
        with pysam.VariantFile(str(path)) as vf:
            return vf.format, vf.compression, None if vf.index is None else list(vf.index)
    except NotImplementedError:  # pysam cannot seek in plain gzip: a gzipped (not bgzipped) VCF
        return "VCF", "GZIP", None
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: not a readable VCF or BCF ({exc})") from None
    finally:
        pysam.set_verbosity(verbosity)


def _build_cached(path: Path, compression: str, target: Path) -> None:
    """Write ``target`` (a bgzipped copy of ``path``, or a link to it if already bgzipped) and its CSI
    index, through temporary names, so that a reader sees both or neither."""
    import pysam

    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    tmp_index = Path(f"{tmp}.csi")
    verbosity = pysam.set_verbosity(0)  # htslib's own error lines would follow ours
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if compression == "BGZF":
                os.symlink(path.resolve(), tmp)
            else:
                opener = gzip.open if compression == "GZIP" else open
                with opener(path, "rb") as src, pysam.BGZFile(str(tmp), "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError) as exc:
            raise InputDataError(f"{path}: cannot copy it into the cache {target.parent}: {exc}") from None
        try:
            pysam.tabix_index(str(tmp), preset="vcf", csi=True, index=str(tmp_index), force=True)
        except OSError:
            raise InputDataError(f"{path}: cannot index it; its records must be sorted by chromosome and "
                                 "position (`bcftools sort`)") from None
        os.replace(tmp, target)
        os.replace(tmp_index, f"{target}.csi")
    finally:
        pysam.set_verbosity(verbosity)
        tmp.unlink(missing_ok=True)
        tmp_index.unlink(missing_ok=True)


def indexed_path(path: str | Path, cache_dir: str | Path | None = None) -> tuple[Path, list[str]]:
    """A path htslib can query by region, and the chromosomes its index lists: ``path`` itself when
    bgzipped and indexed, else its cached copy (built on first use; see the module doc)."""
    path = Path(path)
    fmt, compression, contigs = _probe(path)
    if compression == "BGZF" and contigs is not None:
        return path, contigs
    if fmt == "BCF" and compression != "BGZF":
        raise InputDataError(f"{path}: an uncompressed BCF cannot be indexed; rewrite it with `bcftools view -Ob`")
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = path.name.split(".")[0] or "input"
    target = cache_root(cache_dir) / f"{stem}-{key}{'.bcf' if fmt == 'BCF' else '.vcf.gz'}"
    if not Path(f"{target}.csi").is_file():
        log.warning("%s: not a bgzipped, indexed VCF/BCF; indexing a copy into %s (once). `bgzip` it and run "
                    "`tabix -p vcf` (or `bcftools index`) to read it in place", path, target)
        _build_cached(path, compression, target)
    cached = _probe(target)[2]
    return target, cached or []


def vcf_chromosomes(path: str | Path, cache_dir: str | Path | None = None) -> list[str]:
    """The chromosomes that have records in a VCF/BCF, in file order, from its (possibly cached) index."""
    return indexed_path(path, cache_dir)[1]


def genotype_error(source: str | Path, chrom: str, pos: int, sample: str, a: int, b: int,
                   phased: bool) -> InputDataError:
    """One line naming file, record and sample for a genotype that is not a phased diploid 0/1 call
    (alleles a, b: -1 missing, -2 not diploid); both readers (cyvcf2, VCF Zarr) word it so."""
    gt = f"{'.' if a < 0 else a}{'|' if phased else '/'}{'.' if b < 0 else b}"
    head = f"{source}: record {chrom}:{pos}:"
    if -2 in (a, b):
        return InputDataError(f"{head} genotype of sample {sample} is not diploid")
    if -1 in (a, b):
        return InputDataError(f"{head} missing genotype {gt!r} for sample {sample}")
    if max(a, b) > 1:
        return InputDataError(f"{head} allele {max(a, b)} in genotype {gt!r} of sample {sample}, but one ALT")
    return InputDataError(f"{head} unphased genotype {gt!r} for sample {sample}; "
                          "phase the VCF first (e.g. with SHAPEIT or Beagle)")


def _pack(g: np.ndarray, where: list[tuple[str, int]], names: list[str], path: Path) -> np.ndarray:
    """cyvcf2 genotype arrays of records, (records, n_samples, 3: allele, allele, phased) int16 ->
    (records, 2 n) uint8."""
    if (g.view(np.uint16) > 1).any() or not g[:, :, 2].all():  # missing (-1, -2), allele > 1, unphased (0)
        bad = (g.view(np.uint16) > 1).any(axis=2) | (g[:, :, 2] == 0)
        r, s = np.argwhere(bad)[0]
        a, b, phased = (int(x) for x in g[r, s])
        raise genotype_error(path, where[r][0], where[r][1], names[s], a, b, bool(phased))
    return g[:, :, :2].astype(np.uint8).reshape(len(g), -1)


def _ancestral_flip(variant, alt: str) -> bool | None:
    """False if INFO/AA is REF, True if it is ALT (flip so 1 = derived), None if unknown or another allele."""
    aa = variant.INFO.get("AA")
    if aa is None:
        return None
    aa = str(aa).split("|", 1)[0].strip().upper()
    if aa == variant.REF.upper():
        return False
    if aa == alt.upper():
        return True
    return None


def _open_vcf(source: Path, path: Path):
    """A cyvcf2 reader, or one line naming the user's file when htslib cannot read it."""
    import cyvcf2

    if not source.is_file():
        raise InputDataError(f"{path}: file not found")
    try:
        return cyvcf2.VCF(str(source), lazy=True)
    except Exception as exc:  # cyvcf2 raises a bare Exception for an unparsable header
        raise InputDataError(f"{path}: not a readable VCF or BCF ({exc})") from None


def read_vcf(path: str | Path, region: str | tuple | None = None,
             samples: str | Path | list[str] | None = None, *, derived: bool = False,
             mask: str | Path | None = None, min_accessible: float = 0.5,
             cache_dir: str | Path | None = None) -> Haplotypes:
    """Phased biallelic genotypes of ``samples`` (all if None) in ``region`` (the whole file if None).

    Positions are region-relative (POS - START) when the region has bounds, else POS. ``derived``,
    ``mask``/``min_accessible`` and ``cache_dir`` follow the module doc's policies.
    """
    path = Path(path)
    reg = parse_region(region)
    wanted = read_sample_list(samples)
    source, contigs = path, []
    if reg is not None:
        source, contigs = indexed_path(path, cache_dir)
        if reg[0] not in contigs:
            raise InputDataError(f"{path}: chromosome {reg[0]!r} is not in the file "
                                 f"(it has records on {', '.join(contigs[:10]) or 'nothing'})")
    # a whole chromosome that is the file's only one is read in file order: htslib's index iterator
    # scans every line for its position columns, which costs more than parsing 99 samples of 2,504
    whole_file = reg is not None and reg[1] <= 1 and reg[2] >= _WHOLE and contigs == [reg[0]]
    vcf = _open_vcf(source, path)
    try:
        return _read(vcf, path, reg, wanted, derived, mask, min_accessible, whole_file)
    finally:
        vcf.close()


def _read(vcf, path: Path, reg: tuple[str, int, int] | None, wanted: list[str] | None, derived: bool,
          mask: str | Path | None, min_accessible: float, whole_file: bool = False) -> Haplotypes:
    """The record loop of :func:`read_vcf` on an open cyvcf2 reader (in file order if ``whole_file``:
    ``reg`` is the file's only chromosome)."""
    all_samples = list(vcf.samples)
    if not all_samples:
        raise InputDataError(f"{path}: no sample columns")
    chosen = wanted if wanted is not None else all_samples
    known = set(all_samples)
    missing = [s for s in chosen if s not in known]
    if missing:
        raise InputDataError(f"{path}: sample(s) not in the VCF: {', '.join(missing[:10])}")
    if wanted is not None:
        vcf.set_samples(list(dict.fromkeys(chosen)))
    read_order = list(vcf.samples)  # htslib keeps the file's order
    column = {s: i for i, s in enumerate(read_order)}
    rows = np.array([2 * column[s] + k for s in chosen for k in (0, 1)], dtype=np.int64)
    if derived:
        try:
            vcf.get_header_type("AA")
        except KeyError:
            raise InputDataError(f"{path}: no INFO/AA (ancestral allele) in the header, so no derived "
                                 "polarisation; use a model trained with polarisation major_minor") from None
    where_txt = f"{reg[0]}:{reg[1]}-{reg[2]}" if reg and reg[2] < _WHOLE else (reg[0] if reg else "the file")
    masks = read_mask(mask, {reg[0]} if reg else None) if mask is not None else None
    counts: Counter[str] = Counter()
    if masks is not None and reg is not None and reg[2] < _WHOLE:
        acc = accessible_bp(masks[reg[0]], reg[1] - 1, reg[2])
        counts["accessible_bp"] = acc
        share = acc / (reg[2] - reg[1] + 1)
        if share < min_accessible:
            raise InputDataError(f"{path}: region {where_txt} is {share:.0%} accessible in mask {mask}, "
                                 f"below min_accessible {min_accessible:.0%}")
    mask_lists = {c: (ivs[0].tolist(), ivs[1].tolist()) for c, ivs in masks.items()} if masks else {}

    blocks: list[np.ndarray] = []
    block = np.empty((_BLOCK, len(read_order), 3), dtype=np.int16)  # cyvcf2's genotype arrays, filled in place
    filled = 0
    where: list[tuple[str, int]] = []
    flips: list[bool] = []
    records = vcf(reg[0] if reg[2] >= _WHOLE else f"{reg[0]}:{reg[1]}-{reg[2]}") if reg and not whole_file else vcf
    counts["records"] = n_records = 0  # counted locally: this loop runs once per record of a chromosome
    region_chrom = reg[0] if reg is not None else None  # every record read by region is on it
    for v in records:
        pos = v.POS
        if reg is not None and not reg[1] <= pos <= reg[2]:
            continue  # a long record that starts before the region and overlaps it
        n_records += 1
        alts = v.ALT
        if len(alts) > 1:
            counts["multiallelic"] += 1
            continue
        if not alts or alts[0] == "*" or alts[0].startswith("<"):
            counts["no_alt"] += 1
            continue
        chrom = region_chrom or v.CHROM
        if masks is not None:
            if chrom not in mask_lists:
                raise no_mask_error(mask, chrom, list(mask_lists))
            starts, ends = mask_lists[chrom]
            i = bisect.bisect_right(starts, pos - 1) - 1
            if i < 0 or pos - 1 >= ends[i]:
                counts["inaccessible"] += 1
                continue
        flip = False
        if derived:
            flip = _ancestral_flip(v, alts[0])
            if flip is None:
                counts["no_ancestral"] += 1
                continue
        try:
            g = v.genotype.array()
        except Exception:  # cyvcf2: "couldn't get genotypes" when the record has no GT
            raise InputDataError(f"{path}: record {chrom}:{pos}: no GT (genotype) field") from None
        if g.shape[1] != 3:
            raise InputDataError(f"{path}: record {chrom}:{pos}: genotype of sample {read_order[0]} is not diploid")
        block[filled] = g
        filled += 1
        where.append((chrom, pos))
        flips.append(flip)
        if filled == _BLOCK:
            blocks.append(_pack(block[:filled], where[-filled:], read_order, path))
            filled = 0
    if filled:
        blocks.append(_pack(block[:filled], where[-filled:], read_order, path))
    counts["records"] = n_records
    counts["kept"] = len(where)
    dropped = {k: n for k, n in counts.items() if k not in ("records", "kept", "accessible_bp") and n}
    log.info("%s %s: %d records, %d kept, dropped %s", path, where_txt, counts["records"], counts["kept"],
             dropped or "none")
    if not where:
        raise InputDataError(f"{path}: no usable biallelic records in {where_txt} "
                             f"({counts['records']} read; dropped {dropped or 'none'})")
    matrix = np.concatenate(blocks)[:, rows].T
    flip_arr = np.array(flips)
    if flip_arr.any():
        matrix[:, flip_arr] ^= 1
    pos_arr = np.array([p for _, p in where], dtype=np.float64)
    length = None
    if reg is not None and reg[2] < _WHOLE:
        length = float(reg[2] - reg[1] + 1)
        pos_arr -= reg[1]  # region-relative, so centre() = length / 2 is the region's centre
    return Haplotypes(matrix, pos_arr, length=length, names=[f"{s}_{k}" for s in chosen for k in (0, 1)],
                      source=str(path), counts=dict(counts))
