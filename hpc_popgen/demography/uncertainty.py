"""Uncertainty of a fitted demographic model from the Fisher information of the spectrum's likelihood.

For a spectrum without the genome it came from there are no bootstrap spectra, so the standard errors are
the square roots of the inverse Fisher information of the Poisson likelihood at the fit: by default the
expected information (sum over cells of grad(lambda) grad(lambda)^T / lambda: 2k + 1 spectra for k
parameters), or the observed one (minus the Hessian, as ``moments.Godambe.FIM_uncert``: 2k² + 1). Under the
multinomial likelihood theta is a parameter too. Linkage between sites makes these intervals too narrow;
only bootstraps over genome blocks (Godambe) fix that. Physical units follow by the delta method, so Nanc's
own uncertainty is carried into every size, time and rate. A fitted size or time within 1% of its bound is
flagged: its interval means little there.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .engine import EvalConfig, check_model, expected_fs, physical
from .model import ModelSpace

log = logging.getLogger(__name__)

FIM_METHOD = "FIM (no bootstrap: spectrum input)"
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals
EPS = 0.01  # fractional finite-difference step (moments' and dadi's default for FIM_uncert)
BOUND_TOLERANCE = 0.01  # a fitted size or time this close (relative) to a bound is flagged
NONNEGATIVE = ("nu", "t", "m", "Nanc", "theta", "s")  # kinds whose interval is cut at 0


def steps(q0: Sequence[float], eps: float = EPS) -> np.ndarray:
    """Finite-difference steps: ``eps`` times each value (``eps`` itself for a value of 0), as moments' FIM."""
    q0 = np.asarray(q0, dtype=float)
    return np.where(q0 != 0, eps * q0, eps)


def _moves(n: int, q0: np.ndarray) -> list[tuple[dict[int, int], ...]]:
    """Per Hessian element (i <= j, row-major), the points it needs as {index: steps} moves from ``q0``:
    central differences, one-sided (forward) for a parameter at 0 (e.g. a migration rate at its bound)."""
    out: list[tuple[dict[int, int], ...]] = []
    for i in range(n):
        for j in range(i, n):
            if i == j:
                out.append(({i: 1}, {i: -1}) if q0[i] != 0 else ({i: 2}, {i: 1}))
            elif q0[i] != 0 and q0[j] != 0:
                out.append(({i: 1, j: 1}, {i: 1, j: -1}, {i: -1, j: 1}, {i: -1, j: -1}))
            else:
                out.append(({i: 1, j: 1}, {i: 1}, {j: 1}))
    return out


def stencil(q0: Sequence[float], eps: float = EPS) -> list[tuple[float, ...]]:
    """Every distinct point where :func:`hessian` needs the log-likelihood (``q0`` first)."""
    q0 = np.asarray(q0, dtype=float)
    h = steps(q0, eps)
    seen: dict[tuple[float, ...], None] = {tuple(q0): None}
    for moves in _moves(len(q0), q0):
        for mv in moves:
            q = q0.copy()
            for k, m in mv.items():
                q[k] = q0[k] + m * h[k]
            seen.setdefault(tuple(float(v) for v in q), None)
    return list(seen)


def hessian(f: Callable[[np.ndarray], float], q0: Sequence[float], eps: float = EPS) -> np.ndarray:
    """Hessian of ``f`` at ``q0`` by finite differences with the steps of :func:`steps` (the same scheme as
    moments' ``Godambe.get_hess``); ``f`` may be a lookup of values computed elsewhere, at :func:`stencil`."""
    q0 = np.asarray(q0, dtype=float)
    h = steps(q0, eps)
    n = len(q0)
    f0 = f(q0)

    def at(mv: dict[int, int]) -> float:
        q = q0.copy()
        for k, m in mv.items():
            q[k] = q0[k] + m * h[k]
        return f(np.array([float(v) for v in q]))

    out = np.empty((n, n))
    pairs = [(a, b) for a in range(n) for b in range(a, n)]
    for (i, j), moves in zip(pairs, _moves(n, q0), strict=True):
        v = [at(mv) for mv in moves]
        if i == j:
            out[i, i] = (v[0] - 2 * f0 + v[1]) / h[i] ** 2 if q0[i] != 0 else (v[0] - 2 * v[1] + f0) / h[i] ** 2
        elif len(v) == 4:
            out[i, j] = (v[0] - v[1] - v[2] + v[3]) / (4 * h[i] * h[j])
        else:
            out[i, j] = (v[0] - v[1] - v[2] + f0) / (h[i] * h[j])
        out[j, i] = out[i, j]
    return out


