"""Calibration of a classes-of-S posterior: temperature scaling of the softmax, fitted on the validation split.

A CNN trained with smoothed targets (gaussian or perturbed labels) or stopped early gives a class
posterior whose spread does not match its errors (issue 26: 95% HPDIs that cover the truth 98.7% of
the time). Temperature scaling (Guo et al. 2017) divides the logits by one number T > 0 chosen to
minimise the negative log-likelihood of the true classes of held-out images; T < 1 sharpens, T > 1
widens, and the MAP class never changes. The fit runs once after training, on the training store's
validation split (never the test split), and T is saved with the model bundle, so evaluate, predict and
scan all apply it through :meth:`TrainedModel.posterior_from_outputs`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..store import ImageStore
    from .saved import TrainedModel

log = logging.getLogger(__name__)
METHODS = ("temperature", "none")
T_BOUNDS = (0.05, 20.0)  # log-space search interval for T: far wider than any fitted value seen


def nll(logits: np.ndarray, true_class: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits / T), in nats."""
    from scipy.special import log_softmax

    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    lp = log_softmax(z, axis=1)
    return float(-np.mean(lp[np.arange(len(lp)), np.asarray(true_class, dtype=np.int64)]))


def fit_temperature(logits: np.ndarray, true_class: np.ndarray) -> dict:
    """The T minimising :func:`nll` (a bounded 1-D search over log T); returns T and the NLL before/after.

    ``logits``: (n, classes) network outputs before the softmax; ``true_class``: (n,) class indices.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(true_class, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"fit_temperature: logits {z.shape} and classes {y.shape} do not match (or are empty)")
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(lambda u: nll(z, y, np.exp(u)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    before, after = nll(z, y, 1.0), nll(z, y, t)
    if after > before:  # the search never does worse than T = 1
        t, after = 1.0, before
    if min(abs(np.log(t) - lo), abs(np.log(t) - hi)) < 1e-3:
        log.warning("temperature %.4g at the bound of its search interval %s", t, list(T_BOUNDS))
    return {"method": "temperature", "temperature": t, "n_validation": int(len(y)),
            "val_nll_before": before, "val_nll_after": after}


def validation_outputs(model: TrainedModel, store: ImageStore, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits, true S) of every validation image of ``store``, read shard by shard."""
    from ..store import SPLIT_CODES

    code = SPLIT_CODES["validation"]
    outs, truth = [], []
    for i in store.written_shards().tolist():  # stream mode: shards no epoch reached are left out
        a, b = store.shard_range(i)
        keep = store.read("split", a, b) == code
        if not keep.any():
            continue
        images = store.array("images")[a:b][keep]
        outs.append(model.raw_predict(images, batch_size=batch_size))
        truth.append(store.read("s", a, b)[keep])
    if not outs:
        return np.zeros((0, model.labels.n_outputs)), np.zeros(0)
    return np.concatenate(outs), np.concatenate(truth)


def calibrate(model: TrainedModel, store: ImageStore, method: str = "temperature", batch_size: int = 256) -> dict:
    """Fit ``method`` on ``store``'s validation split for a classes model; the bundle's ``calibration`` record.

    Binary and regression models, ``method: none`` and a store without validation images give T = 1
    with the reason recorded.
    """
    if method not in METHODS:
        raise ValueError(f"calibrate: {method!r} is not one of {', '.join(METHODS)}")
    if method == "none":
        return {"method": "none", "temperature": 1.0}
    if model.labels.mode != "classes":
        return {"method": "none", "temperature": 1.0, "reason": f"{model.labels.mode} model: not calibrated"}
    z, s = validation_outputs(model, store, batch_size)
    if len(s) == 0:
        log.warning("%s: no validation images; the posterior is not calibrated (T = 1)", store.url)
        return {"method": "none", "temperature": 1.0, "reason": "no validation images"}
    out = fit_temperature(z, model.labels.class_of(s))
    out["store"] = store.url
    log.info("temperature scaling on %d validation images: T = %.4g, NLL %.4f -> %.4f", out["n_validation"],
             out["temperature"], out["val_nll_before"], out["val_nll_after"])
    return out


def calibrate_bundle(model_dir: str | Path, store: str | None = None, method: str = "temperature") -> dict:
    """Fit the calibration of a saved bundle on its training store's (or ``store``'s) validation split and
    write it into the bundle; returns the record. For bundles trained before calibration existed."""
    from ..store import open_store
    from .saved import load_bundle, write_calibration

    bundle: Any = load_bundle(model_dir)
    rec = calibrate(bundle, open_store(store or bundle.info["store"]), method)
    write_calibration(bundle.path, rec)
    return rec
