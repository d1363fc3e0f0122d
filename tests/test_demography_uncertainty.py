"""Uncertainty of an inferred history from the Fisher information, and which structure ``best`` means.

Real moments at small sizes: spectra computed from a known two-population model, checked against moments'
own ``Godambe.FIM_uncert`` and against the Fisher information's scaling with the amount of data.
"""

from __future__ import annotations

import dataclasses
import json

import demes
import moments
import numpy as np
import pytest
from test_demography import DEFAULTS, space_of

from hpc_popgen.demography.engine import EvalConfig, evaluate, expected_fs
from hpc_popgen.demography.outputs import CLAIC_NOTE, write_results
from hpc_popgen.demography.search import aic
from hpc_popgen.demography.uncertainty import (
    FIM_METHOD,
    Z95,
    FimProblem,
    at_bounds,
    expected_information,
    fim_result,
    spectra_at,
    structure_uncertainty,
)
from hpc_popgen.simulate.histories import stage_history

NS = (6, 6)
MU, LENGTH = 2e-8, 1e6
TRUE = {"t1": 0.4, "nu1_1": 2.0, "s1": 0.7, "t2": 0.15, "nu2_1": 1.5, "nu2_2": 0.5}  # split, no migration


def _setup(theta: float):
    """A (1,1) space without migration (sudden sizes, so the split fraction is fixed: it would not matter),
    data of the true model's expectation at ``theta``, multinomial settings with physical constants."""
    space = space_of((1, 1), dynamics=("sudden",), migration=False, fixed={"s1": TRUE["s1"]})
    cfg = dataclasses.replace(EvalConfig.from_config(DEFAULTS, NS), mu=MU, length=LENGTH, generation_time=25)
    x = list(space.vector(TRUE))
    empty = moments.Spectrum(np.zeros([n + 1 for n in NS]))
    model = expected_fs(space, space.full(x), empty, cfg)
    data = moments.Spectrum(np.asarray(model) * theta)
    return space, cfg, x, data


def test_fim_matches_moments_and_shrinks_with_more_data():
    space, cfg, x, data = _setup(2000.0)
    k = len(x) + 1  # the model's parameters and theta
    obs = structure_uncertainty(space.to_dict(), x, data, cfg, information="observed")
    assert obs["error"] is None and obs["method"] == FIM_METHOD and obs["evaluations"] == 2 * (k - 1) ** 2 + 1
    names = list(space.names)

    def se_of(u):
        return np.array([u["params"][n]["se"] for n in names] + [u["params"]["theta"]["se"]])

    def func_ex(p, ns):
        return expected_fs(space, space.full(list(p)), data, cfg)

    ref = moments.Godambe.FIM_uncert(func_ex, x, data, multinom=True, eps=0.01)
    assert np.allclose(se_of(obs), ref, rtol=1e-6), (se_of(obs), ref)
    # the stage's expected information (2k - 1 spectra): where the data are the model's expectation the
    # observed information equals it, up to the finite differences
    u = structure_uncertainty(space.to_dict(), x, data, cfg)
    assert u["information"] == "expected" and u["evaluations"] == 2 * (k - 1) + 1
    assert np.allclose(se_of(u), ref, rtol=0.02), (se_of(u), ref)
    # the data are the model's expectation: theta is exactly the truth, and the intervals contain every truth
    assert u["params"]["theta"]["value"] == pytest.approx(2000.0, rel=1e-6)
    for n in names:
        p = u["params"][n]
        assert p["lower"] < TRUE[n] < p["upper"]
        assert p["upper"] - p["value"] == pytest.approx(Z95 * p["se"])
    # Fisher information grows with theta: four times the data halves every standard error
    u4 = structure_uncertainty(space.to_dict(), x, _setup(8000.0)[3], cfg)
    for n in names:
        assert u4["params"][n]["se"] / u["params"][n]["se"] == pytest.approx(0.5, rel=0.02)


