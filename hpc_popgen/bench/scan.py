"""``hpcpop bench scan``: genome scans at chromosome scale, genotype reading, region queries, power and
calibration, the ms reader (issue 12, item 7). Prints ONE JSON object.

- **Input:** chromosome VCFs simulated whole by msprime with one planted hard sweep
  (:mod:`hpc_popgen.simulate.planted`: INFO/AA, bgzipped, CSI-indexed), ``--samples`` diploids, one per
  ``--lengths`` (Mb), into a temporary folder.
- **Scan:** each chromosome through the real scan stage (a one-stage manifest run by
  :func:`hpc_popgen.pipeline.create_run` / :func:`~hpc_popgen.pipeline.execute` on the local profile with
  ``--cores`` workers), with an untrained model bundle (random seeded weights; a scan costs the same with
  any weights) of the genome_scan job's image settings. Each scan runs in a fresh driver process, as
  ``hpcpop submit`` does, so the memory of one length does not linger into the next: its RSS is sampled
  from /proc while the stage runs (``driver_peak_rss_mb``), and so is the peak RSS (VmHWM) of its
  descendants, the Dask nanny and worker processes (``task_peak_rss_mb``: the largest worker's peak,
  which holds one task at a time). The VCF -> VCF Zarr conversion runs before, in its own process, into the
  storage cache the stage then reuses; its time and memory are reported apart.
- **Reading:** a ``--read-samples`` diploid VCF (1000 Genomes has 2,504) of ``--read-length`` Mb, read for
  ``--samples`` of its samples by the cyvcf2 reader (:func:`hpc_popgen.readers.vcf.read_vcf`, the whole
  chromosome as a region) and through its VCF Zarr (:func:`hpc_popgen.readers.vcz.read_region`, the
  conversion timed apart): file records per CPU-second of this process. Beside them, a bare record loop
  (samples set, nothing read per record) in cyvcf2 and in pysam, with each one's htslib version: the
  ceiling htslib's parse alone puts on a reader built on that library (``iterate_ceiling``).
- **Region query:** an 80 kb region in the middle of the longest chromosome through ``read_vcf(region=)``.
- **Power and calibration** (``--power``): ``--replicates`` planted and ``--neutral`` neutral chromosomes, a
  model trained under the true history (simulate + train stages, as jobs/genome_scan.yaml), each
  chromosome scanned with ``scan.null``: the planted sweep's rank and q, the share of replicates with it
  in the top 1% of windows by Bayes factor, and the realised FDR at q < 0.05 on the neutral chromosomes
  (every call there is false: the mean over chromosomes of false calls / calls, 0 without calls).
- **ms reader:** :func:`hpc_popgen.bench.ms.run_bench` (``hpcpop bench ms``) for ``--ms-images`` images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import yaml

from . import refuse_full_keep
from .procs import ProcSampler, rss_mb, status_mb
from .simulate import Clock

log = logging.getLogger(__name__)

IMAGE = {"polarisation": "derived", "sort": "rows", "size": [64, 64]}  # jobs/genome_scan.yaml's images
WINDOW = {"unit": "bp", "size": 80_000, "step": 40_000, "min_sites": 10}
REGION_BP = 80_000
FDR = 0.05
NULL_SIZES = (20, 50, 100, 200)  # null chromosomes per scan re-analysed from the run's pooled nulls (--power)
TARGETS = {"read_records_per_s": 30_000, "region_query_s": 1.0, "driver_mem_ratio_50_10": 1.1,
           "planted_top1pct_fraction": 0.8, "null_fdr_at_q05": 0.05, "ms_images_per_s": 2_500,
           "fine_step_50mb_s": 300}


# --- a fresh driver process per scan ----------------------------------------------------------------

def child_main(spec_json: str) -> None:
    """Entry of a driver process: ``convert`` (VCF -> VCF Zarr into the stage's cache) or ``scan``
    (create_run + execute a manifest, sampled); writes one JSON line on stdout."""
    spec = json.loads(spec_json)
    if spec["mode"] == "convert":
        from ..readers.vcz import ensure_vcz

        clock = Clock()
        with clock:
            ensure_vcz(spec["vcf"], spec["cache"])
        out = {"wall_s": clock.wall, "cpu_s": clock.cpu, "peak_rss_mb": status_mb("self", "VmHWM")}
    else:
        from ..pipeline import create_run, execute

        rd = create_run(Path(spec["manifest"]), run_dir=Path(spec["run_dir"]))
        base_mb = rss_mb()
        with ProcSampler() as s:
            t0 = time.perf_counter()
            report = execute(rd, progress=False)
            wall = time.perf_counter() - t0
        stage = report["stages"][-1]
        out = {"status": stage.get("status"), "error": stage.get("error"), "stage_s": stage.get("seconds"),
               "execute_s": wall, "metrics": stage.get("metrics", {}), "driver_start_rss_mb": base_mb,
               "driver_peak_rss_mb": s.peak_mb, "driver_hwm_mb": status_mb("self", "VmHWM"),
               "task_peak_rss_mb": max(s.child_peak_mb.values(), default=0.0),
               "worker_cpu_s": sum(s.child_cpu_s.values()), "child_processes": len(s.child_peak_mb)}
    sys.stdout.write(json.dumps(out) + "\n")


def _in_child(spec: dict) -> dict:
    """Run :func:`child_main` in a fresh Python process; its JSON result, or one error line."""
    code = "import sys; from hpc_popgen.bench.scan import child_main; child_main(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise click.ClickException(f"bench scan: the {spec['mode']} process failed ({proc.returncode}): "
                                   + " | ".join(tail))
    return json.loads(lines[-1])


# --- inputs ---------------------------------------------------------------------------------------

def image_settings() -> dict:
    """The bench's image settings (jobs/genome_scan.yaml's) with the simulate schema's other defaults."""
    from ..config import from_params
    from ..images import ImageConfig
    from ..manifest import fill_defaults, load_schema

    params = fill_defaults({"store": "x", "image": dict(IMAGE)}, load_schema("stages/simulate.schema.json"))
    return from_params(ImageConfig, params["image"]).to_dict()


