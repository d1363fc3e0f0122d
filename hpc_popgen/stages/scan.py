"""The ``scan`` stage: windows over a VCF chromosome -> posterior per window, as Dask tasks.

The VCF is converted once to VCF Zarr (bio2zarr), cached in the run's storage under ``vcz/`` and
reused by reruns and later stages (see :mod:`hpc_popgen.images.vcz`). The driver reads only
per-variant arrays (positions, alleles, INFO/AA) to choose sites and plan windows, and submits chunks
of windows (units ``chunk-00003``) with their variant indices; each task reads the genotypes of its
own windows from the Zarr chunks, writes its TSV part atomically, then the driver joins the parts
into scan.tsv and plots scan.png.
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


def scan_vcz_chunk(model_dir: str, vcz: str, index: np.ndarray, columns: np.ndarray, flip: np.ndarray,
                   positions: np.ndarray, windows: list[tuple[int, int, int, int]], chrom: str, samples: list[str],
                   source: str, out_path: str, **kwargs) -> int:
    """One task: read the genotypes of its sites (``index`` into the VCF Zarr) and scan its windows."""
    from ..images.vcz import read_sites
    from ..infer.scan import scan_chunk

    matrix = read_sites(vcz, index, columns, flip, chrom=chrom, positions=positions, samples=samples, source=source)
    return scan_chunk(model_dir, matrix, positions, windows, chrom, out_path, **kwargs)


def run(ctx: StageContext) -> StageResult:
    """Plan windows from the VCF Zarr's positions, run chunks as Dask tasks, join the parts into scan.tsv and scan.png."""
    from ..images.vcf import parse_region, read_sample_list
    from ..images.vcz import ensure_vcz, plan_sites, storage_cache
    from ..infer.scan import COLUMNS, plan_windows, plot_scan, read_scan

    cfg: ScanConfig = ctx.config
    out = ctx.stage_dir()
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    vcf = ctx.input_path(cfg.vcf)
    samples = read_sample_list(ctx.input_path(cfg.samples) if isinstance(cfg.samples, str) else cfg.samples)
    mdir = str(model_dir(ctx))
    _check_model(mdir)
    derived = _model_meta(mdir)["image"]["polarisation"] == "derived"  # polarise as the training images were
    vcz = ensure_vcz(vcf, storage_cache(ctx.path("vcz")))
    sites = plan_sites(vcz, parse_region(cfg.chrom), samples, derived=derived, source=vcf)
    chrom, positions = sites.chrom, sites.positions
    region = cfg.chrom or chrom
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
        units.append(Unit(uid, args=(mdir, str(vcz), sites.index[lo:hi].copy(), sites.columns, sites.flip[lo:hi].copy(),
                                     positions[lo:hi].copy(), rel, chrom, sites.samples, vcf, str(parts / f"{uid}.tsv")),
                          kwargs={"level": cfg.hpdi_level, "mc_samples": cfg.mc_samples,
                                  "seed": ctx.unit_seed(c)},
                          weight=len(chunk)))
    result = ctx.run_units(units, scan_vcz_chunk, item_name="windows")
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
                          tsv=str(out / "scan.tsv"), plot=str(out / "scan.png"), vcz=str(vcz),
                          sites=sites.counts)
    return result
