"""The ``scan`` stage: windows over a VCF chromosome -> posterior per window, as Dask tasks.

The VCF is converted once to VCF Zarr (bio2zarr), cached in the run's storage under ``vcz/`` and
reused by reruns and later stages (see :mod:`hpc_popgen.readers.vcz`). The driver reads only
per-variant arrays (positions, alleles, INFO/AA) to choose sites and plan windows, and submits chunks
of windows (units ``chunk-<input>-00003``) with their variant indices; each task reads the genotypes of its
own windows from the Zarr chunks, writes its TSV part atomically, then the driver joins the parts
into scan.tsv and plots scan.png.

With ``null``, the same stage also simulates and scans neutral chromosomes (units ``null-<input>-00003``, one
Dask task each, seeded from the stage seed and the chromosome's index, so the result does not depend on
the worker count), then gives each real window an empirical p-value and a Benjamini–Hochberg q-value
(:mod:`hpc_popgen.infer.calibrate`) and writes the windows with q < ``fdr`` merged into candidates.tsv.
With ``model_check`` (on by default), every task also saves its windows' summary statistics and the
driver compares the real windows with the null's (:mod:`hpc_popgen.infer.modelcheck`): model_check.json,
model_check.png, the verdict in the report and beside each candidate.

With ``mask`` (a BED of accessible sequence), sites outside it are dropped and windows whose accessible
share is below ``min_accessible`` are skipped: left out of scan.tsv, counted in the report
(``windows_skipped``) and the log. Null chromosomes are masked with the same coordinates and rules.
``ancestral_fasta`` polarises ``derived`` sites from a FASTA instead of INFO/AA.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import InputDataError, ManifestError, ParamError
from ..infer.config import NullConfig, ScanConfig
from ..job import Job, JobStage
from ..manifest import Manifest, StageSpec
from ..paths import is_remote
from .base import StageContext, StageResult, Unit, input_path, key_path, located
from .evaluate import check as check_model
from .evaluate import model_dir

log = logging.getLogger(__name__)
CONFIG = ScanConfig
NULL_KEY = 1_000_003  # ctx.unit_seed(NULL_KEY, i) seeds null chromosome i (chunks use unit_seed(c))


def check(stage: JobStage, job: Job) -> None:
    """The inputs and the null's history must be usable, then the model reference (see the evaluate stage)."""
    _check_inputs_and_null(stage, job)
    check_model(stage, job)


def _check_inputs_and_null(stage: JobStage, job: Job) -> None:
    spec, manifest = stage.spec, job.manifest
    cfg: ScanConfig = stage.config
    check_inputs(cfg, spec, manifest)
    if cfg.null is None:
        return
    with located(spec, manifest):
        settings = null_settings(cfg.null, spec, manifest)
    demo = settings["demography"]
    if isinstance(demo, dict) and "from_stage" in demo:
        name = demo["from_stage"]
        where = key_path(spec, manifest, "null.demography.from_stage")
        target = next((s for s in manifest.stages if s.name == name), None)
        if target is None or target.kind != "demography" or target.index > spec.index:
            raise ManifestError(f"{where}: {name!r} is not an earlier demography stage of this manifest")
        return
    with located(spec, manifest):
        _history(settings, manifest.base_dir, None)


def check_inputs(cfg: ScanConfig, spec: StageSpec, manifest: Manifest) -> None:
    """The mask and the ancestral FASTA exist and cover the scanned chromosome (when ``chrom`` names it;
    else the chromosome is checked when the scan reads the VCF, before any window runs)."""
    from ..readers.fasta import check_fasta
    from ..readers.mask import read_mask
    from ..readers.vcf import parse_region

    chrom = parse_region(cfg.chrom)[0] if cfg.chrom else None
    for key, value, test in (("mask", cfg.mask, lambda p: read_mask(p, {chrom} if chrom else None)),
                             ("ancestral_fasta", cfg.ancestral_fasta, lambda p: check_fasta(p, chrom))):
        if value is None or is_remote(value):
            continue
        try:
            test(input_path(manifest, value))
        except InputDataError as exc:
            raise ManifestError(f"{key_path(spec, manifest, key)}: {exc}") from None


