"""Posterior summaries: MAP, mean, exact and Monte Carlo HPDI, Bayes factor with unequal priors; predict."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from test_train_helpers import fake_image, make_store

from hpc_popgen.infer.metrics import bias, confusion_matrix, rmse
from hpc_popgen.infer.posterior import (
    bayes_factor,
    bin_edges,
    hpdi_discrete,
    hpdi_samples,
    neutral_index,
    sample_posterior,
    summarize,
)
from hpc_popgen.pipeline import create_run, execute

CENTRES = np.linspace(0, 400, 11)


def test_hpdi_exact_takes_the_densest_classes():
    p = np.zeros(11)
    p[[4, 5, 6]] = [0.3, 0.45, 0.2]
    p[0] = 0.05
    lo, hi, mass = hpdi_discrete(p, CENTRES, 0.9)
    assert (lo, hi) == (160.0, 240.0) and mass == pytest.approx(0.95)
    lo, hi, mass = hpdi_discrete(p, CENTRES, 0.5)
    assert (lo, hi) == (160.0, 200.0)
    assert hpdi_discrete(p, CENTRES, 0.999)[:2] == (0.0, 240.0)


def test_hpdi_monte_carlo_matches_bins():
    rng = np.random.default_rng(3)
    p = np.zeros(11)
    p[5] = 1.0
    x = sample_posterior(p, CENTRES, 50_000, rng)
    assert x.min() >= 180 and x.max() <= 220
    lo, hi = hpdi_samples(x, 0.95)
    assert 180 <= lo < 183 and 217 < hi <= 220
    u = rng.uniform(0, 1, 100_000)
    lo, hi = hpdi_samples(u, 0.9)
    assert hi - lo == pytest.approx(0.9, abs=0.01)
    assert bin_edges(CENTRES)[[0, 1, -1]].tolist() == [0.0, 20.0, 400.0]


def test_bayes_factor_corrects_for_prior_weights():
    post = np.array([0.5, 0.25, 0.25])
    assert bayes_factor(post, np.array([1 / 3] * 3), 0) == pytest.approx(0.5)
    # training set with neutral at 1/2 of the images: prior odds of selection are 1, so BF = posterior odds
    assert bayes_factor(post, np.array([0.5, 0.25, 0.25]), 0) == pytest.approx(1.0)
    assert neutral_index(CENTRES) == 0
    s = summarize(post, np.array([0.0, 200.0, 400.0]), np.array([0.5, 0.25, 0.25]), level=0.8, mc_samples=1000)
    assert s["map"] == 0.0 and s["mean"] == pytest.approx(150.0) and s["bayes_factor"] == pytest.approx(1.0)
    assert s["hpdi"] == [0.0, 400.0] and len(s["hpdi_mc"]) == 2
    assert bayes_factor(np.array([0.0, 1.0]), np.array([0.5, 0.5]), 0) > 1e9  # no division by zero


def test_metrics():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert rmse(np.array([1.0, 3.0]), np.array([0.0, 0.0])) == pytest.approx(np.sqrt(5))
    assert bias(np.array([1.0, 3.0]), np.array([0.0, 0.0])) == 2.0


@pytest.fixture(scope="module")
def trained_classes(tmp_path_factory):
    """A small multiclass model (S in {0, 200, 400}) trained on a real store, as a model bundle."""
    tmp = tmp_path_factory.mktemp("predict")
    make_store(tmp / "storage" / "c.zarr", classes=(0.0, 200.0, 400.0), n_per_class=120, size=32,
               shard_images=60)
    prof = tmp / "one.yaml"
    prof.write_text(yaml.safe_dump({"kind": "local", "cluster": {"n_workers": 1}, "dashboard_address": "127.0.0.1:0",
                                    "horovod": {"launcher": "none", "ranks": 1}}))
    man = tmp / "m.yaml"
    man.write_text(yaml.safe_dump({"name": "p", "seed": 3, "profile": str(prof), "storage": str(tmp / "storage"),
                                   "stages": [{"name": "train", "train": {
                                       "store": "c.zarr", "model": {"preset": "multiclass", "filters": [16, 16]},
                                       "labels": {"mode": "classes"}, "epochs": 4, "batch_size": 32,
                                       "tensorboard": False}}]}))
    execute(create_run(man, run_dir=tmp / "run"), progress=False)
    return tmp / "run" / "train" / "model"


def _predict(*args, in_process: bool = True):
    """``hpcpop predict ARGS``: in this process through click (fast), or as a real subprocess."""
    if not in_process:
        return subprocess.run([sys.executable, "-m", "hpc_popgen.cli", "predict", *map(str, args)],
                              capture_output=True, text=True, timeout=300)
    from click.testing import CliRunner

    from hpc_popgen.cli import main

    res = CliRunner().invoke(main, ["predict", *map(str, args)])
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def test_predict_image_gives_posterior_json_and_plot(tmp_path, trained_classes):
    rng = np.random.default_rng(9)
    images = np.stack([fake_image(0.0, 32, rng), fake_image(400.0, 32, rng)])
    np.save(tmp_path / "x.npy", images)
    proc = _predict(trained_classes, "--image", tmp_path / "x.npy", "--level", "0.9", "--mc-samples", "5000",
                    "--plot", tmp_path / "p.png", in_process=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    neutral, strong = out["results"]
    assert out["labels"] == "classes" and neutral["classes"] == [0.0, 200.0, 400.0]
    assert neutral["map"] == 0.0 and strong["map"] == 400.0
    assert strong["bayes_factor"] > 3 and neutral["bayes_factor"] < 1
    assert strong["hpdi"][1] == 400.0 and len(strong["hpdi_mc"]) == 2
    assert abs(sum(strong["posterior"]) - 1) < 1e-6
    assert (tmp_path / "p.png").stat().st_size > 1000
    np.save(tmp_path / "bad.npy", np.zeros((16, 16), dtype=np.uint8))
    bad = _predict(trained_classes, "--image", tmp_path / "bad.npy")
    assert bad.returncode == 2 and "do not match the model's [32, 32]" in bad.stderr


def test_predict_ms_and_vcf_use_the_models_image_settings(tmp_path, trained_classes):
    """ms and VCF input go through the same imaging as the training store (here: rows sorted, 32x32)."""
    rng = np.random.default_rng(1)
    hap = (rng.random(40) < 0.2).astype(int)
    rows = [(rng.random(40) < 0.3).astype(int) for _ in range(20)] + [hap] * 12
    pos = np.sort(rng.random(40))
    ms = ["ms 32 1", "1 2 3", "", "//", "segsites: 40", "positions: " + " ".join(f"{p:.5f}" for p in pos)]
    ms += ["".join(map(str, r)) for r in rows]
    (tmp_path / "r.ms").write_text("\n".join(ms) + "\n")
    proc = _predict(trained_classes, "--ms", tmp_path / "r.ms", "--mc-samples", "1000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)["results"]
    assert len(res) == 1 and "replicate 1" in res[0]["region"] and set(res[0]) >= {"map", "mean", "hpdi", "bayes_factor"}
    vcf = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t"
           + "\t".join(f"s{i}" for i in range(16))]
    for j in range(40):
        gts = [f"{rows[2 * i][j]}|{rows[2 * i + 1][j]}" for i in range(16)]
        vcf.append(f"chr1\t{1000 + 10 * j}\t.\tA\tC\t.\tPASS\t.\tGT\t" + "\t".join(gts))
    (tmp_path / "r.vcf").write_text("\n".join(vcf) + "\n")
    proc = _predict(trained_classes, "--vcf", tmp_path / "r.vcf", "--region", "chr1:1000-1400",
                    "--samples", ",".join(f"s{i}" for i in range(16)), "--mc-samples", "1000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    vres = json.loads(proc.stdout)["results"][0]
    assert vres["region"].endswith("chr1:1000-1400") and vres["posterior"] == pytest.approx(res[0]["posterior"], abs=1e-5)
    usage = _predict(trained_classes, "--vcf", tmp_path / "r.vcf")
    assert usage.returncode != 0 and "--region" in usage.stderr