def test_physical_intervals_carry_nancs_uncertainty():
    space, cfg, x, data = _setup(3000.0)
    theta = evaluate(space, x, data, cfg)["theta"]
    prob = FimProblem(space.to_dict(), x, theta, cfg)
    pts = prob.points()
    # the points in two slices, as the stage spreads them over workers, give what one process gives
    half = len(pts) // 2
    spectra = dict(zip(pts, list(spectra_at(space.to_dict(), x, theta, data, cfg, pts[:half]))
                       + list(spectra_at(space.to_dict(), x, theta, data, cfg, pts[half:])), strict=True))
    u = fim_result(space.to_dict(), x, theta, cfg, spectra, data)
    one = structure_uncertainty(space.to_dict(), x, data, cfg, theta=theta)
    assert u["params"] == one["params"]
    four_mu_l = 4 * MU * LENGTH
    nanc, th = u["physical"]["Nanc"], u["params"]["theta"]
    assert nanc["value"] == pytest.approx(th["value"] / four_mu_l)
    assert nanc["se"] == pytest.approx(th["se"] / four_mu_l, rel=1e-4)
    # a size in individuals is nu * theta / (4 mu L): its variance has nu's, theta's and their covariance
    cov = np.linalg.inv(expected_information(prob, spectra, data))
    i = prob.names.index("nu2_2")
    nu, size = u["params"]["nu2_2"], u["physical"]["nu2_2"]
    assert cov[i, i] == pytest.approx(nu["se"] ** 2) and cov[i, -1] != 0
    a, b = th["value"] / four_mu_l, nu["value"] / four_mu_l
    assert size["value"] == pytest.approx(nu["value"] * nanc["value"])
    assert size["se"] ** 2 == pytest.approx(a * a * cov[i, i] + b * b * cov[-1, -1] + 2 * a * b * cov[i, -1], rel=1e-4)
    assert size["se"] != pytest.approx(nu["se"] * nanc["value"], rel=1e-3)  # not conditional on Nanc
    years = u["physical"]["t2_years"]
    assert years["value"] == pytest.approx(u["params"]["t2"]["value"] * 2 * nanc["value"] * 25)
    assert years["lower"] < years["value"] < years["upper"]


def test_sizes_and_times_at_a_bound_are_flagged():
    space = space_of((1, 1), dynamics=("sudden",), migration=False)
    values = space.full(list(space.vector(dict(TRUE, t2=1.005e-3, nu2_2=99.5, nu1_1=1.02e-2))))
    assert at_bounds(space, values) == {"t2": "lower bound 0.001", "nu2_2": "upper bound 100"}


def _results(stage, entries, best=None):
    for e in entries:
        name = e["dir"]
        (stage / name).mkdir(parents=True, exist_ok=True)
        g = demes.Builder(time_units="generations")
        g.add_deme("A", epochs=[{"start_size": 1000}])
        demes.dump(g.resolve(), stage / name / "model.demes.yaml")
    summary = {"structures": entries}
    if best:
        summary["best"] = best
    (stage / "results.json").write_text(json.dumps(summary))


def test_best_is_the_information_criterions_choice(tmp_path):
    stage = tmp_path / "demography"
    one = {"structure": [1], "loglik": -100.0, "aic": aic(2, -100.0), "dir": "structure-1"}
    two = {"structure": [2], "loglik": -99.5, "aic": aic(4, -99.5), "dir": "structure-2"}  # more LL, worse AIC
    _results(stage, [one, two])
    assert stage_history(stage, "best", None, "demography").source.endswith("structure-1")
    assert stage_history(stage, "best_aic", None, "demography").source.endswith("structure-1")
    assert stage_history(stage, "best_loglik", None, "demography").source.endswith("structure-2")
    # CLAIC where every structure has one (bootstrap spectra) decides over AIC
    _results(stage, [dict(one, claic=250.0), dict(two, claic=240.0)])
    assert stage_history(stage, "best", None, "demography").source.endswith("structure-2")
    # the stage's own record of ``best`` is what ``best`` takes
    _results(stage, [one, two], best={"structure": [2], "criterion": "CLAIC", "dir": "structure-2"})
    assert stage_history(stage, "best", None, "demography").source.endswith("structure-2")


