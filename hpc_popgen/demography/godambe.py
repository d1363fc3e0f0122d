"""Godambe (composite-likelihood) uncertainty of a fitted model from block-bootstrap spectra, and CLAIC.

Linked sites make the spectrum's Poisson likelihood a composite likelihood, whose Fisher information H
overstates what the data say. Bootstrap spectra (genome blocks resampled with replacement) give the
variance J of the score, and the Godambe information H J^-1 H (Coffman et al. 2016; what
``moments.Godambe.GIM_uncert`` and ``dadi.Godambe`` compute) its covariance H^-1 J H^-1. The scores come
from the same 2k + 1 spectra as the expected information (:mod:`.uncertainty`): for a bootstrap spectrum B,
score = sum over cells of (B / lambda - 1) grad(lambda), and J is the mean of score score^T over the
bootstraps (uncentred, as moments). CLAIC = -2 LL + 2 tr(J H^-1) (Varin & Vidoni 2005), with theta profiled
out under the multinomial likelihood, so that it counts the parameters AIC counts and equals AIC when J = H.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..seeds import seed_sequence
from .engine import EvalConfig
from .uncertainty import (
    EPS,
    FimProblem,
    _inverse,
    expected_information,
    gradients,
    intervals_result,
    observed_information,
)

log = logging.getLogger(__name__)

BOOTSTRAP_KEY = 0xB007  # seed_sequence(stage seed, BOOTSTRAP_KEY) draws the bootstrap spectra
MIN_BLOCKS = 10  # fewer blocks with data than this: no Godambe (J would rest on a handful of blocks)


def godambe_method(n: int, block_bp: int) -> str:
    """How results.json and the summary name the Godambe route."""
    return f"Godambe ({n} block bootstraps of {block_bp} bp)"


def too_few_blocks_method(n_blocks: int, block_bp: int) -> str:
    """The FIM route's name when a VCF has too few blocks for bootstraps."""
    return (f"FIM (only {n_blocks} blocks of {block_bp} bp with data; Godambe needs at least {MIN_BLOCKS}: "
            "a smaller bootstrap.block_bp gives more)")


