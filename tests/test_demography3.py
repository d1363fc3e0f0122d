"""Demography at three populations: free split sizes, 3-population code and demes output, the stage
end to end (kill + resume, plots, the simulate stage reading its demes YAML), the 3-population job and
``bench ga3``."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import write_yaml
from test_demography_stage import LOCAL_PROFILE, submit_killed_at

from hpc_popgen.bench.ga3 import command as bench_ga3
from hpc_popgen.bench.ga3 import simulated_spectrum, stage_params, target_met, true_space, true_values, write_fs
from hpc_popgen.config import config_with_defaults
from hpc_popgen.demography import outputs
from hpc_popgen.demography.config import SCHEMA, DemographyConfig
from hpc_popgen.demography.engine import EvalConfig, evaluate
from hpc_popgen.demography.ga import local_search
from hpc_popgen.errors import ManifestError
from hpc_popgen.paths import DATA_DIR
from hpc_popgen.pipeline import execute, prepare
from hpc_popgen.readers.spectra import load_fs
from hpc_popgen.runs import RunDir

REPO = Path(__file__).resolve().parent.parent
POPS = ["YRI", "CEU", "CHB"]


def space3(split_sizes: str, **fields):
    """The stage's default model space of structure (1,1,1), symmetric migration, ``fields`` changed."""
    cfg = config_with_defaults(DemographyConfig, SCHEMA, {"input": {"afs": "x.fs"}, "split_sizes": split_sizes,
                                                          "sym_migration": True})
    return dataclasses.replace(cfg.space((1, 1, 1)), **fields)


def evc(engine: str = "moments", pts: tuple[int, ...] = (30, 40, 50), dt_fac: float = 0.02) -> EvalConfig:
    return EvalConfig(engine=engine, pts=pts, likelihood="multinomial", mu=None, length=None, generation_time=1.0,
                      max_split_years=None, dt_fac=dt_fac, projection=None)


@pytest.fixture(scope="module")
def data3(tmp_path_factory):
    """The benchmark's spectrum at 6x6x6 (real moments spectrum, Poisson-sampled), as a file and loaded."""
    path = tmp_path_factory.mktemp("afs") / "ooa3.fs"
    write_fs(simulated_spectrum(6), path)
    return path, load_fs(path, POPS)


def test_split_sizes_free_gives_each_daughter_a_size_and_fraction_stays_default():
    default = config_with_defaults(DemographyConfig, SCHEMA, {"input": {"afs": "x.fs"}})
    assert default.split_sizes == "fraction"
    frac = space3("fraction")
    assert [iv.split for iv in frac.intervals] == [(), ("s1",), ("s2",)]
    free = space3("free")
    # chain: population 2 splits off population 1, then population 3 off population 2
    assert [iv.split for iv in free.intervals] == [(), ("ns1_1", "ns1_2"), ("ns2_2", "ns2_3")]
    assert not any(n.startswith("s") for n in free.names)
    assert {p.kind for p in free.params if p.name.startswith("ns")} == {"nu"}
    assert type(free).from_dict(free.to_dict()).names == free.names
    # checkpoints written before the option existed are split fractions
    old = frac.to_dict()
    del old["split_sizes"]
    assert type(frac).from_dict(old).split_sizes == "fraction"


def test_free_sizes_match_fractions_when_founders_add_up_and_differ_otherwise(data3):
    _path, data = data3
    frac, free = space3("fraction"), space3("free")
    values = {k: v for k, v in true_values().items() if not k.startswith("ns")}
    s1, s2 = 0.7, 0.4
    as_frac = dict(values, s1=s1, s2=s2, g2_1=1, g2_2=2)
    nu1, nu2 = values["nu1_1"], values["nu2_2"]  # the parents: population 1, then population 2
    as_free = dict(values, ns1_1=s1 * nu1, ns1_2=(1 - s1) * nu1, ns2_2=s2 * nu2, ns2_3=(1 - s2) * nu2,
                   g2_1=1, g2_2=2)
    for engine in ("moments", "dadi"):
        a = evaluate(frac, frac.vector(as_frac), data, evc(engine))
        b = evaluate(free, free.vector(as_free), data, evc(engine))
        assert a["error"] is None and abs(a["loglik"] - b["loglik"]) < 1e-8, engine
    # founders that do not add up to their parent: a model split fractions cannot write
    c = evaluate(free, free.vector(dict(as_free, ns2_3=0.07)), data, evc())
    assert c["error"] is None and abs(c["loglik"] - a["loglik"]) > 0.1