def untrained_model(path: Path, seed: int = 3) -> Path:
    """An untrained bundle of the train stage's default binary network for :func:`image_settings` images."""
    from ..config import config_with_defaults
    from ..train.config import TrainConfig
    from ..train.models import resolve_model
    from ..train.saved import save_untrained_bundle

    cfg = config_with_defaults(TrainConfig, "stages/train.schema.json",
                               {"store": "x", "model": {"preset": "binary"}, "labels": {"mode": "binary"}})
    return save_untrained_bundle(path, image_settings(), resolve_model(cfg.model), seed=seed)


def chromosome(out_dir: Path, length_mb: float, diploids: int, seed: int, neutral: bool = False) -> dict:
    """A planted-sweep (or neutral) chromosome VCF in ``out_dir``; its truth plus ``path`` and ``simulate_s``."""
    from ..simulate.planted import PlantedSweep, write

    t0 = time.perf_counter()
    truth = write(PlantedSweep(length=int(round(length_mb * 1e6)), diploids=diploids, seed=seed), out_dir,
                  neutral=neutral)
    truth.update(path=str(Path(out_dir) / truth["vcf"]), simulate_s=round(time.perf_counter() - t0, 2))
    return truth


def demes_yaml(path: Path) -> Path:
    """The planted chromosomes' true history (PlantedSweep's defaults) as a demes YAML."""
    from ..simulate.planted import PlantedSweep

    c = PlantedSweep()
    path.write_text(yaml.safe_dump({"time_units": "generations", "demes": [{"name": c.population, "epochs": [
        {"start_size": c.ancestral_size, "end_time": c.change_time}, {"start_size": c.size}]}]}, sort_keys=False))
    return path


def _write_manifest(path: Path, storage: Path, stages: list[dict], seed: int) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "seed": seed, "profile": "local", "storage": str(storage),
                                    "stages": stages}, sort_keys=False))
    return path


def _scan_stage(name: str, vcf: str, cores: int, chunk_windows: int, model: str | None = None,
                null: int | None = None, step: int | None = None) -> dict:
    window = {**WINDOW, "step": step or WINDOW["step"]}
    scan = {"model": model, "vcf": vcf, "window": window, "chunk_windows": chunk_windows}
    if null:
        scan.update(null={"chromosomes": null}, fdr=FDR)
    return {"name": name, "resources": {"cores": cores}, "scan": scan}


# --- parts ----------------------------------------------------------------------------------------

def scan_one(tmp: Path, truth: dict, model: Path, cores: int, chunk_windows: int, seed: int,
             step: int | None = None) -> dict:
    """Convert (own process), then scan (fresh driver process) one chromosome; speed and memory. ``step``:
    the windows' step in bp (default WINDOW's); the conversion is reused when ``tmp`` has it already."""
    storage = tmp / "storage"
    conv = _in_child({"mode": "convert", "vcf": truth["path"], "cache": str(storage / "vcz")})
    name = "scan" if step is None else f"scan-step{step}"
    man = _write_manifest(tmp / f"{name}.yaml", storage, [_scan_stage("scan", truth["path"], cores, chunk_windows,
                                                                      str(model), step=step)], seed)
    res = _in_child({"mode": "scan", "manifest": str(man), "run_dir": str(tmp / f"run-{name}")})
    if res["status"] != "completed":
        raise click.ClickException(f"bench scan: the scan of {truth['path']} ended {res['status']!r}: {res['error']}")
    m = res["metrics"]
    n, wall = int(m["n_windows"]), float(res["stage_s"])
    return {"length_mb": truth["length"] / 1e6, "step_bp": step or WINDOW["step"], "chunk_windows": chunk_windows,
            "records": truth["records"], "sites": m["n_sites"], "windows": n, "windows_per_s": round(n / wall, 2),
            "wall_s": round(wall, 2), "execute_s": round(res["execute_s"], 2),
            "windows_per_s_per_core": round(n / (wall * cores), 2),
            "windows_per_worker_cpu_s": round(n / res["worker_cpu_s"], 2) if res["worker_cpu_s"] else None,
            "driver_peak_rss_mb": round(res["driver_peak_rss_mb"], 1),
            "driver_start_rss_mb": round(res["driver_start_rss_mb"], 1),
            "driver_hwm_mb": round(res["driver_hwm_mb"], 1),
            "task_peak_rss_mb": round(res["task_peak_rss_mb"], 1), "driver_descendants": res["child_processes"],
            "vcz_convert_s": round(conv["wall_s"], 2), "vcz_convert_peak_rss_mb": round(conv["peak_rss_mb"], 1),
            "simulate_s": truth["simulate_s"], "vcf_mb": round(Path(truth["path"]).stat().st_size / 2**20, 2)}


