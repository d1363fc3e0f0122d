"""``hpcpop bench simulate``: msprime alone (called as the pipeline calls it: one call per shard and class,
with tskit's genotype matrix as the issue measured msprime, and bare; and a plain one-call-per-replicate
loop) vs the whole simulate pipeline, the image step, bytes per image.

All rates are per core: work divided by the CPU seconds the measuring process used (its threads
included), so other load on a shared machine does not distort them; wall-clock rates are printed too
(``*_wall``). ``--workers N`` runs N measuring processes at once and averages them. The workload is the paper's Fig. 3 setting: marth3, S in {0, 200, 300, 400}
(``--classes``), 128 haplotypes, 80 kb, rows sorted, 128x128 images. Prints ONE JSON object on stdout.
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import click
import numpy as np

log = logging.getLogger(__name__)


def fig3_plan(seed: int = 12345, **params):
    """The Fig. 3 plan used by every measurement: msprime with the paper's sweeps (``params`` override)."""
    from ..config import config_with_defaults
    from ..simulate import Plan
    from ..simulate.config import SimulateConfig

    base = {"store": "bench.zarr", "demography": "marth3", "classes": [0, 200, 300, 400], "n_per_class": 1_000_000,
            "engine": "msprime", "sweep": {"standing": "paper"}}
    cfg = config_with_defaults(SimulateConfig, "stages/simulate.schema.json", {**base, **params})
    return Plan.from_config(cfg, seed)


def time_engine(engine: str, n: int, S: float = 300.0, offset: int = 0) -> Clock:
    """CPU and wall time of ``n`` replicates of the paper's setting (marth3, 128 haplotypes, 80 kb, one S,
    f = 0.01 at 600 generations) on ``engine``: msprime's paper model or the forward engine's true history."""
    from ..simulate import simulate_range

    extra = {} if engine == "msprime" else {"engine": "fwdpy11", "sweep": {"standing": "true_history"}}
    plan = fig3_plan(classes=[S], **extra)
    clock = Clock()
    with clock:
        simulate_range(plan, offset, offset + n)
    return clock


def _tree_sequences(plan, start: int, stop: int):
    """One msprime call per replicate (the pre-batching way; same models and seeds) for [start, stop)."""
    from ..simulate.replicate import simulate_tree_sequence

    dem = plan.sim.demography.msprime()
    for i in range(start, stop):
        seed = plan.replicate_seed(i)
        S, _ = plan.s_of(i, seed)
        yield simulate_tree_sequence(plan.sim, S, seed, 0, dem)


def _batched_tree_sequences(plan, start: int, stop: int):
    """The pipeline's own msprime calls for [start, stop): one sim_ancestry per class (num_replicates,
    the pipeline's batch seeds), sim_mutations per replicate."""
    import msprime
    from msprime import _msprime

    from ..simulate.replicate import add_mutations, ancestry_args

    dem = plan.sim.demography.msprime()
    n_cls = len(plan.classes)
    for cls, S in enumerate(plan.classes):
        idx = range(start + (cls - start) % n_cls, stop, n_cls)
        args = ancestry_args(plan.sim, float(S), dem)
        pos = 0
        while pos < len(idx):
            batch = msprime.sim_ancestry(**args, random_seed=plan.batch_seed(start, cls, pos),
                                         num_replicates=len(idx) - pos)
            try:
                for ts in batch:
                    yield add_mutations(plan.sim, ts, plan.replicate_seed(idx[pos]))
                    pos += 1
            except _msprime.LibraryError:
                pos += 1  # refused: the pipeline retries it alone, the batch goes on after it


def msprime_only(plan, start: int, stop: int) -> None:
    """sim_ancestry + sim_mutations for replicates [start, stop) as the pipeline calls them, then tskit's
    genotype matrix: msprime's cost per replicate as the issue measured it ("with mutations and the
    genotype matrix"), whatever our own code does after it."""
    for ts in _batched_tree_sequences(plan, start, stop):
        ts.genotype_matrix()


def msprime_bare(plan, start: int, stop: int) -> None:
    """sim_ancestry + sim_mutations as the pipeline calls them, no genotypes (the strictest baseline)."""
    for _ts in _batched_tree_sequences(plan, start, stop):
        pass


def _plain_child(args: tuple) -> tuple[float, float]:
    """(CPU, wall) seconds of the plain loop over [start, stop) in this (child) process, after one untimed
    replicate (imports, msprime's first call)."""
    classes, start, stop = args
    plan = fig3_plan(**({"classes": list(classes)} if classes else {}))
    plain_msprime(plan, 10**9, 10**9 + 1)
    clock = Clock()
    with clock:
        plain_msprime(plan, start, stop)
    return clock.cpu, clock.wall


def plain_msprime(plan, start: int, stop: int) -> None:
    """A plain loop: sim_ancestry + sim_mutations + genotype_matrix, one call each per replicate."""
    for ts in _tree_sequences(plan, start, stop):
        ts.genotype_matrix()