@pytest.mark.parametrize("period", [0, 1, 2])
def test_structure_increase_keeps_loglik_with_free_sizes(data3, period):
    _path, data = data3
    space = space3("free", fixed={"ns1_1": 1.0})
    values = dict(true_values(), ns1_1=1.0, g2_1=1)
    before = evaluate(space, space.vector(values), data, evc())["loglik"]
    big, new = space.increase(period, values, 0.4)
    assert big.split_sizes == "free" and big.fixed == {"ns1_1": 1.0}
    assert sum(big.structure) == 4
    after = evaluate(big, big.vector(new), data, evc())["loglik"]
    assert math.isfinite(before) and abs(after - before) < 0.05


@pytest.mark.parametrize(("engine", "dt_fac"), [("moments", 0.02), ("moments", 0.05), ("dadi", 0.02)])
def test_generated_code_reproduces_three_population_loglik(tmp_path, data3, engine, dt_fac):
    path, data = data3
    space = true_space()
    values = true_values()
    cfg = evc(engine, dt_fac=dt_fac)
    want = evaluate(space, space.vector(values), data, cfg)["loglik"]
    if dt_fac != 0.02:  # a coarser time step is used, and close to the default's
        default = evaluate(space, space.vector(values), data, evc(engine))["loglik"]
        assert 0 < abs(want - default) < 1.0
    code = (outputs.moments_code(space, values, str(path), cfg) if engine == "moments"
            else outputs.dadi_code(space, values, str(path), cfg, cfg.pts))
    assert "ns2_3" in code
    script = tmp_path / f"model_{engine}.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    got = float(out.stdout.split("log-likelihood:")[1].split()[0])
    assert math.isfinite(want) and abs(got - want) < 1e-6, (engine, got, want)


def test_demes_graph_of_free_split_sizes_is_the_chain_with_its_founders(tmp_path):
    import demes
    import msprime

    from hpc_popgen.simulate.histories import demes_history

    space, values, nanc = true_space(), true_values(), 7300.0
    graph = outputs.demes_graph(space, values, nanc, POPS, 25.0)
    demes.dump(graph, tmp_path / "m.yaml")
    g = demes.load(tmp_path / "m.yaml")
    assert [d.name for d in g.demes] == POPS
    assert g["CEU"].ancestors == ["YRI"] and g["CHB"].ancestors == ["CEU"]
    chb = g["CHB"].epochs[0]
    assert chb.size_function == "exponential"
    assert chb.start_size == pytest.approx(values["ns2_3"] * nanc) and chb.end_size == pytest.approx(values["nu3_3"] * nanc)
    assert g["CEU"].epochs[-1].start_size == pytest.approx(values["ns2_2"] * nanc)
    assert g["CHB"].start_time == pytest.approx(values["t3"] * 2 * nanc * 25)
    assert len(g.migrations) == 2 + 6  # one pair before the second split, three pairs after it
    # the simulate stage reads it, and msprime simulates it
    h = demes_history(tmp_path / "m.yaml", "CHB")
    assert h.population == "CHB"
    ts = msprime.sim_ancestry(samples={p: 2 for p in POPS}, demography=msprime.Demography.from_demes(h.graph),
                              sequence_length=1e4, random_seed=1)
    assert ts.num_samples == 12


def _params3(afs: str, **over) -> dict:
    p = {"input": {"afs": afs, "populations": POPS}, "initial_structure": [1, 1, 1], "final_structure": [1, 1, 1],
         "split_sizes": "free", "sym_migration": True, "dynamics": ["sudden", "exponential"],
         "bounds": {"nu": [0.05, 20.0], "t": [0.01, 2.0]}, "pts": [12, 16, 20],
         "mu": 2.35e-8, "sequence_length": 1e6, "generation_time": 25, "islands": 2, "migrate_every": 2,
         "deterministic": True, "ga": {"size": 6, "init_factor": 2, "stall_generations": 3, "max_evals": 30},
         "local_search": {"method": "BFGS", "starts": 1, "maxiter": 1, "max_evals": 20, "jump_rounds": 0}}
    p.update(over)
    return p


def _job3(tmp_path: Path, afs: Path, **over) -> Path:
    write_yaml(tmp_path / "profile.yaml", LOCAL_PROFILE)
    (tmp_path / "ooa3.fs").write_bytes(afs.read_bytes())
    return write_yaml(tmp_path / "job.yaml", {"name": "demo3", "seed": 3, "profile": "profile.yaml",
                                              "storage": "runs",
                                              "stages": [{"name": "demography",
                                                          "demography": _params3("ooa3.fs", **over)}]})


