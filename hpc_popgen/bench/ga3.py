"""``hpcpop bench ga3``: the GADMA-style search on a simulated three-population spectrum, against the truth.

The data: moments' expected spectrum of Gutenkunst et al.'s (2009) out-of-Africa history (13 parameters:
an ancestral size change, a split with a bottleneck and migration, a second split with exponential
growth and migration among the three) times ``THETA``, Poisson-sampled with a fixed seed (20x20x20 by
default). Its founders do not add up to their parent, so the search uses ``split_sizes: free``.

For each structure (``(1,1,1)`` and ``(2,1,1)`` by default, one after the other, ``--minutes`` each) the
demography stage's own code runs: :class:`~hpc_popgen.demography.search.Search` with its Dask
evaluations on a LocalCluster of ``--cores`` single-threaded workers. Prints one JSON object: the
log-likelihood at the true parameters, the best log-likelihood after 10%, 25%, 50% and 100% of the
time (2, 5, 10 and 20 minutes by default), evaluations per second, and ``loglik_gap_<minutes>min``
(true LL minus the best over all structures).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..demography.config import DemographyConfig
from ..demography.model import ModelSpace

log = logging.getLogger(__name__)

POPULATIONS = ["YRI", "CEU", "CHB"]  # split order: CEU splits off YRI, then CHB off CEU
THETA = 5000.0  # scaled mutation rate of the simulated data (about 33,000 SNPs at 20x20x20)
SEED = 20090101
FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # checkpoints: 2, 5, 10 and 20 of 20 minutes

# Gutenkunst et al. 2009, Table 1 (nuAf, nuB, nuEu0, nuEu, nuAs0, nuAs, mAfB, mAfEu, mAfAs, mEuAs, TAf, TB, TEuAs)
OOA = {"nuAf": 1.68, "nuB": 0.287, "nuEu0": 0.129, "nuEu": 3.74, "nuAs0": 0.070, "nuAs": 7.29, "mAfB": 3.65,
       "mAfEu": 0.44, "mAfAs": 0.28, "mEuAs": 1.40, "TAf": 0.607, "TB": 0.396, "TEuAs": 0.058}


def true_values(p: dict[str, float] = OOA) -> dict[str, float]:
    """The history as values of structure (1,1,1) with free split sizes, symmetric migration."""
    return {"t1": p["TAf"], "nu1_1": p["nuAf"], "g1_1": 0,
            "ns1_1": p["nuAf"], "ns1_2": p["nuB"],
            "t2": p["TB"], "nu2_1": p["nuAf"], "g2_1": 0, "nu2_2": p["nuB"], "g2_2": 0, "m2_12": p["mAfB"],
            "ns2_2": p["nuEu0"], "ns2_3": p["nuAs0"],
            "t3": p["TEuAs"], "nu3_1": p["nuAf"], "g3_1": 0, "nu3_2": p["nuEu"], "g3_2": 2,
            "nu3_3": p["nuAs"], "g3_3": 2, "m3_12": p["mAfEu"], "m3_13": p["mAfAs"], "m3_23": p["mEuAs"]}


def stage_params(afs: str, structure: tuple[int, ...], seed: int, dt_fac: float | None = None) -> dict[str, Any]:
    """Demography stage parameters of one benchmark run (``structure`` only, no increase; ``dt_fac``
    None: the schema's, moments' own).

    Population 1 (YRI) keeps sudden changes and interval 2 is sudden, as in the published model; the
    sizes right after split 1 then have no effect, so they are fixed instead of searched.
    """
    first_after_split = sum(structure[:1]) + 1  # interval that starts at split 1
    fixed = {f"g{j}_1": 0 for j in range(1, sum(structure) + 1)}
    fixed.update({f"g{first_after_split}_2": 0, "ns1_1": 1.0, "ns1_2": 1.0})
    extra = {} if dt_fac is None else {"dt_fac": dt_fac}
    return {**extra, "seed": seed, "input": {"afs": afs, "populations": POPULATIONS}, "engine": "moments",
            "initial_structure": list(structure), "final_structure": list(structure), "split_sizes": "free",
            "sym_migration": True, "dynamics": ["sudden", "linear", "exponential"], "fixed": fixed,
            "islands": 2, "migrate_every": 5, "plots": False,
            "ga": {"size": 10, "init_factor": 3, "stall_generations": 20, "max_evals": 100000},
            "local_search": {"method": "BFGS", "starts": 2, "maxiter": 100, "max_evals": 600}}


def true_space() -> ModelSpace:
    """The model space the true history is written in: structure (1,1,1), free split sizes, all fixed."""
    from ..config import config_with_defaults
    from ..demography.config import SCHEMA

    cfg = config_with_defaults(DemographyConfig, SCHEMA, {"input": {"afs": "x.fs"}, "initial_structure": [1, 1, 1],
                                                          "final_structure": [1, 1, 1], "split_sizes": "free",
                                                          "sym_migration": True})
    return cfg.space((1, 1, 1))


def simulated_spectrum(n: int = 20, seed: int = SEED, theta: float = THETA) -> Any:
    """The benchmark's data: the true model's spectrum x theta, Poisson-sampled (corners masked)."""
    import moments

    from ..demography.engine import moments_fs

    space = true_space()
    expected = np.asarray(moments_fs(space, true_values(), (n, n, n)))
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.clip(expected, 0.0, None) * theta).astype(float)
    fs = moments.Spectrum(counts, pop_ids=list(POPULATIONS))
    return fs


def write_fs(fs: Any, path: Path) -> None:
    """A Poisson-sampled spectrum as a compact dadi/moments ``.fs`` file (integer counts, mask line)."""
    shape = " ".join(str(s) for s in fs.shape)
    data = " ".join(str(int(v)) for v in np.ma.filled(fs, 0).ravel())
    mask = " ".join(str(int(v)) for v in np.ma.getmaskarray(fs).ravel())
    names = " ".join(f'"{p}"' for p in fs.pop_ids)
    path.write_text(f"{shape} unfolded {names}\n{data}\n{mask}\n")


class _TimeUp(Exception):
    """The benchmark's time for one structure is over."""