def region_query(vcf: str, length: int, chrom: str) -> dict:
    """Wall seconds of an 80 kb region in the middle of ``vcf`` through read_vcf (first call, then best of 3)."""
    import cyvcf2  # noqa: F401 - imported before timing: a query's time, not the module's

    from ..readers.vcf import read_vcf

    mid = length // 2
    region = f"{chrom}:{max(1, mid - REGION_BP // 2 + 1)}-{mid + REGION_BP // 2}"
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        haps = read_vcf(vcf, region=region)
        times.append(time.perf_counter() - t0)
    return {"region": region, "first_s": round(times[0], 4), "best_s": round(min(times[1:]), 4),
            "sites": int(haps.matrix.shape[1]), "file_mb": round(Path(vcf).stat().st_size / 2**20, 2)}


def bcf_copy(vcf: str) -> tuple[str, float]:
    """The same records as a CSI-indexed BCF next to ``vcf`` (pysam, as ``bcftools view -Ob`` + ``index``
    would write it); its path and the seconds it took."""
    import pysam

    t0 = time.perf_counter()
    out = str(Path(vcf).with_suffix("").with_suffix(".bcf"))
    with pysam.VariantFile(vcf) as src, pysam.VariantFile(out, "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    pysam.tabix_index(out, preset="bcf", csi=True, force=True)
    return out, round(time.perf_counter() - t0, 2)


def htslib_version(module) -> str:
    """The htslib version an extension module was built with (its exported ``hts_version``)."""
    import ctypes

    lib = ctypes.CDLL(module.__file__)
    lib.hts_version.restype = ctypes.c_char_p
    return lib.hts_version().decode()


def cyvcf2_iterate(vcf: str, names: list[str]) -> int:
    """A bare cyvcf2 record loop over ``vcf`` with ``names`` set (nothing read per record); its records."""
    import cyvcf2

    reader = cyvcf2.VCF(vcf, lazy=True)
    reader.set_samples(names)
    n = sum(1 for _ in reader)
    reader.close()
    return n


def pysam_iterate(vcf: str, names: list[str]) -> int:
    """:func:`cyvcf2_iterate` through pysam (its own htslib)."""
    import pysam

    with pysam.VariantFile(vcf) as reader:
        reader.subset_samples(names)
        return sum(1 for _ in reader)


def cyvcf2_build() -> str:
    """How the installed cyvcf2 was built: the stamp scripts/build-cyvcf2.sh leaves, else its wheel."""
    import cyvcf2

    stamp = Path(cyvcf2.__file__).parent / "HPCPOP_BUILD"
    return stamp.read_text().strip() if stamp.is_file() else f"cyvcf2 {cyvcf2.__version__} (wheel, as installed)"


def iterate_ceiling(vcf: str, names: list[str], repeats: int, cyvcf2_timed: tuple[Clock, int]) -> dict:
    """Records per CPU-second of a bare record loop (the chosen samples set, nothing read per record) in
    cyvcf2 and in pysam: what htslib's parse alone allows each library's reader, which htslib, and how the
    installed cyvcf2 was built. cyvcf2's loop comes timed, (clock, records), its passes alternating with
    the reader's; pysam's is timed here."""
    import cyvcf2.cyvcf2
    import pysam.libchtslib

    clock, n = Clock(), 0
    for _ in range(repeats):
        with clock:
            n += pysam_iterate(vcf, names)
    cy_clock, cy_n = cyvcf2_timed
    return {"cyvcf2": {"records_per_s": round(cy_n / cy_clock.cpu, 1), "htslib": htslib_version(cyvcf2.cyvcf2),
                       "build": cyvcf2_build()},
            "pysam": {"records_per_s": round(n / clock.cpu, 1), "htslib": htslib_version(pysam.libchtslib)}}


def reading(tmp: Path, n_samples: int, pick: int, length_mb: float, repeats: int, seed: int) -> dict:
    """Records per CPU-second reading ``pick`` of ``n_samples`` diploids: cyvcf2 and the VCF Zarr path."""
    from ..readers.vcf import read_vcf
    from ..readers.vcz import ensure_vcz, read_region

    truth = chromosome(tmp, length_mb, n_samples, seed, neutral=True)
    vcf, chrom, records = truth["path"], truth["chrom"], truth["records"]
    idx = np.unique(np.linspace(0, n_samples - 1, min(pick, n_samples)).round().astype(int))
    names = [f"ind{i}" for i in idx]
    read_vcf(vcf, region=f"{chrom}:1-{REGION_BP}", samples=names)  # warm: imports, the index, the page cache
    cy, bare, n_bare = Clock(), Clock(), 0
    for _ in range(repeats):  # the reader and cyvcf2's bare loop alternate: this machine's speed drifts
        with cy:
            haps = read_vcf(vcf, region=chrom, samples=names)
        with bare:
            n_bare += cyvcf2_iterate(vcf, names)
    bcf, bcf_s = bcf_copy(vcf)
    bc = Clock()
    for _ in range(repeats):
        with bc:
            read_vcf(bcf, region=chrom, samples=names)
    conv = Clock()
    with conv:
        ensure_vcz(vcf, tmp / "cache")
    vz = Clock()
    for _ in range(repeats):
        with vz:
            zh = read_region(vcf, None, names, cache_dir=tmp / "cache")
    if zh.matrix.shape != haps.matrix.shape:
        log.warning("bench scan: the cyvcf2 and VCF Zarr reads differ in shape: %s, %s", haps.matrix.shape,
                    zh.matrix.shape)
    n = records * repeats
    ceiling = iterate_ceiling(vcf, names, repeats, (bare, n_bare))
    cy_rate = n / cy.cpu
    return {"read_records_per_s_cyvcf2": round(cy_rate, 1), "read_records_per_s_cyvcf2_wall": round(n / cy.wall, 1),
            "read_records_per_s_vcz": round(n / vz.cpu, 1), "read_records_per_s_vcz_wall": round(n / vz.wall, 1),
            "read_records_per_s_bcf": round(n / bc.cpu, 1), "read_records_per_s_bcf_wall": round(n / bc.wall, 1),
            "bcf_mb": round(Path(bcf).stat().st_size / 2**20, 3), "bcf_write_s": bcf_s,
            "vcz_convert_s": round(conv.wall, 2), "vcz_convert_records_per_s": round(records / conv.wall, 1),
            "records": records, "sites_kept": int(haps.matrix.shape[1]), "samples_in_file": n_samples,
            "samples_read": len(names), "length_mb": length_mb, "passes": repeats,
            "vcf_mb": round(Path(vcf).stat().st_size / 2**20, 2), "simulate_s": truth["simulate_s"],
            "region_query": region_query(vcf, truth["length"], chrom),
            "iterate_ceiling": ceiling,
            "cyvcf2_share_of_ceiling": round(cy_rate / ceiling["cyvcf2"]["records_per_s"], 3),
            "timing": "file records per CPU-second of this process (cyvcf2: read_vcf of the whole chromosome as a "
                      "region, of the bgzipped VCF and of the same records as an indexed BCF; vcz: read_region, "
                      "conversion apart); *_wall: per wall-clock second; iterate_ceiling: a bare record loop "
                      "with the samples set (htslib's parse alone) in cyvcf2 (its passes alternating with the "
                      "reader's) and in pysam; cyvcf2.build: how the installed cyvcf2 was built"}


def _planted_result(table: dict, pos: int) -> dict:
    """Rank (1 = highest BF), q and whether in the top 1%, of the best window containing ``pos``."""
    bf, n = table["bayes_factor"], len(table["bayes_factor"])
    over = (table["start"] <= pos) & (table["end"] >= pos)
    top = max(1, math.ceil(0.01 * n))
    if not over.any():
        return {"rank": None, "q": None, "windows": n, "top1pct": False}
    best = float(np.nanmax(bf[over]))
    rank = 1 + int(np.sum(bf > best))
    q = float(np.nanmin(table["q"][over]))
    return {"rank": rank, "q": round(q, 6), "log10_bf": round(math.log10(best), 3) if best > 0 else None,
            "windows": n, "top1pct": rank <= top}


def wilson(k: int, n: int, z: float = 1.959964) -> list[float] | None:
    """Wilson's 95% interval of a binomial proportion ``k / n`` (the realised FDR is one per chromosome)."""
    if n == 0:
        return None
    f, d = k / n, 1 + z * z / n
    mid, half = (f + z * z / (2 * n)) / d, z * math.sqrt(f * (1 - f) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, mid - half), 4), round(min(1.0, mid + half), 4)]


