"""Demography: AFS I/O, engines (published YRI-CEU likelihoods), GA pieces, code generation."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

from hpc_popgen.config import config_with_defaults
from hpc_popgen.demography import outputs
from hpc_popgen.demography.config import SCHEMA, DemographyConfig
from hpc_popgen.demography.engine import WORST, EvalConfig, default_pts, evaluate, expected_fs
from hpc_popgen.demography.ga import Island, jumps, local_search
from hpc_popgen.demography.model import ModelSpace
from hpc_popgen.demography.search import FOLLOW_SEARCHES, Hooks, Search
from hpc_popgen.errors import InputDataError, ParamError
from hpc_popgen.paths import YRI_CEU_FS as YRI_CEU  # shipped with the package
from hpc_popgen.readers.spectra import fs_from_vcf, load_fs

DATA = Path(__file__).parent / "data" / "demography"
DEFAULTS = config_with_defaults(DemographyConfig, SCHEMA, {"input": {"afs": "x.fs"}})  # the schema's defaults
# Gutenkunst et al. 2009 (nu1F, nu2B, nu2F, m, Tp, T) in the GADMA space: structure (1, 1),
# pop 1 sudden, pop 2 exponential from (1 - s1) * nu1F, symmetric migration.
PUBLISHED = {"t1": 0.355, "nu1_1": 1.881, "g1_1": 0, "s1": 1 - 0.0710 / 1.881, "t2": 0.111, "nu2_1": 1.881,
             "g2_1": 0, "nu2_2": 1.845, "g2_2": 2, "m2_12": 0.911}


def space_of(structure: tuple[int, ...], **fields) -> ModelSpace:
    """The model space of ``structure`` with the stage's default settings, ``fields`` changed."""
    return dataclasses.replace(DEFAULTS.space(structure), **fields)


def evc(**fields) -> EvalConfig:
    """The stage's default evaluation settings (a 20-sample spectrum's dadi grids), ``fields`` changed."""
    return dataclasses.replace(EvalConfig.from_config(DEFAULTS, (20,)), **fields)


@pytest.fixture(scope="module")
def yri_ceu():
    if not YRI_CEU.exists():
        pytest.fail(f"{YRI_CEU} is missing")
    return load_fs(YRI_CEU, ["YRI", "CEU"])


@pytest.mark.parametrize(("engine", "published"), [("moments", -1066.82), ("dadi", -1066.35)])
def test_published_yri_ceu_loglik_moments_and_dadi(yri_ceu, engine, published):
    space = space_of((1, 1), sym_migration=True)
    x = space.vector(PUBLISHED)
    assert default_pts(yri_ceu.sample_sizes) == (40, 50, 60)
    r = evaluate(space, x, yri_ceu, evc(engine=engine, pts=default_pts(yri_ceu.sample_sizes)))
    assert abs(r["loglik"] - published) < 0.01
    if engine == "dadi":
        assert abs(r["theta"] - 2749) < 5


@pytest.mark.parametrize("engine", ["moments", "dadi"])
def test_generated_code_reproduces_loglik(tmp_path, yri_ceu, engine):
    space = space_of((1, 1), sym_migration=False)
    values = dict(PUBLISHED, m2_21=0.5, g1_1=1)
    big, values = space.increase(0, values, 0.4)  # (2, 1), linear first interval
    values["g2_1"] = 2
    x = big.vector(values)
    cfg = evc(engine=engine, pts=(40, 50, 60))
    want = evaluate(big, x, yri_ceu, cfg)["loglik"]
    code = (outputs.moments_code(big, big.full(x), str(YRI_CEU), cfg) if engine == "moments"
            else outputs.dadi_code(big, big.full(x), str(YRI_CEU), cfg, cfg.pts))
    script = tmp_path / f"model_{engine}.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    got = float(out.stdout.split("log-likelihood:")[1].split()[0])
    assert math.isfinite(want) and want > -1200
    assert abs(got - want) < 1e-6, (engine, got, want)