class ClockedEvaluations:
    """The stage's evaluations, timed: the best log-likelihood over time, stopped at ``seconds``."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.t0 = time.perf_counter()
        self.trace: list[tuple[float, float]] = []  # (seconds, best so far) at each improvement
        self.n = 0

    def submit(self, token: str, space: ModelSpace, x: list[float]) -> None:
        """Pass on to the stage's Dask evaluations."""
        self.inner.submit(token, space, x)

    def completed(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Results as they come, until the time is over (then ``_TimeUp``)."""
        for token, r in self.inner.completed():
            now = time.perf_counter() - self.t0
            if now > self.seconds:
                raise _TimeUp
            self.n += 1
            if not self.trace or r["loglik"] > self.trace[-1][1]:
                self.trace.append((now, float(r["loglik"])))
            yield token, r

    def best_at(self, seconds: float) -> float | None:
        """The best log-likelihood found within ``seconds``."""
        found = [ll for t, ll in self.trace if t <= seconds]
        return round(found[-1], 3) if found else None


def run_structure(structure: tuple[int, ...], afs: Path, data: Any, minutes: float, cores: int, seed: int,
                  work: Path, dt_fac: float | None) -> dict[str, Any]:
    """One search of ``structure`` for ``minutes`` on ``cores`` workers: best LL at the checkpoints, rates."""
    from distributed import Client, LocalCluster
    from tqdm import tqdm

    from ..config import config_with_defaults
    from ..demography.config import SCHEMA
    from ..demography.engine import EvalConfig
    from ..demography.search import Hooks, Search
    from ..stages.demography import DaskEvaluations

    cfg = config_with_defaults(DemographyConfig, SCHEMA, stage_params(str(afs), structure, seed, dt_fac))
    ev = EvalConfig.from_config(cfg, data.sample_sizes)
    seconds = minutes * 60.0
    hooks = Hooks(record=lambda *a, **k: None, report=lambda **k: None,
                  progress=lambda total, **k: tqdm(total=total, disable=True))
    with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(cores)
        inner = DaskEvaluations(lambda: client, "ga3", data, ev, cfg.retries, cfg.eval_timeout)
        evals = ClockedEvaluations(inner, seconds)
        search = Search(cfg, ev, data, evals, work / "-".join(map(str, structure)), seed, hooks, label="ga3")
        c0 = client.run(time.process_time)
        finished = None
        try:
            search.run()
            finished = round(time.perf_counter() - evals.t0, 1)
        except _TimeUp:
            pass
        elapsed = min(time.perf_counter() - evals.t0, seconds)
        c1 = client.run(time.process_time)
    cpu = sum(c1[w] - c0[w] for w in c1 if w in c0)
    best = {f"{minutes * f:g}": evals.best_at(seconds * f) for f in FRACTIONS}
    return {"best_loglik_at_minutes": best, "best_loglik": evals.best_at(seconds), "evaluations": evals.n,
            "evals_per_s": round(evals.n / max(elapsed, 1e-9), 3),
            "evals_per_cpu_s": round(evals.n / max(cpu, 1e-9), 3), "finished_after_s": finished,
            "n_free_params": cfg.space(structure).n_continuous,
            "timed_out_evaluations": inner.n_timed_out}


def _structure(text: str) -> tuple[int, ...]:
    """``2-1-1`` -> (2, 1, 1)."""
    try:
        out = tuple(int(v) for v in text.split("-"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: a structure is written like 2-1-1") from None
    if len(out) != 3 or min(out) < 1:
        raise click.BadParameter(f"{text!r}: three entries >= 1, like 2-1-1")
    return out


@click.command()
@click.option("--minutes", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Search time per structure; checkpoints at 10, 25, 50 and 100% of it.")
@click.option("--cores", default=2, show_default=True, type=click.IntRange(min=1), help="Dask workers (1 thread each).")
@click.option("--structures", default="1-1-1,2-1-1", show_default=True, help="Comma-separated structures to search.")
@click.option("--sample-size", default=20, show_default=True, type=click.IntRange(min=2),
              help="Haploid sample size per population (20: a 20x20x20 spectrum).")
@click.option("--seed", default=1, show_default=True, type=click.IntRange(min=1), help="Seed of the search.")
@click.option("--dt-fac", type=click.FloatRange(min=0, min_open=True), default=None,
              help="moments' largest time step for the search and the true LL (default: the stage schema's).")
@click.option("--write-fs", "fs_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the simulated spectrum to this file.")
def command(minutes: float, cores: int, structures: str, sample_size: int, seed: int, dt_fac: float | None,
            fs_out: Path | None) -> None:
    """GA on a simulated 3-population spectrum: best LL over time vs the true parameters' LL."""
    from ..config import config_with_defaults
    from ..demography.config import SCHEMA
    from ..demography.engine import EvalConfig, evaluate

    plan = [_structure(s) for s in structures.split(",") if s.strip()]
    data = simulated_spectrum(sample_size)
    if fs_out is not None:
        write_fs(data, fs_out)
    space = true_space()
    cfg = config_with_defaults(DemographyConfig, SCHEMA, stage_params("x.fs", plan[0], seed, dt_fac))
    ev = EvalConfig.from_config(cfg, data.sample_sizes)  # the search's settings
    truth = evaluate(space, space.vector(true_values()), data, ev)
    out: dict[str, Any] = {"sample_sizes": [int(n) for n in data.sample_sizes], "theta": THETA,
                           "data_seed": SEED, "segregating_sites": round(float(data.S()), 1),
                           "true_loglik": round(truth["loglik"], 3), "n_true_params": len(OOA),
                           "dt_fac": ev.dt_fac, "minutes_per_structure": minutes, "cores": cores, "cpu_count": os.cpu_count(),
                           "load_average_before": round(os.getloadavg()[0], 2), "structures": {}}
    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-ga3-") as tmp:
        afs = Path(tmp) / "ooa3.fs"
        write_fs(data, afs)
        for structure in plan:
            key = "-".join(map(str, structure))
            log.info("bench ga3: structure %s for %g minutes", key, minutes)
            out["structures"][key] = run_structure(structure, afs, data, minutes, cores, seed, Path(tmp),
                                                       dt_fac)
    bests = [s["best_loglik"] for s in out["structures"].values() if s["best_loglik"] is not None]
    best = max(bests) if bests else None
    out["best_loglik"] = best
    gap = None if best is None else round(out["true_loglik"] - best, 3)
    out[f"loglik_gap_{minutes:g}min"] = gap
    out["target_met"] = gap is not None and gap <= 2.0 and math.isclose(minutes, 20.0)
    click.echo(json.dumps(out))