def covariance(f: Callable[[np.ndarray], float], p0: Sequence[float], eps: float = EPS) -> np.ndarray:
    """Inverse observed Fisher information of the log-likelihood ``f`` at its maximum ``p0`` (NaN where the
    information is not positive definite: not a maximum, or a flat direction)."""
    return _inverse(-hessian(f, p0, eps))


def _inverse(info: np.ndarray) -> np.ndarray:
    """The inverse of a Fisher information, or NaN where it is not finite and positive definite."""
    if not np.all(np.isfinite(info)):
        return np.full(info.shape, np.nan)
    try:
        cov = np.linalg.inv(info)
        if np.any(np.diag(cov) <= 0) or np.any(np.linalg.eigvalsh((info + info.T) / 2) <= 0):
            return np.full(info.shape, np.nan)
    except np.linalg.LinAlgError:
        return np.full(info.shape, np.nan)
    return cov


def spectrum_loglik(model: Callable[[np.ndarray], Any], data: Any, multinom: bool) -> Callable[[np.ndarray], float]:
    """The Poisson log-likelihood of ``data`` as a function of a parameter vector; ``model(p)`` gives the
    expected spectrum (theta = 1 when ``multinom``: then theta is the vector's last entry). Spectra are
    cached by the model parameters, so steps in theta cost no evaluation (NaN for an unusable spectrum)."""
    import moments

    cache: dict[tuple[float, ...], Any] = {}

    def spectrum(p: np.ndarray) -> Any:
        key = tuple(float(v) for v in p)
        if key not in cache:
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    fs = model(np.asarray(key))
                    bad = check_model(fs)
            except Exception as exc:  # noqa: BLE001 - a failed step makes the information NaN, not a crash
                fs, bad = None, f"{type(exc).__name__}: {exc}"
            if bad is not None:
                log.info("FIM step at %s failed: %s", key, bad)
                fs = None
            else:
                fs = moments.Spectrum(np.clip(np.ma.filled(fs, 0.0), 1e-300, None), mask=np.ma.getmaskarray(fs),
                                      data_folded=fs.folded)
            cache[key] = fs
        return cache[key]

    def ll(p: np.ndarray) -> float:
        p = np.asarray(p, dtype=float)
        fs = spectrum(p[:-1] if multinom else p)
        if fs is None:
            return math.nan
        with np.errstate(all="ignore"):
            return float(moments.Inference.ll(fs * p[-1] if multinom else fs, data))

    ll.cache = cache  # type: ignore[attr-defined]  # how many spectra it took
    return ll


def at_bounds(space: ModelSpace, values: dict[str, float], tol: float = BOUND_TOLERANCE) -> dict[str, str]:
    """The free sizes and times fitted within ``tol`` (relative) of a bound: name -> ``lower bound 0.001``."""
    out = {}
    free = {p.name for p in space.free}
    for p in space.params:
        if p.name not in free or p.kind not in ("nu", "t", "Nanc"):
            continue
        v = float(values[p.name])
        for side, b in (("lower", p.lower), ("upper", p.upper)):
            if abs(v - b) <= tol * abs(b):
                out[p.name] = f"{side} bound {b:g}"
    return out


def _interval(value: float, se: float | None, kind: str) -> dict[str, Any]:
    """Estimate, standard error and Wald 95% interval (cut at 0 for a quantity that cannot be negative)."""
    if se is None or not math.isfinite(se):
        return {"value": value, "se": None, "lower": None, "upper": None}
    lo, hi = value - Z95 * se, value + Z95 * se
    if kind in NONNEGATIVE:
        lo = max(lo, 0.0)
    return {"value": value, "se": se, "lower": lo, "upper": hi}


def _physical_flat(space: ModelSpace, values: dict[str, float], theta: float, cfg: EvalConfig) -> dict[str, float]:
    """``physical()`` without the dynamics codes (integers, no interval)."""
    dyn = {p.name for p in space.params if p.kind == "dyn"}
    return {k: float(v) for k, v in physical(space, values, theta, cfg).items() if k not in dyn}


