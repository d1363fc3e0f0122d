"""``hpcpop bench ga``: evaluation throughput on 1 and 2 workers, and time to reach LL >= -1070 on YRI-CEU.

Prints one JSON object: ``evals_per_s_1_worker``, ``evals_per_s_2_workers``, ``scaling`` (and the same
rates per worker CPU second), and for a demography-stage run (moments, structure (1,1) -> (2,1),
2 islands, LocalCluster of 2 workers) ``seconds_to_target`` and ``best_loglik``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import yaml

from ..paths import YRI_CEU_FS

if TYPE_CHECKING:
    from ..demography.engine import EvalConfig
    from ..demography.model import ModelSpace

log = logging.getLogger(__name__)

PUBLISHED = {"t1": 0.355, "nu1_1": 1.881, "s1": 1 - 0.0710 / 1.881, "t2": 0.111, "nu2_1": 1.881,
             "nu2_2": 1.845, "m2_12": 0.911}


def stage_params(target: float) -> dict:
    """The demography stage parameters of the benchmark run (a faster variant of jobs/gadma_yri_ceu.yaml)."""
    return {"input": {"afs": str(YRI_CEU_FS), "populations": ["YRI", "CEU"]},
            "engine": "moments", "mu": 2.35e-8, "sequence_length": 4.04e6, "generation_time": 25,
            "initial_structure": [1, 1], "final_structure": [2, 1], "sym_migration": True,
            "fixed": {"g1_1": 0, "g2_1": 0}, "islands": 2, "migrate_every": 5,
            "target_loglik": target, "stop_at_target": True, "plots": False,
            "ga": {"size": 10, "init_factor": 5, "stall_generations": 6, "max_evals": 300},
            "local_search": {"method": "BFGS", "starts": 3, "maxiter": 50, "max_evals": 300}}


def _throughput(n_workers: int, xs: list[list[float]], space: ModelSpace, data: Any, cfg: EvalConfig) -> tuple[float, float]:
    """(evaluations per wall second, per worker CPU second) of ``xs`` on ``n_workers`` single-threaded workers.

    The CPU-second rate shows what the wall rate hides on a shared machine (other jobs' load).
    """
    from distributed import Client, LocalCluster, wait

    from ..demography.engine import evaluate

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers)
        # warm up every worker (imports, first integration)
        wait([client.submit(evaluate, space, xs[0], data, cfg, pure=False, key=f"warm-{i}")
              for i in range(n_workers)])
        c0 = client.run(time.process_time)
        t0 = time.perf_counter()
        futs = [client.submit(evaluate, space, x, data, cfg, pure=False, key=f"bench-eval-{i:04d}")
                for i, x in enumerate(xs)]
        wait(futs)
        elapsed = time.perf_counter() - t0
        c1 = client.run(time.process_time)
        failed = sum(f.result()["error"] is not None for f in futs)
        if failed:
            log.warning("%d of %d benchmark evaluations were rejected models", failed, len(xs))
    cpu = sum(c1[w] - c0[w] for w in c1 if w in c0)
    return len(xs) / elapsed, len(xs) / max(cpu, 1e-9)


@click.command()
@click.option("--evals", default=60, show_default=True, help="Evaluations per throughput measurement.")
@click.option("--target", default=-1070.0, show_default=True, help="Log-likelihood to reach.")
@click.option("--seed", default=1, show_default=True)
@click.option("--skip-run", is_flag=True, help="Only measure throughput.")
def command(evals: int, target: float, seed: int, skip_run: bool) -> None:
    """Throughput on 1 and 2 workers, then a GA run on YRI-CEU until LL >= TARGET."""
    from ..config import config_with_defaults
    from ..demography.afs import load_input
    from ..demography.config import SCHEMA, DemographyConfig
    from ..demography.engine import EvalConfig
    from ..pipeline import create_run, execute

    config = config_with_defaults(DemographyConfig, SCHEMA, stage_params(target))
    data = load_input(config, str)  # an absolute path
    space = config.space(config.initial_structure)
    cfg = EvalConfig.from_config(config, data.sample_sizes)
    rng = np.random.default_rng(seed)
    base = {**PUBLISHED, "g2_2": 2}
    xs = []
    for _ in range(evals):  # individuals near the optimum: the cost the search actually pays
        z = space.to_unit(space.vector(base)) + rng.normal(0, 0.3, len(space.names))
        xs.append([float(v) for v in space.from_unit(z)])
    load0 = os.getloadavg()[0]
    e1, c1 = _throughput(1, xs, space, data, cfg)
    e2, c2 = _throughput(2, xs, space, data, cfg)
    out = {"evals_per_s_1_worker": round(e1, 3), "evals_per_s_2_workers": round(e2, 3),
           "scaling": round(e2 / e1, 3), "seconds_to_target": None, "best_loglik": None, "target": target,
           "evals_per_cpu_s_1_worker": round(c1, 3), "evals_per_cpu_s_2_workers": round(c2, 3),
           "load_average_before": round(load0, 2), "load_average_after_throughput": round(os.getloadavg()[0], 2),
           "cores": os.cpu_count()}
    if not skip_run:
        with tempfile.TemporaryDirectory(prefix="hpcpop-bench-ga-") as tmp:
            tmp_path = Path(tmp)
            (tmp_path / "profile.yaml").write_text(yaml.safe_dump(
                {"kind": "local", "cluster": {"n_workers": 2, "threads_per_worker": 1},
                 "dashboard_address": "127.0.0.1:0"}))
            manifest = {"name": "bench-ga", "seed": seed, "profile": "profile.yaml", "storage": "runs",
                        "stages": [{"name": "demography", "demography": stage_params(target)}]}
            (tmp_path / "bench.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
            t0 = time.perf_counter()
            rd = create_run(tmp_path / "bench.yaml", run_dir=tmp_path / "run")
            report = execute(rd, progress=False)
            wall = time.perf_counter() - t0
            metrics = report["stages"][0].get("metrics", {})
            out.update(seconds_to_target=metrics.get("seconds_to_target"), best_loglik=metrics.get("best_loglik"),
                       run_seconds=round(wall, 3), evaluations=metrics.get("evaluations_this_attempt"),
                       best_loglik_per_island=metrics.get("best_loglik_per_island"))
    click.echo(json.dumps(out))
