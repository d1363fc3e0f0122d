"""``hpcpop bench engines``: do msprime and the forward engine agree where both are exact, and how far
apart are the paper's msprime sweeps from the true standing-variation history? Prints ONE JSON object.

Cases (marth3, 128 haplotypes, 80 kb; statistics: segregating sites, pi, distinct haplotypes and H12 in
the central 10 kb; two-sample Mann-Whitney U test per statistic):
- ``neutral``: neutral regions, msprime against fwdpy11 at the default Q (``neutral_min_p``): the forward
  machinery (msprime's past, scaling, forward generations, mutations) against the coalescent.
- ``hard_sweep``: a de novo sweep (start frequency 1/(2N)) that completes before today (S=300, onset
  2,000 generations, conditioned on fixation), msprime against fwdpy11 at the default Q. The engines
  anchor a sweep differently (fwdpy11 at its onset, msprime at its end), so each msprime replicate's
  sweep ends when the fwdpy11 replicate of the same index fixed; both draw the sweep's duration from
  their own trajectory conditioned on fixation. Agreement leaves ``hard_sweep_min_p`` where chance
  puts it (>= 0.01).
- ``paper_S<S>``: the paper's setting (f = 0.01 at 600 generations), msprime's release model
  (``standing: paper``) beside the forward engine's true history, with the difference of means in
  pooled standard deviations.
- ``default_q``: the forward engine at the default Q against Q = 1 on the paper's S=300 setting
  (``default_q_min_p``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ProcessPoolExecutor

import click
import numpy as np

N_HAPLOTYPES, LENGTH = 128, 80_000


def _plan(**params):
    from ..config import config_with_defaults
    from ..simulate import Plan
    from ..simulate.config import SimulateConfig

    base = {"store": "bench.zarr", "demography": "marth3", "n_haplotypes": N_HAPLOTYPES, "sequence_length": LENGTH,
            "n_per_class": 1_000_000, "sweep": {"max_attempts": 255}}
    merged = {**base, **params, "sweep": {**base["sweep"], **params.get("sweep", {})}}
    return Plan.from_config(config_with_defaults(SimulateConfig, "stages/simulate.schema.json", merged), 4242)


def _stats_of(args: tuple) -> list[dict[str, float]]:
    """Statistics of replicates [start, stop) of the plan made from ``params`` (runs in a worker process);
    forward replicates add ``fixation_time``; ``end_times`` (msprime only) end replicate i's sweep then."""
    from ..simulate.forward import simulate_forward
    from ..simulate.replicate import simulate_replicate
    from ..simulate.stats import region_stats

    params, start, stop, end_times = args
    plan = _plan(**params)
    out = []
    for i in range(start, stop):
        seed = plan.replicate_seed(i)
        S, _ = plan.s_of(i, seed)
        if plan.forward is not None:
            rep = simulate_forward(plan.forward, S, seed, end_frequency=plan.end_frequency(S))
            extra = {"fixation_time": rep.fixation_time}
        else:
            timing = plan.sim.timing(S)
            if end_times is not None:  # a sweep that completes (ends at 1 - 1/(2Ne)), ending when fwdpy11's fixed
                if not timing.complete:
                    raise ValueError("end_times need a sweep that completes before today")
                timing = dataclasses.replace(timing, end_time=end_times[i - start])
            rep = simulate_replicate(plan.sim, S, seed, timing=timing)
            extra = {}
        out.append({**region_stats(rep.matrix, rep.positions, LENGTH), **extra})
    return out