def _phys_kind(space: ModelSpace, key: str) -> str:
    """The kind of the parameter a physical key derives from (``t1_years`` -> t)."""
    base = key.rsplit("_", 1)[0] if key.endswith(("_years", "_generations")) else key
    return next((p.kind for p in space.params if p.name == base), "Nanc")


class FimProblem:
    """One fitted model's Fisher-information problem: the vector ``q0`` (its free continuous parameters, then
    theta under the multinomial likelihood), how a vector becomes parameter values and an expected spectrum."""

    def __init__(self, space_dict: dict[str, Any], x: Sequence[float], theta: float, cfg: EvalConfig,
                 eps: float = EPS) -> None:
        self.space = ModelSpace.from_dict(space_dict)
        self.space_dict, self.theta_fit = space_dict, float(theta)  # as given: results.json's ``fit``
        self.x = [float(v) for v in x]
        self.cfg, self.eps = cfg, eps
        self.cont = [i for i, p in enumerate(self.space.free) if not p.discrete]
        self.names = [self.space.free[i].name for i in self.cont]
        self.kinds = [self.space.free[i].kind for i in self.cont]
        self.multinom = cfg.likelihood != "poisson"
        q0 = [self.x[i] for i in self.cont]
        if self.multinom:
            q0.append(float(theta))
            self.theta = float(theta)
        else:
            self.theta = 4.0 * self.values_of(q0)["Nanc"] * float(cfg.mu) * float(cfg.length)
        self.q0 = np.array(q0, dtype=float)

    def values_of(self, q: Sequence[float]) -> dict[str, float]:
        """All parameter values of a vector (dynamics and fixed values as fitted)."""
        full = list(self.x)
        for i, v in zip(self.cont, q[: len(self.cont)], strict=True):
            full[i] = float(v)
        return self.space.full(full)

    def model(self, data: Any) -> Callable[[np.ndarray], Any]:
        """Expected spectrum of a vector without theta (theta = 1; Poisson: times 4 Nanc mu L)."""
        def fs(q: np.ndarray) -> Any:
            values = self.values_of(q)
            out = expected_fs(self.space, values, data, self.cfg)
            if not self.multinom:
                out = out * (4.0 * values["Nanc"] * float(self.cfg.mu) * float(self.cfg.length))
            return out
        return fs

    @property
    def q0_model(self) -> np.ndarray:
        """``q0`` without theta: the part that needs its own spectrum."""
        return self.q0[:-1] if self.multinom else self.q0

    def points(self, information: str = "expected") -> list[tuple[float, ...]]:
        """The model points (theta left out) whose spectra the information needs: ``expected``, the fit and a
        step either way in each parameter (2k + 1); ``observed``, the Hessian's :func:`stencil` (2k² + 1)."""
        if information == "observed":
            return list(dict.fromkeys(self.model_key(q) for q in stencil(self.q0, self.eps)))
        q0 = self.q0_model
        h = steps(q0, self.eps)
        out = [tuple(float(v) for v in q0)]
        for j in range(len(q0)):
            for m in ((1, -1) if q0[j] != 0 else (1,)):
                q = q0.copy()
                q[j] = q0[j] + m * h[j]
                out.append(tuple(float(v) for v in q))
        return out

    def model_key(self, q: Sequence[float]) -> tuple[float, ...]:
        """The part of a point that needs its own spectrum (theta steps share one)."""
        return tuple(float(v) for v in (q[:-1] if self.multinom else q))


def spectra_at(space_dict: dict[str, Any], x: Sequence[float], theta: float, data: Any, cfg: EvalConfig,
               points: Sequence[Sequence[float]]) -> np.ndarray:
    """Expected spectra at model points (theta = 1 under the multinomial likelihood; masked cells 0; all NaN
    where a step fails), stacked: the work of one Dask task, a slice of a structure's points."""
    prob = FimProblem(space_dict, x, theta, cfg)
    model = prob.model(data)
    out = np.full((len(points),) + tuple(np.shape(data)), np.nan)
    for i, q in enumerate(points):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                fs = model(np.array([float(v) for v in q]))
                bad = check_model(fs)
        except Exception as exc:  # noqa: BLE001 - a failed step means no intervals, not a crash
            bad = f"{type(exc).__name__}: {exc}"
        if bad is not None:
            log.info("FIM step at %s failed: %s", tuple(q), bad)
            continue
        out[i] = np.ma.filled(fs, 0.0)
    return out