def bootstrap_spectra(blocks: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` bootstrap spectra (n, *shape): each the sum of as many blocks as there are, drawn with
    replacement from ``blocks`` (blocks, *shape), seeded by ``seed`` (the same seed, the same spectra)."""
    blocks = np.asarray(blocks, dtype=float)
    nb = len(blocks)
    rng = np.random.default_rng(seed_sequence(seed, BOOTSTRAP_KEY))
    picks = rng.integers(0, nb, size=(n, nb))
    counts = np.stack([np.bincount(p, minlength=nb) for p in picks]).astype(float)
    return (counts @ blocks.reshape(nb, -1)).reshape((n,) + blocks.shape[1:])


def scores(prob: FimProblem, spectra: dict[tuple[float, ...], np.ndarray], data: Any,
           boots: np.ndarray) -> np.ndarray:
    """The Poisson log-likelihood's gradient at the fit for each bootstrap spectrum (bootstraps x parameters)."""
    g, lam = gradients(prob, spectra, data)
    keep = ~np.ma.getmaskarray(data).reshape(-1)
    b = np.asarray(boots, dtype=float).reshape(len(boots), -1)[:, keep]
    return (b / lam - 1.0) @ g.T


def godambe_matrices(prob: FimProblem, spectra: dict[tuple[float, ...], np.ndarray], data: Any, boots: np.ndarray,
                     information: str = "expected") -> tuple[np.ndarray, np.ndarray]:
    """H (the Fisher information: ``expected``, or ``observed`` as moments) and J (the mean outer product
    of the bootstrap scores)."""
    info = observed_information if information == "observed" else expected_information
    h = info(prob, spectra, data)
    s = scores(prob, spectra, data, boots)
    return h, s.T @ s / len(s)


def _profiled(h: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H and J of the model parameters with theta (the last entry) profiled out: A M A^T with
    A = [I, -H_p,theta / H_theta,theta] (H's Schur complement; the profiled score's variance)."""
    a = np.hstack([np.eye(len(h) - 1), -h[:-1, -1:] / h[-1, -1]])
    return a @ h @ a.T, a @ j @ a.T


def claic_penalty(h: np.ndarray, j: np.ndarray, multinom: bool) -> float | None:
    """tr(J H^-1) over the parameters AIC counts (theta profiled out when ``multinom``); None if H is singular."""
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(j))):
        return None
    if multinom:
        h, j = _profiled(h, j)
    try:
        out = float(np.trace(j @ np.linalg.inv(h)))
    except np.linalg.LinAlgError:
        return None
    return out if math.isfinite(out) else None


def claic(loglik: float, h: np.ndarray, j: np.ndarray, multinom: bool) -> float | None:
    """Composite-likelihood AIC, -2 LL + 2 tr(J H^-1) (None where H is singular)."""
    pen = claic_penalty(h, j, multinom)
    return None if pen is None else -2.0 * float(loglik) + 2.0 * pen


def godambe_result(space_dict: dict[str, Any], x: Sequence[float], theta: float, cfg: EvalConfig,
                   spectra: dict[tuple[float, ...], np.ndarray], data: Any, boots: np.ndarray, loglik: float,
                   method: str, information: str = "expected", eps: float = EPS) -> dict[str, Any]:
    """Godambe standard errors and 95% intervals (genetic and physical units, as
    :func:`~.uncertainty.fim_result`), with ``claic``, its penalty tr(J H^-1) and each parameter's FIM
    standard error beside (``se_fim``: how much linkage widens the intervals)."""
    prob = FimProblem(space_dict, x, theta, cfg, eps)
    k = len(prob.q0)
    if all(np.all(np.isfinite(v)) for v in spectra.values()):
        h, j = godambe_matrices(prob, spectra, data, boots, information)
    else:
        h = j = np.full((k, k), np.nan)
    try:
        cov = _inverse(h @ np.linalg.inv(j) @ h) if np.all(np.isfinite(j)) else np.full((k, k), np.nan)
    except np.linalg.LinAlgError:
        cov = np.full((k, k), np.nan)
    out = intervals_result(prob, cov, method, information, len(spectra), what="the Godambe information")
    out["bootstraps"] = len(boots)
    # the data's own score statistic s^T H^-1 s: about 0 at the likelihood's maximum; where the fit is not there
    # (e.g. no local search), J (uncentred, as moments') holds s s^T too and the intervals come out wider
    s0 = scores(prob, spectra, data, np.ma.filled(data, 0.0)[None])[0] if np.all(np.isfinite(h)) else None
    try:
        stat = None if s0 is None else float(s0 @ np.linalg.solve(h, s0))
    except np.linalg.LinAlgError:
        stat = None
    out["score_statistic"] = stat if stat is None or math.isfinite(stat) else None
    if out["score_statistic"] is not None and out["score_statistic"] > 1.0:
        log.warning("structure %s: the fit is not at the likelihood's maximum (score statistic %.3g): its Godambe "
                    "intervals and CLAIC penalty are inflated", prob.space.structure, out["score_statistic"])
    pen = claic_penalty(h, j, prob.multinom)
    out["claic_penalty"] = pen
    out["claic"] = None if pen is None else -2.0 * float(loglik) + 2.0 * pen
    fim_se = np.sqrt(np.abs(np.diag(_inverse(h))))
    names = prob.names + (["theta"] if prob.multinom else [])
    out["se_fim"] = {n: (float(v) if math.isfinite(v) else None) for n, v in zip(names, fim_se, strict=True)}
    log.info("Godambe of structure %s: %d bootstraps, CLAIC penalty %s (AIC's %d)%s", prob.space.structure,
             len(boots), "-" if pen is None else f"{pen:.2f}", len(prob.names),
             f" ({out['error']})" if out["error"] else "")
    return out


__all__ = ["BOOTSTRAP_KEY", "MIN_BLOCKS", "bootstrap_spectra", "claic", "claic_penalty", "godambe_matrices",
           "godambe_method", "godambe_result", "scores", "too_few_blocks_method"]