@pytest.mark.parametrize(("engine", "frac"), [("moments", 0.3), ("moments", 0.5), ("dadi", 0.5)])
def test_structure_increase_keeps_loglik(engine, frac):
    data = load_fs(DATA / "two_epoch_1pop.fs")
    space = space_of((2,))
    values = {"t1": 0.5, "nu1_1": 2.0, "g1_1": 2, "t2": 0.2, "nu2_1": 0.3, "g2_1": 1}
    cfg = evc(engine=engine, pts=(30, 40, 50))
    before = evaluate(space, space.vector(values), data, cfg)["loglik"]
    big, new = space.increase(0, values, frac)
    assert big.structure == (3,)
    after = evaluate(big, big.vector(new), data, cfg)["loglik"]
    assert abs(after - before) < 0.05


def test_failed_model_gets_worst_fitness():
    import moments

    from hpc_popgen.demography.engine import check_model

    data = load_fs(DATA / "two_epoch_1pop.fs")
    space = space_of((1,))
    r = evaluate(space, [float("nan"), 1.0, 0.0], data, evc())
    assert r["loglik"] == WORST and "t1" in r["error"]
    # an engine that raises (dadi has no 4-population integration) is a bad individual, not a crash
    four = space_of((1, 1, 1, 1))
    data4 = moments.Spectrum(np.ones((3, 3, 3, 3)))
    x4 = [{"t": 0.1, "nu": 1.0, "s": 0.5, "g": 0.0, "m": 1.0}[next(k for k in ("nu", "t", "s", "g", "m") if n.startswith(k))]
          for n in four.names]
    r = evaluate(four, x4, data4, evc(engine="dadi", pts=(10, 12, 14)))
    assert r["loglik"] == WORST and "at most 3" in r["error"]
    # a founder far below the size bound is outside the model space (and would be slow): worst fitness
    sp2 = space_of((1, 1), dynamics=("sudden",), migration=False)
    tiny = evaluate(sp2, sp2.vector({"t1": 0.1, "nu1_1": 1.0, "s1": 0.999, "t2": 0.1, "nu2_1": 1.0, "nu2_2": 1.0}),
                    load_fs(DATA / "split_2pop.fs"), evc())
    assert tiny["loglik"] == WORST and "below the bound" in tiny["error"]
    assert "negative" in check_model(moments.Spectrum(np.array([0.0, 5.0, -1.0, 0.0])))
    assert "NaN" in check_model(moments.Spectrum(np.array([0.0, np.nan, 1.0, 0.0])))
    ok = evaluate(space, [0.2, 0.3, 0.0], data, evc())
    assert ok["error"] is None and ok["loglik"] > WORST


def test_folded_and_masked_spectrum_respected(tmp_path):
    data = load_fs(DATA / "two_epoch_1pop.fs")
    folded = data.fold()
    folded.mask[2] = True
    path = tmp_path / "folded.fs"
    folded.to_file(str(path))
    back = load_fs(path)
    assert back.folded and bool(back.mask[2])
    space = space_of((1,))
    x = [0.2, 0.3, 0.0]
    model = expected_fs(space, space.full(x), back, evc())
    assert model.folded and bool(model.mask[2])
    ll_masked = evaluate(space, x, back, evc())["loglik"]
    folded.mask[2] = False
    ll_full = evaluate(space, x, folded, evc())["loglik"]
    assert ll_masked != ll_full


def test_bad_afs_file_is_one_clear_error(tmp_path):
    with pytest.raises(InputDataError, match="nope.fs: AFS file not found"):
        load_fs(tmp_path / "nope.fs")
    bad = tmp_path / "bad.fs"
    bad.write_text("this is not a spectrum\n")
    with pytest.raises(InputDataError, match="bad.fs"):
        load_fs(bad)