def expected_information(prob: FimProblem, spectra: dict[tuple[float, ...], np.ndarray], data: Any) -> np.ndarray:
    """Fisher information of the Poisson likelihood, sum over cells of grad(lambda) grad(lambda)^T / lambda,
    with the gradient of the expected counts lambda by differences (one-sided for a parameter at 0)."""
    g, lam = gradients(prob, spectra, data)
    return (g / lam) @ g.T


def gradients(prob: FimProblem, spectra: dict[tuple[float, ...], np.ndarray], data: Any) -> tuple[np.ndarray, np.ndarray]:
    """The expected counts lambda of the data's unmasked cells at the fit (flattened) and their gradient
    (parameters x cells) by differences from the spectra at :meth:`FimProblem.points` (``expected``)."""
    keep = ~np.ma.getmaskarray(data)
    q0 = prob.q0_model
    h = steps(q0, prob.eps)
    scale = prob.theta if prob.multinom else 1.0

    def at(j: int, m: int) -> np.ndarray:
        q = q0.copy()
        if m:
            q[j] = q0[j] + m * h[j]
        return np.asarray(spectra[tuple(float(v) for v in q)])[keep]

    base = at(0, 0)
    grads = []
    for j in range(len(q0)):
        if q0[j] != 0:
            grads.append((at(j, 1) - at(j, -1)) / (2 * h[j]) * scale)
        else:
            grads.append((at(j, 1) - base) / h[j] * scale)
    if prob.multinom:
        grads.append(base)  # d lambda / d theta
    return np.array(grads), np.clip(base * scale, 1e-300, None)


def observed_information(prob: FimProblem, spectra: dict[tuple[float, ...], np.ndarray], data: Any) -> np.ndarray:
    """Minus the Hessian of the Poisson log-likelihood at the fit (what ``moments.Godambe.FIM_uncert`` inverts)."""
    import moments

    def fs_of(key: tuple[float, ...]) -> Any:
        arr = np.asarray(spectra[key])
        return moments.Spectrum(np.clip(arr, 1e-300, None), mask=np.ma.getmaskarray(data))

    def ll(q: np.ndarray) -> float:
        arr = spectra[prob.model_key(q)]
        if not np.all(np.isfinite(arr)):
            return math.nan
        fs = fs_of(prob.model_key(q))
        with np.errstate(all="ignore"):
            return float(moments.Inference.ll(fs * q[-1] if prob.multinom else fs, data))

    return -hessian(ll, prob.q0, prob.eps)


def fim_result(space_dict: dict[str, Any], x: Sequence[float], theta: float, cfg: EvalConfig,
               spectra: dict[tuple[float, ...], np.ndarray], data: Any, method: str = FIM_METHOD,
               information: str = "expected", eps: float = EPS) -> dict[str, Any]:
    """Standard errors and 95% intervals from the spectra at :meth:`FimProblem.points`, in genetic and
    physical units.

    Genetic units: the free continuous parameters (and theta under the multinomial likelihood, with Nanc =
    theta / (4 mu L)); physical units by the delta method with the full covariance, so they include Nanc's
    uncertainty. ``error`` says why intervals are missing (never raises for a numerical failure).
    """
    prob = FimProblem(space_dict, x, theta, cfg, eps)
    if all(np.all(np.isfinite(v)) for v in spectra.values()):
        info = (observed_information if information == "observed" else expected_information)(prob, spectra, data)
    else:
        info = np.full((len(prob.q0), len(prob.q0)), np.nan)
    return intervals_result(prob, _inverse(info), method, information, len(spectra))