@pytest.mark.parametrize(("over", "match"), [
    ({"split_sizes": "fractions"}, r"split_sizes"),
    ({"fixed": {"s1": 0.5}}, r"stages\[0\]\.demography\.fixed: unknown parameter 's1' .*ns1_2"),
    ({"bounds": {"ns3_4": [0.1, 1.0]}}, r"stages\[0\]\.demography\.bounds: unknown parameter 'ns3_4'"),
])
def test_bad_split_sizes_input_is_one_line_naming_the_key(tmp_path, data3, over, match):
    job = _job3(tmp_path, data3[0], **over)
    with pytest.raises(ManifestError, match=match) as err:
        prepare(job)
    assert "\n" not in str(err.value)


def test_three_population_stage_killed_resumes_and_writes_valid_outputs(tmp_path, data3):
    import demes

    from hpc_popgen.simulate.histories import stage_history

    job = _job3(tmp_path, data3[0], uncertainty="none", dt_fac=0.1)  # intervals: tests/test_demography_uncertainty.py
    run = tmp_path / "run"
    submit_killed_at(job, run, "demography", "island-01-gen-00002")
    assert not (run / "demography" / "results.json").exists()
    before = set(RunDir.open(run).ledger("demography").done())
    report = execute(RunDir.open(run), progress=False)
    assert report["status"] == "completed"
    assert before <= set(RunDir.open(run).ledger("demography").done())
    assert "resuming 2 island(s)" in (run / "hpcpop.log").read_text() or \
        "resuming 1 island(s)" in (run / "hpcpop.log").read_text()

    results = json.loads((run / "demography" / "results.json").read_text())
    [entry] = results["structures"]
    assert entry["structure"] == [1, 1, 1] and entry["loglik"] > -5000 and "uncertainty" not in entry
    assert {"ns1_1", "ns1_2", "ns2_2", "ns2_3"} <= set(entry["params"]) and "s1" not in entry["params"]
    assert entry["physical"]["ns2_3"] == pytest.approx(entry["params"]["ns2_3"] * entry["Nanc"])
    d = run / "demography" / entry["dir"]
    g = demes.load(d / "model.demes.yaml")
    assert [x.name for x in g.demes] == POPS and g["CHB"].ancestors == ["CEU"]
    assert (d / "model.png").stat().st_size > 1000 and (d / "afs_comparison.png").stat().st_size > 1000
    # moments' code gives the LL of the results; dadi's code the dadi engine's LL, close to moments'
    lls = {}
    for code in ("model_moments.py", "model_dadi.py"):
        out = subprocess.run([sys.executable, str(d / code)], capture_output=True, text=True, timeout=120,
                             check=True)
        lls[code] = float(out.stdout.split("log-likelihood:")[1].split()[0])
    assert abs(lls["model_moments.py"] - entry["loglik"]) < 1e-6
    space = config_with_defaults(DemographyConfig, SCHEMA, _params3("x.fs")).space((1, 1, 1))
    x = [entry["params"][n] for n in space.names]
    dadi_ll = evaluate(space, x, data3[1], evc("dadi", (12, 16, 20)))["loglik"]
    assert abs(lls["model_dadi.py"] - dadi_ll) < 1e-6
    assert abs(dadi_ll - entry["loglik"]) < 0.05 * abs(entry["loglik"])
    # the simulate stage takes the inferred history from the stage's folder
    h = stage_history(run / "demography", "best", "CHB", "demography")
    assert len(h.graph.demes) == 3 and h.population == "CHB"


def test_three_population_job_loads_and_ships_the_benchmark_spectrum():
    manifest = prepare(REPO / "jobs" / "gadma_3pop.yaml").manifest
    params = manifest.stages[0].params
    assert params["split_sizes"] == "free" and params["input"]["populations"] == POPS
    assert params["initial_structure"] == [1, 1, 1] and params["final_structure"] == [1, 1, 1]
    bench = stage_params("x.fs", (1, 1, 1), seed=1, ga_max_evals=600)  # the job searches as bench ga3 does
    assert params["fixed"] == bench["fixed"] and params["islands"] == bench["islands"]
    for key in ("ga", "local_search"):
        assert {k: params[key][k] for k in bench[key]} == bench[key]
    shipped = load_fs(DATA_DIR / "OOA3_sim.fs", POPS)
    assert shipped.shape == (21, 21, 21)
    assert np.array_equal(np.ma.filled(shipped, -1), np.ma.filled(simulated_spectrum(20), -1))