def _write_vcf(path: Path, n_samples: int, n_sites: int, rng: np.random.Generator) -> list[str]:
    samples = [f"s{i}" for i in range(n_samples)]
    lines = ["##fileformat=VCFv4.2", "##contig=<ID=1>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples)]
    for pos in range(1, n_sites + 1):
        p = rng.uniform(0.05, 0.95)
        gts = ["|".join(str(int(a)) for a in rng.random(2) < p) for _ in samples]
        lines.append(f"1\t{pos * 100}\t.\tA\tG\t.\tPASS\t.\tGT\t" + "\t".join(gts))
    path.write_text("\n".join(lines) + "\n")
    return samples


@pytest.fixture
def vcf(tmp_path) -> tuple[Path, Path]:
    """A VCF of 8 samples (200 sites) and its popmap: 4 samples in A, 4 in B."""
    samples = _write_vcf(tmp_path / "x.vcf", 8, 200, np.random.default_rng(3))
    (tmp_path / "pops.txt").write_text("".join(f"{s}\t{'A' if i < 4 else 'B'}\n" for i, s in enumerate(samples)))
    return tmp_path / "x.vcf", tmp_path / "pops.txt"


def test_vcf_with_popmap_projects_to_sample_sizes(vcf):
    fs = fs_from_vcf(*vcf, ["A", "B"], [6, 4])
    assert fs.sample_sizes.tolist() == [6, 4]
    assert fs.folded  # unpolarized
    assert 50 < fs.S() <= 200


@pytest.mark.parametrize(("pops", "projections", "match"), [(["A", "B"], [10, 4], "cannot project to 10"),
                                                             (["A", "C"], [6, 4], "population")])
def test_vcf_bad_projection_or_population_is_one_clear_error(vcf, pops, projections, match):
    with pytest.raises(InputDataError, match=match):
        fs_from_vcf(*vcf, pops, projections)


def test_island_improves_and_checkpoint_continues_identically():
    data = load_fs(DATA / "two_epoch_1pop.fs")
    space = space_of((1,), dynamics=("sudden",))
    cfg = evc()
    ga = dataclasses.replace(DEFAULTS.ga, size=8, stall_generations=50, max_evals=10_000)
    isl = Island(space, ga, np.random.SeedSequence(11))
    for _ in range(4):
        isl.tell([evaluate(space, x, data, cfg)["loglik"] for x in isl.ask()])
    first_best = isl.best_history[1][1]
    snap = isl.to_dict()
    twin = Island.from_dict(json.loads(json.dumps(snap)), space, ga)
    for _ in range(3):
        a, b = isl.ask(), twin.ask()
        assert a == b
        fa = [evaluate(space, x, data, cfg)["loglik"] for x in a]
        isl.tell(fa)
        twin.tell(fa)
    assert isl.to_dict() == twin.to_dict()
    assert isl.best_loglik >= first_best
    # local search from the GA's best reaches (near) the truth: nu 0.3 for 0.2 time units
    res = local_search(space, isl.best[0], lambda xs: [evaluate(space, x, data, cfg) for x in xs], method="BFGS",
                       maxiter=100)
    assert res["loglik"] >= isl.best_loglik
    values = space.full(res["x"])
    assert 0.15 < values["nu1_1"] < 0.6 and 0.05 < values["t1"] < 0.6
    truth = evaluate(space, [0.2, 0.3], data, cfg)["loglik"]
    assert res["loglik"] >= truth - 0.5


def test_bounds_and_fixed_from_manifest_names():
    space = space_of((1, 1), sym_migration=True, fixed={"g1_1": 0, "m2_12": 0.0}, bounds={"t2": (0.01, 0.5), "nu": (0.1, 10)})
    assert "m2_12" not in space.names and "g1_1" not in space.names
    t2 = next(p for p in space.params if p.name == "t2")
    nu = next(p for p in space.params if p.name == "nu2_2")
    assert (t2.lower, t2.upper) == (0.01, 0.5) and (nu.lower, nu.upper) == (0.1, 10)
    with pytest.raises(KeyError):
        space_of((1, 1), fixed={"m9_12": 0})


def test_poisson_likelihood_and_split_age_limit():
    data = load_fs(DATA / "two_epoch_1pop.fs")
    space = space_of((1,), dynamics=("sudden",), poisson=True)
    assert space.names == ["t1", "nu1_1", "Nanc"]
    cfg = evc(likelihood="poisson", mu=1e-8, length=1e6)
    multi = evaluate(space, [0.2, 0.3, 1.0], data, evc())
    # theta = 4 Nanc mu L: at the multinomial optimum's theta the Poisson fit is best
    nanc = multi["theta"] / (4 * 1e-8 * 1e6)
    good = evaluate(space, [0.2, 0.3, nanc], data, cfg)
    bad = evaluate(space, [0.2, 0.3, nanc * 3], data, cfg)
    assert good["error"] is None and good["loglik"] > bad["loglik"]
    assert abs(good["theta"] - multi["theta"]) < 1e-6 * multi["theta"]
    # a split older than max_split_years gets the worst fitness
    two = load_fs(DATA / "split_2pop.fs")
    sp2 = space_of((1, 1), dynamics=("sudden",), migration=False)
    x = sp2.vector({"t1": 0.1, "nu1_1": 1.0, "s1": 0.5, "t2": 0.1, "nu2_1": 1.5, "nu2_2": 0.4})
    free = evaluate(sp2, x, two, evc(mu=1e-8, length=1e6, generation_time=25))
    years = 0.1 * 2 * free["theta"] / (4 * 1e-8 * 1e6) * 25
    capped = evaluate(sp2, x, two, evc(mu=1e-8, length=1e6, generation_time=25, max_split_years=years / 2))
    assert free["error"] is None and capped["loglik"] == WORST and "max_split_years" in capped["error"]
    # with the Poisson likelihood Nanc is a parameter: the split age is known, and refused, before integrating
    sp2p = space_of((1, 1), dynamics=("sudden",), migration=False, poisson=True)
    xp = list(x) + [free["theta"] / (4 * 1e-8 * 1e6)]
    pois = dict(mu=1e-8, length=1e6, generation_time=25, likelihood="poisson")
    assert evaluate(sp2p, xp, two, evc(**pois))["error"] is None
    early = evaluate(sp2p, xp, two, evc(**pois, max_split_years=years / 2))
    assert early["loglik"] == WORST and "max_split_years" in early["error"] and early["theta"] is None


class InProcess:
    """The search's Evaluations interface without Dask: evaluated here, in submission order."""

    def __init__(self, data, ev: EvalConfig):
        self.data, self.ev = data, ev
        self.queue: deque = deque()
        self.tokens: list[str] = []
        self.settings: dict[str, EvalConfig] = {}  # token -> the settings it was evaluated with

    def submit(self, token: str, space: ModelSpace, x: list[float], ev: EvalConfig, priority: int = 0) -> None:
        self.tokens.append(token)
        self.settings[token] = ev
        self.queue.append((token, space, x, ev))

    def completed(self):
        while self.queue:
            token, space, x, ev = self.queue.popleft()
            yield token, evaluate(space, x, self.data, ev)


def _search(ck: Path, units: list[str], **over) -> Search:
    cfg = config_with_defaults(DemographyConfig, SCHEMA, {
        "input": {"afs": "x.fs"}, "initial_structure": [1], "final_structure": [2], "dynamics": ["sudden"],
        "islands": 2, "migrate_every": 2, "deterministic": True,
        "ga": {"size": 6, "init_factor": 2, "stall_generations": 3, "max_evals": 30},
        "local_search": {"method": "BFGS", "starts": 1, "maxiter": 3, "max_evals": 20}, **over})
    data = load_fs(DATA / "two_epoch_1pop.fs")
    ev = EvalConfig.from_config(cfg, data.sample_sizes)
    hooks = Hooks(record=lambda unit, **_fields: units.append(unit), report=lambda **_metrics: None,
                  progress=lambda total, **kw: tqdm(total=total, disable=True))
    return Search(cfg, ev, data, InProcess(data, ev), ck, seed=7, hooks=hooks, label="demography")


def test_search_runs_without_dask_and_resumes_from_checkpoints(tmp_path):
    units: list[str] = []
    first = _search(tmp_path / "a", units)
    state = first.run()
    assert [r["structure"] for _k, r in sorted(state["results"].items())] == [[1], [2]]
    assert first.evals.tokens[0] == "island-00-eval-00001-000"
    assert any(t.startswith("local-s0-00-eval-") for t in first.evals.tokens)
    assert {"island-00-gen-00001", "island-01-gen-00001", "local-s0-00", "local-s1-00"} <= set(units)
    # the second structure lost (state and checkpoints): structure 0 comes back from its checkpoints
    # without an island evaluation, structure 1 is searched again exactly as the first time
    (tmp_path / "a" / "state.json").unlink()
    for f in (tmp_path / "a" / "s1").iterdir():
        f.unlink()
    again = _search(tmp_path / "a", [])
    resumed = again.run()
    s0_generations = state["results"]["0"]["generation"]
    islands = [t for t in again.evals.tokens if t.startswith("island-")]
    assert islands and all(int(t.split("-")[3]) > s0_generations for t in islands)
    assert not any(t.startswith("local-s0-") for t in again.evals.tokens)
    assert resumed["results"] == state["results"]
    # everything done: a rerun evaluates nothing
    third = _search(tmp_path / "a", [])
    third.run()
    assert third.evals.tokens == []


def test_cheap_settings_report_the_best_models_whole_data_loglik_as_they_go(tmp_path, monkeypatch, caplog):
    """Issue 29: while the islands (then a local search's first phase) score a projection, the best model
    so far is scored on the whole data (one check in flight, one due every WHOLE_DATA_SECONDS: here at
    once), logged and reported, and the search's results are those of a search without the checks."""
    import hpc_popgen.demography.search as search_module

    monkeypatch.setattr(search_module, "WHOLE_DATA_SECONDS", 0.0)
    reports: list[dict] = []
    search = _search(tmp_path / "a", [], ga_dt_fac=0.1, ga_projection=[6])
    search.hooks = dataclasses.replace(search.hooks, report=lambda **m: reports.append(m))
    with caplog.at_level("INFO", logger="hpc_popgen.demography.search"):
        state = search.run()
    whole = [t for t in search.evals.tokens if t.startswith("whole-")]
    assert whole[0] == "whole-s0-0000" and any(t.startswith("whole-s1-") for t in whole)
    assert {search.evals.settings[t] for t in whole} == {search.ev}  # the stage's settings: the whole data
    checks = [m["whole_data"] for m in reports if "whole_data" in m]
    assert len(checks) >= len(whole) - 1 and [c["checks"] for c in checks][:2] == [1, 2]  # the last may be in flight
    best = [c["best_loglik"] for c in checks]
    assert all(b is not None and b > WORST for b in best) and best == sorted(best)  # the best so far
    assert best[-1] <= max(r["loglik"] for r in state["results"].values()) + 1e-6  # the local search only adds
    messages = [r.getMessage() for r in caplog.records if "on the whole data (" in r.getMessage()]
    assert any("islands" in m for m in messages) and any("local search" in m for m in messages), messages
    monkeypatch.setattr(search_module, "WHOLE_DATA_SECONDS", math.inf)
    plain = _search(tmp_path / "b", [], ga_dt_fac=0.1, ga_projection=[6])
    assert plain.run()["results"] == state["results"]
    assert not any(t.startswith("whole-") for t in plain.evals.tokens)


def test_islands_evaluate_at_their_settings_and_every_reported_loglik_at_the_stage_settings(tmp_path):
    plain = _search(tmp_path / "plain", [])
    assert plain.ev_ga is plain.ev  # no ga_dt_fac, no ga_projection: the islands' settings are the stage's
    search = _search(tmp_path / "a", [], ga_dt_fac=0.1, ga_projection=[6])
    state = search.run()
    by_token = search.evals.settings
    cheap = {ev for t, ev in by_token.items() if t.startswith("island-") or "-eval-ga-" in t}
    jumped = {ev for t, ev in by_token.items() if "-eval-jump" in t}  # on the whole data at the islands' step
    others = {ev for t, ev in by_token.items() if not (t.startswith("island-") or "-eval-ga-" in t
                                                       or "-eval-jump" in t)}
    assert cheap == {dataclasses.replace(search.ev, dt_fac=0.1, projection=(6,))}
    assert jumped == {dataclasses.replace(search.ev, dt_fac=0.1)}
    assert others == {search.ev} and search.ev.projection is None
    for si in ("0", "1"):  # rescored starts; each local search at the islands' settings, then at the stage's
        assert any(t.startswith(f"rescore-s{si}-") for t in by_token)
        assert any(t.startswith(f"local-s{si}-00-eval-ga-") for t in by_token)
        assert any(t.startswith(f"local-s{si}-00-eval-0") for t in by_token)
        assert state["results"][si]["local_search"][0]["evals_ga_settings"] > 0
    off = _search(tmp_path / "d", [], ga_projection=[6], local_search={"method": "BFGS", "starts": 1, "maxiter": 3,
                                                                        "max_evals": 20, "ga_settings_first": False})
    off.run()
    assert any(t.startswith("local-s0-") for t in off.evals.tokens)
    assert not any("-eval-ga-" in t for t in off.evals.tokens)
    data = load_fs(DATA / "two_epoch_1pop.fs")
    for r in state["results"].values():
        space = ModelSpace.from_dict(r["space"])
        assert r["loglik"] == evaluate(space, r["x"], data, search.ev)["loglik"]
        assert r["ga_best_loglik"] != r["loglik"]  # the islands' own log-likelihoods (6 samples)
    # a target the islands' (projected) log-likelihoods pass but no model reaches on the data is not reached
    full = max(r["loglik"] for r in state["results"].values())
    ga = max(r["ga_best_loglik"] for r in state["results"].values())
    assert ga > full + 1
    again = _search(tmp_path / "c", [], ga_dt_fac=0.1, ga_projection=[6], target_loglik=(ga + full) / 2)
    assert again.run()["seconds_to_target"] is None
    assert not any("target" in r["stop_reasons"] for r in again.state["results"].values())
    with pytest.raises(ParamError, match=r"ga_projection: \[13\]"):
        _search(tmp_path / "b", [], ga_projection=[13])


def _jump_config(rounds: int) -> DemographyConfig:
    return config_with_defaults(DemographyConfig, SCHEMA, {
        "input": {"afs": "x.fs"}, "initial_structure": [1, 1], "final_structure": [1, 1],
        "sym_migration": True, "dt_fac": 0.2, "fixed": {"g1_1": 0, "g2_1": 0},
        "local_search": {"method": "BFGS", "starts": 1, "maxiter": 10, "max_evals": 60,
                         "jump_rounds": rounds, "jump_evals": 60}})


def _jump_search(ck: Path, rounds: int, data) -> Search:
    """A YRI-CEU search with short local searches and ``rounds`` jump rounds; only CEU's growth after the
    split has a choice of dynamics (YRI's are fixed sudden), so a round tries two jumps, not six."""
    cfg = _jump_config(rounds)
    ev = EvalConfig.from_config(cfg, data.sample_sizes)
    hooks = Hooks(record=lambda unit, **_fields: None, report=lambda **_metrics: None,
                  progress=lambda total, **kw: tqdm(total=total, disable=True))
    return Search(cfg, ev, data, InProcess(data, ev), ck, seed=7, hooks=hooks, label="demography")


def test_local_search_jumps_to_other_dynamics_and_revives_collapsed_intervals(tmp_path, yri_ceu):
    """CEU's exponential growth given as linear: the one-gene changes find the exponential model, whose
    local optimum is far above the linear one's; with jump_rounds 0 the search keeps linear."""
    def search(ck: Path, rounds: int) -> Search:
        return _jump_search(ck, rounds, yri_ceu)

    full = space_of((1, 1), sym_migration=True)
    g = full.names.index("g2_2")
    start = [float(v) for v in full.vector(dict(PUBLISHED, g2_2=1))]
    assert jumps(full, start)[2 * 2:] == [start[:g] + [0.0] + start[g + 1:], start[:g] + [2.0] + start[g + 1:]]
    t1 = full.names.index("t1")  # an interval shrunk to nothing is revived at the others' mean duration
    collapsed = start[:t1] + [0.002] + start[t1 + 1:]
    assert jumps(full, collapsed)[-1] == start[:t1] + [PUBLISHED["t2"]] + start[t1 + 1:]
    space = _jump_config(1).space((1, 1))  # the searches': YRI's dynamics fixed
    g = space.names.index("g2_2")
    start = [float(v) for v in space.vector(dict(PUBLISHED, g2_2=1))]
    assert [y[g] for y in jumps(space, start)] == [0.0, 2.0]
    kept = search(tmp_path / "kept", 0)
    (fixed,) = kept._local(0, space, [start])
    assert fixed["x"][g] == 1.0 and not fixed["jumped"]
    assert not any("-jump" in t for t in kept.evals.tokens)
    changed = search(tmp_path / "changed", 1)
    (best,) = changed._local(0, space, [start])
    assert best["x"][g] == 2.0 and best["jumped"]
    assert best["loglik"] > fixed["loglik"] + 5
    assert any(t.startswith("local-s0-00-eval-jump0-") for t in changed.evals.tokens)


def test_best_jump_is_followed_while_it_gains_faster_than_it_lags(tmp_path, yri_ceu):
    """A jump's short search starts far from its optimum: while it gained more than it lags behind the
    best, it is searched on (at most FOLLOW_SEARCHES times); converged or slow jumps are not."""
    search = _jump_search(tmp_path, 1, yri_ceu)
    calls: list[str] = []

    def gains(step: float, closing: float = 0.0):  # gains step, or closing x the lag behind -5
        def short(x: list[float], ev, prefix: str, max_evals: int) -> dict:
            calls.append(prefix)
            ll = x[0] + (step or closing * (-5.0 - x[0]))
            return {"x": [ll], "loglik": ll, "start_loglik": x[0], "stop": "max_evals"}
        return short

    def at(ll: float, start: float, stop: str = "max_evals") -> dict:
        return {"x": [ll], "loglik": ll, "start_loglik": start, "stop": stop}

    best = at(-5.0, -6.0)
    followed = search._follow(at(-10.0, -20.0), best, search.ev, gains(3.0), "p")
    assert followed["loglik"] == -4.0 and calls == ["p0", "p1"]  # -10 -> -7 (gained 3, lags 2) -> -4
    calls.clear()
    assert search._follow(at(-10.0, -11.0), best, search.ev, gains(3.0), "p")["loglik"] == -10.0  # gained 1 < 5
    assert search._follow(at(-10.0, -20.0, "converged"), best, search.ev, gains(3.0), "p")["loglik"] == -10.0
    assert not calls
    assert search._follow(at(-100.0, -1000.0), best, search.ev, gains(1.0), "p")["loglik"] == -99.0
    calls.clear()  # gaining 3/4 of the lag each time never catches up: stopped after FOLLOW_SEARCHES
    assert search._follow(at(-13.0, -100.0), best, search.ev, gains(0.0, 0.75), "p")["loglik"] == -5.125
    assert len(calls) == FOLLOW_SEARCHES == 3


def test_projected_evaluation_is_the_projected_data_s_loglik():
    data = load_fs(DATA / "two_epoch_1pop.fs")
    space = space_of((2,), dynamics=("sudden",))
    x = space.vector({"t1": 0.2, "nu1_1": 2.0, "t2": 0.1, "nu2_1": 0.5})
    small = evaluate(space, x, data, evc(projection=(6,)))
    assert small["loglik"] == evaluate(space, x, data.project([6]), evc())["loglik"]
    assert small["loglik"] != evaluate(space, x, data, evc())["loglik"]
    # looked up by content: a copy of the data (Dask ships one per task) finds the same projection
    from hpc_popgen.demography.engine import projected

    assert projected(data.copy(), (6,)) is projected(data, (6,))
    assert projected(data, (12,)) is data and projected(data, None) is data


def test_search_modules_never_import_dask():
    code = ("import sys, hpc_popgen.demography.search, hpc_popgen.demography.outputs; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
