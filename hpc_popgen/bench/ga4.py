"""``hpcpop bench ga4``: the GADMA-style structure search on a simulated four-population spectrum, against the truth.

GADMA's documentation says its automatic structure models do not work from four populations on; this bench
runs the demography stage's own structure search on four. The data: moments' expected spectrum of Jouganous
et al.'s (2017) out-of-Africa history of YRI, CEU, CHB and JPT (stdpopsim's ``HomSap/OutOfAfrica_4J17``,
17 parameters: an ancestral expansion, the out-of-Africa split with migration, the Europe/East Asia split
with exponential growth and migration among the three, the Han/Japanese split with exponential growth of
JPT and CHB-JPT migration) times ``THETA``, Poisson-sampled with a fixed seed (10x10x10x10 by default).

The history is written exactly in the model space of structure (1,1,1,1) (free split sizes, symmetric
migration, exponential dynamics; the tests check the spectrum against moments' of stdpopsim's demes graph).
Populations are in split order, each split taking the newest population off the last: CEU off YRI, CHB off
CEU's lineage, JPT off CHB. The search starts from (1,1,1,1) with migration on and adds intervals up to
``--final-structure`` (default (2,1,1,1): what time (1,1,1,1) leaves goes on from its best models), one
Search of the demography stage with its Dask evaluations on a LocalCluster of ``--cores`` single-threaded
workers for ``--minutes`` in all (default 60).
What the published model fixes as in ``bench ga3`` (YRI's dynamics, the out-of-Africa population's after
its split, the founders of the first split, which then have no effect) is fixed; ``--free`` searches them too.

Prints one JSON object: the log-likelihood at the true parameters, the best log-likelihood after 25%, 50%
and 100% of the time (15, 30 and 60 minutes by default) and the gap to the truth at each
(``loglik_gap_<minutes>min``), evaluations per second; target ``loglik_gap_60min`` <= 3 on 2 cores.

The engine is moments, the only one of the project's engines that integrates four populations (its dadi path
stops at three, and momi2 has no continuous migration); ``--evals-only`` times fixed models (the truth, 6
near it, 6 random) at moments' time steps and the islands' projection, one core, in this process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from ..demography.config import DemographyConfig
from ..demography.model import ModelSpace
from .ga3 import (
    _structure,
    eval_rates,
    eval_settings,
    output_options,
    poisson_spectrum,
    run_search,
    search_options,
    stage_params,
    true_space,
    write_fs,
)

log = logging.getLogger(__name__)

MODEL = "HomSap/OutOfAfrica_4J17"  # stdpopsim's id of the published history
POPULATIONS = ["YRI", "CEU", "CHB", "JPT"]  # split order: CEU off YRI, CHB off CEU, JPT off CHB
STRUCTURE = (1, 1, 1, 1)  # the true history's structure, where the search starts
THETA = 5000.0  # scaled mutation rate of the simulated data
SEED = 20170101
FRACTIONS = (0.25, 0.5, 1.0)  # checkpoints: 15, 30 and 60 of 60 minutes
GA_EVALS_PER_MINUTE = 30  # islands' evaluations per island and minute of --minutes (as bench ga3)
# the islands' sample size per population: on 10x10x10x10 data at moments' dt_fac 0.1 (the truth and 12 random
# models, one core of a loaded machine, 2026-12-08) an evaluation took 2.7 s, projected to 8 per population 2.1 s,
# to 6 1.15 s (1 of the 12 failing with negative entries; projected to 3, moments' 4-population spectra fail)
GA_PROJECTION = 6
TARGET_GAP, TARGET_MINUTES, TARGET_CORES = 3.0, 60.0, 2  # loglik_gap_60min <= 3 on 2 cores (issue 29)

# Jouganous et al. 2017, Table 4, as stdpopsim 0.3.0 has it: sizes, growth rates and migration rates per
# generation; times in generations (years / 29, rounded down as stdpopsim does)
J17 = {"N_A": 11293, "N_AF": 23721, "N_B": 2831, "N_EU0": 2512, "N_AS0": 1019, "N_JP0": 4384,
       "r_EU": 0.0016, "r_AS": 0.0026, "r_JP": 0.0129,
       "m_AF_B": 16.8e-5, "m_AF_EU": 1.14e-5, "m_AF_AS": 0.56e-5, "m_EU_AS": 4.75e-5, "m_CH_JP": 3.3e-5,
       "T_AF": 357000 // 29, "T_B": 119000 // 29, "T_EU_AS": 46000 // 29, "T_CH_JP": 9000 // 29}
N_TRUE_PARAMS = len(J17) - 1  # N_A is the unit


def true_values(p: dict[str, float] = J17) -> dict[str, float]:
    """The history as values of structure (1,1,1,1) with free split sizes and symmetric migration, in units
    of N_A (sizes), 2·N_A generations (times) and 2·N_A·m (migration)."""
    na = float(p["N_A"])
    eu_at_jp = p["N_EU0"] * math.exp(p["r_EU"] * (p["T_EU_AS"] - p["T_CH_JP"]))  # sizes at the CHB/JPT split
    as_at_jp = p["N_AS0"] * math.exp(p["r_AS"] * (p["T_EU_AS"] - p["T_CH_JP"]))
    af, b = p["N_AF"] / na, p["N_B"] / na
    m_af_eu, m_af_as, m_eu_as = (2 * na * p[k] for k in ("m_AF_EU", "m_AF_AS", "m_EU_AS"))
    return {"t1": (p["T_AF"] - p["T_B"]) / (2 * na), "nu1_1": af, "g1_1": 0, "ns1_1": af, "ns1_2": b,
            "t2": (p["T_B"] - p["T_EU_AS"]) / (2 * na), "nu2_1": af, "g2_1": 0, "nu2_2": b, "g2_2": 0,
            "m2_12": 2 * na * p["m_AF_B"], "ns2_2": p["N_EU0"] / na, "ns2_3": p["N_AS0"] / na,
            "t3": (p["T_EU_AS"] - p["T_CH_JP"]) / (2 * na), "nu3_1": af, "g3_1": 0, "nu3_2": eu_at_jp / na,
            "g3_2": 2, "nu3_3": as_at_jp / na, "g3_3": 2, "m3_12": m_af_eu, "m3_13": m_af_as, "m3_23": m_eu_as,
            "ns3_3": as_at_jp / na, "ns3_4": p["N_JP0"] / na,  # CHB goes on growing; JPT starts at N_JP0
            "t4": p["T_CH_JP"] / (2 * na), "nu4_1": af, "g4_1": 0,
            "nu4_2": p["N_EU0"] * math.exp(p["r_EU"] * p["T_EU_AS"]) / na, "g4_2": 2,
            "nu4_3": p["N_AS0"] * math.exp(p["r_AS"] * p["T_EU_AS"]) / na, "g4_3": 2,
            "nu4_4": p["N_JP0"] * math.exp(p["r_JP"] * p["T_CH_JP"]) / na, "g4_4": 2,
            "m4_12": m_af_eu, "m4_13": m_af_as, "m4_23": m_eu_as, "m4_14": 0.0, "m4_24": 0.0,
            "m4_34": 2 * na * p["m_CH_JP"]}


def simulated_spectrum(n: int = 10, seed: int = SEED, theta: float = THETA) -> Any:
    """The benchmark's data: the true model's spectrum (``n`` per population) x theta, Poisson-sampled."""
    return poisson_spectrum(true_space(STRUCTURE), true_values(), (n,) * 4, POPULATIONS, seed, theta)


def search_params(afs: str, seed: int, final: tuple[int, ...] = STRUCTURE, dt_fac: float | None = None,
                  ga_dt_fac: float | None = None, ga_projection: list[int] | None = None,
                  ga_max_evals: int = 100000, free: bool = False) -> dict[str, Any]:
    """Demography stage parameters of the search: bench ga3's, from structure (1,1,1,1) up to ``final``."""
    return stage_params(afs, STRUCTURE, seed, dt_fac, ga_dt_fac, ga_projection, ga_max_evals, free,
                        populations=POPULATIONS, final=final)