def null_settings(null: NullConfig, spec: StageSpec, manifest: Manifest) -> dict:
    """The null's demography, rates and Ne: the null's own keys, else the last simulate stage's before
    this scan (the history and rates the model was trained under); a ParamError names a missing one."""
    sims = [s for s in manifest.stages if s.kind == "simulate" and s.index < spec.index]
    sim = sims[-1].params if sims else None
    out = {}
    for key, sim_key in (("demography", "demography"), ("mutation_rate", "mutation_rate"),
                         ("recombination_rate", "recombination_rate"), ("reference_ne", "reference_ne")):
        value = getattr(null, key)
        if value is None:
            if sim is None or sim.get("source") is not None:
                if key == "reference_ne" and not isinstance(out.get("demography"), str):
                    continue  # only a named catalogue model is scaled by Ne
                raise ParamError(f"null.{key}", "no simulate stage (of its own simulations) before this scan "
                                 "to take it from: give it here")
            value = sim[sim_key]
        out[key] = value
    demo = out["demography"]
    if isinstance(demo, dict) and "ensemble" in demo:
        raise ParamError("null.demography", "the simulate stage draws its histories from an ensemble: "
                         "name the one neutral history here")
    return out


def _history(settings: dict, base_dir, stage_dirs):
    """The null's History (the forms of simulate.demography; errors name scan keys)."""
    from ..simulate.histories import resolve_history

    try:
        return resolve_history(settings["demography"], settings.get("reference_ne") or 1.0, base_dir, stage_dirs)
    except ParamError as exc:
        raise (exc.within("null.demography") if exc.key != "demography" else
               ParamError("null.demography", exc.reason)) from None


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
    from ..infer.scan import scan_chunk
    from ..readers.vcz import read_sites

    matrix = read_sites(vcz, index, columns, flip, chrom=chrom, positions=positions, samples=samples, source=source)
    stats_path = kwargs.pop("stats_path", None)
    if stats_path:  # the model check's window statistics, from the matrix this task read anyway
        from ..infer.modelcheck import window_statistics, write_statistics

        write_statistics(stats_path, window_statistics(matrix, positions, windows))
    return scan_chunk(model_dir, matrix, positions, windows, chrom, out_path, **kwargs)


def run_unit(task: str, *args, **kwargs) -> int:
    """A scan unit: a chunk of real windows (``chunk``) or a null chromosome (``null``)."""
    from ..infer.calibrate import scan_null_chromosome

    return (scan_vcz_chunk if task == "chunk" else scan_null_chromosome)(*args, **kwargs)