class Clock:
    """Accumulates CPU seconds (process-wide) and wall seconds of timed blocks."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.wall = 0.0

    def __enter__(self) -> Clock:
        self._c, self._w = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu += time.process_time() - self._c
        self.wall += time.perf_counter() - self._w


def time_msprime_and_pipeline(n: int, shard_images: int, offset: int = 0,
                              classes: tuple[float, ...] | None = None
                              ) -> tuple[Clock, Clock, Clock, Clock, float]:
    """(msprime, bare msprime, plain msprime and pipeline clocks, bytes per image on disk) for ``n`` replicates.

    Shard by shard, the same replicates go through msprime called as the pipeline calls it (with tskit's
    genotype matrix, and bare), a plain one-call-per-replicate msprime loop, and the whole pipeline
    (simulate + image + one whole-shard store write), interleaved so a busy machine slows all alike.
    The plain loop runs in a process of its own (spawned, so it inherits nothing), as a user's loop
    would: after the batched calls in the same process, glibc's heap keeps msprime's memory blocks and
    one call per replicate looks twice as cheap as it is on its own.
    """
    from ..simulate import simulate_range
    from ..store import create_store

    plan = fig3_plan(**({"classes": list(classes)} if classes else {}))
    # a worker loads the compiled kernels (numba's cache) once per process, not once per shard: not timed
    simulate_range(plan, offset + n, offset + n + len(plan.classes))
    msp, bare, plain, pipe = Clock(), Clock(), Clock(), Clock()
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        url = os.path.join(tmp, "bench.zarr")
        meta = dict(classes=list(plan.classes), prior=plan.prior_dict(), demography=plan.sim.demography.to_dict(),
                    image=plan.image.to_dict(), split=plan.split, stage_params={}, versions={}, seed=plan.seed)
        with pipe:
            store = create_store(url, meta, n_images=n, image_shape=plan.image.size, shard_images=shard_images,
                                 chunk_images=math.gcd(16, shard_images))
        for i in range(store.n_shards):
            start, stop = store.shard_range(i)
            with msp:
                msprime_only(plan, offset + start, offset + stop)
            with bare:
                msprime_bare(plan, offset + start, offset + stop)
            cpu, wall = child.submit(_plain_child, (classes, offset + start, offset + stop)).result()
            plain.cpu, plain.wall = plain.cpu + cpu, plain.wall + wall
            with pipe:
                store.write_shard(i, simulate_range(plan, offset + start, offset + stop))
        return msp, bare, plain, pipe, store.disk_bytes("images") / n


def make_ms_text(n: int, offset: int = 0) -> str:
    """ms-format text for ``n`` Fig. 3 replicates (tskit's ms writer), the input of the image step."""
    import tskit

    plan = fig3_plan()
    out = io.StringIO()
    out.write(f"ms {plan.sim.n_haplotypes} {n}\n1 2 3\n")
    for ts in _tree_sequences(plan, offset, offset + n):
        buf = io.StringIO()
        tskit.write_ms(ts, buf, precision=6, write_header=False)
        out.write("\n" + buf.getvalue().lstrip("\n"))
    return out.getvalue()


def time_image_step(ms_path: str, repeats: int) -> dict:
    """Image step rates on ms input: make_image alone (CPU and wall), parse + make_image; mean sites."""
    from ..images import make_image
    from ..readers import read_ms

    plan = fig3_plan()
    parse, image = Clock(), Clock()
    with parse:
        reps = read_ms(ms_path)
    for h in reps[:20]:  # warm the per-width resize operators, as a long-running worker has them
        make_image(h.matrix, h.positions, plan.image, centre=0.5)
    with image:
        for _ in range(repeats):
            for h in reps:
                make_image(h.matrix, h.positions, plan.image, centre=0.5)
    n = len(reps) * repeats
    return {"image": n / image.cpu, "image_wall": n / image.wall,
            "parse_image": len(reps) / (parse.cpu + image.cpu / repeats),
            "sites": float(np.mean([h.n_sites for h in reps]))}


def _one_worker(args: tuple) -> dict:
    k, n, n_ms, shard_images, ms_path, repeats, classes = args
    offset = k * 1_000_003 // shard_images * shard_images  # whole shards, as the stage's ranges are
    msp, bare, plain, pipe, nbytes = time_msprime_and_pipeline(n, shard_images, offset, classes)
    out = {"msprime": n / msp.cpu, "bare": n / bare.cpu, "plain": n / plain.cpu, "pipeline": n / pipe.cpu,
           "msprime_wall": n / msp.wall,
           "plain_wall": n / plain.wall, "pipeline_wall": n / pipe.wall, "bytes": nbytes}
    out.update(time_image_step(ms_path, repeats))
    return out


@click.command("simulate")
@click.option("--n", "n", default=768, show_default=True, help="Replicates per measurement (msprime, pipeline).")
@click.option("--n-ms", default=200, show_default=True, help="Regions in the ms file for the image step.")
@click.option("--repeats", default=10, show_default=True, help="Passes over the ms regions for the image step.")
@click.option("--shard-images", default=256, show_default=True, help="Images per shard in the pipeline store.")
@click.option("--workers", default=1, show_default=True, help="Processes measuring at once (rates are per core).")
@click.option("--engine", type=click.Choice(["msprime", "fwdpy11"]), default="msprime", show_default=True,
              help="fwdpy11: also time the forward engine on the paper's S=300 setting against msprime's.")
@click.option("--n-engine", default=40, show_default=True, help="Replicates per engine for --engine fwdpy11.")
@click.option("--classes", default="0,200,300,400", show_default=True,
              help="Comma-separated S classes of the msprime and pipeline measurements (the issue's: 0,200).")
def command(n: int, n_ms: int, repeats: int, shard_images: int, workers: int, engine: str, n_engine: int,
            classes: str) -> None:
    """Per-core throughput of msprime, the simulate pipeline and the image step; bytes per image."""
    with tempfile.TemporaryDirectory() as tmp:
        ms_path = os.path.join(tmp, "fig3.ms")
        with open(ms_path, "w") as fh:
            fh.write(make_ms_text(n_ms, offset=10_000_000))
        S_classes = tuple(float(c) for c in classes.split(","))
        jobs = [(k, n, n_ms, shard_images, ms_path, repeats, S_classes) for k in range(workers)]
        if workers == 1:
            results = [_one_worker(jobs[0])]
        else:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_one_worker, jobs))

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in results]))

    msp, bare, plain, pipe = mean("msprime"), mean("bare"), mean("plain"), mean("pipeline")
    out = {
        "msprime_reps_per_s": round(msp, 2),
        "plain_msprime_reps_per_s": round(plain, 2),
        "pipeline_images_per_s": round(pipe, 2),
        "pipeline_to_msprime_ratio": round(pipe / msp, 3),
        "pipeline_to_plain_msprime_ratio": round(pipe / plain, 3),
        "msprime_bare_reps_per_s": round(bare, 2),
        "pipeline_to_msprime_bare_ratio": round(pipe / bare, 3),
        "baselines": {"msprime": "batched sim_ancestry (num_replicates, as the pipeline calls it) + sim_mutations "
                                 "+ tskit's genotype_matrix, per replicate (the issue's msprime measurement)",
                      "msprime_bare": "the same without the genotype matrix",
                      "plain_msprime": "one sim_ancestry + sim_mutations + genotype_matrix per replicate, in a "
                                       "process of its own"},
        "image_step_images_per_s": round(mean("image"), 1),
        "msprime_reps_per_s_wall": round(mean("msprime_wall"), 2),
        "pipeline_images_per_s_wall": round(mean("pipeline_wall"), 2),
        "pipeline_to_msprime_ratio_wall": round(mean("pipeline_wall") / mean("msprime_wall"), 3),
        "pipeline_to_plain_msprime_ratio_wall": round(mean("pipeline_wall") / mean("plain_wall"), 3),
        "image_step_images_per_s_wall": round(mean("image_wall"), 1),
        "ms_parse_and_image_images_per_s": round(mean("parse_image"), 1),
        "bytes_per_image": round(mean("bytes"), 1),
        "image_shape": [128, 128],
        "n_haplotypes": 128,
        "mean_sites_per_region": round(mean("sites"), 1),
        "replicates": n,
        "classes": list(S_classes),
        "workers": workers,
        "timing": "rates per CPU-second of the measuring process; *_wall: per wall-clock second",
        "cpu_count": os.cpu_count(),
    }
    if engine == "fwdpy11":
        from ..simulate.plan import Plan

        fwd_plan: Plan = fig3_plan(classes=[300.0], engine="fwdpy11", sweep={"standing": "true_history"})
        msp_clock = time_engine("msprime", 5 * n_engine, offset=20_000_000)
        fwd_clock = time_engine("fwdpy11", n_engine, offset=20_000_000)
        msp_rate, fwd_rate = 5 * n_engine / msp_clock.cpu, n_engine / fwd_clock.cpu
        out.update(engine={"setting": "marth3, S=300, f=0.01 at 600 generations, 128 haplotypes, 80 kb, "
                                      "simulate + image",
                           "scaling": fwd_plan.forward.scaling if fwd_plan.forward else None,
                           "msprime_paper_reps_per_s": round(msp_rate, 2),
                           "fwdpy11_reps_per_s": round(fwd_rate, 3),
                           "fwdpy11_reps_per_s_wall": round(n_engine / fwd_clock.wall, 3),
                           "engine_to_msprime_ratio": round(fwd_rate / msp_rate, 4),
                           "replicates": n_engine})
    click.echo(json.dumps(out))