def target_met(gap: float | None, minutes: float, cores: int) -> bool:
    """The benchmark's target: a gap of at most 3 after 60 minutes on at most 2 cores; other durations meet
    no target."""
    return gap is not None and gap <= TARGET_GAP and math.isclose(minutes, TARGET_MINUTES) and cores <= TARGET_CORES


def gaps(true_loglik: float, best: dict[str, float | None]) -> dict[str, float | None]:
    """``loglik_gap_<minutes>min`` (true LL minus the best found by then) for each checkpoint of ``best``."""
    return {f"loglik_gap_{m}min": None if ll is None else round(true_loglik - ll, 3) for m, ll in best.items()}


def search_space(seed: int, free: bool) -> ModelSpace:
    """The search's space of structure (1,1,1,1) (what it fixes included)."""
    from ..config import config_with_defaults
    from ..demography.config import SCHEMA

    return config_with_defaults(DemographyConfig, SCHEMA, search_params("x.fs", seed, free=free)).space(STRUCTURE)


@click.command()
@click.option("--minutes", default=TARGET_MINUTES, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Search time in all (every structure); checkpoints at 25, 50 and 100% of it.")
@click.option("--cores", default=2, show_default=True, type=click.IntRange(min=1), help="Dask workers (1 thread each).")
@click.option("--final-structure", default="2-1-1-1", show_default=True,
              help="The search starts from 1-1-1-1 (the true history's structure) and adds one interval at a "
                   "time up to this one (1-1-1-1: that structure only).")
@click.option("--free", is_flag=True,
              help="Nothing fixed: YRI's dynamics, the out-of-Africa population's after its split and the "
                   "founders of split 1 are searched too.")
@click.option("--sample-size", default=10, show_default=True, type=click.IntRange(min=2),
              help="Haploid sample size per population (10: a 10x10x10x10 spectrum).")
@search_options(ga_projection=GA_PROJECTION)
@click.option("--ga-max-evals", type=click.IntRange(min=1), default=None,
              help=f"Evaluations per island before the local searches start (or 20 generations without gain); "
                   f"default {GA_EVALS_PER_MINUTE} per minute of --minutes.")
@output_options
def command(minutes: float, cores: int, final_structure: str, free: bool, sample_size: int, seed: int,
            dt_fac: float | None, ga_dt_fac: float, ga_projection: int, ga_max_evals: int | None, evals_only: bool,
            fs_out: Path | None) -> None:
    """GA and structure search on a simulated 4-population spectrum: best LL over time vs the true parameters'."""
    from ..config import config_with_defaults
    from ..demography.config import SCHEMA
    from ..demography.engine import EvalConfig, evaluate

    final = _structure(final_structure, len(POPULATIONS))  # 4 entries >= 1: never below 1-1-1-1
    data = simulated_spectrum(sample_size)
    if fs_out is not None:
        write_fs(data, fs_out)
    proj = [ga_projection] * len(POPULATIONS) if 0 < ga_projection < sample_size else None
    ga_max_evals = ga_max_evals or max(10, int(round(GA_EVALS_PER_MINUTE * minutes)))
    params = search_params("x.fs", seed, final, dt_fac, ga_dt_fac, proj, ga_max_evals, free)
    cfg = config_with_defaults(DemographyConfig, SCHEMA, params)
    head: dict[str, Any] = {"model": MODEL, "populations": POPULATIONS, "sample_sizes": [int(n) for n in data.sample_sizes],
                            "engine": cfg.engine, "cpu_count": os.cpu_count(),
                            "load_average_before": round(os.getloadavg()[0], 2)}
    if evals_only:
        res = eval_rates(data, eval_settings(cfg.dt_fac, ga_dt_fac, proj), n_near=6, n_random=6, seed=seed,
                         space=search_space(seed, free), values=true_values())
        click.echo(json.dumps({**head, **res}))
        return
    space = true_space(STRUCTURE)
    ev = EvalConfig.from_config(cfg, data.sample_sizes)  # the search's settings
    truth = evaluate(space, space.vector(true_values()), data, ev)
    out: dict[str, Any] = {**head, "theta": THETA, "data_seed": SEED, "segregating_sites": round(float(data.S()), 1),
                           "true_loglik": round(truth["loglik"], 3), "n_true_params": N_TRUE_PARAMS,
                           "dt_fac": ev.dt_fac, "ga_dt_fac": cfg.ga_dt_fac,
                           "ga_projection": None if proj is None else list(proj), "ga_max_evals": ga_max_evals,
                           "minutes": minutes, "cores": cores, "initial_structure": list(STRUCTURE),
                           "final_structure": list(final), "free": free, "fixed": cfg.fixed}
    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-ga4-") as tmp:
        afs = Path(tmp) / "ooa4.fs"
        write_fs(data, afs)
        log.info("bench ga4: structures %s to %s for %g minutes", STRUCTURE, final, minutes)
        ck = Path(tmp) / "search"
        res = run_search({**params, "input": {**params["input"], "afs": str(afs)}}, data, minutes, cores, ck, "ga4",
                         FRACTIONS)
        state = json.loads((ck / "state.json").read_text()) if (ck / "state.json").exists() else {"results": {}}
    res["structures_finished"] = [{"structure": r["structure"], "loglik": round(r["loglik"], 3)}
                                  for _k, r in sorted(state["results"].items(), key=lambda kv: int(kv[0]))]
    out.update(res)
    out.update(gaps(out["true_loglik"], res["best_loglik_at_minutes"]))
    out["target_met"] = target_met(out[f"loglik_gap_{minutes:g}min"], minutes, cores)
    click.echo(json.dumps(out))
