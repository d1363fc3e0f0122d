"""The simulate stage on the forward engine: engine choice, a store bit-identical whatever the worker
count, replicates conditioned on the trajectory, a two-population model, histories from other stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import THREE_DEMES
from test_simulate_stage import arrays, assert_same_store, run_job, write_job

from hpc_popgen.errors import ManifestError
from hpc_popgen.ledger import Ledger
from hpc_popgen.paths import YRI_CEU_FS
from hpc_popgen.pipeline import prepare
from hpc_popgen.store import open_store

# tiny regions; the defaults (engine auto, sweep from standing variation at 1%) take the forward engine
FWD = {"demography": "marth3", "n_haplotypes": 16, "sequence_length": 10_000, "classes": [0, 200],
       "n_per_class": 4, "shard_images": 4, "chunk_images": 4, "image": {"size": [16, 16]}}



@pytest.fixture(scope="module")
def forward_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fwd")
    run_dir, report = run_job(tmp, "fwd", {**FWD, "store": "fwd.zarr"}, workers=1)
    return tmp / "stores" / "fwd.zarr", report


def test_auto_takes_the_forward_engine_for_true_standing_variation(forward_store):
    url, report = forward_store
    st = open_store(url)
    engine = st.meta["engine"]
    assert engine["name"] == "fwdpy11" and engine["scaling"] == 10.0 and engine["population"] == "pop0"
    assert report["stages"][0]["metrics"]["engine"] == engine
    x = arrays(url)
    sel = x["s"] == 200
    # conditioned on the deterministic trajectory's present-day frequency (0.803 for S=200) within 0.05
    assert np.all(np.abs(x["end_freq"][sel] - 0.803) <= 0.05 + 1e-6) and (x["end_freq"][~sel] == 0).all()
    assert np.all(np.abs(x["start_freq"][sel] - 0.01) <= 0.0011)  # the allele's frequency at the onset


def test_forward_store_is_the_same_with_two_workers_and_show_redraws_it(tmp_path, forward_store):
    from hpc_popgen.cli import main

    run_job(tmp_path, "two", {**FWD, "store": "two.zarr"}, workers=2)
    assert_same_store(forward_store[0], tmp_path / "stores" / "two.zarr")
    res = CliRunner().invoke(main, ["show", str(forward_store[0]), "--png", str(tmp_path / "f.png"), "--index", "3"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["remade_equals_stored"] is True


def test_two_population_model_with_migration_and_growth_during_the_sweep(tmp_path):
    (tmp_path / "two.yaml").write_text(THREE_DEMES)
    params = {**FWD, "store": "pops.zarr", "demography": {"demes": str(tmp_path / "two.yaml"), "population": "B"},
              "reference_ne": 1000, "classes": [0, 100], "scaling": 2}
    _, report = run_job(tmp_path, "pops", params)
    st = open_store(tmp_path / "stores" / "pops.zarr")
    assert st.meta["engine"]["name"] == "fwdpy11" and st.meta["engine"]["population"] == "B"
    assert st.meta["demography"]["source"] == "demes:two.yaml" and report["stages"][0]["status"] == "completed"
    assert arrays(tmp_path / "stores" / "pops.zarr")["images"].any()


@pytest.mark.parametrize("change, error", [
    ({"engine": "msprime", "sweep": {"standing": "true_history"}}, r"sweep\.standing: msprime cannot simulate true "
                                                                   r"standing variation"),
    ({"engine": "fwdpy11", "sweep": {"standing": "paper"}}, r"sweep\.standing: 'paper' is msprime's release"),
    ({"engine": "msprime", "sweep": {"standing": "paper", "dominance": 0.2}}, r"sweep\.dominance: msprime's sweeps "
                                                                             r"are additive"),
    ({"demography": {"stdpopsim": "HomSap/OutOfAfrica_3G09", "population": "XYZ"}},
     r"demography\.population: 'XYZ' is not a population of HomSap/OutOfAfrica_3G09"),
    ({"demography": {"stdpopsim": "HomSap/OutOfAfrica_3G09", "population": "CEU"}, "sweep": {"onset": 6000}},
     r"sweep\.onset: 6000 generations ago is older than population 'CEU'"),
    ({"scaling": 500}, r"scaling: "),
    ({"engine": "fwdpy11", "scaling": 1, "classes": [0, 20], "sweep": {"start_frequency": 1e-6}},
     r"sweep\.max_attempts: a de novo sweep of S=20 escapes loss by drift in 0\.2% of attempts at Q=1"),
])
def test_engine_and_history_errors_name_the_key(tmp_path, change, error):
    job = write_job(tmp_path, "bad", {**FWD, "store": "x.zarr", **change})
    with pytest.raises(ManifestError, match=rf"stages\[0\]\.simulate\.{error}"):
        prepare(job)


def test_msprime_model_with_several_populations_is_refused(tmp_path):
    (tmp_path / "two.yaml").write_text(THREE_DEMES)
    job = write_job(tmp_path, "m", {**FWD, "store": "x.zarr", "engine": "msprime", "sweep": {"standing": "paper"},
                                    "demography": {"demes": str(tmp_path / "two.yaml"), "population": "B"}})
    with pytest.raises(ManifestError, match=r"simulate\.demography: msprime cannot simulate a sweep in a model with "
                                            r"several populations \(A, B, C\)"):
        prepare(job)


def _chain(tmp_path, ref: dict, order=("demography", "simulate"), kind="demography"):
    import yaml

    stages = {"demography": {"name": "demography", kind: ({"input": {"afs": str(YRI_CEU_FS), "populations": ["YRI", "CEU"]}}
                                                          if kind == "demography" else {"store": "y.zarr",
                                                                                         "classes": [0],
                                                                                         "n_per_class": 1})},
              "simulate": {"name": "simulate", "simulate": {**FWD, "store": "x.zarr", "demography": ref}}}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump({"name": "chain", "seed": 1, "stages": [stages[k] for k in order]}))
    return path


@pytest.mark.parametrize("ref, order, kind, error", [
    ({"from_stage": "nope", "population": "CEU"}, ("demography", "simulate"), "demography",
     r"demography\.from_stage: no stage named 'nope'"),
    ({"from_stage": "demography", "population": "CEU"}, ("simulate", "demography"), "demography",
     r"demography\.from_stage: demography stage 'demography' runs after this stage"),
    ({"from_stage": "demography", "population": "CEU"}, ("demography", "simulate"), "simulate",
     r"demography\.from_stage: stage 'demography' is a simulate stage"),
    ({"from_stage": "demography", "population": "CHB"}, ("demography", "simulate"), "demography",
     r"demography\.population: 'CHB' is not a population of stage 'demography' \(YRI, CEU\)"),
])
def test_from_stage_references_are_checked_at_validate(tmp_path, ref, order, kind, error):
    with pytest.raises(ManifestError, match=rf"stages\[\d\]\.simulate\.{error}"):
        prepare(_chain(tmp_path, ref, order, kind))


def test_a_valid_from_stage_reference_validates(tmp_path):
    m = prepare(_chain(tmp_path, {"from_stage": "demography", "structure": "best", "population": "CEU"}))
    assert [s.kind for s in m.stages] == ["demography", "simulate"]


def _chain_job(tmp_path, profile) -> dict:
    """A short GA on the YRI-CEU spectrum, then CEU regions simulated under the model it inferred."""
    demo = {"input": {"afs": str(YRI_CEU_FS), "populations": ["YRI", "CEU"]}, "engine": "moments",
            "mu": 2.35e-8, "sequence_length": 4.04e6, "generation_time": 25, "initial_structure": [1, 1],
            "final_structure": [1, 1], "sym_migration": True, "fixed": {"g1_1": 0, "g2_1": 0}, "islands": 2,
            "ga": {"size": 6, "stall_generations": 2, "max_evals": 24}, "plots": False,
            "local_search": {"method": "none"}}
    sim = {**FWD, "store": "@run/chain.zarr", "classes": [0, 300], "n_per_class": 2, "shard_images": 2,
           "chunk_images": 2, "demography": {"from_stage": "demography", "population": "CEU"}}
    return {"name": "chain", "seed": 3, "profile": str(profile), "storage": str(tmp_path),
            "stages": [{"demography": demo}, {"simulate": sim}]}


def _check_chain(run_dir, report) -> None:
    assert [s["status"] for s in report["stages"]] == ["completed", "completed"]
    st = open_store(run_dir / "chain.zarr")
    assert st.meta["engine"]["name"] == "fwdpy11" and st.meta["engine"]["population"] == "CEU"
    assert st.meta["demography"]["source"] == "stage:demography/structure-1-1"
    assert {d["name"] for d in st.meta["demography"]["graph"]["demes"]} == {"YRI", "CEU"}
    assert report["stages"][1]["metrics"]["history"] == "stage:demography/structure-1-1"


def test_chain_demography_then_simulate_under_the_inferred_history(tmp_path):
    import yaml

    from hpc_popgen.pipeline import create_run, execute

    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump({"kind": "local", "cluster": {"n_workers": 2, "threads_per_worker": 1},
                                    "dashboard_address": "127.0.0.1:0"}))
    job = tmp_path / "chain.yaml"
    job.write_text(yaml.safe_dump(_chain_job(tmp_path, prof), sort_keys=False))
    rd = create_run(job, run_dir=tmp_path / "run")
    _check_chain(tmp_path / "run", execute(rd, progress=False))


@pytest.mark.slurm
def test_chain_on_the_real_slurm(tmp_path, slurm_profile, slurm_cleanup):
    """The same chain with every GA evaluation and simulated shard in SLURM worker jobs."""
    import yaml
    from helpers import run_cli

    job = tmp_path / "chain.yaml"
    job.write_text(yaml.safe_dump(_chain_job(tmp_path, slurm_profile), sort_keys=False))
    run_cli("submit", job, "--run-dir", tmp_path / "run", "--no-progress", timeout=600, check=True)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    _check_chain(tmp_path / "run", report)
    done = list(Ledger(tmp_path / "run" / "ledger" / "simulate").done().values())
    assert done and all(rec.get("slurm_job_id") for rec in done)  # shards made inside SLURM jobs


def _two_models(tmp_path):
    """Two demes files with a deme B: the three-deme model and a one-deme B of constant size."""
    (tmp_path / "three.yaml").write_text(THREE_DEMES)
    (tmp_path / "one.yaml").write_text("time_units: generations\ndemes:\n  - name: B\n    epochs: [{start_size: 5000}]\n")
    return [str(tmp_path / "three.yaml"), str(tmp_path / "one.yaml")]


def test_ensemble_of_demes_files_records_each_images_model(tmp_path):
    from hpc_popgen.cli import main

    params = {**FWD, "store": "ens.zarr", "reference_ne": 1000, "classes": [0, 100], "n_per_class": 8,
              "demography": {"ensemble": {"demes": _two_models(tmp_path)}, "population": "B"}}
    _, report = run_job(tmp_path, "ens", params)
    st = open_store(tmp_path / "stores" / "ens.zarr")
    models = st.read("model_index")
    assert set(models.tolist()) == {0, 1}  # 16 draws with weights 1/2, 1/2
    assert st.meta["demography"]["source"] == "ensemble" and st.meta["demography"]["weights"] == [0.5, 0.5]
    assert [m["source"] for m in st.meta["demography"]["models"]] == ["demes:three.yaml", "demes:one.yaml"]
    assert st.meta["engine"]["models"] == 2 and report["stages"][0]["metrics"]["engine"]["models"] == 2
    index = int(np.flatnonzero(models == 1)[0])
    res = CliRunner().invoke(main, ["show", str(tmp_path / "stores" / "ens.zarr"), "--png", str(tmp_path / "e.png"),
                                    "--index", str(index)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["remade_equals_stored"] is True


def test_ensemble_from_a_demography_stage_takes_the_top_models_by_aic(tmp_path):
    import demes

    from hpc_popgen.config import config_with_defaults
    from hpc_popgen.simulate import Plan
    from hpc_popgen.simulate.config import SimulateConfig

    stage = tmp_path / "demography"
    fits = [("structure-1-1", 2210.0), ("structure-2-1", 2150.0), ("structure-2-2", 2151.0)]
    for name, _aic in fits:
        (stage / name).mkdir(parents=True)
        demes.dump(demes.loads(THREE_DEMES), stage / name / "model.demes.yaml")
    (stage / "results.json").write_text(json.dumps({"structures": [
        {"structure": [int(c) for c in name.split("-")[1:]], "loglik": -aic / 2, "aic": aic, "dir": name}
        for name, aic in fits]}))

    def plan(weights):
        cfg = config_with_defaults(SimulateConfig, "stages/simulate.schema.json", {
            **FWD, "store": "x", "reference_ne": 1000, "classes": [0, 100],
            "demography": {"ensemble": {"from_stage": "demography", "top": 2, "weights": weights},
                           "population": "B"}})
        return Plan.from_config(cfg, 11, tmp_path, {"demography": stage})

    equal, akaike = plan("equal"), plan("akaike")
    assert [m["source"] for m in equal.history["models"]] == ["stage:demography/structure-2-1",
                                                               "stage:demography/structure-2-2"]
    assert equal.weights == (0.5, 0.5)
    w = 1 / (1 + np.exp(-0.5))  # dAIC = 1
    assert akaike.weights == pytest.approx((w, 1 - w))
    draws = np.array([akaike.model_of(akaike.replicate_seed(i)) for i in range(4000)])
    assert abs((draws == 0).mean() - w) < 0.03  # drawn with the Akaike weights


@pytest.mark.parametrize("change, error", [
    ({"ensemble": {"demes": ["a.yaml"], "weights": "akaike"}, "population": "B"},
     r"demography\.ensemble\.weights: akaike weights need each model's AIC"),
    ({"ensemble": {"demes": ["a.yaml"], "from_stage": "demography"}, "population": "B"},
     r"demography\.ensemble: give either from_stage or demes"),
    ({"ensemble": {"from_stage": "nope"}, "population": "B"}, r"demography\.ensemble\.from_stage: no stage named"),
])
def test_ensemble_errors_name_the_key(tmp_path, change, error):
    job = write_job(tmp_path, "bad", {**FWD, "store": "x.zarr", "demography": change})
    with pytest.raises(ManifestError, match=rf"stages\[0\]\.simulate\.{error}"):
        prepare(job)


def test_ensemble_on_msprime_is_refused(tmp_path):
    params = {**FWD, "store": "x.zarr", "engine": "msprime", "sweep": {"standing": "paper"},
              "demography": {"ensemble": {"demes": _two_models(tmp_path)}, "population": "B"}}
    with pytest.raises(ManifestError, match=r"simulate\.engine: an ensemble of histories runs on the forward engine"):
        prepare(write_job(tmp_path, "m", params))