def run(ctx: StageContext) -> StageResult:
    """Plan windows from the VCF Zarr's positions, run chunks as Dask tasks, join the parts into scan.tsv and scan.png."""
    from ..infer.scan import (
        accessible_windows,
        join_parts,
        plan_windows,
        plot_scan,
        read_part_bayes_factors,
        read_scan,
        scan_tsv,
        strongest_window,
    )
    from ..readers.mask import clip
    from ..readers.vcf import parse_region, read_sample_list
    from ..readers.vcz import ensure_vcz, plan_sites, storage_cache

    cfg: ScanConfig = ctx.config
    vcf = ctx.input_path(cfg.vcf)
    samples = read_sample_list(ctx.input_path(cfg.samples) if isinstance(cfg.samples, str) else cfg.samples)
    mdir = str(model_dir(ctx))
    _check_model(mdir)
    derived = _model_meta(mdir)["image"]["polarisation"] == "derived"  # polarise as the training images were
    mask = ctx.input_path(cfg.mask) if cfg.mask else None
    fasta = ctx.input_path(cfg.ancestral_fasta) if cfg.ancestral_fasta else None
    if fasta and not derived:
        log.warning("stage %s: ancestral_fasta %s is not used: the model was trained on major/minor images",
                    ctx.name, fasta)
    vcz = ensure_vcz(vcf, storage_cache(ctx.path("vcz")))
    sites = plan_sites(vcz, parse_region(cfg.chrom), samples, derived=derived, source=vcf, mask=mask,
                       ancestral_fasta=fasta if derived else None)
    chrom, positions = sites.chrom, sites.positions
    region = cfg.chrom or chrom
    w = cfg.window
    windows, skipped = accessible_windows(plan_windows(positions, size=w.size, step=w.step, unit=w.unit,
                                                       min_sites=w.min_sites), sites.accessible, cfg.min_accessible)
    if mask:
        log.info("stage %s: %d windows skipped (accessible share < %g in mask %s), %d scanned", ctx.name,
                 skipped, cfg.min_accessible, mask, len(windows))
    if not windows:
        more = f" and an accessible share >= {cfg.min_accessible:g} in {mask} ({skipped} skipped)" if mask else ""
        raise InputDataError(f"{vcf}: no window of {w.size} {w.unit} with at least {w.min_sites} sites{more} "
                             f"in {region}")
    out = ctx.stage_dir()  # only now: a refused input (mask, FASTA, chromosome) leaves no stage folder
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    k = cfg.chunk_windows
    tag = _input_tag(vcz)  # in every unit id: a rerun on a changed VCF reuses no unit made from the old one
    units = []
    for c, i0 in enumerate(range(0, len(windows), k)):
        chunk = windows[i0:i0 + k]
        lo, hi = chunk[0].lo, max(x.hi for x in chunk)
        rel = [(x.lo - lo, x.hi - lo, x.start, x.end) for x in chunk]
        uid = f"chunk-{tag}-{c:05d}"
        units.append(Unit(uid, args=("chunk", mdir, str(vcz), sites.index[lo:hi].copy(), sites.columns, sites.flip[lo:hi].copy(),
                                     positions[lo:hi].copy(), rel, chrom, sites.samples, vcf, str(parts / f"{uid}.tsv")),
                          kwargs={"level": cfg.hpdi_level, "mc_samples": cfg.mc_samples,
                                  "seed": ctx.unit_seed(c)},
                          weight=len(chunk)))
    n_real = len(units)
    history = None
    check = cfg.null is not None and cfg.model_check.enabled
    if check:  # each task also saves its windows' statistics for the model check
        for u in units:
            u.kwargs["stats_path"] = str(parts / f"{u.id}.stats.npz")
    if cfg.null is not None:
        settings = null_settings(cfg.null, ctx.spec, ctx.manifest)
        stage_dirs = {s.name: ctx.run_dir / s.name for s in ctx.manifest.stages if s.kind == "demography"}
        history = _history(settings, ctx.manifest.base_dir, stage_dirs)
        graph = history.graph.asdict()
        length = int(positions[-1])  # the scanned span: from the chromosome start to its last kept site
        wdict = {"size": w.size, "step": w.step, "unit": w.unit, "min_sites": w.min_sites}
        null_mask = {"accessible": None if sites.accessible is None else clip(sites.accessible, length),
                     "min_accessible": cfg.min_accessible}
        for i in range(cfg.null.chromosomes):
            uid = f"null-{tag}-{i:05d}"
            units.append(Unit(uid, args=("null", mdir, graph, history.population, len(sites.samples), length,
                                         float(settings["mutation_rate"]), float(settings["recombination_rate"]),
                                         wdict, f"null{i}", str(parts / f"{uid}.tsv")),
                              kwargs={"level": cfg.hpdi_level, "seed": ctx.unit_seed(NULL_KEY, i), **null_mask,
                                      "stats_path": str(parts / f"{uid}.stats.npz") if check else None},
                              weight=len(windows)))
        log.info("stage %s: null of %d neutral chromosomes of %d bp, %d diploids of %s under %s",
                 ctx.name, cfg.null.chromosomes, length, len(sites.samples), history.population, history.source)
    result = ctx.run_units(units, run_unit, item_name="windows")
    if result.failures or result.units_done < result.units_total:
        return result
    rows = join_parts(parts / f"{u.id}.tsv" for u in units[:n_real])
    regions = None
    calibration = None
    if history is not None:
        from ..infer.calibrate import calibrate_rows, call_regions, candidates_tsv

        null_bf = np.concatenate([read_part_bayes_factors(parts / f"{u.id}.tsv") for u in units[n_real:]])
        if len(null_bf) == 0:
            raise InputDataError(f"{vcf}: the {len(units) - n_real} null chromosomes gave no window of {w.size} "
                                 f"{w.unit} with at least {w.min_sites} sites; check scan.null's rates")
        calibrate_rows(rows, null_bf, cfg.fdr_method)
    atomic.write_text(out / "scan.tsv", scan_tsv(rows))
    table = read_scan(out / "scan.tsv")
    model_check = _model_check(ctx, units, n_real, out) if check else None
    if history is not None:
        regions, calibration = call_regions(table, cfg.fdr, len(null_bf), cfg.null.chromosomes, cfg.fdr_method)
        text = candidates_tsv(regions)
        if model_check is not None:
            from ..infer.modelcheck import with_verdict_column

            text = with_verdict_column(text, model_check["verdict"])
        atomic.write_text(out / "candidates.tsv", text)
        calibration["history"] = history.source
        log.info("stage %s: %d windows with q < %g in %d candidate regions; expected false windows among them "
                 "<= %.2f", ctx.name, calibration["significant_windows"], cfg.fdr, len(regions),
                 calibration["expected_false_windows"])
    plot_scan(table, out / "scan.png", title=f"{chrom}: {len(windows)} windows", regions=regions, fdr=cfg.fdr)
    best_lbf, best_window = strongest_window(table)
    result.metrics.update(n_windows=len(windows), n_sites=int(len(positions)), chrom=chrom,
                          max_log10_bayes_factor=best_lbf, max_bf_window=best_window,
                          tsv=str(out / "scan.tsv"), plot=str(out / "scan.png"), vcz=str(vcz),
                          sites=sites.counts)
    if mask:
        result.metrics.update(mask=mask, min_accessible=cfg.min_accessible, windows_skipped={"inaccessible": skipped})
    if calibration is not None:
        result.metrics.update(calibration=calibration, candidates=str(out / "candidates.tsv"))
    if model_check is not None:
        result.metrics.update(model_check=model_check)
    return result