def _sample(params: dict, n: int, pool: ProcessPoolExecutor, chunk: int = 10,
            end_times: np.ndarray | None = None) -> dict[str, np.ndarray]:
    jobs = [(params, a, min(a + chunk, n), None if end_times is None else list(end_times[a:a + chunk]))
            for a in range(0, n, chunk)]
    rows = [r for part in pool.map(_stats_of, jobs) for r in part]
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per statistic: means, Mann-Whitney U p-value, difference of means in pooled SDs."""
    from scipy.stats import mannwhitneyu

    out = {}
    for k in (k for k in a if k in b and k != "fixation_time"):
        sd = float(np.sqrt((a[k].var(ddof=1) + b[k].var(ddof=1)) / 2)) or 1.0
        out[k] = {"mean_a": round(float(a[k].mean()), 6), "mean_b": round(float(b[k].mean()), 6),
                  "p": round(float(mannwhitneyu(a[k], b[k]).pvalue), 4),
                  "difference_in_sd": round(float((b[k].mean() - a[k].mean()) / sd), 3)}
    return out


def _min_p(cmp: dict[str, dict[str, float]]) -> float:
    return min(v["p"] for v in cmp.values())


@click.command("engines")
@click.option("--replicates", default=500, show_default=True, help="Replicates per engine and case.")
@click.option("--workers", default=os.cpu_count() or 1, show_default=True, help="Processes simulating.")
@click.option("--paper-s", default="200,300,400", show_default=True, help="S values of the paper's setting.")
@click.option("--skip-q1", is_flag=True, help="Leave out the Q = 1 comparison (about 8 s per replicate).")
@click.option("--cases", default="neutral,hard,paper,q", show_default=True, help="Which comparisons to run.")
@click.option("--q", "q", type=float, default=None, help="The Q compared with Q = 1 (default: the auto Q).")
def command(replicates: int, workers: int, paper_s: str, skip_q1: bool, cases: str, q: float | None) -> None:
    """Statistics of msprime and fwdpy11 sweeps side by side, with a two-sample test per statistic."""
    result: dict = {"replicates": replicates, "setting": "marth3, 128 haplotypes, 80 kb",
                    "test": "two-sided Mann-Whitney U per statistic; a = msprime (or Q = 1), b = fwdpy11"}
    wanted = set(cases.split(","))
    with ProcessPoolExecutor(workers) as pool:
        if "neutral" in wanted:
            _neutral(result, replicates, pool)
        if "hard" in wanted:
            _hard(result, replicates, pool)
        if "paper" in wanted:
            for S in (float(x) for x in paper_s.split(",")):
                result[f"paper_S{S:g}"] = compare(_sample({**PAPER, "classes": [S]}, replicates, pool),
                                                  _sample({"classes": [S], "engine": "fwdpy11"}, replicates, pool))
        if "q" in wanted and not skip_q1:
            fwd = {"classes": [300.0], "engine": "fwdpy11"}
            default = _plan(**fwd).forward.scaling if q is None else q
            q_cmp = compare(_sample({**fwd, "scaling": 1}, replicates, pool),
                            _sample({**fwd, "scaling": default}, replicates, pool))
            result["default_q"] = {"scaling": default, "stats": q_cmp}
            result["default_q_min_p"] = _min_p(q_cmp)
    click.echo(json.dumps(result))


PAPER = {"sweep": {"standing": "paper"}, "engine": "msprime"}
HARD = {"classes": [300], "sweep": {"onset": 2000, "start_frequency": 1 / (2 * 20_000)}}


def _neutral(result: dict, replicates: int, pool: ProcessPoolExecutor) -> None:
    """Neutral regions on both engines: the forward machinery (past, scaling, mutations) against the coalescent."""
    neutral = {"classes": [0]}
    cmp = compare(_sample({**neutral, "engine": "msprime"}, replicates, pool),
                  _sample({**neutral, "engine": "fwdpy11"}, replicates, pool))
    result["neutral"] = {"scaling": _plan(**neutral, engine="fwdpy11").forward.scaling, "stats": cmp}
    result["neutral_min_p"] = _min_p(cmp)


def _hard(result: dict, replicates: int, pool: ProcessPoolExecutor) -> None:
    """A de novo sweep completed before today, on both engines at the default Q, msprime's sweeps ending
    when fwdpy11's fixed."""
    forward = _sample({**HARD, "engine": "fwdpy11"}, replicates, pool)
    fixed = forward.pop("fixation_time")
    cmp = compare(_sample({**HARD, "engine": "msprime"}, replicates, pool, end_times=fixed), forward)
    result["hard_sweep"] = {"S": 300, "onset": 2000, "scaling": _plan(**HARD, engine="fwdpy11").forward.scaling,
                            "fixation_time_mean": round(float(fixed.mean()), 1),
                            "fixation_time_sd": round(float(fixed.std(ddof=1)), 1), "stats": cmp}
    result["hard_sweep_min_p"] = _min_p(cmp)
