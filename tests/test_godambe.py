"""Block-bootstrap spectra from a VCF, Godambe intervals and CLAIC (issue 26 item 1, the VCF route).

Real parts at small sizes: an msprime VCF read through its VCF Zarr, moments spectra of a known
two-population model, and moments' own ``Godambe.GIM_uncert`` as the reference.
"""

from __future__ import annotations

import json

import moments
import numpy as np
import pytest
from test_demography_uncertainty import TRUE, _setup
from test_vcz import CHROM, make_vcf

from hpc_popgen.demography.godambe import (
    bootstrap_spectra,
    claic,
    claic_penalty,
    godambe_method,
    godambe_result,
)
from hpc_popgen.demography.search import aic
from hpc_popgen.demography.uncertainty import FimProblem, fim_result, spectra_at
from hpc_popgen.readers import vcz as vz


@pytest.fixture(scope="module")
def vcf(tmp_path_factory) -> dict:
    """An msprime VCF of 400 kb (6 diploids in A, 6 in B), its popmap, and a cache folder for its VCF Zarr."""
    tmp = tmp_path_factory.mktemp("godambe")
    path = make_vcf(tmp / "sim.vcf")
    popmap = {f"tsk_{i}": "A" if i < 6 else "B" for i in range(12)}
    (tmp / "pops.txt").write_text("".join(f"{s}\t{p}\n" for s, p in popmap.items()))
    return {"vcf": path, "popmap": popmap, "popmap_path": tmp / "pops.txt", "cache": tmp / "cache", "dir": tmp}


@pytest.mark.parametrize("polarized", [False, True])
def test_block_spectra_sum_to_the_spectrum_and_bootstraps_follow_the_seed(vcf, polarized):
    kw = {"polarized": polarized, "cache_dir": vcf["cache"]}
    fs, counts, blocks = vz.spectrum_and_blocks(vcf["vcf"], vcf["popmap"], ["A", "B"], [8, 6], block_bp=50_000, **kw)
    whole, _ = vz.spectrum(vcf["vcf"], vcf["popmap"], ["A", "B"], [8, 6], **kw)
    assert np.array_equal(np.ma.filled(fs, 0), np.ma.filled(whole, 0)) and fs.folded == (not polarized)
    assert blocks.spectra.shape[1:] == fs.shape and 4 <= len(blocks.spectra) <= 8  # 400 kb in 50 kb blocks
    assert blocks.contigs == [CHROM] * len(blocks.spectra) and blocks.block_bp == 50_000
    assert set(blocks.starts.tolist()) <= set(range(0, 400_000, 50_000))
    assert int(blocks.sites.sum()) == counts["used"] and np.all(blocks.sites > 0)
    keep = ~np.ma.getmaskarray(fs)
    assert np.allclose(blocks.spectra.sum(axis=0)[keep], np.ma.filled(fs, 0)[keep], rtol=1e-9, atol=1e-9)
    assert np.all(blocks.spectra[:, ~keep] == 0)
    # bootstraps: the same seed gives the same spectra, another seed others; each is as big as the data
    a, b = (bootstrap_spectra(blocks.spectra, 20, seed=7) for _ in range(2))
    assert a.shape == (20,) + fs.shape and np.array_equal(a, b)
    assert not np.array_equal(a, bootstrap_spectra(blocks.spectra, 20, seed=8))
    assert np.mean(a.sum(axis=(1, 2))) == pytest.approx(float(blocks.spectra.sum()), rel=0.2)


