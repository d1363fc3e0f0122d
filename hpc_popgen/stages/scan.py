"""The ``scan`` stage: windows over a VCF chromosome -> posterior per window, as Dask tasks.

The driver reads the chromosome once (positions and haplotypes), plans windows, and submits chunks
of windows (units ``chunk-00003``) with their slice of the haplotype matrix; each task writes its TSV
part atomically, then the driver joins the parts into scan.tsv and plots scan.png.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import atomic
from ..errors import InputDataError
from ..infer.config import ScanConfig
from ..manifest import Manifest, StageSpec
from .base import StageContext, StageResult, Unit
from .evaluate import check as check_model
from .evaluate import model_dir

log = logging.getLogger(__name__)
CONFIG = ScanConfig


def check(spec: StageSpec, manifest: Manifest) -> None:
    """The model reference must be usable (see the evaluate stage)."""
    check_model(spec, manifest)


def _first_chrom(path: str) -> str:
    """The first chromosome with records (VCF or BCF, through htslib)."""
    from ..images.vcf import vcf_chromosomes

    chroms = vcf_chromosomes(path)
    if not chroms:
        raise InputDataError(f"{path}: no records")
    return chroms[0]


def _model_meta(mdir: str) -> dict:
    """The saved model's metadata (labels, image settings)."""
    import json
    from pathlib import Path

    from ..train.saved import META_FILE

    meta = Path(mdir) / META_FILE
    if not meta.exists():
        raise InputDataError(f"{mdir}: no trained model here (no {META_FILE})")
    return json.loads(meta.read_text())


def _check_model(mdir: str) -> None:
    """The model must exist and give a class posterior (a regression head has no Bayes factor)."""
    mode = _model_meta(mdir)["labels"]["mode"]
    if mode == "continuous":
        raise InputDataError(f"{mdir}: a regression model (labels.mode continuous) has no posterior to scan with; "
                             "train with labels.mode binary or classes")


def run(ctx: StageContext) -> StageResult:
    """Plan windows, run chunks as Dask tasks, join the parts into scan.tsv and scan.png."""
    from ..images import read_vcf
    from ..infer.scan import COLUMNS, plan_windows, plot_scan, read_scan, scan_chunk

    cfg: ScanConfig = ctx.config
    out = ctx.stage_dir()
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    vcf = ctx.input_path(cfg.vcf)
    region = cfg.chrom or _first_chrom(vcf)
    samples = ctx.input_path(cfg.samples) if isinstance(cfg.samples, str) else cfg.samples
    mdir = str(model_dir(ctx))
    _check_model(mdir)
    derived = _model_meta(mdir)["image"]["polarisation"] == "derived"  # polarise as the training images were
    haps = read_vcf(vcf, region=region, samples=samples, derived=derived)
    chrom = region.split(":")[0]
    positions = haps.positions.astype(np.int64)
    if haps.length is not None and ":" in region:  # region-relative positions -> absolute bp
        start_bp = int(region.split(":")[1].split("-")[0].replace(",", ""))
        positions = positions + start_bp
    w = cfg.window
    windows = plan_windows(positions, size=w.size, step=w.step, unit=w.unit, min_sites=w.min_sites)
    if not windows:
        raise InputDataError(f"{vcf}: no window of {w.size} {w.unit} with at least {w.min_sites} sites in {region}")
    k = cfg.chunk_windows
    units = []
    for c, i0 in enumerate(range(0, len(windows), k)):
        chunk = windows[i0:i0 + k]
        lo, hi = chunk[0].lo, max(x.hi for x in chunk)
        rel = [(x.lo - lo, x.hi - lo, x.start, x.end) for x in chunk]
        uid = f"chunk-{c:05d}"
        units.append(Unit(uid, args=(mdir, haps.matrix[:, lo:hi].copy(), positions[lo:hi].copy(), rel, chrom,
                                     str(parts / f"{uid}.tsv")),
                          kwargs={"level": cfg.hpdi_level, "mc_samples": cfg.mc_samples,
                                  "seed": ctx.unit_seed(c)},
                          weight=len(chunk)))
    result = ctx.run_units(units, scan_chunk, item_name="windows")
    if result.failures or result.units_done < result.units_total:
        return result
    text = "\t".join(COLUMNS) + "\n" + "".join((parts / f"{u.id}.tsv").read_text() for u in units)
    atomic.write_text(out / "scan.tsv", text)
    table = read_scan(out / "scan.tsv")
    plot_scan(table, out / "scan.png", title=f"{chrom}: {len(windows)} windows")
    best = int(np.nanargmax(table["log10_bayes_factor"]))
    result.metrics.update(n_windows=len(windows), n_sites=int(len(positions)), chrom=chrom,
                          max_log10_bayes_factor=float(table["log10_bayes_factor"][best]),
                          max_bf_window=f"{chrom}:{int(table['start'][best])}-{int(table['end'][best])}",
                          tsv=str(out / "scan.tsv"), plot=str(out / "scan.png"))
    return result