def test_results_and_summary_carry_intervals_and_the_choice(tmp_path):
    space, cfg, x, data = _setup(2000.0)
    r2 = evaluate(space, x, data, cfg)
    state = {"results": {"0": {"structure": [1, 1], "space": space.to_dict(), "x": x, "loglik": r2["loglik"],
                               "theta": r2["theta"], "n_params": space.n_continuous,
                               "aic": aic(space.n_continuous, r2["loglik"]), "best_loglik_per_island": [],
                               "local_search": []}}}
    # a second, nested structure with a higher likelihood but a worse AIC (its extra parameter buys little)
    big_space, big_values = space.increase(1, space.full(x), 0.5)
    xb = list(big_space.vector(big_values))
    rb = evaluate(big_space, xb, data, cfg)
    assert abs(rb["loglik"] - r2["loglik"]) < 0.01
    state["results"]["1"] = {"structure": list(big_space.structure), "space": big_space.to_dict(), "x": xb,
                             "loglik": r2["loglik"] + 0.5, "theta": rb["theta"], "n_params": big_space.n_continuous,
                             "aic": aic(big_space.n_continuous, r2["loglik"] + 0.5), "best_loglik_per_island": [],
                             "local_search": []}
    u = {"1-1": structure_uncertainty(space.to_dict(), x, data, cfg, theta=r2["theta"])}
    data.pop_ids = ["YRI", "CEU"]
    summary = write_results(tmp_path, state, data, cfg, "x.fs", plots=False, uncertainty=u)
    assert summary["best"] == {"structure": [1, 1], "criterion": "AIC", "dir": "structure-1-1"}
    assert summary["best_by_loglik"] == [1, 2] and "`best` is [1, 1] (by AIC)" in summary["warning"]
    assert summary["comparison"] == f"AIC ({CLAIC_NOTE})"
    saved = json.loads((tmp_path / "results.json").read_text())
    entry = saved["structures"][0]
    assert entry["uncertainty"]["method"] == FIM_METHOD and entry["uncertainty"]["params"]["t2"]["se"] > 0
    assert "uncertainty" not in saved["structures"][1]
    md = (tmp_path / "summary.md").read_text()
    assert "`best` = structure 1-1 (lowest AIC)" in md and CLAIC_NOTE in md and FIM_METHOD in md
    assert "| Nanc |" in md and "| t2_years |" in md


def test_stage_writes_intervals_as_units_a_rerun_reuses(tmp_path):
    from test_demography_stage import LOCAL_PROFILE, _manifest

    from hpc_popgen.ledger import Ledger
    from hpc_popgen.pipeline import create_run, execute

    job = _manifest(tmp_path, LOCAL_PROFILE, final_structure=[1], plots=False, local_search={"method": "none"},
                    ga={"size": 6, "init_factor": 2, "stall_generations": 2, "max_evals": 18})
    rd = create_run(job, run_dir=tmp_path / "run")
    report = execute(rd, progress=False)
    assert report["status"] == "completed"
    results = json.loads((rd.path / "demography" / "results.json").read_text())
    [entry] = results["structures"]
    u = entry["uncertainty"]
    assert u["method"] == FIM_METHOD and u["evaluations"] == 2 * 2 + 1  # steps in t1 and nu1_1
    assert set(u["params"]) == {"t1", "nu1_1", "theta"} and {"Nanc", "t1_years", "nu1_1"} <= set(u["physical"])
    metrics = report["stages"][0]["metrics"]
    assert metrics["best"] == {"structure": [1], "criterion": "AIC", "dir": "structure-1"}
    assert metrics["uncertainty_method"] == FIM_METHOD and set(metrics["intervals_95"]["1"]) >= {"t1", "theta"}
    assert CLAIC_NOTE in metrics["comparison"] and FIM_METHOD in (rd.path / "demography" / "summary.md").read_text()
    ledger = Ledger(rd.path / "ledger" / "demography")
    parts = sorted(k for k in ledger.done() if k.startswith("uncertainty-1-"))
    assert parts == ["uncertainty-1-00", "uncertainty-1-01"]  # 5 spectra, 4 a task
    # a rerun of the stage finds its units done and recomputes nothing: the same intervals
    from hpc_popgen.runs import RunDir

    def records() -> int:
        return sum('"uncertainty-' in line for line in ledger.path.read_text().splitlines())

    before = records()
    report2 = execute(RunDir.open(rd.path), progress=False)
    assert report2["status"] == "completed" and before == 2 and records() == before
    again = json.loads((rd.path / "demography" / "results.json").read_text())["structures"][0]["uncertainty"]
    assert again["params"] == u["params"]
