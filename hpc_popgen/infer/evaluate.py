"""Evaluate a trained model on a store's split: accuracy, confusion matrix, RMSE and bias of S estimates.

Reads the store shard by shard (never whole), predicts in batches, and summarises every image's
posterior (MAP, posterior mean, exact HPDI) against its true S; for classes of S, the coverage of the
true S at levels 0.1-0.95 (coverage.py) goes to metrics.json and calibration.png. No Dask here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import StoreError
from ..store import SPLIT_CODES, ImageStore
from ..train.progress import ProgressFile
from ..train.saved import TrainedModel
from .coverage import coverage_curve, plot_coverage
from .metrics import bias, confusion_matrix, plot_confusion, rmse
from .posterior import hpdi_discrete

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """The evaluate stage's parameters; defaults in storage_schemas/stages/evaluate.schema.json."""

    model: str | None  # a train stage's name or a model directory; None: the last train stage before
    store: str | None  # None: the store the model was trained on
    split: str
    hpdi_level: float
    batch_size: int
    title: str


def check_compatible(model: TrainedModel, store: ImageStore) -> None:
    """Refuse a store whose images were made differently from the model's training images."""
    if tuple(store.image_shape) != tuple(model.image_shape):
        raise StoreError(f"{store.url}: images are {list(store.image_shape)}, the model {model.path} was trained "
                         f"on {list(model.image_shape)}")
    theirs = {k: v for k, v in store.meta.get("image", {}).items()}
    ours = dict(model.image)
    if theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise StoreError(f"{store.url}: image settings differ from the model's training store in "
                         f"{', '.join(diff)} (store {[theirs.get(k) for k in diff]}, model "
                         f"{[ours.get(k) for k in diff]}); remake the images with the model's settings")


def predict_store(model: TrainedModel, store: ImageStore, split: str, batch_size: int,
                  progress: ProgressFile | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(network outputs, true S) for every image of ``split`` (``all``: every image), shard by shard.

    ``progress`` is told the batch being predicted (``batch``/``batches``).
    """
    check_compatible(model, store)
    written = set(store.written_shards().tolist())
    if len(written) < store.n_shards:
        raise StoreError(f"{store.url}: only {len(written)} of {store.n_shards} shards are written")
    code = None if split == "all" else SPLIT_CODES.get(split)
    if split != "all" and code is None:
        raise StoreError(f"split {split!r}: not one of all, {', '.join(SPLIT_CODES)}")
    keeps = []
    for i in range(store.n_shards):
        a, b = store.shard_range(i)
        keeps.append(np.ones(b - a, dtype=bool) if code is None else store.read("split", a, b) == code)
    batches = sum(-(-int(k.sum()) // batch_size) for k in keeps)
    progress = progress or ProgressFile(None)
    progress.update(force=True, phase="predict", batch=0, batches=batches)
    outs, truth = [], []
    done = 0
    for i, keep in enumerate(keeps):
        if not keep.any():
            continue
        a, b = store.shard_range(i)
        images = store.array("images")[a:b][keep]
        for j in range(0, len(images), batch_size):
            outs.append(model.raw_predict(images[j:j + batch_size], batch_size=batch_size))
            done += 1
            progress.update(batch=done)
        truth.append(store.read("s", a, b)[keep])
    progress.update(force=True, batch=done)
    if not outs:
        raise StoreError(f"{store.url}: no images in split {split!r}")
    return np.concatenate(outs), np.concatenate(truth)


def evaluate(model: TrainedModel, store: ImageStore, out_dir: str | Path, *, split: str, level: float,
             batch_size: int, title: str, progress: ProgressFile | None = None) -> dict:
    """Metrics of ``model`` on ``split`` of ``store``; writes confusion.{json,png}, predictions.npz and, for
    classes of S, calibration.png (coverage curve; in metrics.json as ``calibration``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y, s_true = predict_store(model, store, split, batch_size, progress)
    labels = model.labels
    metrics: dict = {"n_images": int(len(s_true)), "split": split, "store": store.url}
    if labels.mode == "continuous":
        est = labels.decode_regression(y)
        metrics.update(rmse=rmse(est, s_true), bias=bias(est, s_true))
        np.savez_compressed(out / "predictions.npz", s_true=s_true, estimate=est)
        atomic.write_json(out / "metrics.json", metrics)
        return metrics
    probs = model.posterior_from_outputs(y)
    centres = labels.centres
    true_cls = labels.class_of(s_true)
    pred_cls = probs.argmax(axis=1)
    n = len(centres)
    cm = confusion_matrix(true_cls, pred_cls, n)
    names = (["neutral", "selection"] if labels.mode == "binary" else [f"{c:g}" for c in centres])
    metrics["test_accuracy"] = float(np.mean(true_cls == pred_cls))
    metrics["confusion_matrix"] = cm.tolist()
    metrics["class_names"] = names
    if labels.mode == "classes":
        s_map = centres[pred_cls]
        s_mean = probs @ centres
        inside = []
        mass = model.credible_mass(level)
        for p, c in zip(probs, centres[true_cls], strict=True):
            lo, hi, _ = hpdi_discrete(p, centres, mass)
            inside.append(lo <= c <= hi)
        metrics.update(rmse_map=rmse(s_map, s_true), bias_map=bias(s_map, s_true),
                       rmse_posterior_mean=rmse(s_mean, s_true), bias_posterior_mean=bias(s_mean, s_true),
                       hpdi_level=level, hpdi_coverage=float(np.mean(inside)))
        curve = coverage_curve(probs, centres, s_true, true_cls, mass_of=model.credible_mass)
        metrics["calibration"] = {"temperature": model.temperature,
                                  "method": model.calibration.get("method", "none"), **curve}
        plot_coverage({f"T = {model.temperature:.3g}": curve}, out / "calibration.png",
                      title=f"coverage of S, {len(s_true)} images ({split})")
        np.savez_compressed(out / "predictions.npz", s_true=s_true, posterior=probs, s_map=s_map, s_mean=s_mean)
    else:
        np.savez_compressed(out / "predictions.npz", s_true=s_true, posterior=probs)
    atomic.write_json(out / "confusion.json", {"class_names": names, "classes": centres.tolist(),
                                               "matrix": cm.tolist(), "rows": "true", "columns": "predicted",
                                               "store": store.url, "split": split})
    plot_confusion(cm, names, out / "confusion.png",
                   title=title or f"accuracy {metrics['test_accuracy']:.3f} ({len(s_true)} images)")
    atomic.write_json(out / "metrics.json", metrics)
    return metrics
