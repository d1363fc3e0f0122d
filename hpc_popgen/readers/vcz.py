"""VCF Zarr (bio2zarr's ``vcf2zarr``, the format sgkit reads) as the genotype source of scans and spectra.

A VCF/BCF is converted once, with bio2zarr, into a VCF Zarr in a cache folder (the run's storage
``vcz/`` for stages; else ``$HPCPOP_CACHE_DIR/vcz`` or ``~/.cache/hpcpop/vcz``) and reused by later
stages and reruns. The cache entry is named by the source's resolved path, size and mtime and by the
bio2zarr version, so an edited VCF or another bio2zarr gets a fresh conversion; it is written into a
temporary folder and renamed into place, so a half-written conversion is never reused. A VCF Zarr
given as input (a ``.vcz`` folder) is read in place, and refused in one line when another bio2zarr
release line wrote it. A VCF whose header does not define FORMAT/GT (htslib assumes the standard
one; bio2zarr would read no genotypes) is converted from a temporary copy with that line added.

Reading keeps the policies of :mod:`hpc_popgen.readers.vcf` (the cyvcf2 reader of small regions), so
a scan through either gives the same windows: multi-allelic records are dropped (``multiallelic``),
records without a concrete ALT too (``no_alt``), and with ``derived`` a site whose INFO/AA is neither
REF nor ALT (``no_ancestral``; the ancestral allele from INFO/AA, or from a FASTA, see
:mod:`hpc_popgen.readers.fasta`), and with a ``mask`` a site outside the BED (``inaccessible``,
:mod:`hpc_popgen.readers.mask`). Genotypes are read per range of variants, so a scan task reads only
the chunks of its own windows. :func:`spectrum` reads the chunks one by one for an AFS.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputDataError
from ..paths import is_remote, local_path
from .fasta import ancestral_alleles, open_fasta
from .haplotypes import Haplotypes
from .mask import Intervals, inside, read_mask
from .vcf import cache_root, genotype_error, indexed_path

log = logging.getLogger(__name__)

ZARR_FORMAT = 2  # bio2zarr's default on-disk format, the one sgkit reads
MARK = "hpcpop_source"  # attrs of a cached conversion: the source file it came from
_NEEDED = ("variant_position", "variant_contig", "variant_allele", "contig_id", "sample_id", "call_genotype")
_ACGT = frozenset("ACGT")


def bio2zarr_version() -> str:
    """The installed bio2zarr's version (part of the cache key)."""
    import bio2zarr

    return str(bio2zarr.__version__)


def _line(version: str) -> str:
    """A release line (``0.2``): VCF Zarrs of one line share their array layout."""
    return ".".join(version.split(".")[:2])


def storage_cache(storage_path: str) -> Path | None:
    """The cache folder a stage passes for a store path of the run's storage (None for a URL: then
    conversions go to the default cache, since bio2zarr writes local folders)."""
    return None if is_remote(storage_path) else Path(local_path(storage_path))


def is_vcz(path: str | Path) -> bool:
    """Whether ``path`` is a VCF Zarr folder rather than a VCF/BCF file."""
    p = Path(path)
    return p.is_dir() and ((p / ".zattrs").is_file() or (p / "zarr.json").is_file())