def test_bench_ga3_smoke_prints_one_json_object():
    res = CliRunner().invoke(bench_ga3, ["--minutes", "0.15", "--sample-size", "4", "--free", "--ga-projection", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["sample_sizes"] == [4, 4, 4] and math.isfinite(out["true_loglik"])
    assert out["ga_projection"] == [3, 3, 3] and out["ga_dt_fac"] == 0.1
    assert out["free"] is True and out["fixed"] == {} and list(out["structures"]) == ["1-1-1"]  # --free's default
    s = out["structures"]["1-1-1"]
    # GADMA's default space: what the bench otherwise fixes as the published model does (YRI's dynamics, CEU's
    # after split 1, the founders of split 1) is searched too: every parameter of the true history's space
    assert sorted(stage_params("x.fs", (1, 1, 1), seed=1)["fixed"]) == ["g1_1", "g2_1", "g2_2", "g3_1", "ns1_1", "ns1_2"]
    assert s["n_free_params"] == true_space().n_continuous == 17
    assert list(s["best_loglik_at_minutes"]) == ["0.015", "0.0375", "0.075", "0.15"]
    # 9 s on a loaded machine can pass in starting the cluster: no evaluation, and then no rate and no model
    assert (s["evals_per_s"] > 0) if s["evaluations"] > 0 else (s["evals_per_s"] == 0 and out["best_loglik"] is None)
    if out["best_loglik"] is None:  # 9 s on a loaded machine can end before any model is scored at the
        assert s["best_loglik"] is None and out["loglik_gap_0.15min"] is None  # reported settings: no gap then
        assert out["target_met"] is False
    else:
        assert out["loglik_gap_0.15min"] == pytest.approx(out["true_loglik"] - out["best_loglik"], abs=1e-3)


def test_bench_ga3_targets_a_gap_of_2_after_20_minutes_or_with_free_1_after_10():
    assert target_met(1.9, 20.0, False) and not target_met(2.1, 20.0, False) and not target_met(1.0, 10.0, False)
    assert target_met(0.9, 10.0, True) and not target_met(1.5, 10.0, True) and not target_met(0.5, 20.0, True)
    assert not target_met(None, 10.0, True)


def test_bench_ga3_evals_only_reports_rates_and_rankings_per_setting():
    res = CliRunner().invoke(bench_ga3, ["--evals-only", "--sample-size", "6", "--ga-projection", "4"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    s = out["settings"]
    proj = "ga_dt_fac=0.1,ga_projection=4"
    assert list(s) == ["reported", "dt_fac=0.05", "ga_dt_fac=0.1", proj]
    assert out["models"] == {"truth": 1, "near_truth": 6, "random": 6}
    assert s["reported"]["speedup"] == 1.0 and s["reported"]["max_abs_loglik_error_near_truth"] == 0.0
    assert all(r["evals_per_cpu_s"] > 0 and r["failed"] == 0 for r in s.values())
    assert 0 < s["ga_dt_fac=0.1"]["max_abs_loglik_error_near_truth"] < 5
    # projected data: another likelihood, compared by ranking only
    assert s[proj]["sample_size"] == 4 and "max_abs_loglik_error_random" not in s[proj]
    assert s[proj]["true_loglik"] > s["reported"]["true_loglik"]
    assert 0.5 < s[proj]["rank_correlation"] <= 1.0


def test_bfgs_first_step_stays_near_the_start_instead_of_a_corner_of_the_bounds(data3):
    # unscaled, L-BFGS-B's first step follows log-likelihood gradients of hundreds into a corner of the
    # bounds (times 5, sizes 0.01 or 100), where one moments evaluation costs 10 to 20 times more
    _path, data = data3
    space = space3("free", fixed={"ns1_1": 1.0, "ns1_2": 1.0, "g1_1": 0, "g2_1": 0, "g2_2": 0})
    rng = np.random.default_rng(3)
    x0 = space.from_unit(space.to_unit(space.vector(true_values())) + rng.normal(0, 0.3, len(space.names)))
    seen: list[list[float]] = []

    def many(xs):
        seen.extend(xs)
        return [evaluate(space, x, data, evc(dt_fac=0.1)) for x in xs]

    r = local_search(space, list(x0), many, method="BFGS", maxiter=1, max_evals=45)  # the first step
    cont = [i for i, p in enumerate(space.free) if not p.discrete]
    z0 = space.to_unit(x0)[cont]
    worst = max(float(np.max(np.abs(space.to_unit(np.asarray(x))[cont] - z0))) for x in seen)
    assert worst < 3.0, worst  # at most a factor e**3 from the start, never a jump across the bounds
    assert r["loglik"] > evaluate(space, list(x0), data, evc(dt_fac=0.1))["loglik"]
