"""``hpcpop bench calibration``: does the 95% (50%) HPDI of S cover the truth 95% (50%) of the time?

Issue 26, item 4. A run of the product on the local profile (``create_run`` + ``execute``, as ``hpcpop
submit``): simulate a training store under jobs/bench_quantify.yaml's history and labels (marth3, the
paper's sweep model, S ~ U(0, 400) in 11 classes, derived alleles) but smaller (64 haplotypes, 64 x 128
images, 4,000 regions, 6 epochs: about a quarter of an hour on 2 busy cores), train the continuous
preset with its gaussian labels (the train stage's ``calibrate``, default ``levels``, fits a softmax temperature T
and a map of credible levels to posterior masses on the training store's validation split), and
evaluate on a test store simulated in its own stage with its own seed (``--test-seed``, used for
nothing else). ``--model DIR --test-store STORE`` takes a trained classes model instead (T is fitted
again on its training store's validation split).

Prints one JSON object: ``hpdi95_coverage`` and ``hpdi50_coverage`` after calibration (targets
0.93-0.97 and 0.45-0.55 beside them), the coverage curve at levels 0.1-0.95 before (T = 1), after, and
with the other fits recorded in the bundle (``temperature``, ``coverage``), the calibration
record, and the class-interval coverage evaluate reports as ``hpdi_coverage``.
Coverage is that of the true S by the highest-density region of the piecewise-uniform posterior over S
(hpc_popgen/infer/coverage.py says why the smallest set of whole classes cannot reach a level exactly).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import yaml

from ..manifest import schema_default

log = logging.getLogger(__name__)
TARGETS = {"hpdi95_coverage": [0.93, 0.97], "hpdi50_coverage": [0.45, 0.55]}
SEED = 20261207        # the manifest's master seed: training store, training, validation split
TEST_SEED = 20261307   # the test store's stage seed, new with the levels method (20261231 saw the methods chosen)
SIMULATE = {
    "demography": "marth3", "reference_ne": 10000, "n_haplotypes": 64, "sequence_length": 80000,
    "mutation_rate": 1.5e-8, "recombination_rate": 1.0e-8,
    "sweep": {"onset": 600, "onset_unit": "generations", "start_frequency": 0.01, "standing": "paper"},
    "image": {"polarisation": "derived", "maf": 0.01, "sort": "rows", "size": [64, 128], "resize": "resize"},
    "shard_images": 256,
}
VALIDATION = 0.2      # share of the training store that fits T (and stops training early)
LABELS = {"mode": "classes", "n_classes": 11, "range": [0, 400], "encoding": "gaussian", "sd": 0.5}


def manifest(storage: Path, *, n: int, test_n: int, epochs: int, seed: int, test_seed: int, cores: int,
             label_sd: float, calibrate: str) -> dict:
    """The bench's manifest: simulate, simulate-test (own seed), train, evaluate on the test store."""
    prior = {"min": 0, "max": 400, "n_bins": 11}
    sim = {**SIMULATE, "store": "calib_train.zarr", "prior": {**prior, "n": n},
           "split": {"validation": VALIDATION, "test": 0.0}}
    test = {**SIMULATE, "store": "calib_test.zarr", "seed": test_seed, "prior": {**prior, "n": test_n},
            "split": {"validation": 0.0, "test": 1.0}}
    res = {"cores": cores, "memory": "2GB"}
    train = {"store": "calib_train.zarr", "model": {"preset": "continuous"}, "labels": {**LABELS, "sd": label_sd},
             "epochs": epochs, "batch_size": 64, "flip_sites": True,
             "early_stopping": {"patience": 3, "restore_best": True}, "reduce_lr": {"factor": 0.3, "patience": 1},
             "calibrate": calibrate, "tensorboard": False}
    return {"name": "bench_calibration", "seed": seed, "profile": "local", "storage": str(storage), "stages": [
        {"name": "simulate", "resources": res, "simulate": sim},
        {"name": "simulate-test", "resources": res, "simulate": test},
        {"name": "train", "resources": {"cores": cores}, "train": train},
        {"name": "evaluate", "evaluate": {"model": "train", "store": "calib_test.zarr", "split": "test"}}]}


