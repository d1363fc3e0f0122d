"""``hpcpop bench scale --images N [--compare M]``: a simulate-only job of N tiny neutral regions through the
real pipeline (manifest, run directory, local Dask cluster, ledger, image store), against a plain
one-call-per-replicate msprime loop on as many processes, in the same run (half of it before the job,
half after, so drifting load on a shared machine hits both). Prints ONE JSON object.

Regions: constant size, neutral, 32 haplotypes, 2 kb, 256 images per shard: msprime's own work is tiny,
so what is measured is the platform (set-up per engine call, our cost per image, scheduling, files).
With ``--compare M`` the two walls also give the fixed cost (cluster start, store creation) and the
marginal rate, wall = fixed + images / marginal rate.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import yaml

from .procs import ProcSampler

log = logging.getLogger(__name__)
REGIONS = {"demography": "constant", "n_haplotypes": 32, "sequence_length": 2000, "classes": [0],
           "engine": "msprime"}
SHARD_IMAGES = 256
PLAIN_BLOCK = 256  # replicates per task of the plain loop


def count_files(folder: Path) -> int:
    """Regular files under ``folder`` (0 if it does not exist)."""
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _manifest(tmp: Path, n_images: int, workers: int, seed: int) -> Path:
    params = {**REGIONS, "store": "scale.zarr", "n_per_class": int(n_images), "shard_images": SHARD_IMAGES}
    job = {"name": "bench-scale", "seed": seed, "profile": "local", "storage": str(tmp / "stores"),
           "stages": [{"name": "simulate", "resources": {"cores": workers}, "simulate": params}]}
    path = tmp / "scale.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run_pipeline(n_images: int, workers: int, seed: int = 1) -> dict:
    """Submit the job the way ``hpcpop submit`` does; wall time, driver peak RSS, files, the stage's report."""
    from ..pipeline import create_run, execute

    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        rd = create_run(_manifest(tmp, n_images, workers, seed), run_dir=tmp / "run")
        with ProcSampler(children=False) as rss:
            t0 = time.perf_counter()
            report = execute(rd, progress=False)
            wall = time.perf_counter() - t0
        stage = report["stages"][0]
        if stage.get("status") != "completed":
            raise click.ClickException(f"bench scale: the simulate stage ended {stage.get('status')!r}")
        store_files = count_files(tmp / "stores" / "scale.zarr")
        ledger_files = count_files(rd.path / "ledger")
    return {"images": n_images, "wall_s": wall, "images_per_s": n_images / wall, "driver_peak_rss_mb": rss.peak_mb,
            "store_files": store_files, "ledger_files": ledger_files, "shards": stage["metrics"].get("n_shards")}


def _plain_block(args: tuple[int, int]) -> int:
    """A plain loop (sim_ancestry + sim_mutations + genotype_matrix per replicate) over one block."""
    from ..config import config_with_defaults
    from ..simulate import Plan
    from ..simulate.config import SimulateConfig
    from .simulate import plain_msprime

    start, stop = args
    cfg = config_with_defaults(SimulateConfig, "stages/simulate.schema.json",
                               {**REGIONS, "store": "plain.zarr", "n_per_class": stop})
    plain_msprime(Plan.from_config(cfg, 2), start, stop)
    return stop - start


def run_plain(n_images: int, workers: int) -> dict:
    """Images/s of the plain loop over ``n_images`` of the same regions on ``workers`` processes (wall)."""
    blocks = [(a, min(a + PLAIN_BLOCK, n_images)) for a in range(0, n_images, PLAIN_BLOCK)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_plain_block, [(0, 1)] * workers))  # start the processes and import before timing
        t0 = time.perf_counter()
        done = sum(pool.map(_plain_block, blocks))
        wall = time.perf_counter() - t0
    return {"images": done, "wall_s": wall, "images_per_s": done / wall}


def own_cost(shards: int = 12) -> dict:
    """Our own CPU cost per image (seeds, fields, genotypes, image, store write), without the engine: in
    one process, shard by shard, the pipeline's simulate_range + write_shard against msprime called the
    same way (batched, bare), interleaved; ms per image per core."""
    from ..config import config_with_defaults
    from ..simulate import Plan, simulate_range
    from ..simulate.config import SimulateConfig
    from ..store import create_store
    from .simulate import Clock, msprime_bare

    n = shards * SHARD_IMAGES
    cfg = config_with_defaults(SimulateConfig, "stages/simulate.schema.json",
                               {**REGIONS, "store": "own.zarr", "n_per_class": 2 * n})
    plan = Plan.from_config(cfg, 3)
    simulate_range(plan, n, n + 2)  # the compiled kernels load once per worker process: not timed
    bare, pipe = Clock(), Clock()
    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-own-") as tmp:
        meta = dict(classes=list(plan.classes), prior=plan.prior_dict(), demography=plan.sim.demography.to_dict(),
                    image=plan.image.to_dict(), split=plan.split, stage_params={}, versions={}, seed=plan.seed)
        store = create_store(os.path.join(tmp, "own.zarr"), meta, n_images=n, image_shape=plan.image.size,
                             shard_images=SHARD_IMAGES)
        for i in range(shards):
            start, stop = store.shard_range(i)
            with bare:
                msprime_bare(plan, start, stop)
            with pipe:
                store.write_shard(i, simulate_range(plan, start, stop))
    return {"own_ms_per_image": round((pipe.cpu - bare.cpu) / n * 1e3, 4),
            "msprime_bare_ms_per_image": round(bare.cpu / n * 1e3, 4),
            "pipeline_ms_per_image": round(pipe.cpu / n * 1e3, 4), "images": n,
            "timing": "CPU seconds of one process, shard by shard: simulate_range + write_shard minus batched "
                      "msprime (sim_ancestry + sim_mutations as the pipeline calls them)"}


