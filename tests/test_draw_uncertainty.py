"""``simulate.demography: {from_stage, draw: uncertainty}``: histories drawn from the inferred model's
Fisher-information normal approximation, truncated to the bounds, seeded, recorded per image, redrawn by
``hpcpop show``.

One real chain (a tiny GA on a one-population spectrum with its FIM, then a tiny msprime simulate stage,
about 15 s on 2 busy cores) is shared by the module; the statistical checks draw from its real covariance.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import demes
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from helpers import THREE_DEMES

from hpc_popgen.demography.draws import draw_histories, normal_fit, truncated_normal
from hpc_popgen.errors import ManifestError, ParamError

DATA = Path(__file__).parent / "data" / "demography"
MU, LENGTH = 1e-8, 1e6
K = 5  # histories drawn in the chain
DEMOGRAPHY = {"input": {"afs": "two_epoch_1pop.fs"}, "initial_structure": [1], "final_structure": [1],
              "mu": MU, "sequence_length": LENGTH, "generation_time": 25, "islands": 1, "deterministic": True,
              "ga": {"size": 6, "init_factor": 2, "stall_generations": 2, "max_evals": 12}, "plots": False,
              "local_search": {"method": "none"}}
# msprime stays exact for every draw: one population, paper's standing model, an onset long after the size change
SIMULATE = {"store": "@run/drawn.zarr", "n_haplotypes": 16, "sequence_length": 10_000, "classes": [0, 200],
            "n_per_class": 6, "shard_images": 4, "chunk_images": 4, "image": {"size": [16, 16]},
            "sweep": {"standing": "paper", "onset": 50},
            "demography": {"from_stage": "demography", "draw": "uncertainty", "draws": K, "population": "A"}}


def _job(tmp: Path, demography: dict | None = None, simulate: dict | None = None) -> Path:
    """The two-stage manifest (demography, then simulate under drawn histories) in ``tmp``."""
    profile = {"kind": "local", "cluster": {"n_workers": 1, "threads_per_worker": 1, "processes": False},
               "dashboard_address": "127.0.0.1:0"}  # threads: no worker process to start
    (tmp / "p.yaml").write_text(yaml.safe_dump(profile))
    (tmp / "two_epoch_1pop.fs").write_bytes((DATA / "two_epoch_1pop.fs").read_bytes())
    job = {"name": "draw", "seed": 5, "profile": "p.yaml", "storage": str(tmp),
           "stages": [{"demography": demography or DEMOGRAPHY}, {"simulate": simulate or SIMULATE}]}
    (tmp / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    return tmp / "job.yaml"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from hpc_popgen.pipeline import create_run, execute

    tmp = tmp_path_factory.mktemp("draw")
    rd = create_run(_job(tmp), run_dir=tmp / "run")
    report = execute(rd, progress=False)
    assert report["status"] == "completed", report
    return tmp / "run", report


def test_each_image_records_its_drawn_history_and_show_redraws_it(chain, tmp_path):
    from hpc_popgen.cli import main
    from hpc_popgen.store import open_store

    run, report = chain
    st = open_store(run / "drawn.zarr")
    rec = st.meta["demography"]
    assert rec["source"] == "draws:stage:demography/structure-1" and rec["draw"] == "uncertainty"
    assert rec["names"] == ["t1", "nu1_1", "theta"] and len(rec["vectors"]) == len(rec["models"]) == K
    assert len({tuple(v) for v in rec["vectors"]}) == K  # five different histories
    assert st.meta["engine"]["name"] == "msprime" and st.meta["engine"]["models"] == K  # not forced forward
    assert report["stages"][1]["metrics"]["history"] == rec["source"]
    index = st.read("model_index")
    assert index.min() >= 0 and index.max() < K and len(set(index.tolist())) > 1
    # each drawn model's epochs are its vector's: present size nu1_1 * Nanc, Nanc = theta / (4 mu L)
    for v, m in zip(rec["vectors"], st.meta["models"], strict=True):
        assert m["epochs"][0]["size"] == pytest.approx(v[1] * v[2] / (4 * MU * LENGTH), rel=1e-9)
    i = int(np.flatnonzero(index > 0)[0])
    res = CliRunner().invoke(main, ["show", str(run / "drawn.zarr"), "--png", str(tmp_path / "d.png"),
                                    "--index", str(i)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["remade_equals_stored"] is True and info["model_index"] == int(index[i])
    assert info["history"] == dict(zip(rec["names"], rec["vectors"][int(index[i])], strict=True))


def test_draws_are_seeded_and_lie_within_the_bounds(chain):
    stage = chain[0] / "demography"
    a, b = (draw_histories(stage, "structure-1", 40, seed=11) for _ in range(2))
    assert a["vectors"] == b["vectors"] and a["tried"] == b["tried"]
    assert draw_histories(stage, "structure-1", 40, seed=12)["vectors"] != a["vectors"]
    fit = normal_fit(stage, "structure-1")
    v = np.array(a["vectors"])
    assert fit.inside(v).all() and (v[:, -1] > 0).all()
    assert list(fit.lower[:2]) == [1e-3, 1e-2] and list(fit.upper[:2]) == [5.0, 100.0]  # t and nu bounds
    for vec, g in zip(v, a["graphs"], strict=True):  # graphs in generations, built from their vectors
        nanc = vec[2] / (4 * MU * LENGTH)
        assert g.time_units == "generations"
        assert g["A"].epochs[0].end_time == pytest.approx(vec[0] * 2 * nanc)
        assert g["A"].epochs[-1].end_size == pytest.approx(vec[1] * nanc)


def test_draws_spread_like_the_covariance_and_truncate_at_the_bounds(chain):
    fit = normal_fit(chain[0] / "demography", "structure-1")
    se = np.sqrt(np.diag(fit.cov))
    assert ((fit.mean - fit.lower) / se > 3).all()  # bounds far away: truncation changes almost nothing
    n = 4000
    v, tried = truncated_normal(fit, n, seed=3)
    assert tried < 1.02 * n + 256
    assert np.all(np.abs(v.mean(axis=0) - fit.mean) < 4 * se / np.sqrt(n))
    assert np.allclose(v.std(axis=0) / se, 1.0, atol=0.06)
    corr = fit.cov / np.outer(se, se)
    assert np.allclose(np.corrcoef(v.T), corr, atol=0.06)
    assert abs(corr[0, 1]) > 0.3  # a real correlation to reproduce, not the identity
    # a bound at the mean of t1 keeps the upper half: its mean moves up by se * sqrt(2 / pi)
    cut = dataclasses.replace(fit, lower=np.where(np.arange(len(se)) == 0, fit.mean, fit.lower))
    w, tried = truncated_normal(cut, n, seed=4)
    assert (w[:, 0] >= fit.mean[0]).all() and 1.8 * n < tried < 2.2 * n + 256
    assert w[:, 0].mean() == pytest.approx(fit.mean[0] + se[0] * np.sqrt(2 / np.pi), rel=0.03)


def test_an_impossible_draw_is_refused_in_one_line(chain):
    fit = normal_fit(chain[0] / "demography", "structure-1")
    far = dataclasses.replace(fit, lower=fit.mean + 10 * np.sqrt(np.diag(fit.cov)))
    with pytest.raises(ParamError, match=r"^draw: only 0 of .* draws .* lie within the parameter bounds: no draw of "
                                         r"3 histories is possible"):
        truncated_normal(far, 3, seed=1)


def test_validate_refuses_a_draw_from_a_stage_without_uncertainty(tmp_path):
    from hpc_popgen.pipeline import prepare

    with pytest.raises(ManifestError, match=r"stages\[1\]\.simulate\.demography\.draw: demography stage 'demography' "
                                            r"has uncertainty: none, so there is no uncertainty to draw"):
        prepare(_job(tmp_path, {**DEMOGRAPHY, "uncertainty": "none"}))
    assert prepare(_job(tmp_path)).stages[1].config.demography["structure"] == "best"  # the default, filled


def test_results_without_a_covariance_are_refused_naming_why(tmp_path):
    stage = tmp_path / "demography"
    (stage / "structure-1").mkdir(parents=True)
    (stage / "results.json").write_text(json.dumps({"structures": [{"structure": [1], "dir": "structure-1",
                                                                    "aic": 1.0, "loglik": 0.0}]}))
    with pytest.raises(ParamError, match=r"^draw: .*structure-1 has no uncertainty to draw from"):
        normal_fit(stage, "structure-1")


def _plan(engine: str, graph):
    from hpc_popgen.config import config_with_defaults
    from hpc_popgen.simulate import Plan
    from hpc_popgen.simulate.config import SimulateConfig

    cfg = config_with_defaults(SimulateConfig, "stages/simulate.schema.json", {
        **SIMULATE, "engine": engine, "store": "x", "classes": [0, 100], "sweep": {"onset": 50},
        "demography": {"from_stage": "demography", "draw": "uncertainty", "population": "B"}})
    drawn = {"graphs": [graph, graph], "names": ["x"], "vectors": [[1.0], [2.0]], "source": "stage:d/structure-1-1",
             "tried": 2, "method": "FIM"}
    return Plan.from_config(cfg, 1, ".", None, drawn)


def test_draws_of_several_populations_take_the_forward_engine_and_msprime_is_refused():
    graph = demes.loads(THREE_DEMES)
    plan = _plan("auto", graph)
    assert plan.engine == "fwdpy11" and len(plan.ensemble) == 2 and plan.models is None
    assert plan.history["source"] == "draws:stage:d/structure-1-1" and plan.weights == (0.5, 0.5)
    picks = {plan.model_of(plan.replicate_seed(i)) for i in range(50)}
    assert picks == {0, 1}
    with pytest.raises(ParamError, match=r"^demography: drawn history 0: msprime cannot run a model with several "
                                         r"populations \(A, B, C\): use engine fwdpy11"):
        _plan("msprime", graph)