def train_and_test(work: Path, **kw: object) -> tuple[Path, str, dict]:
    """Run the manifest; (model directory, test store URL, stage seconds and evaluate metrics)."""
    from ..pipeline import create_run, execute

    storage = work / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    path = work / "bench_calibration.yaml"
    path.write_text(yaml.safe_dump(manifest(storage, **kw), sort_keys=False))  # type: ignore[arg-type]
    rd = create_run(path, run_dir=work / "run")
    report = execute(rd, progress=False)
    stages = {s["name"]: s for s in report["stages"]}
    bad = {k: v.get("error") for k, v in stages.items() if v.get("status") != "completed"}
    if bad:
        raise click.ClickException(f"bench calibration: stages did not complete: {bad}")
    seconds = {k: round(float(v.get("seconds") or 0), 1) for k, v in stages.items()}
    return rd.path / "train" / "model", str(storage / "calib_test.zarr"), {
        "stage_seconds": seconds, "evaluate_metrics": stages["evaluate"].get("metrics", {})}


def curves(model_dir: Path, test_store: str, plot: str | None) -> dict:
    """Coverage before (T = 1) and after calibration on the test store's test split."""
    from ..infer.coverage import coverage_curve, plot_coverage
    from ..infer.evaluate import predict_store
    from ..infer.posterior import hpdi_discrete
    from ..store import open_store
    from ..train.saved import load_bundle

    bundle = load_bundle(model_dir)
    if bundle.labels.mode != "classes":
        raise click.BadParameter(f"{model_dir}: a {bundle.labels.mode} model; the bench needs classes of S",
                                 param_hint="--model")
    z, s = predict_store(bundle, open_store(test_store), "test", 256)
    centres, cls = bundle.centres, bundle.labels.class_of(s)
    out: dict = {}
    cal = bundle.calibration
    method = cal.get("method", "none")
    # the other fits recorded with the bundle: the NLL's T alone, and (for levels) the coverage fit's T
    others = {"levels": ("temperature", "coverage"), "coverage": ("temperature",), "temperature": ("coverage",)}
    runs: list[tuple[str, str, float, object]] = [("before", "none", 1.0, None),
                                                  ("after", method, bundle.temperature, bundle.credible_mass)]
    for other in others.get(method, ()):
        if f"temperature_{other}" in cal:
            runs.append((other, other, float(cal[f"temperature_{other}"]), None))
    for name, how, t, mass_of in runs:
        from scipy.special import softmax

        probs = softmax(z / t, axis=1)
        c = coverage_curve(probs, centres, s, cls, mass_of=mass_of)  # type: ignore[arg-type]
        m95 = mass_of(0.95) if mass_of else 0.95  # type: ignore[operator]
        inside = [hpdi_discrete(p, centres, m95)[0] <= centres[k] <= hpdi_discrete(p, centres, m95)[1]
                  for p, k in zip(probs, cls, strict=True)]
        c["temperature"] = t
        c["method"] = how
        c["hpdi_coverage_class_interval_95"] = float(np.mean(inside))  # evaluate's hpdi_coverage
        c["accuracy"] = float(np.mean(probs.argmax(axis=1) == cls))
        c["rmse_posterior_mean"] = float(np.sqrt(np.mean((probs @ centres - s) ** 2)))
        out[name] = c
    if plot:
        plot_coverage({"T = 1": out["before"], f"{method}, T = {bundle.temperature:.3g}": out["after"]}, plot,
                      title=f"coverage of S on {len(s)} test images (seed of their own)")
    out["calibration"] = bundle.calibration
    out["n_test"] = int(len(s))
    return out