def _blocks(lam: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` blocks of independent sites: Poisson counts of lam / n per cell, centred so they sum to lam
    exactly (the data are then the model's expectation and its score is 0: J is the bootstraps' variance)."""
    raw = np.random.default_rng(seed).poisson(lam / n, size=(n,) + lam.shape).astype(float)
    return raw - raw.mean(axis=0) + lam / n


def _se(u: dict, names: list[str]) -> np.ndarray:
    return np.array([u["params"][n]["se"] for n in names])


def test_godambe_matches_fim_on_unlinked_sites_and_widens_when_sites_are_linked():
    theta = 2000.0
    space, cfg, x, data = _setup(theta)
    sd = space.to_dict()
    prob = FimProblem(sd, x, theta, cfg)
    pts = prob.points()
    spectra = dict(zip(pts, spectra_at(sd, x, theta, data, cfg, pts), strict=True))  # 2k + 1 moments spectra
    lam = np.ma.filled(data, 0.0)
    names = list(space.names) + ["theta"]
    ll = float(moments.Inference.ll_multinom(data, data))
    boots = bootstrap_spectra(_blocks(lam, 100, seed=1), 400, seed=2)
    method = godambe_method(400, 1_000_000)
    god = godambe_result(sd, x, theta, cfg, spectra, data, boots, ll, method)
    fim = fim_result(sd, x, theta, cfg, spectra, data)
    assert god["error"] is None and god["method"] == "Godambe (400 block bootstraps of 1000000 bp)"
    assert god["score_statistic"] == pytest.approx(0.0, abs=1e-6)  # the data are the model's expectation
    ratio = _se(god, names) / _se(fim, names)
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio  # independent sites: J ~ H
    assert god["se_fim"] == pytest.approx({n: fim["params"][n]["se"] for n in names})
    for n in space.names:
        assert god["params"][n]["lower"] < TRUE[n] < god["params"][n]["upper"]
    k = len(space.names)
    assert god["claic_penalty"] == pytest.approx(k, rel=0.25) and god["claic"] == pytest.approx(
        -2 * ll + 2 * god["claic_penalty"])
    # every block's sites twice (perfectly linked pairs): the FIM sees twice the data, the Godambe information
    # does not, so its intervals stay those of the original sites, sqrt(2) times the FIM's
    data2 = moments.Spectrum(lam * 2)
    boots2 = bootstrap_spectra(2 * _blocks(lam, 100, seed=1), 400, seed=2)
    god2 = godambe_result(sd, x, 2 * theta, cfg, spectra, data2, boots2, 2 * ll, method)
    fim2 = fim_result(sd, x, 2 * theta, cfg, spectra, data2)
    model = list(space.names)
    assert np.allclose(_se(god2, model), _se(god, model), rtol=1e-6)
    ratio2 = _se(god2, model) / _se(fim2, model)
    assert np.all((ratio2 > 1.2) & (ratio2 < 1.75)), ratio2
    assert god2["claic_penalty"] == pytest.approx(2 * god["claic_penalty"], rel=1e-6)  # twice AIC's penalty


def test_godambe_agrees_with_moments_gim_uncert():
    space, cfg, x, expected = _setup(1500.0)
    sd = space.to_dict()
    lam = np.ma.filled(expected, 0.0)
    rng = np.random.default_rng(5)
    blocks = rng.poisson(lam / 40, size=(40,) + lam.shape).astype(float)
    data = moments.Spectrum(blocks.sum(axis=0))
    boots = bootstrap_spectra(blocks, 30, seed=3)

    def func_ex(p, ns):
        return moments.Spectrum(np.ma.filled(_model(space, cfg, p, data), 0.0), mask=np.ma.getmaskarray(data))

    theta = float(moments.Inference.optimal_sfs_scaling(func_ex(x, data.sample_sizes), data))
    prob = FimProblem(sd, x, theta, cfg)
    pts = prob.points("observed")
    spectra = dict(zip(pts, spectra_at(sd, x, theta, data, cfg, pts), strict=True))
    ours = godambe_result(sd, x, theta, cfg, spectra, data, boots, 0.0, "Godambe", information="observed")
    ref = moments.Godambe.GIM_uncert(func_ex, [moments.Spectrum(b, mask=data.mask) for b in boots], x, data,
                                     multinom=True, eps=0.01)
    assert np.allclose(_se(ours, list(space.names) + ["theta"]), ref, rtol=0.01), (ours["params"], ref)
    assert ours["score_statistic"] > 1  # the true parameters are not these noisy data's maximum


def test_the_stages_godambe_at_the_fit_is_near_moments_gim_uncert():
    """At the maximum-likelihood fit the stage's H (the expected information, 2k + 1 spectra) gives Godambe
    errors within 15% of moments' (observed Hessian, 2k² + 1 spectra) on these few sites (about 6 s)."""
    space, cfg, x, expected = _setup(1500.0)
    sd = space.to_dict()
    blocks = np.random.default_rng(5).poisson(np.ma.filled(expected, 0.0) / 40, size=(40,) + expected.shape)
    data = moments.Spectrum(blocks.sum(axis=0).astype(float))
    boots = bootstrap_spectra(blocks.astype(float), 30, seed=6)

    def func_ex(p, ns):
        return moments.Spectrum(np.ma.filled(_model(space, cfg, p, data), 0.0), mask=np.ma.getmaskarray(data))

    fit = list(moments.Inference.optimize_log(x, data, func_ex, lower_bound=[1e-3] * len(x),
                                              upper_bound=[100] * len(x), maxiter=200, verbose=0))
    theta = float(moments.Inference.optimal_sfs_scaling(func_ex(fit, data.sample_sizes), data))
    pts = FimProblem(sd, fit, theta, cfg).points()
    spectra = dict(zip(pts, spectra_at(sd, fit, theta, data, cfg, pts), strict=True))
    ours = godambe_result(sd, fit, theta, cfg, spectra, data, boots, 0.0, "Godambe")
    ref = moments.Godambe.GIM_uncert(func_ex, [moments.Spectrum(b, mask=data.mask) for b in boots], fit, data,
                                     multinom=True, eps=0.01)
    ratio = _se(ours, list(space.names) + ["theta"]) / ref
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    assert ours["score_statistic"] < 0.1  # at the maximum


def _model(space, cfg, p, data):
    from hpc_popgen.demography.engine import expected_fs

    return expected_fs(space, space.full(list(p)), data, cfg)


def test_claic_equals_aic_when_j_equals_h():
    rng = np.random.default_rng(0)
    for k, multinom in ((4, True), (3, False)):
        m = rng.normal(size=(k + multinom, k + multinom))
        h = m @ m.T + (k + 1) * np.eye(k + multinom)  # symmetric positive definite
        assert claic(-123.4, h, h, multinom) == pytest.approx(aic(k, -123.4))
        assert claic(-123.4, h, 3 * h, multinom) == pytest.approx(-2 * -123.4 + 2 * 3 * k)
    assert claic_penalty(np.zeros((2, 2)), np.eye(2), multinom=False) is None


def test_godambe_on_a_spectrum_file_is_refused_naming_the_key(tmp_path):
    from test_demography_stage import LOCAL_PROFILE, _manifest

    from hpc_popgen.errors import ManifestError
    from hpc_popgen.pipeline import prepare

    path = _manifest(tmp_path, LOCAL_PROFILE, uncertainty="godambe")
    with pytest.raises(ManifestError, match=r"stages\[0\]\.demography\.uncertainty: godambe needs block bootstrap"):
        prepare(path)


def test_stage_on_a_vcf_writes_godambe_intervals_claic_and_the_blocks(tmp_path, vcf):
    """A tiny GA on population A of the VCF (about 15 s: a local Dask cluster and about 30 moments fits)."""
    from test_demography_stage import LOCAL_PROFILE, _manifest

    from hpc_popgen.pipeline import create_run, execute

    job = _manifest(tmp_path, LOCAL_PROFILE, final_structure=[1], plots=False, local_search={"method": "none"},
                    input={"vcf": str(vcf["vcf"]), "popmap": str(vcf["popmap_path"]), "populations": ["A"],
                           "projections": [8]},
                    bootstrap={"block_bp": 20_000, "n": 50},
                    ga={"size": 6, "init_factor": 2, "stall_generations": 2, "max_evals": 18})
    rd = create_run(job, run_dir=tmp_path / "run")
    report = execute(rd, progress=False)
    assert report["status"] == "completed"
    stage = rd.path / "demography"
    results = json.loads((stage / "results.json").read_text())
    [entry] = results["structures"]
    u = entry["uncertainty"]
    assert u["method"] == "Godambe (50 block bootstraps of 20000 bp)" and u["bootstraps"] == 50
    assert u["error"] is None and u["params"]["t1"]["se"] > 0 and entry["claic"] == u["claic"]
    assert u["score_statistic"] >= 0 and set(u["se_fim"]) == {"t1", "nu1_1", "theta"}
    assert results["best"]["criterion"] == "CLAIC" and results["comparison"] == "CLAIC"
    with np.load(stage / "bootstrap.npz") as z:
        assert z["bootstraps"].shape == (50, 9) and int(z["block_bp"]) == 20_000 and len(z["blocks"]) >= 10
        data = moments.Spectrum.from_file(str(stage / "data.fs"))
        assert np.allclose(z["blocks"].sum(axis=0)[~data.mask], np.asarray(data)[~data.mask])
    metrics = report["stages"][0]["metrics"]
    assert metrics["uncertainty_method"] == u["method"] and metrics["claic"] == {"1": entry["claic"]}
    assert "| CLAIC |" in (stage / "summary.md").read_text()