def p_calibration(p: np.ndarray, levels: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05)) -> dict:
    """Share of neutral windows with empirical p <= each level: about the level itself when real neutral
    windows are exchangeable with the simulated null's (the calibration the q-values rest on)."""
    return {f"{a:g}": round(float(np.mean(p <= a)), 5) for a in levels} | {"windows": int(len(p))}


def chromosome_p(real_max: float, null_max: np.ndarray) -> float:
    """Where a neutral chromosome's largest BF falls among its null chromosomes' largest: (1 + #null
    maxima >= it) / (K + 1), uniform on 1/(K+1) .. 1 when real and null chromosomes are exchangeable."""
    return (1 + int(np.sum(null_max >= real_max))) / (len(null_max) + 1)


def chromosome_calibration(pc: np.ndarray, k: int) -> dict:
    """Shares of chromosome-level p (:func:`chromosome_p`) at or below 1/(K+1), 1/4, 1/2 and their mean,
    each with its value under exchangeability: every chromosome counts here, not only the called ones."""
    levels = {"1/(K+1)": 1 / (k + 1), "0.25": 0.25, "0.5": 0.5}
    exp = {name: math.floor(a * (k + 1) + 1e-9) / (k + 1) for name, a in levels.items()}
    return {"share": {name: round(float(np.mean(pc <= a + 1e-12)), 4) for name, a in levels.items()},
            "expected": {name: round(v, 4) for name, v in exp.items()},
            "mean": round(float(np.mean(pc)), 4), "mean_expected": round((k + 2) / (2 * (k + 1)), 4),
            "chromosomes": int(len(pc))}