def summarise(c: dict) -> dict:
    """The headline figures, the targets beside them."""
    after = c["after"]
    lv = after["levels"]
    h95, h50 = after["hpd"][lv.index(0.95)], after["hpd"][lv.index(0.5)]
    ok95 = TARGETS["hpdi95_coverage"][0] <= h95 <= TARGETS["hpdi95_coverage"][1]
    ok50 = TARGETS["hpdi50_coverage"][0] <= h50 <= TARGETS["hpdi50_coverage"][1]
    before = c["before"]
    return {"hpdi95_coverage": round(h95, 4), "hpdi50_coverage": round(h50, 4), "targets": TARGETS,
            "targets_met": bool(ok95 and ok50),
            "before_calibration": {"hpdi95_coverage": round(before["hpd"][lv.index(0.95)], 4),
                                   "hpdi50_coverage": round(before["hpd"][lv.index(0.5)], 4)},
            "temperature": c["calibration"].get("temperature", 1.0),
            "method": c["calibration"].get("method", "none"),
            "alternatives": {k: {"method": c[k]["method"], "temperature": c[k]["temperature"],
                                 "hpdi95_coverage": round(c[k]["hpd"][lv.index(0.95)], 4),
                                 "hpdi50_coverage": round(c[k]["hpd"][lv.index(0.5)], 4)}
                             for k in ("temperature", "coverage") if k in c}}


@click.command()
@click.option("--n", "n", default=4000, show_default=True, help="Training-store simulations (20% validation).")
@click.option("--test-n", default=1500, show_default=True, help="Test-store simulations.")
@click.option("--epochs", default=6, show_default=True)
@click.option("--seed", default=SEED, show_default=True, help="Master seed of the training run.")
@click.option("--test-seed", default=TEST_SEED, show_default=True, help="Seed of the test store (use it for nothing else).")
@click.option("--label-sd", default=0.5, show_default=True, help="sd of the gaussian labels, in classes.")
@click.option("--calibrate", "method", type=click.Choice(["levels", "coverage", "temperature"]),
              default=schema_default("stages/train.schema.json", "calibrate"), show_default=True,
              help="How T is fitted (the train stage's calibrate).")
@click.option("--cores", default=min(2, len(os.sched_getaffinity(0))), show_default=True)
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Take this trained classes model instead of training one (needs --test-store).")
@click.option("--test-store", default=None, help="With --model: the store whose test split is reported.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Keep the run here (default: a temporary folder).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the before/after coverage curves as a PNG.")
def command(n: int, test_n: int, epochs: int, seed: int, test_seed: int, label_sd: float, method: str, cores: int,
            model_dir: str | None, test_store: str | None, workdir: str | None, plot: str | None) -> None:
    """Coverage of S by the HPDI of a classes model before and after calibration (one JSON object)."""
    from ..train.calibration import calibrate_bundle

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-calib-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        run: dict = {}
        if model_dir:
            if not test_store:
                raise click.UsageError("--model needs --test-store")
            from ..train.saved import META_FILE

            mode = json.loads((Path(model_dir) / META_FILE).read_text())["labels"]["mode"] \
                if (Path(model_dir) / META_FILE).exists() else None
            if mode != "classes":
                raise click.BadParameter(f"{model_dir}: not a classes-of-S model bundle (labels.mode {mode!r})",
                                         param_hint="--model")
            calibrate_bundle(model_dir, method=method)
            mdir, store = Path(model_dir), test_store
        else:
            mdir, store, run = train_and_test(work, n=n, test_n=test_n, epochs=epochs, seed=seed,
                                              test_seed=test_seed, cores=cores, label_sd=label_sd,
                                              calibrate=method)
        c = curves(mdir, store, plot)
    curves_out = {k: c[k] for k in ("before", "after", "temperature", "coverage") if k in c}
    out = {**summarise(c), "curves": curves_out, "calibration": c["calibration"],
           "n_test": c["n_test"], "settings": None if model_dir else {
               "n_train_store": n, "validation": VALIDATION, "calibrate": method, "n_test": test_n, "epochs": epochs, "seed": seed,
               "test_seed": test_seed, "label_sd": label_sd, "simulate": SIMULATE, "labels": LABELS},
           "model": str(model_dir) if model_dir else None, **run,
           "wall_s": round(time.perf_counter() - t0, 1), "cores": cores,
           "coverage": "true S in the highest-density region of the piecewise-uniform posterior over S"}
    click.echo(json.dumps(out))
