"""The simulate stage with ``source: {ms: [...], s: ...}``: ms/msms/discoal files -> images -> the image store.

Two passes of Dask tasks: one per file reads and checks it whole (checksum, where each replicate
starts), so bad input stops the stage before a store exists; then one per shard reads only its
replicates' bytes, images them and writes the shard whole, as the simulate stage does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import InputDataError
from ..job import Job, JobStage
from ..readers.msformat import MsIndex, index_file
from ..simulate.config import SimulateConfig
from ..simulate.msfiles import MsPlan, check_source, image_shard
from ..store import open_store
from .base import WAIT_S, StageContext, StageResult, Unit, Watchdog, located

log = logging.getLogger(__name__)


def check(stage: JobStage, job: Job) -> None:
    """Validation: the files exist, every file's S resolves, each command line agrees with n_haplotypes."""
    with located(stage.spec, job.manifest):
        check_source(stage.config, job.manifest.base_dir)


def _index_all(ctx: StageContext, paths: list[str], n_haplotypes: int) -> list[MsIndex]:
    """Index every file on the workers (one task each); the first bad file in listed order is raised.
    The wait has the stage's watchdog (no worker and nothing finishing for ``stall_timeout_s``: one line)."""
    futures = [ctx.client.submit(index_file, p, n_haplotypes, key=f"{ctx.name}-index-{k:05d}", pure=False)
               for k, p in enumerate(paths)]
    dog = Watchdog(ctx, ctx.profile.stall_timeout_s)
    try:
        n_done = 0
        while n_done < len(futures):
            now_done = sum(f.done() for f in futures)
            if now_done > n_done:
                dog.touch()
                n_done = now_done
                continue
            dog.check()
            time.sleep(WAIT_S)
        for fut in futures:
            if fut.status == "error":
                exc = fut.exception()
                raise exc if isinstance(exc, InputDataError) else InputDataError(f"{paths[futures.index(fut)]}: {exc}")
        return [fut.result() for fut in futures]
    finally:
        for fut in futures:
            fut.release()


def plan_for(ctx: StageContext, cfg: SimulateConfig) -> MsPlan:
    """Resolve files and S, then index the files (bad input raises here, before any store is made)."""
    assert cfg.source is not None
    with located(ctx.spec, ctx.manifest):
        files, values = check_source(cfg, ctx.manifest.base_dir)
    t0 = time.time()
    indexes = _index_all(ctx, [str(p.resolve()) for p in files], cfg.n_haplotypes)
    log.info("indexed %d ms file(s): %d replicates in %.1f s", len(indexes), sum(i.n_replicates for i in indexes),
             time.time() - t0)
    empty = [i.path for i in indexes if i.n_replicates == 0]
    if empty:
        raise InputDataError(f"{empty[0]}: no replicates")
    return MsPlan(files=tuple(indexes), s=tuple(values), image=cfg.image, seed=int(ctx.seed),
                  split=cfg.split.fractions(), n_haplotypes=cfg.n_haplotypes, sequence_length=cfg.sequence_length,
                  position=cfg.sweep.position, s_kind=cfg.source.s_kind, s_rule=dict(cfg.source.s))


def store_meta(plan: MsPlan, params: dict) -> dict:
    """The store's attrs for an ms source (the layout of our own stores; ``source`` records the files)."""
    from ..runs import package_versions

    versions = {k: v for k, v in package_versions().items()
                if k in ("python", "hpc_popgen", "numpy", "scipy", "zarr", "numcodecs")}
    classes = plan.classes
    return {"classes": list(classes) if classes is not None else None, "prior": plan.prior(),
            "demography": {"source": "ms files (simulated elsewhere)"}, "engine": {"name": "ms_files"},
            "source": plan.source_record(), "image": plan.image.to_dict(), "split": plan.split,
            "stage_params": params, "versions": versions, "seed": int(plan.seed)}


def image_ms_shard(url: str, shard: int, task: dict) -> dict[str, Any]:
    """Dask task: read, parse and image shard ``shard``'s replicates, write the shard whole."""
    t0 = time.time()
    store = open_store(url, mode="r+")
    start, stop = store.shard_range(shard)
    if store.is_written(shard):
        return {"images": stop - start, "skipped": True, "seconds": round(time.time() - t0, 3)}
    store.write_shard(shard, image_shard(task))
    return {"images": stop - start, "seconds": round(time.time() - t0, 3)}


def run(ctx: StageContext, cfg: SimulateConfig) -> StageResult:
    from ..store import store_exists
    from .simulate import open_or_create_store, run_shards

    plan = plan_for(ctx, cfg)
    url = ctx.path(cfg.store)
    meta = store_meta(plan, {k: v for k, v in ctx.params.items() if k != "store"})
    store = open_or_create_store(url, meta, plan.n_images, plan.image.size, cfg)
    units = []
    for i in range(store.n_shards):
        start, stop = store.shard_range(i)
        units.append(Unit(id=f"shard-{i:05d}", args=(url, i, plan.shard_task(start, stop)), weight=stop - start))
    result = run_shards(ctx, url, store, units, image_ms_shard,
                        on_done=lambda u, r: {k: r[k] for k in ("seconds", "skipped") if k in r})
    written = store.written_shards() if store_exists(url) else []  # none written: the store is removed
    metrics = dict(result.metrics)
    metrics.update(store=url, n_images=store.n_images, n_shards=store.n_shards, shards_written=int(len(written)),
                   engine={"name": "ms_files"}, ms_files=len(plan.files))
    if len(written) == store.n_shards:
        split = store.read("split")
        metrics.update(bytes_per_image=round(store.disk_bytes("images") / store.n_images, 1),
                       split_counts={name: int((split == code).sum())
                                     for name, code in (("train", 0), ("validation", 1), ("test", 2))})
    ctx.report(**metrics)
    result.metrics = metrics
    return result