def power(tmp: Path, *, replicates: int, neutral: int, length_mb: float, diploids: int, cores: int,
          chunk_windows: int, null_chromosomes: int, n_per_class: int, epochs: int, seed: int) -> dict:
    """Train under the true history, scan planted and neutral chromosomes with a null; power and realised FDR."""
    from ..pipeline import create_run, execute
    from ..simulate.planted import PlantedSweep

    c = PlantedSweep()
    planted = [chromosome(tmp / f"planted{r}", length_mb, diploids, seed + 1000 + r) for r in range(replicates)]
    nulls = [chromosome(tmp / f"neutral{r}", length_mb, diploids, seed + 2000 + r, neutral=True)
             for r in range(neutral)]
    demes = demes_yaml(tmp / "truth.demes.yaml")
    sim = {"store": "@run/power.zarr", "demography": {"demes": str(demes), "population": c.population},
           "engine": "auto", "reference_ne": c.size, "n_haplotypes": 2 * diploids, "sequence_length": 80_000,
           "mutation_rate": c.mutation_rate, "recombination_rate": c.recombination_rate, "classes": [0, c.S],
           "n_per_class": n_per_class, "sweep": {"onset": round(c.onset), "start_frequency": 1 / (2 * c.size)},
           "image": dict(IMAGE), "split": {"validation": 0.1, "test": 0.1},
           "shard_images": max(1, min(50, n_per_class)), "chunk_images": max(1, min(10, n_per_class))}
    train = {"store": "@run/power.zarr", "model": {"preset": "binary"}, "labels": {"mode": "binary"},
             "epochs": epochs, "batch_size": 32, "early_stopping": {"patience": 3}, "tensorboard": False}
    stages = [{"name": "simulate", "resources": {"cores": cores}, "simulate": sim},
              {"name": "train", "resources": {"cores": cores}, "train": train}]
    stages += [_scan_stage(f"planted{r}", t["path"], cores, chunk_windows, null=null_chromosomes)
               for r, t in enumerate(planted)]
    stages += [_scan_stage(f"neutral{r}", t["path"], cores, chunk_windows, null=null_chromosomes)
               for r, t in enumerate(nulls)]
    man = _write_manifest(tmp / "power.yaml", tmp / "storage", stages, seed)
    t0 = time.perf_counter()
    report = execute(create_run(man, run_dir=tmp / "run"), progress=False)
    wall = time.perf_counter() - t0
    if report["status"] != "completed":
        bad = next((s for s in report["stages"] if s.get("status") != "completed"), {})
        raise click.ClickException(f"bench scan --power: stage {bad.get('name')!r} ended {bad.get('status')!r}: "
                                   f"{bad.get('error')}")
    positions = [t["sweep_position"] for t in planted]
    summary = power_summary(tmp / "run", positions, neutral, null_chromosomes)
    summary["null_size_effect"] = null_size_effect(tmp / "run", positions, neutral,
                                                   tuple(sorted({null_chromosomes, *NULL_SIZES})))
    metrics = {s["name"]: s.get("metrics", {}) for s in report["stages"]}
    return {**summary, "length_mb": length_mb, "null_chromosomes_per_scan": null_chromosomes,
            "n_per_class": n_per_class, "epochs": epochs,
            "best_val_binary_accuracy": metrics.get("train", {}).get("best_val_binary_accuracy"),
            "history": "true (PlantedSweep's: 2,500 -> 10,000 diploids 5,000 generations ago)",
            "wall_s": round(wall, 1)}


def null_bayes_factors(stage_dir: Path) -> list[np.ndarray]:
    """The BF of every window of each null chromosome of a scan stage (its parts/null-*.tsv; none if empty)."""
    from ..infer.scan import read_part_bayes_factors

    parts = [read_part_bayes_factors(f) for f in sorted((stage_dir / "parts").glob("null-*.tsv"))]
    return [b for b in parts if len(b)]


def _share_below(qs: list[float | None]) -> float | None:
    """Share of planted replicates whose sweep window has q < FDR (None without replicates)."""
    return round(float(np.mean([v is not None and v < FDR for v in qs])), 3) if qs else None