def _input_tag(vcz: Path) -> str:
    """8 hex digits naming the scanned input: the VCF Zarr's path (a converted VCF's cache entry is named by
    the VCF's path, size and mtime) and the time its root was written. Null chromosomes take the scanned
    length and sample count from it, so their units carry it too."""
    root = Path(vcz)
    stamp = max((f.stat().st_mtime_ns for f in (root / "zarr.json", root / ".zgroup") if f.exists()), default=0)
    return hashlib.sha256(f"{root.resolve()}\0{stamp}".encode()).hexdigest()[:8]


def _model_check(ctx: StageContext, units: list[Unit], n_real: int, out) -> dict:
    """Compare the real windows' statistics with the null chromosomes' (saved by the tasks), write
    model_check.json and model_check.png; the report's summary (verdict ``not_run`` when a task's
    statistics are missing, e.g. a run started before the check existed, or with fewer than 2 nulls)."""
    from ..infer.modelcheck import check_model, plot_model_check, read_statistics

    cfg: ScanConfig = ctx.config
    paths = [u.kwargs["stats_path"] for u in units]
    missing = [p for p in paths if not Path(p).exists()]
    n_null = len(units) - n_real
    if missing or n_null < 2:
        why = (f"{len(missing)} task(s) saved no window statistics (first: {missing[0]})" if missing
               else f"it needs at least 2 null chromosomes, there are {n_null}")
        log.warning("stage %s: model check not run: %s", ctx.name, why)
        return {"verdict": "not_run", "reason": why}
    real = read_statistics(paths[:n_real])
    nulls = [read_statistics([p]) for p in paths[n_real:]]
    result = check_model(real, nulls, cfg.model_check.threshold)
    atomic.write_json(out / "model_check.json", result)
    plot_model_check(real, nulls, result, out / "model_check.png")
    log.info("stage %s: model check: the history %s (largest score %.2f, %s; threshold %.2f)", ctx.name,
             "fits" if result["verdict"] == "fits" else "does NOT fit", result["max_score"],
             result["worst_statistic"], result["threshold"])
    return {"verdict": result["verdict"], "max_score": result["max_score"], "worst_statistic": result["worst_statistic"],
            "threshold": result["threshold"], "scores": {k: v["score"] for k, v in result["statistics"].items()},
            "json": str(out / "model_check.json"), "plot": str(out / "model_check.png")}
