"""``hpcpop bench modelcheck``: does the scan's model check flag a wrong history, and only a wrong one?
(issue 26, items 3 and 5). Prints ONE JSON object, targets beside the figures.

- **History used for training** (``trained``): one population of 10,000 diploids growing to 20,000
  5,000 generations ago (the shape of jobs/genome_scan.yaml's data). Chromosomes of ``--length`` Mb,
  ``--diploids`` diploids, mutation 1.25e-8 and recombination 1e-8 per bp per generation, simulated by the
  scan's own null simulator (:func:`hpc_popgen.infer.calibrate.simulate_null_chromosome`), in the scan's
  default windows (80 kb, step 40 kb, at least 10 sites).
- **Histories it did not infer**: ``bottleneck`` (a 10-fold bottleneck from 1,000 to 1,400 generations
  ago the inference missed) and ``expansion`` (a recent exponential growth, tenfold over the last 400
  generations). Each is rescaled (sizes and times together) so that its mean pairwise coalescence time,
  hence its expected diversity, equals the trained history's: the check must see the shape of the
  data (spectrum, Tajima's D, haplotypes), not only a diversity level an inferred history would match.
- **Each checked chromosome** is compared with ``--null`` null chromosomes of the trained history, drawn
  without replacement from a pool of ``--pool`` simulated ones (as a scan's null, independent of it).
- **Threshold**: chosen on simulations with seeds apart from the test's (``--calibration-seed``):
  ``--calibration`` matched chromosomes against their own pool; the 98th percentile of their largest score
  (:func:`hpc_popgen.infer.modelcheck.choose_threshold`). The test (``--seed``) then measures
  ``flag_rate_matched`` on ``--matched`` chromosomes of the trained history and
  ``flag_rate_misspecified`` on ``--misspecified`` chromosomes of each wrong history (pooled over both,
  and per history), with that threshold and with the scan schema's default.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import click
import numpy as np

log = logging.getLogger(__name__)

MU, RHO = 1.25e-8, 1e-8
WINDOW = {"unit": "bp", "size": 80_000, "step": 40_000, "min_sites": 10}
FLAG_RATE = 0.02  # the threshold flags this share of calibration chromosomes that follow the history
TARGETS = {"flag_rate_matched": {"max": 0.10}, "flag_rate_misspecified": {"min": 0.90}}
CAL, POOL, MATCHED, WRONG = 1, 2, 3, 4  # seed keys of the phases


def _graph(epochs: list[dict]) -> dict:
    import demes

    b = demes.Builder(time_units="generations")
    b.add_deme("pop", epochs=epochs)
    return b.resolve().asdict()


def _t2(graph: dict) -> float:
    import demes
    import msprime

    return float(msprime.Demography.from_demes(demes.Builder.fromdict(graph).resolve())
                 .debug().mean_coalescence_time({"pop": 2}))


def _scaled(epochs: list[dict], target_t2: float) -> dict:
    """``epochs`` with sizes and times scaled together so that the mean coalescence time is ``target_t2``."""
    c = target_t2 / _t2(_graph(epochs))
    out = []
    for e in epochs:
        e = dict(e)
        for k in ("start_size", "end_size", "end_time"):
            if k in e:
                e[k] = e[k] * c
        out.append(e)
    return _graph(out)


def histories() -> dict[str, dict]:
    """The trained history and the two it did not infer (demes graphs as dicts, generations)."""
    trained = _graph([{"start_size": 10_000, "end_time": 5_000}, {"start_size": 20_000}])
    t2 = _t2(trained)
    bottleneck = _scaled([{"start_size": 10_000, "end_time": 5_000}, {"start_size": 20_000, "end_time": 1_400},
                          {"start_size": 2_000, "end_time": 1_000}, {"start_size": 20_000}], t2)
    expansion = _scaled([{"start_size": 10_000, "end_time": 5_000}, {"start_size": 20_000, "end_time": 400},
                         {"start_size": 20_000, "end_size": 200_000}], t2)
    return {"trained": trained, "bottleneck": bottleneck, "expansion": expansion}


def chromosome_statistics(graph: dict, seed: int, diploids: int, length: int) -> dict[str, np.ndarray]:
    """One chromosome simulated as the scan's null is, in the scan's windows: its window statistics."""
    from ..infer.calibrate import simulate_null_chromosome
    from ..infer.modelcheck import window_statistics
    from ..infer.scan import plan_windows

    matrix, pos = simulate_null_chromosome(graph, "pop", diploids, length, mutation_rate=MU, recombination_rate=RHO,
                                           seed=seed)
    windows = [(w.lo, w.hi, w.start, w.end) for w in plan_windows(pos, **WINDOW)]
    return window_statistics(matrix, pos, windows)


def _simulate(pool: ProcessPoolExecutor, graph: dict, seeds: list[int], diploids: int,
              length: int) -> list[dict[str, np.ndarray]]:
    return list(pool.map(chromosome_statistics, [graph] * len(seeds), seeds, [diploids] * len(seeds),
                         [length] * len(seeds)))


def _scores(chromosomes: list[dict], null_pool: list[dict], n_null: int, master: int, key: int) -> list[dict]:
    """Each chromosome's check against ``n_null`` chromosomes drawn from ``null_pool`` (its own draw)."""
    from ..infer.modelcheck import check_model
    from ..seeds import rng

    out = []
    for i, c in enumerate(chromosomes):
        pick = rng(master, key, i).choice(len(null_pool), size=n_null, replace=False)
        r = check_model(c, [null_pool[j] for j in pick], float("inf"))
        out.append({"max": r["max_score"], "worst": r["worst_statistic"],
                    "scores": {k: v["score"] for k, v in r["statistics"].items()}})
    return out