def null_size_effect(run_dir: Path, sweep_positions: list[int], neutral: int, sizes: tuple[int, ...]) -> dict:
    """The realised FDR and power had each scan's null held ``K`` chromosomes, for each ``K`` of ``sizes``.

    Every scan stage of the run simulated its own null chromosomes under the same history, rates and
    sample size (lengths differ by the last site's position only), so all of them are draws of one null.
    Chromosome ``r`` (neutral stages first, then planted) takes the ``K`` null chromosomes starting at its
    own, in stage order, wrapping around: at the stages' own ``K`` this is exactly the scans' null (a check
    the caller can make); a larger ``K`` borrows the next stages' nulls, so neighbours share some. p and q
    come from :func:`~hpc_popgen.infer.calibrate.empirical_p` and ``qvalues``, as in the scan stage.
    """
    from ..infer.calibrate import empirical_p, qvalues
    from ..infer.scan import read_scan

    stages = [run_dir / f"neutral{r}" for r in range(neutral)] + \
        [run_dir / f"planted{r}" for r in range(len(sweep_positions))]
    per_stage = [null_bayes_factors(s) for s in stages]
    tables = [read_scan(s / "scan.tsv") for s in stages]
    starts = np.cumsum([0] + [len(c) for c in per_stage])[:-1]  # each stage's first null in the pool
    pool = [b for chroms in per_stage for b in chroms]
    out = {}
    for k in sizes:
        if not pool or k > len(pool):
            continue
        calls, calls_by, planted_q, planted_q_by = [], [], [], []
        for i, (table, start) in enumerate(zip(tables, starts, strict=True)):
            null = np.concatenate([pool[(start + j) % len(pool)] for j in range(k)])
            p = empirical_p(table["bayes_factor"], null)
            q, q_by = qvalues(p, "bh"), qvalues(p, "by")
            if i < neutral:
                calls.append(bool(np.any(q < FDR)))
                calls_by.append(bool(np.any(q_by < FDR)))
            else:
                pos = sweep_positions[i - neutral]
                planted_q.append(_planted_result({**table, "q": q}, pos)["q"])
                planted_q_by.append(_planted_result({**table, "q": q_by}, pos)["q"])
        out[str(k)] = {"null_fdr_at_q05": round(float(np.mean(calls)), 3) if calls else None,
                       "null_fdr_ci95": wilson(int(sum(calls)), len(calls)),
                       "null_fdr_at_q05_by": round(float(np.mean(calls_by)), 3) if calls_by else None,
                       "planted_q05_fraction": _share_below(planted_q),
                       "planted_q05_fraction_by": _share_below(planted_q_by),
                       "smallest_possible_q": round(1 / k, 4)}
    return {"null_chromosomes": out, "pool": len(pool), "own": len(per_stage[0]) if per_stage else 0}


def power_summary(run_dir: Path, sweep_positions: list[int], neutral: int, null_chromosomes: int) -> dict:
    """Power and the realised FDR from the scan stages ``planted<r>`` and ``neutral<r>`` of ``run_dir``, with
    BH's q-values (the scans') and Benjamini–Yekutieli's from the same p-values (``*_by``)."""
    from ..infer.calibrate import qvalues
    from ..infer.scan import read_scan

    per_rep = []
    for r, pos in enumerate(sweep_positions):
        table = read_scan(run_dir / f"planted{r}" / "scan.tsv")
        by = _planted_result({**table, "q": qvalues(table["p"], "by")}, pos)["q"]
        per_rep.append({"sweep_position": pos, **_planted_result(table, pos), "q_by": by})
    fdp, fdp_by, calls, windows, pvals, above_all, pc = [], [], 0, 0, [], 0, []
    for r in range(neutral):
        stage = run_dir / f"neutral{r}"
        table = read_scan(stage / "scan.tsv")
        q, p = table["q"], table["p"]
        k = int(np.sum(q < FDR))
        fdp.append(1.0 if k else 0.0)  # every call on a neutral chromosome is false
        fdp_by.append(1.0 if np.any(qvalues(p, "by") < FDR) else 0.0)
        calls, windows = calls + k, windows + len(q)
        pvals.append(p[~np.isnan(p)])
        null_bf = null_bayes_factors(stage)
        null_max = np.array([np.nanmax(b) for b in null_bf])
        n_null = sum(int(np.sum(~np.isnan(b))) for b in null_bf)
        above_all += int(np.nanmin(p) * (1 + n_null) < 1.5)  # the real maximum beats every null window
        pc.append(chromosome_p(float(np.nanmax(table["bayes_factor"])), null_max))

    def share(key: str, test) -> float | None:
        return round(float(np.mean([test(x[key]) for x in per_rep])), 3) if per_rep else None

    return {"planted_top1pct_fraction": share("top1pct", bool),
            "planted_q05_fraction": _share_below([x["q"] for x in per_rep]),
            "planted_q05_fraction_by": _share_below([x["q_by"] for x in per_rep]),
            "null_fdr_at_q05": round(float(np.mean(fdp)), 3) if fdp else None,
            "null_fdr_ci95": wilson(int(sum(fdp)), len(fdp)),
            "null_fdr_at_q05_by": round(float(np.mean(fdp_by)), 3) if fdp_by else None,
            "null_fdr_ci95_by": wilson(int(sum(fdp_by)), len(fdp_by)),
            "null_p_calibration": p_calibration(np.concatenate(pvals)) if pvals else None,
            "neutral_above_every_null_window": above_all,
            "neutral_above_every_null_window_expected": round(neutral / (1 + null_chromosomes), 2),
            "neutral_max_calibration": chromosome_calibration(np.array(pc), null_chromosomes) if pc else None,
            "replicates": per_rep, "neutral_chromosomes": neutral, "neutral_windows": windows,
            "neutral_windows_called": calls, "null_window_call_rate": round(calls / windows, 5) if windows else None}


