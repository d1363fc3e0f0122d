"""Calibration of a classes-of-S posterior (issue 26, item 4): temperature scaling fitted on a validation
split and saved with the bundle, and the coverage curve evaluate reports. Real Keras bundles and Zarr
stores, small; the whole file runs in a few seconds after TensorFlow's import."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax
from test_train_helpers import make_store

from hpc_popgen.config import config_with_defaults
from hpc_popgen.errors import InputDataError
from hpc_popgen.infer.coverage import class_set_covers, coverage_curve, hpd_covers, pit
from hpc_popgen.infer.posterior import bin_edges
from hpc_popgen.train.calibration import (
    calibrate,
    fit_coverage_temperature,
    fit_level_map,
    fit_temperature,
    mass_for,
    nll,
)
from hpc_popgen.train.config import TrainConfig
from hpc_popgen.train.labels import LabelSpec
from hpc_popgen.train.saved import META_FILE, load_bundle, save_bundle, write_calibration

CENTRES = np.linspace(0.0, 400.0, 11)


def calibrated_sample(n: int, seed: int, spread: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true logits, true class drawn from their softmax, true S uniform within that class's bin)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(CENTRES))) * spread
    p = softmax(z, axis=1)
    k = (p.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    e = bin_edges(CENTRES)
    return z, k, rng.uniform(e[k], e[k + 1])


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(t_true):
    z, k, _ = calibrated_sample(20000, seed=1)
    fit = fit_temperature(z * t_true, k)  # logits t_true times too large: the fit must divide them back
    assert fit["temperature"] == pytest.approx(t_true, rel=0.05)
    assert fit["val_nll_after"] < fit["val_nll_before"]
    assert fit["val_nll_after"] == pytest.approx(nll(z, k), abs=1e-3)


def test_coverage_fit_recovers_a_known_temperature():
    z, _, s = calibrated_sample(4000, seed=3)
    fit = fit_coverage_temperature(z * 0.5, s, CENTRES)  # too wide a posterior: the fit must sharpen it
    assert fit["temperature"] == pytest.approx(0.5, rel=0.1)
    assert fit["val_coverage_loss_after"] < fit["val_coverage_loss_before"]
    assert np.allclose(fit["val_coverage_after"], fit["levels"], atol=0.03)


def distorted(z: np.ndarray) -> np.ndarray:
    """Too sharp near the mode and too heavy in the tails: a sharpened softmax with a flat floor under it."""
    return 0.6 * softmax(z * 2.0, axis=1) + 0.4 / z.shape[1]


def test_level_map_mends_what_no_temperature_can():
    """Fitted on one sample, the level map makes another sample's regions cover at their levels, where the
    best single temperature leaves the low levels under and the high ones over."""
    zv, _, sv = calibrated_sample(6000, seed=11)
    zt, kt, st = calibrated_sample(6000, seed=12)
    lmap = fit_level_map(distorted(zv), sv, CENTRES)["level_map"]
    assert lmap["nominal"][0] == lmap["mass"][0] == 0.0 and lmap["nominal"][-1] == lmap["mass"][-1] == 1.0
    assert np.all(np.diff(lmap["mass"]) >= 0)
    raw = coverage_curve(distorted(zt), CENTRES, st, kt)
    fixed = coverage_curve(distorted(zt), CENTRES, st, kt, mass_of=lambda x: mass_for(lmap, x))
    lv = np.asarray(raw["levels"])
    assert np.max(np.abs(np.asarray(raw["hpd"]) - lv)) > 0.05          # the distortion shows
    assert np.allclose(fixed["hpd"], lv, atol=0.02)                     # and the map mends it out of sample
    assert mass_for(None, 0.95) == 0.95 and mass_for(lmap, 1.0) == 1.0


def test_fit_temperature_refuses_mismatched_input():
    with pytest.raises(ValueError, match="do not match"):
        fit_temperature(np.zeros((5, 3)), np.zeros(4, dtype=int))


def test_hpd_region_covers_at_its_level_when_calibrated_and_over_covers_when_too_wide():
    z, k, s = calibrated_sample(20000, seed=2)
    good = coverage_curve(softmax(z, axis=1), CENTRES, s, k)
    assert np.allclose(good["hpd"], good["levels"], atol=0.015)
    # whole classes cannot hit a level: their coverage follows the sets' mass, not the level
    assert np.allclose(good["classes"], good["classes_mass"], atol=0.015)
    assert good["classes"][0] > 0.3
    assert max(abs(h - 0.1) for h in good["pit_histogram"]) < 0.015
    wide = coverage_curve(softmax(z / 3.0, axis=1), CENTRES, s, k)
    assert wide["hpd"][4] > 0.6 and wide["hpd"][-1] > 0.97


def test_hpd_covers_and_class_sets_on_a_hand_made_posterior():
    p = np.zeros((1, 11))
    p[0, 5], p[0, 6] = 0.6, 0.4          # bins [180, 220] and [220, 260], densities 0.015 and 0.01
    # 0.8: all of bin 5 and half of bin 6, on the side next to bin 5: [180, 240]
    assert hpd_covers(p, CENTRES, np.array([230.0]), 0.8).tolist() == [True]
    assert hpd_covers(p, CENTRES, np.array([250.0]), 0.8).tolist() == [False]
    # 0.3: half of bin 5, centred (no neighbour included): [190, 210]
    assert hpd_covers(np.repeat(p, 2, axis=0), CENTRES, np.array([200.0, 185.0]), 0.3).tolist() == [True, False]
    covered, mass = class_set_covers(p, np.array([6]), 0.5)
    assert covered.tolist() == [False] and mass.tolist() == [pytest.approx(0.6)]
    assert pit(p, CENTRES, np.array([220.0])).tolist() == [pytest.approx(0.6)]


def tiny_classes_bundle(path, calibration=None):
    """A real (untrained) classes bundle for 16x16 images with the 11 centres; ``calibration`` saved with it."""
    from hpc_popgen.train.models import build_model, resolve_model
    from hpc_popgen.train.tfenv import set_random_seed

    set_random_seed(5)
    cfg = config_with_defaults(TrainConfig, "stages/train.schema.json", {
        "store": "x.zarr", "model": {"preset": "multiclass", "filters": [4]}, "labels": {"mode": "classes"}})
    mcfg = resolve_model(cfg.model)
    labels = LabelSpec(mode="classes", classes=tuple(CENTRES), encoding="categorical", low=0.0, high=400.0,
                       prior=tuple(np.full(11, 1 / 11)))
    image = {"polarisation": "major_minor", "maf": 0.0, "sort": "rows", "size": [16, 16], "resize": "resize"}
    save_bundle(path, build_model(mcfg, (16, 16), 11, "classes"), labels, image, (16, 16), mcfg,
                {"store": "x.zarr"}, calibration)
    return path


def test_bundle_round_trips_its_temperature_and_old_bundles_load_as_t1(tmp_path):
    d = tiny_classes_bundle(tmp_path / "m", {"method": "temperature", "temperature": 0.4})
    m = load_bundle(d)
    z = np.array([[1.0, 2.0] + [0.0] * 9])
    assert m.temperature == 0.4
    assert np.allclose(m.posterior_from_outputs(z), softmax(z / 0.4, axis=1))

    old = tiny_classes_bundle(tmp_path / "old")  # saved without a calibration, as before it existed
    assert "calibration" not in json.loads((old / META_FILE).read_text())
    assert load_bundle(old).temperature == 1.0
    assert np.allclose(load_bundle(old).posterior_from_outputs(z), softmax(z, axis=1))

    write_calibration(old, {"method": "temperature", "temperature": -1})
    with pytest.raises(InputDataError, match="calibration.temperature must be a positive number"):
        load_bundle(old)

    lmap = {"nominal": [0.0, 0.5, 0.95, 1.0], "mass": [0.0, 0.4, 0.8, 1.0]}
    write_calibration(old, {"method": "levels", "temperature": 1.0, "level_map": lmap})
    m = load_bundle(old)
    assert m.credible_mass(0.95) == pytest.approx(0.8) and m.credible_mass(0.725) == pytest.approx(0.6)
    assert m.temperature == 1.0
    write_calibration(old, {"method": "levels", "temperature": 1.0, "level_map": {**lmap, "mass": [0, 0.9, 0.8, 1]}})
    with pytest.raises(InputDataError, match="calibration.level_map must hold rising lists"):
        load_bundle(old)


def test_calibrate_on_validation_split_and_evaluate_writes_the_coverage_curve(tmp_path):
    from hpc_popgen.infer.evaluate import evaluate

    store = make_store(tmp_path / "s.zarr", prior={"min": 0, "max": 400, "n": 300}, size=16, shard_images=64)
    m = load_bundle(tiny_classes_bundle(tmp_path / "m"))
    rec = calibrate(m, store, "coverage")
    assert rec["method"] == "coverage" and rec["n_validation"] > 10 and rec["temperature"] > 0
    assert rec["temperature"] == rec["temperature_coverage"]
    assert rec["val_coverage_loss_after"] <= rec["val_coverage_loss_before"]
    nll_rec = calibrate(m, store, "temperature")
    assert nll_rec["temperature"] == nll_rec["temperature_temperature"] == rec["temperature_temperature"]
    assert nll_rec["val_nll_after"] <= nll_rec["val_nll_before"]
    assert calibrate(m, store, "none") == {"method": "none", "temperature": 1.0}
    lv_rec = calibrate(m, store)  # the default: the NLL's T and a map of levels to masses
    assert lv_rec["method"] == "levels" and lv_rec["temperature"] == nll_rec["temperature"]
    assert len(lv_rec["level_map"]["mass"]) == len(lv_rec["level_map"]["nominal"])
    assert len(lv_rec["val_coverage_after"]) == len(lv_rec["levels"])
    write_calibration(m.path, rec)
    m = load_bundle(m.path)
    assert m.temperature == rec["temperature"]

    discrete = make_store(tmp_path / "d.zarr", classes=(0.0, 200.0, 400.0), n_per_class=60, size=16)
    rec_d = calibrate(m, discrete)  # S only at the class centres: the coverage of a density means nothing
    assert rec_d["method"] == "temperature" and "discrete" in rec_d["reason"]

    metrics = evaluate(m, store, tmp_path / "ev", split="test", level=0.95, batch_size=64, title="")
    cal = metrics["calibration"]
    assert cal["temperature"] == rec["temperature"] and cal["method"] == "coverage"
    assert cal["levels"][-1] == 0.95 and len(cal["hpd"]) == len(cal["levels"]) == len(cal["classes"])
    assert all(0 <= v <= 1 for v in cal["hpd"] + cal["classes"])
    assert "hpdi_coverage" in metrics
    assert (tmp_path / "ev" / "calibration.png").stat().st_size > 1000
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["calibration"]["levels"] == cal["levels"]


def test_train_stage_records_its_calibration(tiny_binary_run):
    """The train stage passes through calibrate: a binary model keeps T = 1, with the reason recorded."""
    meta = json.loads((tiny_binary_run.run / "train" / "model" / META_FILE).read_text())
    assert meta["calibration"]["method"] == "none" and meta["calibration"]["temperature"] == 1.0
    assert json.loads((tiny_binary_run.run / "train" / "result.json").read_text())["calibration"] == meta["calibration"]


def test_bench_refuses_a_model_that_is_not_a_classes_bundle(tmp_path):
    from click.testing import CliRunner

    from hpc_popgen.cli import main

    res = CliRunner().invoke(main, ["bench", "calibration", "--model", str(tmp_path), "--test-store", "x.zarr"])
    assert res.exit_code == 2 and "not a classes-of-S model bundle" in res.output