def _summary(run: dict) -> dict:
    per = 1e5 / run["images"]
    store, ledger = round(run["store_files"] * per), round(run["ledger_files"] * per)
    return {"images": run["images"], "wall_s": round(run["wall_s"], 2), "images_per_s": round(run["images_per_s"], 1),
            "driver_peak_rss_mb": round(run["driver_peak_rss_mb"], 1),
            "files_per_1e5_images": {"store": store, "ledger": ledger, "total": store + ledger},
            "files": {"store": run["store_files"], "ledger": run["ledger_files"]}}


def run_bench(n_images: int, compare: int | None = None, workers: int | None = None,
              plain_images: int | None = None, own_shards: int = 12) -> dict:
    """The JSON-ready result: the run at ``n_images`` (and at ``compare``), the plain loop's rate, ratios."""
    workers = int(workers or os.cpu_count() or 1)
    n_plain = int(plain_images or min(n_images, 10_000))
    # first, on a quiet machine, and in a process of its own: not in the driver, whose memory is measured
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        own = child.submit(own_cost, own_shards).result()
    before = run_plain(-(-n_plain // 2), workers)  # half before the job, half after: drifting load hits both
    main = run_pipeline(n_images, workers)
    after = run_plain(n_plain // 2, workers) if n_plain > 1 else {"images": 0, "wall_s": 0.0}
    plain = {"images": before["images"] + after["images"], "wall_s": before["wall_s"] + after["wall_s"]}
    plain["images_per_s"] = plain["images"] / plain["wall_s"]
    out = _summary(main)
    out.update(engine_ratio=round(main["images_per_s"] / plain["images_per_s"], 3),
               plain_msprime_images_per_s=round(plain["images_per_s"], 1), plain_images=plain["images"],
               workers=workers, shard_images=SHARD_IMAGES,
               regions="constant size, neutral, 32 haplotypes, 2 kb (msprime)",
               timing="wall clock: the whole job (cluster start included) and the plain loop on as many processes")
    out["own_cost"] = own
    out["own_ms_per_image"] = own["own_ms_per_image"]
    if compare:
        other = run_pipeline(compare, workers)
        out["compare"] = _summary(other)
        out["wall_ratio_per_image"] = round((main["wall_s"] / n_images) / (other["wall_s"] / compare), 3)
        if n_images != compare and main["wall_s"] != other["wall_s"]:  # wall = fixed + images / marginal rate
            marginal = (n_images - compare) / (main["wall_s"] - other["wall_s"])
            out["marginal_images_per_s"] = round(marginal, 1)
            out["fixed_s"] = round(main["wall_s"] - n_images / marginal, 2)  # cluster start, store creation
            out["engine_ratio_marginal"] = round(marginal / plain["images_per_s"], 3)
        out["driver_rss_ratio"] = round(main["driver_peak_rss_mb"] / other["driver_peak_rss_mb"], 3)
    return out


@click.command("scale")
@click.option("--images", "n_images", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Tiny neutral regions the job simulates.")
@click.option("--compare", type=click.IntRange(min=1), default=None,
              help="Also run this many and print wall_ratio_per_image (wall per image at --images over this; linear = 1.0).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Dask workers, and processes of the plain loop (default: one per core).")
@click.option("--plain-images", type=click.IntRange(min=1), default=None,
              help="Replicates of the plain msprime loop (default: min(--images, 10000)).")
@click.option("--own-shards", type=click.IntRange(min=1), default=12, show_default=True,
              help="Shards of 256 timed in one process for own_ms_per_image (our cost without the engine).")
def command(n_images: int, compare: int | None, workers: int | None, plain_images: int | None,
            own_shards: int) -> None:
    """Images/s of a simulate-only job of tiny regions, against plain msprime; driver memory; files; our
    own cost per image."""
    click.echo(json.dumps(run_bench(n_images, compare, workers, plain_images, own_shards)))