def intervals_result(prob: FimProblem, cov: np.ndarray, method: str, information: str, evaluations: int,
                     what: str = "the Fisher information") -> dict[str, Any]:
    """Standard errors and 95% intervals (genetic and physical units) of ``prob``'s fit from a covariance of
    its vector (NaN: none, and ``error`` says so; ``what`` names the matrix it came from)."""
    values = prob.values_of(prob.q0)
    x, theta, space_dict, eps = prob.x, prob.theta_fit, prob.space_dict, prob.eps
    out: dict[str, Any] = {"method": method, "information": information, "level": 0.95, "eps": eps,
                           "error": None, "evaluations": evaluations, "at_bound": at_bounds(prob.space, values)}
    se = np.sqrt(np.abs(np.diag(cov)))
    if not np.all(np.isfinite(se)):
        out["error"] = (f"{what} is not positive definite at the fit (a flat direction, a parameter "
                        "at its bound, or a failed step): no intervals")
    q0 = prob.q0
    params = {n: _interval(float(v), _finite(e), k) for n, v, e, k in zip(prob.names, q0, se, prob.kinds, strict=False)}
    if prob.multinom:
        params["theta"] = _interval(float(q0[-1]), _finite(se[-1]), "theta")
    out["params"] = params
    # what a simulate stage's ``draw: uncertainty`` draws from: the normal approximation N(q0, cov) of the fit
    out["covariance"] = {"names": prob.names + (["theta"] if prob.multinom else []),
                         "matrix": cov.tolist() if np.all(np.isfinite(cov)) else None}
    out["fit"] = {"space": space_dict, "x": [float(v) for v in x], "theta": float(theta)}
    out["physical"] = _physical_intervals(prob, cov)
    if out["physical"]:
        out["physical_note"] = ("delta method with the full covariance: Nanc = theta / (4 mu L), its own "
                                "uncertainty included" if prob.multinom else "delta method; Nanc fitted (Poisson)")
    else:
        out["physical_note"] = "no physical units: give mu and sequence_length"
    return out


def structure_uncertainty(space_dict: dict[str, Any], x: Sequence[float], data: Any, cfg: EvalConfig,
                          theta: float | None = None, method: str = FIM_METHOD, information: str = "expected",
                          eps: float = EPS) -> dict[str, Any]:
    """:func:`fim_result` in one process (``theta``: the fit's optimal scaling under the multinomial likelihood;
    None computes it; ``information``: expected, 2k + 1 spectra, or observed, moments' Hessian, 2k² + 1)."""
    t0 = time.perf_counter()
    if theta is None:
        import moments

        prob = FimProblem(space_dict, x, 1.0, cfg, eps)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            theta = float(moments.Inference.optimal_sfs_scaling(prob.model(data)(prob.q0[:-1]), data)) \
                if prob.multinom else 1.0
    prob = FimProblem(space_dict, x, theta, cfg, eps)
    pts = prob.points(information)
    spectra = dict(zip(pts, spectra_at(space_dict, x, theta, data, cfg, pts), strict=True))
    out = fim_result(space_dict, x, theta, cfg, spectra, data, method, information, eps)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("FIM of structure %s: %d spectra in %.1f s%s", prob.space.structure, out["evaluations"],
             out["seconds"], f" ({out['error']})" if out["error"] else "")
    return out


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _physical_intervals(prob: FimProblem, cov: np.ndarray) -> dict[str, Any]:
    """Every physical quantity with its delta-method standard error and 95% interval."""
    cfg = prob.cfg
    if not (cfg.mu and cfg.length):
        return {}

    def phys(q: np.ndarray) -> dict[str, float]:
        return _physical_flat(prob.space, prob.values_of(q), float(q[-1]) if prob.multinom else prob.theta, cfg)

    p0 = prob.q0
    base = phys(p0)
    keys = list(base)
    jac = np.zeros((len(keys), len(p0)))
    for j in range(len(p0)):
        h = 1e-6 * max(abs(p0[j]), 1e-8)
        up, dn = p0.copy(), p0.copy()
        up[j] += h
        dn[j] -= h
        a, b = phys(up), phys(dn)
        jac[:, j] = [(a[k] - b[k]) / (2 * h) for k in keys]
    var = np.einsum("ij,jk,ik->i", jac, cov, jac)
    return {k: _interval(base[k], math.sqrt(v) if math.isfinite(v) and v >= 0 else None, _phys_kind(prob.space, k))
            for k, v in zip(keys, var, strict=True)}


__all__ = ["FIM_METHOD", "FimProblem", "at_bounds", "covariance", "expected_information", "fim_result", "gradients",
           "hessian", "intervals_result", "observed_information", "spectra_at", "spectrum_loglik", "stencil",
           "structure_uncertainty"]