def ms_part(n_images: int) -> dict:
    """``hpcpop bench ms`` for about ``n_images`` images (4 files, 5 passes)."""
    from .ms import run_bench as ms_bench

    return ms_bench(n_reps=max(1, round(n_images / 20)), n_files=4, repeats=5)


# --- the bench ------------------------------------------------------------------------------------

@contextlib.contextmanager
def work_folder(keep: Path | None):
    """The bench's working folder: ``keep`` (made, and left for post-hoc analysis) or a temporary one."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="hpcpop-bench-scan-") as tmp_name:
            yield Path(tmp_name)
        return
    keep.mkdir(parents=True, exist_ok=True)
    yield keep


def run_bench(*, lengths: list[float], samples: int = 99, cores: int = 2, chunk_windows: int = 25,
              read_samples: int = 2504, read_length: float = 2.0, read_repeats: int = 3, ms_images: int = 4000,
              do_power: bool = False, replicates: int = 10, neutral: int = 100, power_length: float = 10.0,
              null_chromosomes: int = 20,
              n_per_class: int = 2000, epochs: int = 10, seed: int = 1, keep: Path | None = None,
              step: int | None = None) -> dict:
    """The JSON-ready result (targets' keys first, then the parts' details); its files stay in ``keep``
    if given."""
    lengths = sorted(lengths)
    with work_folder(keep) as tmp:
        model = untrained_model(tmp / "model")
        scans, truths = {}, {}
        for i, length in enumerate(lengths):
            d = tmp / f"len{i}"
            truths[length] = chromosome(d / "data", length, samples, seed + i)
            scans[f"{length:g}Mb"] = scan_one(d, truths[length], model, cores, chunk_windows, seed)
            log.info("bench scan: %g Mb: %s", length, scans[f"{length:g}Mb"])
        longest = truths[lengths[-1]]
        fine = None
        if step is not None:  # the longest chromosome again at a fine step, each task spanning as many bp
            fine = scan_one(tmp / f"len{len(lengths) - 1}", longest, model, cores,
                            chunk_windows * max(1, WINDOW["step"] // step), seed, step=step)
            log.info("bench scan: %g Mb at a %d bp step: %s", lengths[-1], step, fine)
        rq = region_query(longest["path"], longest["length"], longest["chrom"])
        read = reading(tmp / "read", read_samples, samples, read_length, read_repeats, seed + 500)
        pw = power(tmp / "power", replicates=replicates, neutral=neutral, length_mb=power_length, diploids=samples,
                   cores=cores, chunk_windows=chunk_windows, null_chromosomes=null_chromosomes,
                   n_per_class=n_per_class, epochs=epochs, seed=seed) if do_power else None
    ms = ms_part(ms_images) if ms_images > 0 else None
    small, large = scans[f"{lengths[0]:g}Mb"], scans[f"{lengths[-1]:g}Mb"]
    out = {"read_records_per_s": read["read_records_per_s_cyvcf2"], "region_query_s": rq["first_s"],
           "driver_mem_ratio_50_10": round(large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"], 3),
           "planted_top1pct_fraction": pw["planted_top1pct_fraction"] if pw else None,
           "null_fdr_at_q05": pw["null_fdr_at_q05"] if pw else None,
           "ms_images_per_s": ms["ms_images_per_s"] if ms else None}
    if fine is not None:
        out[f"fine_step_{lengths[-1]:g}mb_s"] = fine["wall_s"]
    checks = {"read_records_per_s": out["read_records_per_s"] >= TARGETS["read_records_per_s"],
              "read_records_per_s_vcz": read["read_records_per_s_vcz"] >= TARGETS["read_records_per_s"],
              "read_records_per_s_bcf": read["read_records_per_s_bcf"] >= TARGETS["read_records_per_s"],
              "region_query_s": out["region_query_s"] <= TARGETS["region_query_s"],
              "driver_mem_ratio_50_10": out["driver_mem_ratio_50_10"] <= TARGETS["driver_mem_ratio_50_10"]}
    if pw:
        checks["planted_top1pct_fraction"] = (out["planted_top1pct_fraction"] or 0) >= TARGETS["planted_top1pct_fraction"]
        checks["null_fdr_at_q05"] = out["null_fdr_at_q05"] is not None and \
            out["null_fdr_at_q05"] <= TARGETS["null_fdr_at_q05"]
    if ms:
        checks["ms_images_per_s"] = ms["ms_images_per_s"] >= TARGETS["ms_images_per_s"]
    if fine is not None and lengths[-1] == 50 and step == 2000:
        checks["fine_step_50mb_s"] = fine["wall_s"] <= TARGETS["fine_step_50mb_s"]
    out.update(targets=TARGETS, targets_met=checks, all_targets_met=all(checks.values()),
               model="untrained" + (" (scan speed and memory); trained under the true history for power" if pw else ""),
               cores=cores, samples=samples, lengths_mb=lengths, driver_mem_ratio_lengths_mb=[lengths[0], lengths[-1]],
               window=WINDOW, chunk_windows=chunk_windows, image=IMAGE, scan=scans, fine_step=fine,
               region_query={**rq, "length_mb": lengths[-1]}, reading=read, power=pw, ms=ms,
               timing=("scan: wall of the scan stage (cluster start included) in a fresh driver process, per core = "
                       "windows / (wall x cores); memory sampled from /proc (driver RSS; task = the largest Dask "
                       "worker's VmHWM); the VCF Zarr conversion is done before, in its own process"),
               cpu_count=os.cpu_count(), kept=None if keep is None else str(keep))
    return out


def _floats(ctx, param, value: str) -> list[float]:
    try:
        vals = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated numbers of Mb, e.g. 10,50") from None
    if not vals or min(vals) <= 0:
        raise click.BadParameter(f"{value!r}: give one or more positive lengths in Mb")
    return vals


@click.command("scan")
@click.option("--lengths", default="10,50", show_default=True, callback=_floats,
              help="Chromosome lengths (Mb) scanned for speed and memory; the memory ratio is longest / shortest.")
@click.option("--samples", type=click.IntRange(min=2), default=99, show_default=True,
              help="Diploids of the scanned chromosomes, and read out of the --read-samples file.")
@click.option("--cores", type=click.IntRange(min=1), default=2, show_default=True, help="Dask workers of the scans.")
@click.option("--chunk-windows", type=click.IntRange(min=1), default=25, show_default=True,
              help="Windows per scan task (scan.chunk_windows).")
@click.option("--read-samples", type=click.IntRange(min=2), default=2504, show_default=True,
              help="Diploids in the reading benchmark's VCF (1000 Genomes: 2,504).")
@click.option("--read-length", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="Length (Mb) of the reading benchmark's VCF (2 Mb, 2,504 diploids: about 8,000 records).")
@click.option("--read-repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed passes of each reader.")
@click.option("--ms-images", type=click.IntRange(min=0), default=4000, show_default=True,
              help="Images timed by the ms reader benchmark (0: skip it).")
@click.option("--power/--no-power", "do_power", default=False, show_default=True,
              help="Also train a model under the true history and measure power and the realised FDR (long).")
@click.option("--replicates", type=click.IntRange(min=1), default=10, show_default=True,
              help="--power: planted chromosomes.")
@click.option("--neutral", type=click.IntRange(min=1), default=100, show_default=True,
              help="--power: neutral chromosomes for the realised FDR (each has a call or not: 100 give it to about "
                   "0.02).")
@click.option("--power-length", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="--power: chromosome length (Mb).")
@click.option("--null-chromosomes", type=click.IntRange(min=1), default=20, show_default=True,
              help="--power: neutral chromosomes simulated by each scan's null (scan.null.chromosomes).")
@click.option("--train-images", "n_per_class", type=click.IntRange(min=1), default=2000, show_default=True,
              help="--power: training regions per class (neutral, sweep).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="--power: training epochs.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulated chromosomes and runs.")
@click.option("--step", type=click.IntRange(min=1), default=None,
              help="Also scan the longest chromosome with windows every STEP bp (e.g. 2000: fine_step_50mb_s, "
                   "target 300 s at 50 Mb), each task spanning as many bp as at the default step.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work in this folder (it must be empty or new) and keep it: the chromosomes, scans and nulls "
                   "for analyses after the run. Default: a temporary folder, removed.")
def command(lengths: list[float], samples: int, cores: int, chunk_windows: int, read_samples: int, read_length: float,
            read_repeats: int, ms_images: int, do_power: bool, replicates: int, neutral: int, power_length: float,
            null_chromosomes: int, n_per_class: int, epochs: int, seed: int, keep: Path | None,
            step: int | None) -> None:
    """Genome scans at 10 and 50 Mb (speed, driver and task memory), reading 99 of 2,504 samples, an 80 kb
    region query, power and FDR (--power), the ms reader; one JSON object."""
    if keep is not None:
        refuse_full_keep(keep)
    res = run_bench(lengths=lengths, samples=samples, cores=cores, chunk_windows=chunk_windows,
                    read_samples=read_samples, read_length=read_length, read_repeats=read_repeats,
                    ms_images=ms_images, do_power=do_power, replicates=replicates, neutral=neutral,
                    power_length=power_length, null_chromosomes=null_chromosomes, n_per_class=n_per_class, epochs=epochs, seed=seed,
                    keep=None if keep is None else keep.resolve(), step=step)
    click.echo(json.dumps(res))