def cached_path(vcf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The cache entry of ``vcf``: named by its resolved path, size, mtime and the bio2zarr version."""
    path = Path(vcf)
    try:
        st = path.stat()
    except OSError:
        raise InputDataError(f"{path}: file not found") from None
    version = bio2zarr_version()
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{version}".encode()).hexdigest()[:16]
    stem = path.name.split(".")[0] or "input"
    return cache_root(cache_dir, "vcz") / f"{stem}-{key}-bio2zarr{version}.vcz"


def open_vcz(path: str | Path, source: str | Path | None = None) -> Any:
    """The root group of a VCF Zarr, after checking that this bio2zarr's release line wrote it and that
    it has the arrays read here. ``source``: the VCF it was converted from (named in errors)."""
    import zarr

    path = Path(path)
    what = f"{path}" if source is None else f"{path} (VCF Zarr of {source})"
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for a folder that is no group
        raise InputDataError(f"{what}: not a VCF Zarr ({exc})") from None
    writer = str(root.attrs.get("source", ""))
    ours = bio2zarr_version()
    if not writer.startswith("bio2zarr-") or _line(writer.removeprefix("bio2zarr-")) != _line(ours):
        raise InputDataError(f"{what}: written by {writer or 'an unknown tool'} (vcf_zarr_version "
                             f"{root.attrs.get('vcf_zarr_version', '?')}), but this install reads VCF Zarrs of "
                             f"bio2zarr {_line(ours)}.x; convert it again with `vcf2zarr convert` of bio2zarr "
                             f"{ours}, or give the VCF")
    missing = [a for a in _NEEDED if a not in root]
    if missing:
        raise InputDataError(f"{what}: not a VCF Zarr with genotypes (no {', '.join(missing)})")
    return root


def ensure_vcz(vcf: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A VCF Zarr of ``vcf``: the folder itself when it is one, else its cache entry (converted on first use).

    The conversion goes into a temporary folder beside the entry and is renamed into place only when
    complete; a concurrent conversion of the same file that finished first wins.
    """
    path = Path(vcf)
    if is_vcz(path):
        open_vcz(path)
        return path
    target = cached_path(path, cache_dir)
    if target.is_dir():
        open_vcz(target, path)
        log.info("%s: reusing its VCF Zarr %s", path, target)
        return target
    source, _ = indexed_path(path, Path(cache_dir) / "indexed" if cache_dir is not None else None)
    work = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    log.info("%s: converting to VCF Zarr %s (bio2zarr %s, once)", path, target, bio2zarr_version())
    try:
        work.mkdir(parents=True)
        _convert(source, path, work)
        _check_complete(work / "out.vcz", path)  # before it becomes the cache entry
        try:
            os.replace(work / "out.vcz", target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("%s: another process converted it first; using %s", path, target)
    except OSError as exc:
        raise InputDataError(f"{path}: cannot write its VCF Zarr into {target.parent}: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    open_vcz(target, path)
    return target


def _with_gt_header(source: Path, work: Path) -> Path:
    """``source``, or, when its header does not define FORMAT/GT (htslib assumes it, bio2zarr then reads
    no genotypes), a bgzipped and indexed copy in ``work`` with the standard GT definition added."""
    import gzip

    import pysam

    with pysam.VariantFile(str(source)) as vf:
        if "GT" in vf.header.formats or vf.format != "VCF":
            return source
    fixed = work / "gt.vcf.gz"
    line = b'##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    with gzip.open(source, "rb") as src, pysam.BGZFile(str(fixed), "wb") as dst:
        first = src.readline()
        dst.write(first + line)
        shutil.copyfileobj(src, dst, 1 << 20)
    pysam.tabix_index(str(fixed), preset="vcf", csi=True, force=True)
    return fixed


def _convert(source: Path, path: Path, work: Path) -> None:
    """bio2zarr's explode + encode of ``source`` into ``work/out.vcz``, marked with the user's file."""
    import zarr
    from bio2zarr import vcf as b2z

    source = _with_gt_header(source, work)

    chatty = logging.getLogger("bio2zarr")
    level = chatty.level
    chatty.setLevel(max(level, logging.WARNING))  # a line per array and partition: ours says it once
    try:
        b2z.convert([str(source)], str(work / "out.vcz"), worker_processes=0, icf_path=str(work / "icf"),
                    zarr_format=ZARR_FORMAT)
    except Exception as exc:  # noqa: BLE001 - bio2zarr raises ValueError, KeyError... for odd input
        raise InputDataError(f"{path}: bio2zarr cannot convert it to VCF Zarr: {exc}") from None
    finally:
        chatty.setLevel(level)
    st = path.stat()
    root = zarr.open_group(str(work / "out.vcz"), mode="r+")
    root.attrs[MARK] = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _check_complete(out: Path, path: Path) -> None:
    """A fresh conversion must have the arrays read here (bio2zarr writes none for a VCF without records)."""
    import zarr

    root = zarr.open_group(str(out), mode="r")
    missing = [a for a in _NEEDED if a not in root]
    if missing:
        raise InputDataError(f"{path}: its VCF Zarr conversion has no {', '.join(missing)} "
                             "(a VCF without records or genotypes?)")


def _strings(a: np.ndarray) -> np.ndarray:
    """zarr string arrays (StringDType or object) as numpy unicode."""
    return np.asarray(a).astype(object).astype(str)


@dataclass
class Sites:
    """The kept sites of one chromosome (or region) of a VCF Zarr, planned from per-variant arrays only.

    index: variant indices in the store (sorted); positions: their POS; flip: 1 = ALT is ancestral (so
    genotypes are flipped to make 1 the derived allele); samples: the chosen names; columns: their
    indices in the store; counts: records read and dropped by reason, as :class:`Haplotypes` counts.
    """

    path: str
    source: str
    chrom: str
    index: np.ndarray
    positions: np.ndarray
    flip: np.ndarray
    samples: list[str]
    columns: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    accessible: Intervals | None = None  # the mask's intervals on ``chrom`` (None: no mask)


def contigs_with_records(root: Any) -> list[str]:
    """Chromosomes that have records, in store order."""
    ids = _strings(root["contig_id"][:])
    present = np.unique(root["variant_contig"][:])
    return [str(ids[i]) for i in sorted(present)]


def _choose_samples(root: Any, wanted: list[str] | None, source: str) -> tuple[list[str], np.ndarray]:
    """Names and store columns of the wanted samples (all when None); unknown names are one error."""
    names = [str(s) for s in _strings(root["sample_id"][:])]
    if not names:
        raise InputDataError(f"{source}: no sample columns")
    if wanted is None:
        return names, np.arange(len(names))
    col = {s: i for i, s in enumerate(names)}
    missing = [s for s in wanted if s not in col]
    if missing:
        raise InputDataError(f"{source}: sample(s) not in the VCF: {', '.join(missing[:10])}")
    return list(wanted), np.array([col[s] for s in wanted], dtype=np.int64)


def _aa(root: Any, sl: slice) -> np.ndarray:
    """INFO/AA (first ``|`` field, upper case) of a range of variants."""
    aa = _strings(root["variant_AA"][sl])
    return np.char.upper(np.char.strip(np.array([a.split("|", 1)[0] for a in aa], dtype=str)))


def _fasta_aa(fasta: Any, path: str | Path, root: Any, sl: slice, contig_ids: list[str]) -> np.ndarray:
    """The FASTA's ancestral bases (upper case, ``""`` unknown) of a range of variants, chromosome by chromosome."""
    contig, pos = root["variant_contig"][sl], root["variant_position"][sl]
    out = np.full(len(pos), "", dtype="<U1")
    for c in np.unique(contig):
        on = contig == c
        out[on] = ancestral_alleles(fasta, path, contig_ids[int(c)], pos[on])
    return out


def plan_sites(vcz: str | Path, region: tuple[str, int, int] | None, samples: list[str] | None, *,
               derived: bool, source: str | Path | None = None, mask: str | Path | None = None,
               ancestral_fasta: str | Path | None = None) -> Sites:
    """The sites a scan uses on ``region`` (chrom, start, end; 1-based inclusive; None: the first
    chromosome), from positions, alleles and INFO/AA only (no genotypes), by the module doc's policies.

    ``mask``: a BED of accessible sequence (sites outside it dropped as ``inaccessible``);
    ``ancestral_fasta``: the ancestral alleles of ``derived`` from a FASTA instead of INFO/AA."""
    src = str(source or vcz)
    root = open_vcz(vcz, source)
    contigs = [str(c) for c in _strings(root["contig_id"][:])]
    present = contigs_with_records(root)
    if not present:
        raise InputDataError(f"{src}: no records")
    chrom, start, end = region if region is not None else (present[0], 1, 2**62)
    if chrom not in present:
        raise InputDataError(f"{src}: chromosome {chrom!r} is not in the file "
                             f"(it has records on {', '.join(present[:10])})")
    names, columns = _choose_samples(root, samples, src)
    if derived and ancestral_fasta is None and "variant_AA" not in root:
        raise InputDataError(f"{src}: no INFO/AA (ancestral allele) in the header, so no derived "
                             "polarisation; use a model trained with polarisation major_minor or give an "
                             "ancestral FASTA")
    accessible = read_mask(mask, {chrom})[chrom] if mask is not None else None
    contig = root["variant_contig"][:]
    pos_all = root["variant_position"][:]
    on = np.flatnonzero((contig == contigs.index(chrom)) & (pos_all >= start) & (pos_all <= end))
    counts: Counter[str] = Counter(records=len(on))
    if len(on) == 0:
        raise InputDataError(f"{src}: no records in {chrom}:{start}-{end}")
    sl = slice(int(on[0]), int(on[-1]) + 1)  # one chromosome is contiguous in a sorted VCF
    rel = on - on[0]
    alleles = _strings(root["variant_allele"][sl])[rel]
    n_alt = (alleles[:, 1:] != "").sum(axis=1) if alleles.shape[1] > 1 else np.zeros(len(rel), dtype=int)
    alt = alleles[:, 1] if alleles.shape[1] > 1 else np.full(len(rel), "", dtype=str)
    multi = n_alt > 1
    no_alt = ~multi & ((alt == "") | (alt == ".") | (alt == "*") | np.char.startswith(alt, "<"))
    keep = ~multi & ~no_alt
    counts["multiallelic"] = int(multi.sum())
    counts["no_alt"] = int(no_alt.sum())
    positions = pos_all[on]
    if accessible is not None:
        out = keep & ~inside(accessible, positions)
        counts["inaccessible"] = int(out.sum())
        keep &= ~out
    flip = np.zeros(len(rel), dtype=bool)
    if derived:
        if ancestral_fasta is not None:
            with open_fasta(ancestral_fasta) as fa:
                aa = ancestral_alleles(fa, ancestral_fasta, chrom, positions)
        else:
            aa = _aa(root, sl)[rel]
        is_ref = aa == np.char.upper(alleles[:, 0])
        is_alt = aa == np.char.upper(alt)
        counts["no_ancestral"] = int((keep & ~is_ref & ~is_alt).sum())
        keep &= is_ref | is_alt
        flip = is_alt & ~is_ref
    counts["kept"] = int(keep.sum())
    dropped = {k: n for k, n in counts.items() if k not in ("records", "kept") and n}
    log.info("%s %s: %d records, %d kept, dropped %s", src, chrom, counts["records"], counts["kept"], dropped or "none")
    if not keep.any():
        raise InputDataError(f"{src}: no usable biallelic records in {chrom} ({counts['records']} read; "
                             f"dropped {dropped or 'none'})")
    return Sites(path=str(vcz), source=src, chrom=chrom, index=on[keep].astype(np.int64),
                 positions=positions[keep].astype(np.int64), flip=flip[keep], samples=names, columns=columns,
                 counts={k: int(v) for k, v in counts.items()}, accessible=accessible)


def read_sites(vcz: str | Path, index: np.ndarray, columns: np.ndarray, flip: np.ndarray, *, chrom: str,
               positions: np.ndarray, samples: list[str], source: str) -> np.ndarray:
    """The (2 x samples, sites) uint8 haplotype matrix of the variants ``index`` (sorted), reading only
    the variant chunks between the first and the last; phased diploid 0/1 calls or one error line."""
    root = open_vcz(vcz, source)
    index = np.asarray(index, dtype=np.int64)
    if len(index) == 0:
        return np.zeros((2 * len(columns), 0), dtype=np.uint8)
    sl = slice(int(index[0]), int(index[-1]) + 1)
    rel = index - index[0]
    g = root["call_genotype"].get_orthogonal_selection((sl, columns))[rel]  # (sites, samples, ploidy)
    if g.shape[2] != 2:
        raise InputDataError(f"{source}: record {chrom}:{positions[0]}: genotype of sample {samples[0]} is not diploid")
    phased = root["call_genotype_phased"].get_orthogonal_selection((sl, columns))[rel] \
        if "call_genotype_phased" in root else np.ones(g.shape[:2], dtype=bool)
    bad = (g < 0).any(axis=2) | (g > 1).any(axis=2) | ~phased
    if bad.any():
        r, s = np.argwhere(bad)[0]
        raise genotype_error(source, chrom, int(positions[r]), samples[s], int(g[r, s, 0]), int(g[r, s, 1]),
                              bool(phased[r, s]))
    m = g.astype(np.uint8).reshape(len(index), -1).T  # rows: sample 0 hap 0, sample 0 hap 1, ...
    if flip.any():
        m[:, np.asarray(flip, dtype=bool)] ^= 1
    return np.ascontiguousarray(m)


def read_region(vcf: str | Path, region: tuple[str, int, int] | None = None, samples: list[str] | None = None, *,
                derived: bool = False, cache_dir: str | Path | None = None, mask: str | Path | None = None,
                ancestral_fasta: str | Path | None = None) -> Haplotypes:
    """Phased biallelic genotypes of a chromosome or region through the VCF Zarr (absolute positions)."""
    vcz = ensure_vcz(vcf, cache_dir)
    sites = plan_sites(vcz, region, samples, derived=derived, source=vcf, mask=mask, ancestral_fasta=ancestral_fasta)
    m = read_sites(vcz, sites.index, sites.columns, sites.flip, chrom=sites.chrom, positions=sites.positions,
                   samples=sites.samples, source=str(vcf))
    return Haplotypes(m, sites.positions.astype(np.float64), names=[f"{s}_{k}" for s in sites.samples for k in (0, 1)],
                      source=str(vcf), counts=sites.counts)


# --- allele frequency spectra ---------------------------------------------------------------------

def _projection(p_to: int, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Hypergeometric weights (len(n), p_to + 1) of projecting ``d`` derived among ``n`` called haplotypes
    to ``p_to`` (moments' formula, in logs); sites with fewer than ``p_to`` calls give zeros."""
    from scipy.special import gammaln

    def lncomb(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    j = np.arange(p_to + 1)[None, :]
    n2, d2 = n[:, None].astype(np.float64), d[:, None].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        w = np.exp(lncomb(p_to, j) + lncomb(n2 - p_to, d2 - j) - lncomb(n2, d2))
    w[n < p_to] = 0.0
    return np.nan_to_num(w, nan=0.0)


def spectrum(vcf: str | Path, popmap: dict[str, str], pops: list[str], projections: list[int], *,
             polarized: bool, cache_dir: str | Path | None = None, popmap_path: str | Path | None = None,
             ancestral_fasta: str | Path | None = None) -> tuple[Any, dict[str, int]]:
    """The AFS of ``pops`` (a moments.Spectrum, folded unless ``polarized``) over every chromosome of the
    VCF Zarr of ``vcf``, and the counts of records read, used and dropped (:func:`spectrum_and_blocks`
    without blocks)."""
    fs, counts, _ = spectrum_and_blocks(vcf, popmap, pops, projections, polarized=polarized, cache_dir=cache_dir,
                                        popmap_path=popmap_path, ancestral_fasta=ancestral_fasta)
    return fs, counts


@dataclass
class BlockSpectra:
    """Spectra of genome blocks of ``block_bp`` bp (block i: ``contigs[i]``, positions ``starts[i]`` + 1 to
    ``starts[i] + block_bp``), in one array (blocks, *spectrum shape), folded like the whole spectrum with its
    masked cells 0; only blocks with at least one used site. They sum to the whole spectrum."""

    spectra: np.ndarray
    contigs: list[str]
    starts: np.ndarray
    sites: np.ndarray  # used sites per block
    block_bp: int


def _block_sum(parts: list[np.ndarray], idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The projected spectrum of the site combinations ``idx`` with multiplicities ``w`` (vectorised
    outer products of the per-population projection weights ``parts``)."""
    acc = parts[0][idx] * w[:, None].astype(np.float64)
    for part in parts[1:-1]:
        acc = (acc[:, :, None] * part[idx][:, None, :]).reshape(len(idx), -1)
    out = acc.T @ parts[-1][idx] if len(parts) > 1 else acc.sum(axis=0)
    return out.reshape([len(p[0]) for p in parts])


def spectrum_and_blocks(vcf: str | Path, popmap: dict[str, str], pops: list[str], projections: list[int], *,
                        polarized: bool, cache_dir: str | Path | None = None, popmap_path: str | Path | None = None,
                        ancestral_fasta: str | Path | None = None,
                        block_bp: int | None = None) -> tuple[Any, dict[str, int], BlockSpectra | None]:
    """The AFS of ``pops`` (a moments.Spectrum, folded unless ``polarized``) over every chromosome of the
    VCF Zarr of ``vcf``, the counts of records read, used and dropped, and with ``block_bp`` the spectra of
    the blocks of that many bp along each chromosome from the same read (for block bootstraps; else None).

    Sites as moments' VCF reader takes them: FILTER PASS or ``.``, REF and one ALT single bases
    (``not_snp``; more than one ALT: ``multiallelic``), with ``polarized`` an INFO/AA (or the base of
    ``ancestral_fasta``) that is REF or ALT (``no_ancestral``); missing calls shrink the site's sample, which is projected hypergeometrically.
    """
    import moments

    vcz = ensure_vcz(vcf, cache_dir)
    root = open_vcz(vcz, vcf)
    names = [str(s) for s in _strings(root["sample_id"][:])]
    col = {s: i for i, s in enumerate(names)}
    chosen = {p: [s for s, q in popmap.items() if q == p] for p in pops}
    absent = [s for p in pops for s in chosen[p] if s not in col]
    if absent:
        raise InputDataError(f"{vcf}: sample(s) of popmap {popmap_path or ''} not in the VCF: {', '.join(absent[:10])}")
    if polarized and ancestral_fasta is None and "variant_AA" not in root:
        raise InputDataError(f"{vcf}: no INFO/AA (ancestral allele) in the header, so no polarised (unfolded) "
                             "spectrum; set input.polarized: false")
    cols = [np.array([col[s] for s in chosen[p]], dtype=np.int64) for p in pops]
    gt = root["call_genotype"]
    step = gt.chunks[0]
    pass_col = None
    if "variant_filter" in root and "filter_id" in root:
        fids = [str(f) for f in _strings(root["filter_id"][:])]
        pass_col = fids.index("PASS") if "PASS" in fids else None
    counts: Counter[str] = Counter()
    rows: list[np.ndarray] = []
    where: list[np.ndarray] = []  # with block_bp: (contig index, block index) of every used site
    fasta = open_fasta(ancestral_fasta) if polarized and ancestral_fasta is not None else None
    contig_ids = [str(c) for c in _strings(root["contig_id"][:])]
    for v0 in range(0, gt.shape[0], step):
        sl = slice(v0, min(v0 + step, gt.shape[0]))
        alleles = np.char.upper(_strings(root["variant_allele"][sl]))
        counts["records"] += len(alleles)
        keep = np.ones(len(alleles), dtype=bool)
        if pass_col is not None:
            f = root["variant_filter"][sl]
            other = f.copy()
            other[:, pass_col] = False
            failed = other.any(axis=1)
            counts["filtered"] += int(failed.sum())
            keep &= ~failed
        ref = alleles[:, 0]
        alt = alleles[:, 1] if alleles.shape[1] > 1 else np.full(len(ref), "", dtype=str)
        multi = (alleles[:, 1:] != "").sum(axis=1) > 1 if alleles.shape[1] > 1 else np.zeros(len(ref), dtype=bool)
        snp = np.isin(ref, list(_ACGT)) & np.isin(alt, list(_ACGT))
        counts["multiallelic"] += int((keep & multi).sum())
        counts["not_snp"] += int((keep & ~multi & ~snp).sum())
        keep &= ~multi & snp
        flip = np.zeros(len(ref), dtype=bool)
        if polarized:
            aa = _aa(root, sl) if fasta is None else _fasta_aa(fasta, ancestral_fasta, root, sl, contig_ids)
            ok = (aa == ref) | (aa == alt)
            counts["no_ancestral"] += int((keep & ~ok).sum())
            keep &= ok
            flip = aa == alt
        if not keep.any():
            continue
        g = gt[sl][keep]  # (sites, samples, ploidy)
        per_pop = []
        for c in cols:
            gp = g[:, c, :].reshape(int(keep.sum()), -1)
            n_ref, n_alt = (gp == 0).sum(axis=1), (gp == 1).sum(axis=1)
            derived = np.where(flip[keep], n_ref, n_alt)
            per_pop.extend([n_ref + n_alt, derived])
        rows.append(np.stack(per_pop, axis=1))
        if block_bp is not None:
            where.append(np.stack([root["variant_contig"][sl][keep].astype(np.int64),
                                   (root["variant_position"][sl][keep].astype(np.int64) - 1) // int(block_bp)], axis=1))
    if fasta is not None:
        fasta.close()
    counts["used"] = int(sum(len(r) for r in rows))
    if not rows:
        raise InputDataError(f"{vcf}: no usable biallelic SNPs ({counts['records']} records; dropped "
                             f"{ {k: n for k, n in counts.items() if k not in ('records', 'used') and n} })")
    combos, weight = np.unique(np.concatenate(rows), axis=0, return_counts=True)
    fs = np.zeros([p + 1 for p in projections])
    parts = [_projection(p, combos[:, 2 * i], combos[:, 2 * i + 1]) for i, p in enumerate(projections)]
    for r in range(len(combos)):
        block = parts[0][r] * weight[r]
        for part in parts[1:]:
            block = np.multiply.outer(block, part[r])
        fs += block
    out = moments.Spectrum(fs, mask_corners=True, pop_ids=list(pops))
    dropped = {k: n for k, n in counts.items() if k not in ("records", "used") and n}
    log.info("AFS from %s (VCF Zarr %s): %d records, %d used, dropped %s", vcf, vcz, counts["records"],
             counts["used"], dropped or "none")
    blocks = None
    if block_bp is not None:
        allrows = np.concatenate(rows)
        keys, b_of = np.unique(np.concatenate(where), axis=0, return_inverse=True)
        combos_b, c_of = np.unique(allrows, axis=0, return_inverse=True)
        nc = len(combos_b)
        pairs, pw = np.unique(b_of.reshape(-1).astype(np.int64) * nc + c_of.reshape(-1), return_counts=True)
        pb, pc = pairs // nc, pairs % nc
        parts_b = [_projection(p, combos_b[:, 2 * i], combos_b[:, 2 * i + 1]) for i, p in enumerate(projections)]
        cuts = np.searchsorted(pb, np.arange(len(keys) + 1))
        spectra = []
        for b in range(len(keys)):
            sel = slice(cuts[b], cuts[b + 1])
            one = moments.Spectrum(_block_sum(parts_b, pc[sel], pw[sel]), mask_corners=True)
            spectra.append(np.ma.filled(one if polarized else one.fold(), 0.0))
        blocks = BlockSpectra(spectra=np.array(spectra), contigs=[contig_ids[int(c)] for c in keys[:, 0]],
                              starts=keys[:, 1] * int(block_bp), sites=np.bincount(b_of.reshape(-1), minlength=len(keys)),
                              block_bp=int(block_bp))
        log.info("%s: %d blocks of %d bp with used sites (median %d sites)", vcf, len(keys), block_bp,
                 int(np.median(blocks.sites)))
    return (out if polarized else out.fold()), {k: int(v) for k, v in counts.items()}, blocks
