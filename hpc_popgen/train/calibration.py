"""Calibration of a classes-of-S posterior, fitted on the training store's validation split: temperature
scaling of the softmax, and a map from each credible level to the mass whose regions cover at that level.

A CNN trained with smoothed targets (gaussian or perturbed labels) or stopped early gives a class
posterior whose spread need not match its errors (issue 26). Temperature scaling (Guo et al. 2017)
divides the logits by one number T > 0: T < 1 sharpens, T > 1 widens, and the MAP class never changes.
Two ways to choose T, both on the training store's validation split (never the test split):

* ``coverage`` (the default): the T whose highest-density regions of S (:func:`hpd_covers`) cover the
  true S at their levels 0.1-0.95, each level's squared miss weighted by 1 / (level (1 - level)) (its
  binomial variance), searched on a log grid. It calibrates the intervals users read.
* ``temperature``: the T minimising the negative log-likelihood of the true classes (Guo et al.).
  On 651 validation images of bench calibration's model (dev seed) it was 0.82 (bootstrap sd 0.045),
  and its 50% regions covered 0.449 of a test store; the coverage fit gave T = 0.91 and 0.477
  (docs/benchmarks.md).

* ``levels``: T by the NLL, then each credible level L mapped to the posterior mass m(L) whose HPD regions
  covered the validation images' true S at rate L (recalibration of the intervals, Kuleshov et al. 2018,
  for nested HPD regions). A single T moves every level one way; on bench calibration's model the low
  levels under-covered while 0.95 over-covered, which no T mends (docs/benchmarks.md).

T is saved with the model bundle (both fits are recorded), so evaluate, predict and scan apply it
through :meth:`TrainedModel.posterior_from_outputs`, and the level map through
:meth:`TrainedModel.credible_mass`.
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
METHODS = ("levels", "coverage", "temperature", "none")
T_BOUNDS = (0.05, 20.0)  # log-space search interval for T: far wider than any fitted value seen
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # credible levels of coverage curves
MASS_GRID = np.linspace(0.0, 1.0, 801)  # posterior masses at which the level map measures coverage
NOMINAL = (0.0, *np.round(np.arange(0.01, 1.0, 0.01), 2).tolist(), 0.995, 1.0)  # levels the map records
T_GRID = np.exp(np.linspace(np.log(0.2), np.log(5.0), 41))  # the coverage fit's coarse grid (steps of 8%)


def bin_edges(centres: np.ndarray) -> np.ndarray:
    """Edges of the bins around sorted class centres (midpoints; the ends are the outer centres)."""
    c = np.asarray(centres, dtype=np.float64)
    if len(c) == 1:
        return np.array([c[0], c[0]])
    mids = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0]], mids, [c[-1]]])


def hpd_covers(probs: np.ndarray, centres: np.ndarray, s_true: np.ndarray, level: float) -> np.ndarray:
    """(n,) whether each true S lies in the ``level`` highest-density region of its piecewise-uniform posterior."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    edges = bin_edges(centres)
    width = np.maximum(np.diff(edges), 1e-12)
    n, k = p.shape
    s = np.clip(np.asarray(s_true, dtype=np.float64), edges[0], edges[-1])
    b = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, k - 1)   # the bin of each true S
    order = np.argsort(-(p / width), axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    cum = np.cumsum(p[rows, order], axis=1)
    before = cum - p[rows, order]
    full = cum <= level + 1e-12                    # whole bins inside the region
    part = (~full) & (before < level - 1e-12)       # the one bin that is partly inside
    rank = np.empty_like(order)
    rank[rows, order] = np.arange(k)[None, :]
    r = rank[np.arange(n), b]                       # where the true bin comes in the density order
    inside = full[np.arange(n), r]
    in_part = part[np.arange(n), r]
    if in_part.any():
        i = np.flatnonzero(in_part)
        kb = b[i]
        frac = (level - before[i, r[i]]) / np.maximum(p[i, kb], 1e-300)
        inc = np.zeros((len(i), k + 2), dtype=bool)  # included whole bins, padded at both ends
        inc[:, 1:-1] = full[i[:, None], rank[i]]
        left, right = inc[np.arange(len(i)), kb], inc[np.arange(len(i)), kb + 2]
        lo_e, w = edges[kb], width[kb]
        piece = frac * w
        start = np.where(left & ~right, lo_e, np.where(right & ~left, lo_e + w - piece, lo_e + (w - piece) / 2))
        x = s[i]
        inside[i] = (x >= start) & (x <= start + piece)
    return inside




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


def fit_coverage_temperature(logits: np.ndarray, s_true: np.ndarray, centres: np.ndarray,
                             levels: tuple[float, ...] = LEVELS) -> dict:
    """The T whose HPD regions cover ``s_true`` closest to their levels, weighted by 1 / (level (1 - level)):
    :data:`T_GRID`, then 41 steps of 0.4% around its best; returns T, the loss and the coverage before/after."""
    from scipy.special import softmax

    z = np.asarray(logits, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    w = 1.0 / (lv * (1.0 - lv))

    def curve(t: float) -> np.ndarray:
        p = softmax(z / t, axis=1)
        return np.array([np.mean(hpd_covers(p, centres, s_true, x)) for x in lv])

    def loss(c: np.ndarray) -> float:
        return float(np.sum(w * (c - lv) ** 2))

    def search(grid: np.ndarray) -> float:
        losses = np.array([loss(curve(t)) for t in grid])
        best = np.flatnonzero(losses <= losses.min() + 1e-12)
        return float(grid[best[np.argmin(np.abs(np.log(grid[best])))]])  # ties: the one nearest T = 1

    step = np.log(T_GRID[1] / T_GRID[0])
    coarse = np.log(search(T_GRID))
    t = search(np.exp(np.linspace(coarse - step, coarse + step, 41)))
    before, after = curve(1.0), curve(t)
    return {"method": "coverage", "temperature": t, "n_validation": int(len(z)), "levels": lv.tolist(),
            "val_coverage_before": before.round(4).tolist(), "val_coverage_after": after.round(4).tolist(),
            "val_coverage_loss_before": loss(before), "val_coverage_loss_after": loss(after)}


def fit_level_map(probs: np.ndarray, s_true: np.ndarray, centres: np.ndarray) -> dict:
    """For each level of :data:`NOMINAL`, the posterior mass whose HPD regions cover ``s_true`` at that rate.

    Regions of growing mass are nested, so coverage rises with the mass (0 at 0, 1 at 1): measured on
    :data:`MASS_GRID` and inverted by linear interpolation. Returns ``level_map`` (nominal, mass).
    """
    p = np.asarray(probs, dtype=np.float64)
    cov = np.array([np.mean(hpd_covers(p, centres, s_true, m)) for m in MASS_GRID])
    cov = np.maximum.accumulate(cov) + np.arange(len(cov)) * 1e-12  # strictly rising for the inversion
    nominal = np.asarray(NOMINAL)
    mass = np.clip(np.interp(nominal, cov, MASS_GRID), 0.0, 1.0)
    mass[0], mass[-1] = 0.0, 1.0
    return {"level_map": {"nominal": nominal.tolist(), "mass": np.round(mass, 6).tolist()}}


def mass_for(level_map: dict | None, level: float) -> float:
    """The posterior mass an HPD region needs to cover at ``level`` (the level itself without a map)."""
    if not level_map:
        return float(level)
    return float(np.interp(level, level_map["nominal"], level_map["mass"]))


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


def calibrate(model: TrainedModel, store: ImageStore, method: str = "levels", batch_size: int = 256) -> dict:
    """Fit ``method`` on ``store``'s validation split for a classes model; the bundle's ``calibration`` record
    (``temperature`` is the one applied; both fits are recorded, the other's T as ``temperature_<method>``).

    Binary and regression models, ``method: none`` and a store without validation images give T = 1
    with the reason recorded; a store whose S takes only the class values (``classes:``) is fitted by
    the NLL (no S lies inside a bin, so there is no region to cover).
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
    by_nll = fit_temperature(z, model.labels.class_of(s))
    if store.classes:  # S only at the class centres: no density within bins to cover, classes are the truth
        if method != "temperature":
            log.info("%s: S takes only the class values; calibrating by the NLL of the classes", store.url)
        return {**by_nll, "temperature_temperature": by_nll["temperature"], "store": store.url,
                **({"reason": "discrete S: the NLL fit"} if method != "temperature" else {})}
    by_cov = fit_coverage_temperature(z, s, model.centres)
    if method == "levels":
        from scipy.special import softmax

        probs = softmax(z / by_nll["temperature"], axis=1)
        lmap = fit_level_map(probs, s, model.centres)
        before = [float(np.mean(hpd_covers(probs, model.centres, s, x))) for x in LEVELS]
        after = [float(np.mean(hpd_covers(probs, model.centres, s, mass_for(lmap["level_map"], x))))
                 for x in LEVELS]
        out = {**by_cov, **by_nll, "method": "levels", **lmap, "levels": list(LEVELS),
               "val_coverage_before": np.round(before, 4).tolist(), "val_coverage_after": np.round(after, 4).tolist()}
        out.pop("val_coverage_loss_before", None)
        out.pop("val_coverage_loss_after", None)
    elif method == "coverage":
        out = {**by_nll, **by_cov}
    else:
        out = {**by_cov, **by_nll}
    out["temperature_temperature"] = by_nll["temperature"]
    out["temperature_coverage"] = by_cov["temperature"]
    out["val_nll_after"] = nll(z, model.labels.class_of(s), out["temperature"])
    out["store"] = store.url
    log.info("calibration (%s) on %d validation images: T = %.4g (NLL fit %.4g, coverage fit %.4g)%s", method,
             len(s), out["temperature"], by_nll["temperature"], by_cov["temperature"],
             f"; the 95% region takes mass {mass_for(out['level_map'], 0.95):.3f}" if "level_map" in out else "")
    return out


def calibrate_bundle(model_dir: str | Path, store: str | None = None, method: str = "levels") -> dict:
    """Fit the calibration of a saved bundle on its training store's (or ``store``'s) validation split and
    write it into the bundle; returns the record. For bundles trained before calibration existed."""
    from ..store import open_store
    from .saved import load_bundle, write_calibration

    bundle: Any = load_bundle(model_dir)
    rec = calibrate(bundle, open_store(store or bundle.info["store"]), method)
    write_calibration(bundle.path, rec)
    return rec
