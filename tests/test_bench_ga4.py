"""``hpcpop bench ga4``: the four-population history as the model space writes it, and the bench's output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from hpc_popgen.bench.ga3 import true_space
from hpc_popgen.bench.ga4 import (
    FRACTIONS,
    N_TRUE_PARAMS,
    POPULATIONS,
    STRUCTURE,
    gaps,
    search_space,
    simulated_spectrum,
    target_met,
    true_values,
)
from hpc_popgen.bench.ga4 import command as bench_ga4
from hpc_popgen.demography.engine import moments_fs


def test_true_values_give_moments_spectrum_of_stdpopsims_graph():
    # the published history (stdpopsim's OutOfAfrica_4J17, as a demes graph) and our structure (1,1,1,1) values
    # of it: the same expected spectrum, so the bench's truth is Jouganous et al.'s model
    import moments
    import stdpopsim

    graph = stdpopsim.get_species("HomSap").get_demographic_model("OutOfAfrica_4J17").model.to_demes()
    ns = (4, 4, 4, 4)
    theirs = moments.Spectrum.from_demes(graph, sampled_demes=POPULATIONS, sample_sizes=list(ns))
    ours = moments_fs(true_space(STRUCTURE), true_values(), ns, 0.02)
    assert ours.shape == theirs.shape == (5, 5, 5, 5)
    a, b = np.ma.filled(ours, 0.0), np.ma.filled(theirs, 0.0)
    assert np.allclose(a, b, rtol=1e-9, atol=0.0)  # the same integration: equal to rounding (3e-15 measured)
    # a wrong mapping moves it: JPT's growth left out
    wrong = dict(true_values(), nu4_4=true_values()["ns3_4"])
    c = np.ma.filled(moments_fs(true_space(STRUCTURE), wrong, ns, 0.02), 0.0)
    assert not np.allclose(c, b, rtol=1e-2, atol=1e-2 * float(b.max()))


def test_true_values_lie_inside_the_searched_space():
    space = search_space(seed=1, free=False)
    values = true_values()
    assert space.structure == (1, 1, 1, 1) and N_TRUE_PARAMS == 17
    assert sorted(space.fixed) == ["g1_1", "g2_1", "g2_2", "g3_1", "g4_1", "ns1_1", "ns1_2"]
    for p in space.free:
        assert p.lower <= values[p.name] <= p.upper, p.name
    assert space.n_continuous == 28 and search_space(seed=1, free=True).n_continuous == 30


def test_simulated_spectrum_is_fixed_by_its_seed():
    a, b = simulated_spectrum(4), simulated_spectrum(4)
    assert a.shape == (5, 5, 5, 5) and a.pop_ids == POPULATIONS
    assert np.array_equal(np.ma.filled(a, -1), np.ma.filled(b, -1)) and a.S() > 1000


def test_bench_ga4_targets_a_gap_of_3_after_60_minutes_on_2_cores():
    assert target_met(2.9, 60.0, 2) and target_met(3.0, 60.0, 1)
    assert not target_met(3.1, 60.0, 2) and not target_met(1.0, 30.0, 2) and not target_met(1.0, 60.0, 4)
    assert not target_met(None, 60.0, 2)
    assert gaps(-100.0, {"15": -104.5, "30": None, "60": -101.25}) == {
        "loglik_gap_15min": 4.5, "loglik_gap_30min": None, "loglik_gap_60min": 1.25}


@pytest.mark.xdist_group("test_demography3")  # a LocalCluster of 2 workers: not beside bench ga3's
def test_bench_ga4_smoke_prints_one_json_object():
    res = CliRunner().invoke(bench_ga4, ["--minutes", "0.2", "--sample-size", "5", "--ga-projection", "4"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["populations"] == POPULATIONS and out["sample_sizes"] == [5, 5, 5, 5]
    assert out["engine"] == "moments" and math.isfinite(out["true_loglik"])
    assert out["initial_structure"] == [1, 1, 1, 1] and out["final_structure"] == [2, 1, 1, 1]
    assert all(r["structure"] in ([1, 1, 1, 1], [2, 1, 1, 1]) for r in out["structures_finished"])
    assert out["ga_projection"] == [4, 4, 4, 4] and out["n_free_params"] == 28
    checkpoints = [f"{0.2 * f:g}" for f in FRACTIONS]
    assert list(out["best_loglik_at_minutes"]) == checkpoints == ["0.05", "0.1", "0.2"]
    assert out["evals_per_s"] > 0 if out["evaluations"] > 0 else out["best_loglik"] is None
    for m in checkpoints:
        best = out["best_loglik_at_minutes"][m]
        gap = out[f"loglik_gap_{m}min"]
        assert gap is None if best is None else gap == pytest.approx(out["true_loglik"] - best, abs=1e-3)
    assert out["target_met"] is False  # 0.2 minutes meet no target


def test_bench_ga4_refuses_a_final_structure_of_other_than_four_populations():
    res = CliRunner().invoke(bench_ga4, ["--final-structure", "1-1-1", "--minutes", "0.01"])
    assert res.exit_code != 0 and "4 entries" in res.output
