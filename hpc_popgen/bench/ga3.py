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
(true LL minus the best over all structures). ``--free`` searches GADMA's default space instead (nothing
fixed: every population's dynamics and the founders of split 1 searched too), structure (1,1,1) for 10
minutes by default, target ``loglik_gap_10min`` <= 1.

The islands evaluate at cheaper settings than the reported ones (``--ga-dt-fac`` 0.1, the data projected
to ``--ga-projection`` 10 per population); every log-likelihood printed is at the reported settings
(the best individual of the moment scored again after the clock stops). ``--evals-only`` runs no search:
it times fixed models (the truth, 6 near it, 6 random) under each setting, one core, in this process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
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
# islands' evaluations per island and minute of --minutes: 2-minute runs on 2 cores reached gaps of 454
# (islands only), 179 (250 per island) and 164 (100 per island): local searches gain faster than islands
GA_EVALS_PER_MINUTE = 30
TARGET_GAP, TARGET_MINUTES = 2.0, 20.0  # loglik_gap_20min <= 2 (the space with the published model's fixed parts)
FREE_GAP, FREE_MINUTES = 1.0, 10.0  # --free: loglik_gap_10min <= 1 (issue 29)

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


def stage_params(afs: str, structure: tuple[int, ...], seed: int, dt_fac: float | None = None,
                 ga_dt_fac: float | None = None, ga_projection: list[int] | None = None,
                 ga_max_evals: int = 100000, free: bool = False, populations: list[str] = POPULATIONS,
                 final: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Demography stage parameters of one benchmark run (``structure`` only, no increase, unless a larger
    ``final`` structure is given; ``dt_fac``, ``ga_dt_fac`` and ``ga_projection`` None: the schema's).

    Population 1 (YRI) keeps sudden changes and interval 2 is sudden, as in the published model; the
    sizes right after split 1 then have no effect, so they are fixed instead of searched. ``free``:
    nothing fixed (GADMA's default space: every dynamic and size searched).
    """
    first_after_split = sum(structure[:1]) + 1  # interval that starts at split 1
    fixed: dict[str, float] = {}
    if not free:
        fixed = {f"g{j}_1": 0 for j in range(1, sum(structure) + 1)}
        fixed.update({f"g{first_after_split}_2": 0, "ns1_1": 1.0, "ns1_2": 1.0})
    extra = {k: v for k, v in (("dt_fac", dt_fac), ("ga_dt_fac", ga_dt_fac), ("ga_projection", ga_projection))
             if v is not None}
    return {**extra, "seed": seed, "input": {"afs": afs, "populations": list(populations)}, "engine": "moments",
            "initial_structure": list(structure), "final_structure": list(final or structure), "split_sizes": "free",
            "sym_migration": True, "dynamics": ["sudden", "linear", "exponential"], "fixed": fixed,
            "islands": 2, "migrate_every": 5, "plots": False,
            "ga": {"size": 10, "init_factor": 3, "stall_generations": 20, "max_evals": ga_max_evals},
            "local_search": {"method": "BFGS", "starts": 1, "maxiter": 200, "max_evals": 1000, "jump_evals": 150}}


def true_space(structure: tuple[int, ...] = (1, 1, 1)) -> ModelSpace:
    """The model space the true history is written in: ``structure``, free split sizes, symmetric migration,
    nothing fixed."""
    from ..config import config_with_defaults
    from ..demography.config import SCHEMA

    cfg = config_with_defaults(DemographyConfig, SCHEMA, {"input": {"afs": "x.fs"},
                                                          "initial_structure": list(structure),
                                                          "final_structure": list(structure), "split_sizes": "free",
                                                          "sym_migration": True})
    return cfg.space(tuple(structure))


def simulated_spectrum(n: int = 20, seed: int = SEED, theta: float = THETA) -> Any:
    """The benchmark's data: the true model's spectrum x theta, Poisson-sampled (corners masked)."""
    return poisson_spectrum(true_space(), true_values(), (n, n, n), POPULATIONS, seed, theta)


def poisson_spectrum(space: ModelSpace, values: dict[str, float], ns: tuple[int, ...], populations: list[str],
                     seed: int, theta: float) -> Any:
    """moments' expected spectrum of ``values`` (at the stage schema's ``dt_fac``) x ``theta``, Poisson-sampled
    with ``seed`` (corners masked)."""
    import moments

    from ..demography.config import SCHEMA
    from ..demography.engine import moments_fs
    from ..manifest import schema_default

    dt_fac = schema_default(SCHEMA, "dt_fac")
    expected = np.asarray(moments_fs(space, values, ns, dt_fac))
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.clip(expected, 0.0, None) * theta).astype(float)
    return moments.Spectrum(counts, pop_ids=list(populations))


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
    """The stage's evaluations, timed: the best log-likelihood over time, stopped at ``seconds``.

    The islands may evaluate at other settings (``ga_dt_fac``, ``ga_projection``), whose log-likelihoods
    are not comparable: each settings' best is traced apart, and ``best_at`` scores the islands' best of
    the moment again at the reported settings (``final``), outside the clock.
    """

    def __init__(self, inner: Any, seconds: float, final: Any, data: Any) -> None:
        self.inner, self.seconds, self.final, self.data = inner, seconds, final, data
        self.t0 = time.perf_counter()
        # per settings: (seconds, best LL so far, space, x) at each improvement
        self.traces: dict[Any, list[tuple[float, float, Any, list[float]]]] = {}
        self.sent: dict[str, tuple[Any, list[float], Any]] = {}
        self.n = 0
        self._rescored: dict[tuple[float, ...], float] = {}

    def submit(self, token: str, space: ModelSpace, x: list[float], ev: Any, priority: int = 0) -> None:
        """Pass on to the stage's Dask evaluations."""
        self.sent[token] = (space, list(x), ev)
        self.inner.submit(token, space, x, ev, priority=priority)

    def completed(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Results as they come, until the time is over (then ``_TimeUp``)."""
        for token, r in self.inner.completed():
            now = time.perf_counter() - self.t0
            if now > self.seconds:
                raise _TimeUp
            self.n += 1
            space, x, ev = self.sent.pop(token)
            trace = self.traces.setdefault(ev, [])
            if not trace or r["loglik"] > trace[-1][1]:
                trace.append((now, float(r["loglik"]), space, x))
            yield token, r

    def best_at(self, seconds: float) -> float | None:
        """The log-likelihood (at the reported settings) of the best individual found within ``seconds``:
        the best at the reported settings, or the islands' best scored again there, whichever is higher."""
        found = self.best_model(seconds)
        return None if found is None else round(found[0], 3)

    def best_model(self, seconds: float) -> tuple[float, Any, list[float]] | None:
        """``(log-likelihood at the reported settings, space, x)`` of the best individual found within
        ``seconds`` (see :meth:`best_at`), or None."""
        from ..demography.engine import WORST, evaluate

        out: tuple[float, Any, list[float]] | None = None
        for ev, trace in self.traces.items():
            found = [e for e in trace if e[0] <= seconds]
            if not found or found[-1][1] <= WORST:
                continue
            _t, ll, space, x = found[-1]
            if ev != self.final:
                key = tuple(x)
                if key not in self._rescored:
                    self._rescored[key] = evaluate(space, x, self.data, self.final)["loglik"]
                ll = self._rescored[key]
            if out is None or ll > out[0]:
                out = (ll, space, x)
        return out


def run_structure(structure: tuple[int, ...], afs: Path, data: Any, minutes: float, cores: int, seed: int,
                  work: Path, dt_fac: float | None, ga_dt_fac: float | None,
                  ga_projection: list[int] | None, ga_max_evals: int, free: bool = False) -> dict[str, Any]:
    """One search of ``structure`` for ``minutes`` on ``cores`` workers: best LL at the checkpoints, rates."""
    params = stage_params(str(afs), structure, seed, dt_fac, ga_dt_fac, ga_projection, ga_max_evals, free)
    return run_search(params, data, minutes, cores, work / "-".join(map(str, structure)), "ga3")


def run_search(params: dict[str, Any], data: Any, minutes: float, cores: int, checkpoint: Path, label: str,
               fractions: tuple[float, ...] = FRACTIONS) -> dict[str, Any]:
    """The demography stage's search with stage parameters ``params`` (every structure from the initial to the
    final one) for ``minutes`` on ``cores`` workers, its files in ``checkpoint``: best LL at ``fractions`` of
    the time, rates."""
    from distributed import Client, LocalCluster
    from tqdm import tqdm

    from ..config import config_with_defaults
    from ..demography.config import SCHEMA
    from ..demography.engine import EvalConfig
    from ..demography.search import Hooks, Search
    from ..stages.demography import DaskEvaluations

    cfg = config_with_defaults(DemographyConfig, SCHEMA, params)
    ev = EvalConfig.from_config(cfg, data.sample_sizes)
    seconds = minutes * 60.0
    hooks = Hooks(record=lambda *a, **k: None, report=lambda **k: None,
                  progress=lambda total, **k: tqdm(total=total, disable=True))
    with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(cores)
        inner = DaskEvaluations(lambda: client, label, data, ev, cfg.retries, cfg.eval_timeout)
        evals = ClockedEvaluations(inner, seconds, ev, data)
        search = Search(cfg, ev, data, evals, checkpoint, int(params["seed"]), hooks, label=label)
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
    best = {f"{minutes * f:g}": evals.best_at(seconds * f) for f in fractions}
    found = evals.best_model(seconds)
    best_params = None if found is None else {k: round(float(v), 5) for k, v in found[1].full(found[2]).items()}
    keys = ("loglik", "evals", "stop", "evals_ga_settings", "stop_ga_settings")
    local_paths = sorted(checkpoint.glob("s*/local.json"), key=lambda p: int(p.parent.name[1:]))  # finished ones
    local = [{k: r.get(k) for k in keys} for path in local_paths for r in json.loads(path.read_text())]
    return {"best_loglik_at_minutes": best, "best_loglik": evals.best_at(seconds), "best_params": best_params,
            "local_searches_finished": local, "evaluations": evals.n,
            "evals_per_s": round(evals.n / max(elapsed, 1e-9), 3),
            "evals_per_cpu_s": round(evals.n / max(cpu, 1e-9), 3), "finished_after_s": finished,
            "n_free_params": cfg.space(cfg.initial_structure).n_continuous,
            "timed_out_evaluations": inner.n_timed_out}


def eval_models(n_near: int, n_random: int, seed: int, space: ModelSpace | None = None,
                values: dict[str, float] | None = None) -> tuple[ModelSpace, list[list[float]]]:
    """The models ``--evals-only`` times: the truth (``values``), ``n_near`` around it (what local search and
    late generations pay) and ``n_random`` Sobol points (what the first generations pay), in the search's
    ``space`` (None: this bench's, structure (1,1,1), and its true values)."""
    from ..config import config_with_defaults
    from ..demography.config import SCHEMA

    if space is None:
        space = config_with_defaults(DemographyConfig, SCHEMA, stage_params("x.fs", (1, 1, 1), seed)).space((1, 1, 1))
    rng = np.random.default_rng(seed)
    truth = space.vector(values or true_values())
    xs = [list(map(float, truth))]
    for _ in range(n_near):
        z = space.to_unit(truth) + rng.normal(0.0, 0.3, len(truth))
        xs.append([float(v) for v in space.from_unit(z)])
    xs += [[float(v) for v in x] for x in space.sobol(n_random, rng)]
    return space, xs


def eval_rates(data: Any, settings: dict[str, tuple[float, int | None]], n_near: int, n_random: int,
               seed: int, space: ModelSpace | None = None, values: dict[str, float] | None = None) -> dict[str, Any]:
    """Evaluations per core-second (this process, one core) of the same models (:func:`eval_models` of
    ``space`` and ``values``) under each of ``settings`` (label -> (moments time step, sample size per
    population or None)), and how each ranks the models and moves their log-likelihoods compared with the
    first (the reported settings)."""
    from scipy.stats import spearmanr

    from ..demography.engine import WORST, evaluate

    space, xs = eval_models(n_near, n_random, seed, space, values)
    out: dict[str, Any] = {"models": {"truth": 1, "near_truth": n_near, "random": n_random}, "settings": {}}
    ref: list[float] | None = None
    for label, (dt, n) in settings.items():
        ev = _ev(dt, None if n is None else (n,) * len(data.sample_sizes))
        evaluate(space, xs[0], data, ev)  # imports, first integration, the projection
        c0 = time.process_time()
        lls = [evaluate(space, x, data, ev)["loglik"] for x in xs]
        cpu = time.process_time() - c0
        ref = ref or lls
        row = {"dt_fac": dt, "sample_size": n or int(data.sample_sizes[0]),
               "evals_per_cpu_s": round(len(xs) / cpu, 3), "cpu_s_per_eval": round(cpu / len(xs), 3),
               "true_loglik": round(lls[0], 3), "failed": sum(ll <= WORST for ll in lls),
               "rank_correlation": round(float(spearmanr(lls, ref)[0]), 4),
               "rank_correlation_near_truth": round(float(spearmanr(lls[: 1 + n_near], ref[: 1 + n_near])[0]), 4)}
        if n is None:  # same data: the log-likelihoods themselves compare
            err = [abs(a - b) for a, b in zip(lls, ref, strict=True)]
            row.update(max_abs_loglik_error_near_truth=round(max(err[: 1 + n_near]), 3),
                       max_abs_loglik_error_random=round(max(err[1 + n_near:], default=0.0), 3))
        out["settings"][label] = row
    first = next(iter(out["settings"].values()))["evals_per_cpu_s"]
    for row in out["settings"].values():
        row["speedup"] = round(row["evals_per_cpu_s"] / first, 2)
    return out


def _ev(dt_fac: float, projection: tuple[int, ...] | None = None) -> Any:
    """The benchmark's evaluation settings (moments, multinomial) at moments time step ``dt_fac``."""
    from ..demography.engine import EvalConfig

    return EvalConfig(engine="moments", pts=(), likelihood="multinomial", mu=None, length=None, generation_time=1.0,
                      max_split_years=None, dt_fac=dt_fac, projection=projection)


def target_met(gap: float | None, minutes: float, free: bool) -> bool:
    """The benchmark's target: a gap of at most 2 after 20 minutes per structure, or with ``free`` (GADMA's
    default space, one structure) at most 1 after 10 minutes; other durations meet no target."""
    limit, at = (FREE_GAP, FREE_MINUTES) if free else (TARGET_GAP, TARGET_MINUTES)
    return gap is not None and gap <= limit and math.isclose(minutes, at)


def _structure(text: str, n_pops: int = 3) -> tuple[int, ...]:
    """``2-1-1`` -> (2, 1, 1): ``n_pops`` entries."""
    example = "-".join(["2"] + ["1"] * (n_pops - 1))
    try:
        out = tuple(int(v) for v in text.split("-"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: a structure is written like {example}") from None
    if len(out) != n_pops or min(out) < 1:
        raise click.BadParameter(f"{text!r}: {n_pops} entries >= 1, like {example}")
    return out


def search_options(ga_projection: int) -> Callable[[Callable], Callable]:
    """The options bench ga3 and ga4 share for the search's settings (``ga_projection``: the islands' default)."""
    options = [
        click.option("--seed", default=1, show_default=True, type=click.IntRange(min=1), help="Seed of the search."),
        click.option("--dt-fac", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="moments' largest time step for the search and the true LL (default: the stage schema's)."),
        click.option("--ga-dt-fac", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
                     help="moments' time step of the islands' evaluations (the stage's ga_dt_fac)."),
        click.option("--ga-projection", type=click.IntRange(min=0), default=ga_projection, show_default=True,
                     help="Sample size per population the islands project the data to (the stage's ga_projection; "
                          "0 or >= --sample-size: the data's own)."),
    ]

    def apply(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def output_options(f: Callable) -> Callable:
    """``--evals-only`` and ``--write-fs``, shared by bench ga3 and ga4."""
    f = click.option("--write-fs", "fs_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Also write the simulated spectrum to this file.")(f)
    return click.option("--evals-only", is_flag=True,
                        help="No search: evaluations per core-second of fixed models (the truth, 6 near it, 6 "
                             "random) at the reported settings, moments time steps 0.05 and --ga-dt-fac, and "
                             "--ga-dt-fac with --ga-projection; how each ranks the models and moves their "
                             "log-likelihoods.")(f)


def eval_settings(dt_fac: float, ga_dt_fac: float, proj: list[int] | None) -> dict[str, tuple[float, int | None]]:
    """``--evals-only``'s settings: label -> (moments time step, sample size per population or None)."""
    settings: dict[str, tuple[float, int | None]] = {"reported": (dt_fac, None), "dt_fac=0.05": (0.05, None),
                                                     f"ga_dt_fac={ga_dt_fac:g}": (ga_dt_fac, None)}
    if proj:
        settings[f"ga_dt_fac={ga_dt_fac:g},ga_projection={proj[0]}"] = (ga_dt_fac, proj[0])
    return settings


@click.command()
@click.option("--minutes", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Search time per structure; checkpoints at 10, 25, 50 and 100% of it (default: 20, "
                   "with --free 10).")
@click.option("--cores", default=2, show_default=True, type=click.IntRange(min=1), help="Dask workers (1 thread each).")
@click.option("--structures", default=None,
              help="Comma-separated structures to search (default: 1-1-1,2-1-1; with --free 1-1-1).")
@click.option("--free", is_flag=True,
              help="GADMA's default space: nothing fixed (every population's dynamics and the sizes after "
                   "each split searched); target loglik_gap_10min <= 1.")
@click.option("--sample-size", default=20, show_default=True, type=click.IntRange(min=2),
              help="Haploid sample size per population (20: a 20x20x20 spectrum).")
@search_options(ga_projection=10)
@click.option("--ga-max-evals", type=click.IntRange(min=1), default=None,
              help="Evaluations per island before the local searches start (or 20 generations without gain); "
                   "default 50 per minute (at about 6 evaluations per second on 2 cores the islands get "
                   "about a quarter of the time, the local searches the rest).")
@output_options
def command(minutes: float | None, cores: int, structures: str | None, free: bool, sample_size: int, seed: int,
            dt_fac: float | None, ga_dt_fac: float, ga_projection: int, ga_max_evals: int | None, evals_only: bool,
            fs_out: Path | None) -> None:
    """GA on a simulated 3-population spectrum: best LL over time vs the true parameters' LL."""
    from ..config import config_with_defaults
    from ..demography.config import SCHEMA
    from ..demography.engine import EvalConfig, evaluate

    minutes = minutes or (FREE_MINUTES if free else TARGET_MINUTES)
    structures = structures or ("1-1-1" if free else "1-1-1,2-1-1")
    plan = [_structure(s) for s in structures.split(",") if s.strip()]
    data = simulated_spectrum(sample_size)
    if fs_out is not None:
        write_fs(data, fs_out)
    space = true_space()
    proj = [ga_projection] * 3 if 0 < ga_projection < sample_size else None
    ga_max_evals = ga_max_evals or max(10, int(round(GA_EVALS_PER_MINUTE * minutes)))
    cfg = config_with_defaults(DemographyConfig, SCHEMA, stage_params("x.fs", plan[0], seed, dt_fac, ga_dt_fac, proj,
                                                                      free=free))
    if evals_only:
        res = eval_rates(data, eval_settings(cfg.dt_fac, ga_dt_fac, proj), n_near=6, n_random=6, seed=seed)
        click.echo(json.dumps({"sample_sizes": [int(n) for n in data.sample_sizes], "cpu_count": os.cpu_count(),
                               "load_average_before": round(os.getloadavg()[0], 2), **res}))
        return
    ev = EvalConfig.from_config(cfg, data.sample_sizes)  # the search's settings
    truth = evaluate(space, space.vector(true_values()), data, ev)
    out: dict[str, Any] = {"sample_sizes": [int(n) for n in data.sample_sizes], "theta": THETA,
                           "data_seed": SEED, "segregating_sites": round(float(data.S()), 1),
                           "true_loglik": round(truth["loglik"], 3), "n_true_params": len(OOA),
                           "dt_fac": ev.dt_fac, "ga_dt_fac": cfg.ga_dt_fac,
                           "ga_projection": None if proj is None else list(proj), "ga_max_evals": ga_max_evals,
                           "minutes_per_structure": minutes, "free": free, "fixed": cfg.fixed,
                           "cores": cores, "cpu_count": os.cpu_count(),
                           "load_average_before": round(os.getloadavg()[0], 2), "structures": {}}
    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-ga3-") as tmp:
        afs = Path(tmp) / "ooa3.fs"
        write_fs(data, afs)
        for structure in plan:
            key = "-".join(map(str, structure))
            log.info("bench ga3: structure %s for %g minutes", key, minutes)
            out["structures"][key] = run_structure(structure, afs, data, minutes, cores, seed, Path(tmp),
                                                   dt_fac, ga_dt_fac, proj, ga_max_evals, free)
    bests = [s["best_loglik"] for s in out["structures"].values() if s["best_loglik"] is not None]
    best = max(bests) if bests else None
    out["best_loglik"] = best
    gap = None if best is None else round(out["true_loglik"] - best, 3)
    out[f"loglik_gap_{minutes:g}min"] = gap
    out["target_met"] = target_met(gap, minutes, free)
    click.echo(json.dumps(out))