def _summary(scored: list[dict], threshold: float) -> dict[str, Any]:
    m = np.array([s["max"] for s in scored])
    worst = [s["worst"] for s in scored if s["max"] > threshold]
    return {"chromosomes": len(scored), "flagged": int(np.sum(m > threshold)), "flag_rate": float(np.mean(m > threshold)),
            "max_score_quantiles_5_50_95": [round(float(q), 3) for q in np.quantile(m, [0.05, 0.5, 0.95])],
            "median_score_per_statistic": {k: round(float(np.nanmedian([s["scores"][k] for s in scored])), 3)
                                           for k in scored[0]["scores"]},
            "flagged_by": {k: worst.count(k) for k in sorted(set(worst))},
            "max_scores": [round(float(v), 3) for v in m]}


def run_bench(*, length_mb: float, diploids: int, n_null: int, pool_size: int, calibration: int, matched: int,
              misspecified: int, seed: int, calibration_seed: int, workers: int) -> dict[str, Any]:
    """The benchmark's JSON object (see the module docstring)."""
    from ..config import config_with_defaults
    from ..infer.config import ScanConfig
    from ..seeds import derive_seed

    t0 = time.perf_counter()
    length = int(round(length_mb * 1e6))
    hist = histories()
    default_threshold = config_with_defaults(ScanConfig, "stages/scan.schema.json", {"vcf": "x"}).model_check.threshold

    def seeds(master: int, key: int, n: int) -> list[int]:
        return [derive_seed(master, key, i) for i in range(n)]

    with ProcessPoolExecutor(max_workers=workers) as pool:
        log.info("calibration: %d + %d chromosomes (seed %d)", pool_size, calibration, calibration_seed)
        cal_pool = _simulate(pool, hist["trained"], seeds(calibration_seed, POOL, pool_size), diploids, length)
        cal = _simulate(pool, hist["trained"], seeds(calibration_seed, CAL, calibration), diploids, length)
        cal_scored = _scores(cal, cal_pool, n_null, calibration_seed, CAL)
        from ..infer.modelcheck import choose_threshold

        threshold = choose_threshold([s["max"] for s in cal_scored], FLAG_RATE)
        log.info("threshold %.3f; test: %d + %d + %d x %d chromosomes (seed %d)", threshold, pool_size, matched,
                 misspecified, 2, seed)
        test_pool = _simulate(pool, hist["trained"], seeds(seed, POOL, pool_size), diploids, length)
        tests = {"trained": _simulate(pool, hist["trained"], seeds(seed, MATCHED, matched), diploids, length)}
        for k, name in enumerate(("bottleneck", "expansion")):
            tests[name] = _simulate(pool, hist[name], [derive_seed(seed, WRONG, k, i) for i in range(misspecified)],
                                    diploids, length)
    scored = {name: _scores(ch, test_pool, n_null, seed, MATCHED + 10 * (k + 1)) for k, (name, ch) in
              enumerate(tests.items())}
    wrong = scored["bottleneck"] + scored["expansion"]
    out: dict[str, Any] = {
        "bench": "modelcheck",
        "flag_rate_matched": _summary(scored["trained"], threshold)["flag_rate"],
        "flag_rate_misspecified": _summary(wrong, threshold)["flag_rate"],
        "targets": TARGETS,
        "targets_met": None,
        "threshold": round(threshold, 4),
        "threshold_choice": {"calibration_seed": calibration_seed, "chromosomes": calibration,
                             "pool": pool_size, "flag_rate": FLAG_RATE,
                             "rule": f"the {100 * (1 - FLAG_RATE):g}th percentile of the largest score of "
                                     "chromosomes simulated under the trained history"},
        "test_seed": seed,
        "per_history": {name: _summary(s, threshold) for name, s in scored.items()},
        "calibration": _summary(cal_scored, threshold),
        "schema_default_threshold": default_threshold,
        "with_schema_default": {"flag_rate_matched": _summary(scored["trained"], default_threshold)["flag_rate"],
                                "flag_rate_misspecified": _summary(wrong, default_threshold)["flag_rate"]},
        "setup": {"length_mb": length_mb, "diploids": diploids, "null_chromosomes": n_null,
                  "mutation_rate": MU, "recombination_rate": RHO, "window": WINDOW,
                  "windows_per_chromosome": int(np.median([len(c["pi"]) for c in tests["trained"]])),
                  "histories": {k: [{key: round(v, 1) if isinstance(v, float) else v for key, v in e.items()
                                     if key in ("start_size", "end_size", "end_time")}
                                    for e in g["demes"][0]["epochs"]] for k, g in hist.items()},
                  "mean_coalescence_time": {k: round(_t2(g), 1) for k, g in hist.items()}},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out["targets_met"] = bool(out["flag_rate_matched"] <= TARGETS["flag_rate_matched"]["max"]
                                and out["flag_rate_misspecified"] >= TARGETS["flag_rate_misspecified"]["min"]
                                and matched >= 20 and misspecified >= 20)
    return out


@click.command()
@click.option("--length", "length_mb", default=5.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Chromosome length (Mb).")
@click.option("--diploids", default=40, show_default=True, type=click.IntRange(min=2), help="Diploids sampled.")
@click.option("--null", "n_null", default=20, show_default=True, type=click.IntRange(min=2),
              help="Null chromosomes per check (the scan's default null.chromosomes).")
@click.option("--pool", "pool_size", default=80, show_default=True, type=click.IntRange(min=3),
              help="Null chromosomes simulated per phase; each check draws --null of them.")
@click.option("--calibration", default=100, show_default=True, type=click.IntRange(min=10),
              help="Matched chromosomes that choose the threshold (calibration seed).")
@click.option("--matched", default=20, show_default=True, type=click.IntRange(min=1),
              help="Test chromosomes under the trained history.")
@click.option("--misspecified", default=20, show_default=True, type=click.IntRange(min=1),
              help="Test chromosomes under each history it did not infer (bottleneck, expansion).")
@click.option("--seed", default=2, show_default=True, type=click.IntRange(min=1), help="Seed of the test.")
@click.option("--calibration-seed", default=1, show_default=True, type=click.IntRange(min=1),
              help="Seed of the threshold's choice (must differ from --seed).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Simulation processes.")
def command(length_mb: float, diploids: int, n_null: int, pool_size: int, calibration: int, matched: int,
            misspecified: int, seed: int, calibration_seed: int, workers: int) -> None:
    """Model check: flag rates on chromosomes of the trained history and of histories it did not infer."""
    if seed == calibration_seed:
        raise click.BadParameter("the test seed must differ from the calibration seed", param_hint="--seed")
    if n_null > pool_size:
        raise click.BadParameter(f"--null {n_null} is more than --pool {pool_size}", param_hint="--null")
    out = run_bench(length_mb=length_mb, diploids=diploids, n_null=n_null, pool_size=pool_size,
                    calibration=calibration, matched=matched, misspecified=misspecified, seed=seed,
                    calibration_seed=calibration_seed, workers=workers)
    click.echo(json.dumps(out, indent=2))
