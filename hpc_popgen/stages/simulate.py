"""The ``simulate`` stage: msprime replicates (or ms files, see simulate_ms) -> images -> one sharded Zarr store.

One Dask task per shard simulates its replicates, images them and writes the shard whole (its
records, written last, mark it whole); the ledger records the shard after the task returns. Replicate seeds
derive from (stage seed, replicate index), so the store does not depend on the number of workers,
and a rerun (or a task redone after its worker died) rewrites identical bytes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ManifestError, StoreError
from ..job import Job, JobStage
from ..manifest import schema_maximum
from ..simulate import Plan
from ..simulate.config import SimulateConfig
from ..simulate.plan import check_classes, forward_to_dict
from ..store import ImageStore, create_store, open_store, store_exists
from .base import RUN_PREFIX, StageContext, StageResult, Unit, check_url, key_path, located, resolve_location

log = logging.getLogger(__name__)
# attrs that must match for an existing store to be reused (versions may differ between reruns)
MATCH_KEYS = ("n_images", "image_shape", "shard_images", "classes", "prior", "demography", "image", "split",
              "stage_params", "seed", "source")


CONFIG = SimulateConfig
MAX_SHARDS = 1_000_000  # Dask tasks of one store: the scheduler's bookkeeping stays small


def check(stage: JobStage, job: Job) -> None:
    """What the schema cannot say: classes xor prior, split sums, the history, the engine it allows.

    A history inferred by an earlier demography stage does not exist yet: its reference is checked.
    """
    spec, manifest = stage.spec, job.manifest
    cfg: SimulateConfig = stage.config
    check_size(stage, job)
    check_output_store(stage, job)
    if cfg.source is not None:
        from . import simulate_ms

        simulate_ms.check(stage, job)
        return
    ref = cfg.demography.get("ensemble", cfg.demography) if isinstance(cfg.demography, dict) else {}
    if "from_stage" in ref and "demes" in ref:
        raise ManifestError(f"{key_path(spec, manifest, 'demography.ensemble')}: give either from_stage or demes")
    if "from_stage" in ref:
        with located(spec, manifest):
            check_classes(cfg)
        _check_stage_reference(stage, job, {**ref, "population": cfg.demography["population"]},
                               "ensemble." if "ensemble" in cfg.demography else "")
        if "draw" in ref:
            _check_draw(stage, job, ref)
        return
    with located(spec, manifest):
        Plan.from_config(cfg, 1, manifest.base_dir)


def check_size(stage: JobStage, job: Job) -> None:
    """At most prior.n's schema maximum images in all (n_per_class x classes too), in at most MAX_SHARDS
    shards: a typo of a few digits is refused here, before anything is planned or allocated."""
    cfg: SimulateConfig = stage.config
    if cfg.classes is not None and cfg.n_per_class is not None:
        n, key = cfg.n_per_class * len(cfg.classes), "n_per_class"
    elif cfg.prior is not None:
        n, key = cfg.prior.n, "prior.n"
    else:
        return  # ms files: as many images as they hold
    most = schema_maximum("stages/simulate.schema.json", "prior", "n")
    where = key_path(stage.spec, job.manifest, key)
    if n > most:
        raise ManifestError(f"{where}: {n:,} images in all; at most {most:,}")
    shards = -(-n // cfg.shard_images)
    if shards > MAX_SHARDS:
        raise ManifestError(f"{where}: {n:,} images in shards of {cfg.shard_images} are {shards:,} shards (Dask "
                            f"tasks); at most {MAX_SHARDS:,}: raise shard_images")


def check_output_store(stage: JobStage, job: Job) -> None:
    """The store to write is a remote URL whose protocol is installed, a path with nothing there yet, or an
    image store (a rerun's; its parameters are compared when the stage runs), not a file or another folder."""
    from ..paths import is_remote

    loc = resolve_location(job.manifest, stage.config.store, None)
    where = key_path(stage.spec, job.manifest, "store")
    if is_remote(loc):
        check_url(loc, where)
        return
    path = Path(loc)
    if loc.startswith(RUN_PREFIX) or not path.exists():
        return
    if not path.is_dir():
        raise ManifestError(f"{where}: {loc} is a file, not an image store")
    if any(path.iterdir()):
        try:
            open_store(loc)
        except StoreError as exc:
            raise ManifestError(f"{where}: {exc}; remove it or choose another `store` path") from None


def _check_stage_reference(stage: JobStage, job: Job, ref: dict, prefix: str = "") -> None:
    """``{from_stage, population}``: an earlier demography stage that infers that population."""
    name, where = ref["from_stage"], key_path(stage.spec, job.manifest, "demography")
    stages = {s.name: s for s in job.stages}
    if name not in stages:
        raise ManifestError(f"{where}.{prefix}from_stage: no stage named {name!r} (stages: {', '.join(stages)})")
    target = stages[name]
    if target.kind != "demography":
        raise ManifestError(f"{where}.{prefix}from_stage: stage {name!r} is a {target.kind} stage, not a demography "
                            "stage")
    if target.index > stage.index:
        raise ManifestError(f"{where}.{prefix}from_stage: demography stage {name!r} runs after this stage")
    populations = target.config.input.populations
    if populations and ref["population"] not in populations:
        raise ManifestError(f"{where}.population: {ref['population']!r} is not a population of stage {name!r} "
                            f"({', '.join(populations)})")


def _check_draw(stage: JobStage, job: Job, ref: dict) -> None:
    """``draw: uncertainty`` needs a demography stage that computes intervals."""
    target = next(s for s in job.stages if s.name == ref["from_stage"])
    if target.config.uncertainty == "none":
        where = key_path(stage.spec, job.manifest, "demography.draw")
        raise ManifestError(f"{where}: demography stage {target.name!r} has uncertainty: none, so there is no "
                            "uncertainty to draw histories from: give it uncertainty: fim, or leave out draw")


def drawn_histories(cfg: SimulateConfig, seed: int, dirs: dict[str, Path]) -> dict | None:
    """For ``draw: uncertainty``: ``draws`` histories from the uncertainty of the demography stage's chosen
    model, seeded by the stage's seed, each one a history where the population exists at the sweep's onset;
    None otherwise. ParamErrors name keys under ``demography``."""
    demo = cfg.demography
    if not (isinstance(demo, dict) and "draw" in demo):
        return None
    from ..demography.draws import draw_histories
    from ..errors import ParamError
    from ..seeds import derive_seed
    from ..simulate.histories import stage_history, stage_model_dir
    from ..simulate.plan import DRAWS_KEY, class_sweep
    from ..simulate.units import onset_generations

    name, population = demo["from_stage"], demo["population"]
    if name not in dirs:
        raise ParamError("demography.from_stage", f"stage {name!r} has no output folder here")
    sweeps = [class_sweep(cfg, c) for c in cfg.class_specs() if c.S > 0]  # the oldest onset counts
    onset = max(onset_generations(sw.onset, sw.onset_unit, sw.generation_time) for sw in sweeps or [cfg.sweep])
    needs_onset = bool(sweeps) or cfg.prior is not None

    def exists_at_onset(graph) -> bool:
        return not needs_onset or graph[population].start_time >= onset

    try:
        model_dir = stage_model_dir(dirs[name], demo["structure"])
        stage_history(dirs[name], demo["structure"], population, name)  # the population is one of the model's
        drawn = draw_histories(dirs[name], model_dir, int(demo["draws"]), derive_seed(seed, DRAWS_KEY),
                               accept=exists_at_onset)
    except ParamError as exc:
        raise exc.within("demography") from None
    drawn.update(source=f"stage:{name}/{model_dir}", seed=derive_seed(seed, DRAWS_KEY))
    return drawn


def stage_dirs(ctx: StageContext) -> dict[str, Path]:
    """Output folders of this run's demography stages (where a ``from_stage`` history is read)."""
    return {s.name: ctx.run_dir / s.name for s in ctx.manifest.stages if s.kind == "demography"}


def _store_meta(plan: Plan, params: dict) -> dict:
    from ..runs import package_versions

    versions = {k: v for k, v in package_versions().items()
                if k in ("python", "hpc_popgen", "numpy", "scipy", "msprime", "fwdpy11", "tskit", "demes", "zarr",
                         "numcodecs")}
    return {"classes": list(plan.classes) if plan.classes is not None else None, "prior": plan.prior_dict(),
            "demography": ({**plan.sim.demography.to_dict(), "reference_ne": plan.sim.reference_ne}
                           if plan.engine == "msprime" and plan.sim.demography is not None else plan.history),
            "engine": plan.engine_record(), **_replay_settings(plan),
            **({"models": [m.to_dict() for m in plan.models]} if plan.models else {}),
            "image": plan.image.to_dict(), "split": plan.split, "stage_params": params, "versions": versions,
            "seed": int(plan.seed),
            **({"class_names": list(plan.class_names)} if plan.class_names else {}),
            **({"class_plans": [_replay_settings(p) for p in plan.parts]} if plan.parts else {})}


def _replay_settings(plan: Plan) -> dict:
    """What re-simulates a plan's images (the store's attrs, or a class's entry of ``class_plans``)."""
    return {"forward": forward_to_dict(plan.forward) if plan.forward is not None else None,
            "ensemble": [forward_to_dict(f) for f in plan.ensemble] if plan.ensemble else None,
            "simulation": plan.sim.to_dict()}


def open_or_create(url: str, plan: Plan, cfg: SimulateConfig, params: dict) -> ImageStore:
    """Reuse a store made with the same parameters (rerun), create it if absent, refuse otherwise."""
    meta = _store_meta(plan, {k: v for k, v in params.items() if k != "store"})
    return open_or_create_store(url, meta, plan.n_images, plan.image.size, cfg)


def open_or_create_store(url: str, meta: dict, n_images: int, image_shape: tuple[int, int],
                         cfg: SimulateConfig) -> ImageStore:
    """The store with attrs ``meta``: reused if its MATCH_KEYS agree (a rerun), created if absent, else refused."""
    shard = cfg.shard_images
    if store_exists(url):
        st = open_store(url, mode="r+")
        import json

        want = json.loads(json.dumps({**meta, "n_images": n_images, "image_shape": list(image_shape),
                                      "shard_images": shard}))
        diff = [k for k in MATCH_KEYS if st.meta.get(k) != want.get(k)]
        written = len(st.written_shards())
        if diff and written:
            raise StoreError(f"{url}: an image store made with different parameters is already here "
                             f"(differs in: {', '.join(diff)}); remove it or choose another `store` path")
        if diff:  # a failed attempt's empty store: nothing in it to keep
            log.warning("replacing image store %s: made with other parameters (%s) but no shard was ever written",
                        url, ", ".join(diff))
            remove_store(url)
        else:
            log.info("reusing image store %s (%d/%d shards written)", url, written, st.n_shards)
            return st
    return create_store(url, meta, n_images=n_images, image_shape=image_shape, shard_images=shard,
                        chunk_images=cfg.chunk_images)


def remove_store(url: str) -> None:
    """Delete the image store at ``url`` (a local folder or an fsspec URL), whole."""
    import fsspec

    from ..store.imagestore import normalise_url

    fs, path = fsspec.core.url_to_fs(normalise_url(url))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def run_shards(ctx: StageContext, url: str, store: ImageStore, units: list[Unit], fn: Any,
               on_done: Any = None) -> StageResult:
    """``ctx.run_units`` over a store's shards (a unit counts as done only while its shard is flagged
    written); a stage that wrote no shard at all leaves no store behind, so a corrected manifest starts afresh."""
    flagged = set(store.written_shards().tolist())
    try:
        result = ctx.run_units(units, fn, item_name="images", still_done=lambda u: u.args[1] in flagged,
                               on_done=on_done)
    except Exception:
        _discard_if_empty(url, store)
        raise
    if result.units_done < result.units_total:
        _discard_if_empty(url, store)
    return result


def _discard_if_empty(url: str, store: ImageStore) -> None:
    try:
        empty = len(store.written_shards()) == 0
    except Exception:  # noqa: BLE001 - unreadable: leave it for the user to look at
        return
    if empty:
        remove_store(url)
        log.info("removed image store %s: no shard of it was written", url)


def simulate_shard(url: str, shard: int, plan_dict: dict) -> dict[str, Any]:
    """Dask task: simulate, image and write shard ``shard`` whole; returns counts for the ledger."""
    t0 = time.time()
    plan = Plan.from_dict(plan_dict)
    store = open_store(url, mode="r+")
    start, stop = store.shard_range(shard)
    if store.is_written(shard):
        return {"images": stop - start, "skipped": True, "seconds": round(time.time() - t0, 3)}
    from ..simulate import simulate_range

    data = simulate_range(plan, start, stop)
    store.write_shard(shard, data)
    attempts = data["attempts"].astype(np.int64)
    return {"images": stop - start, "attempts": int(attempts.sum()), "retried": int((attempts > 1).sum()),
            "seconds": round(time.time() - t0, 3)}


def run(ctx: StageContext) -> StageResult:
    cfg: SimulateConfig = ctx.config
    if cfg.source is not None:
        from . import simulate_ms

        return simulate_ms.run(ctx, cfg)
    with located(ctx.spec, ctx.manifest):
        drawn = drawn_histories(cfg, ctx.seed, stage_dirs(ctx))
        plan = Plan.from_config(cfg, ctx.seed, ctx.manifest.base_dir, stage_dirs(ctx), drawn)
    url = ctx.path(cfg.store)
    store = open_or_create(url, plan, cfg, ctx.params)
    units = []
    for i in range(store.n_shards):
        start, stop = store.shard_range(i)
        units.append(Unit(id=f"shard-{i:05d}", args=(url, i, plan.to_dict()), weight=stop - start))
    result = run_shards(ctx, url, store, units, simulate_shard,
                        on_done=lambda u, r: {k: r[k] for k in ("attempts", "retried", "seconds", "skipped") if k in r})
    written = store.written_shards() if store_exists(url) else np.array([], dtype=np.int64)  # removed: none
    metrics = dict(result.metrics)
    metrics.update(store=url, n_images=store.n_images, n_shards=store.n_shards, shards_written=int(len(written)),
                   engine=plan.engine_record(), history=(plan.history or {}).get("source"))
    if len(written) == store.n_shards:
        attempts = store.read("attempts").astype(np.int64)
        split = store.read("split")
        metrics.update(attempts_total=int(attempts.sum()), images_retried=int((attempts > 1).sum()),
                       bytes_per_image=round(store.disk_bytes("images") / store.n_images, 1),
                       split_counts={name: int((split == code).sum())
                                     for name, code in (("train", 0), ("validation", 1), ("test", 2))})
        if int(attempts.min()) < 1:
            raise StoreError(f"{url}: some images have no recorded attempt although every shard is marked written")
    ctx.report(**metrics)
    result.metrics = metrics
    return result
