"""Expected spectra of a ModelSpace individual with moments or dadi, and their log-likelihoods.

Evaluation never raises for a numerical failure: NaN, infinite or clearly negative spectra (and any
exception inside the engine) give ``WORST`` and a reason, so a bad individual cannot crash a run.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .model import ModelSpace, nu_func, size_functions

if TYPE_CHECKING:
    from .config import DemographyConfig

log = logging.getLogger(__name__)

WORST = -1e300  # fitness of a failed model (finite so that sorting and JSON work)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """What an evaluation needs besides the parameters: engine, grids, likelihood, constants."""

    engine: str  # moments or dadi
    pts: tuple[int, ...]  # dadi grids (empty: from the sample sizes)
    likelihood: str  # multinomial, or poisson (theta = 4·Nanc·mu·L)
    mu: float | None
    length: float | None  # the stage's sequence_length
    generation_time: float
    max_split_years: float | None
    dt_fac: float  # moments' largest time step (moments' own default: 0.02)
    projection: tuple[int, ...] | None  # the data projected to these sample sizes first (None: as it is)

    @classmethod
    def from_config(cls, cfg: DemographyConfig, sample_sizes: Sequence[int]) -> EvalConfig:
        """The evaluation settings of a demography config; dadi grids from the sample sizes when not given."""
        ns = tuple(int(n) for n in sample_sizes)
        return cls(engine=cfg.engine, pts=tuple(cfg.pts or default_pts(ns)), likelihood=cfg.likelihood, mu=cfg.mu,
                   length=cfg.sequence_length, generation_time=cfg.generation_time,
                   max_split_years=cfg.max_split_years, dt_fac=cfg.dt_fac, projection=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (results.json's ``engine``)."""
        return {"engine": self.engine, "pts": list(self.pts), "likelihood": self.likelihood, "mu": self.mu,
                "length": self.length, "generation_time": self.generation_time,
                "max_split_years": self.max_split_years, "dt_fac": self.dt_fac,
                "projection": None if self.projection is None else list(self.projection)}


def failed(reason: str, theta: float | None = None, job: str | None = None) -> dict[str, Any]:
    """The result of an evaluation that failed (``WORST`` fitness), e.g. a numerical failure or a lost task."""
    return {"loglik": WORST, "theta": theta, "error": reason, "job": job}


def default_pts(sample_sizes: Sequence[int]) -> tuple[int, int, int]:
    """dadi grid sizes from the sample sizes: the smallest a bit above 2·max(n), then +10, +20 (n=20 -> 40,50,60)."""
    base = max(40, int(math.ceil(2 * max(sample_sizes) / 10.0)) * 10)
    return (base, base + 10, base + 20)


def moments_fs(space: ModelSpace, values: dict[str, float], ns: tuple[int, ...], dt_fac: float) -> Any:
    """Expected spectrum (theta = 1) of the model with moments (``dt_fac``: its largest time step)."""
    import moments

    ns = tuple(int(n) for n in ns)
    fs = moments.Spectrum(_steady_state(sum(ns)))
    k = 1
    for iv, n0, n1, dyn in size_functions(space, values):
        if iv.split_before:
            # the newest population takes its sample size off the last one
            k += 1
            keep = sum(ns[k - 2: k - 1])
            rest = sum(ns[k - 1:])
            fs = fs.split(k - 2, keep, rest)
        t = values[iv.t]
        m = None
        if iv.mig:
            m = np.zeros((iv.n_pops, iv.n_pops))
            for a, b, name in iv.mig:
                m[a, b] = values[name]
        fs.integrate(nu_func(n0, n1, dyn, t), t, m=m, dt_fac=dt_fac)
    return fs


@functools.lru_cache(maxsize=8)
def _steady_state(n: int) -> np.ndarray:
    """moments' equilibrium spectrum of ``n`` samples (theta = 1), the start of every model: computed once per
    process (read-only; moments.Spectrum copies it)."""
    import moments

    out = np.asarray(moments.LinearSystem_1D.steady_state_1D(n), dtype=float)
    out.setflags(write=False)
    return out


def dadi_fs(space: ModelSpace, values: dict[str, float], ns: tuple[int, ...], pts: tuple[int, ...]) -> Any:
    """Expected spectrum (theta = 1) of the model with dadi, extrapolated over the grids ``pts``."""
    import dadi

    if space.n_pops > 3:
        raise ValueError("dadi handles at most 3 populations")

    def one_grid(_params: Any, ns_: tuple[int, ...], p: int) -> Any:
        xx = dadi.Numerics.default_grid(p)
        phi = dadi.PhiManip.phi_1D(xx)
        for iv, n0, n1, dyn in size_functions(space, values):
            if iv.split_before:
                if iv.n_pops == 2:
                    phi = dadi.PhiManip.phi_1D_to_2D(xx, phi)
                else:
                    phi = dadi.PhiManip.phi_2D_to_3D_split_2(xx, phi)
            t = values[iv.t]
            f = nu_func(n0, n1, dyn, t)
            nus = ([(lambda tt, i=i, f=f: f(tt)[i]) for i in range(iv.n_pops)] if callable(f) else list(f))
            mig = {f"m{a + 1}{b + 1}": values[name] for a, b, name in iv.mig}
            if iv.n_pops == 1:
                phi = dadi.Integration.one_pop(phi, xx, t, nu=nus[0])
            elif iv.n_pops == 2:
                phi = dadi.Integration.two_pops(phi, xx, t, nu1=nus[0], nu2=nus[1], **mig)
            else:
                phi = dadi.Integration.three_pops(phi, xx, t, nu1=nus[0], nu2=nus[1], nu3=nus[2], **mig)
        return dadi.Spectrum.from_phi(phi, ns_, (xx,) * len(ns_))

    ext = dadi.Numerics.make_extrap_log_func(one_grid)
    return ext(None, tuple(int(n) for n in ns), list(pts))


def expected_fs(space: ModelSpace, values: dict[str, float], data: Any, cfg: EvalConfig) -> Any:
    """The model spectrum (theta = 1), folded and masked like the data, as a moments.Spectrum."""
    import moments

    ns = tuple(int(n) for n in data.sample_sizes)
    if cfg.engine == "dadi":
        model = moments.Spectrum(np.asarray(dadi_fs(space, values, ns, cfg.pts or default_pts(ns))))
    else:
        model = moments_fs(space, values, ns, cfg.dt_fac)
    if data.folded and not model.folded:
        model = model.fold()
    model = moments.Spectrum(np.asarray(model), mask=np.ma.getmaskarray(data) | np.ma.getmaskarray(model),
                             data_folded=data.folded)
    return model


def check_model(model: Any) -> str | None:
    """Why a model spectrum is unusable (NaN, infinite, negative), or None when it is fine."""
    arr = np.ma.compressed(model)
    if arr.size == 0:
        return "empty spectrum"
    if not np.all(np.isfinite(arr)):
        return "NaN or infinite entries"
    total = float(np.sum(np.abs(arr)))
    if float(arr.min()) < -1e-6 * max(total, 1e-300):
        return f"negative entries (min {float(arr.min()):.3g})"
    return None


def loglik(model: Any, data: Any, cfg: EvalConfig, values: dict[str, float]) -> tuple[float, float]:
    """(log-likelihood, theta): multinomial with optimal theta, or Poisson with theta = 4·Nanc·mu·L."""
    import moments

    model = moments.Spectrum(np.clip(np.ma.filled(model, 0.0), 1e-300, None), mask=np.ma.getmaskarray(model),
                             data_folded=model.folded)
    if cfg.likelihood == "poisson":
        theta = 4.0 * float(values["Nanc"]) * float(cfg.mu) * float(cfg.length)
        return float(moments.Inference.ll(model * theta, data)), theta
    theta = float(moments.Inference.optimal_sfs_scaling(model, data))
    return float(moments.Inference.ll_multinom(model, data)), theta


_PROJECTED: dict[tuple, Any] = {}  # (data's bytes, mask, folded, sizes) -> projected data, per process


def projected(data: Any, sizes: tuple[int, ...] | None) -> Any:
    """``data`` projected to the haploid sample ``sizes`` (moments' hypergeometric projection), kept per process.

    Dask ships the data with every task, so the projection is looked up by content, not by object.
    """
    if sizes is None or tuple(int(n) for n in sizes) == tuple(int(n) for n in data.sample_sizes):
        return data
    key = (np.ma.getdata(data).tobytes(), np.ma.getmaskarray(data).tobytes(), bool(data.folded),
           tuple(int(n) for n in sizes))
    if key not in _PROJECTED:
        if len(_PROJECTED) >= 4:
            _PROJECTED.clear()
        _PROJECTED[key] = data.project([int(n) for n in sizes])
    return _PROJECTED[key]


def evaluate(space: ModelSpace, x: np.ndarray | list[float], data: Any, cfg: EvalConfig) -> dict[str, Any]:
    """Fitness of one individual: ``{loglik, theta, error}``; failures give WORST, never raise.

    With ``cfg.projection`` the log-likelihood is that of the data projected to those sample sizes.
    """
    data = projected(data, cfg.projection)
    values = space.full(x)
    why: str | None = None
    bad = [k for k, v in values.items() if not math.isfinite(v) or (v < 0 and not k.startswith("g"))]
    if bad:
        log.info("model failed (invalid parameters %s)", bad)
        return failed(f"invalid parameter values: {', '.join(bad)}", job=_job())
    small = _smallest_size(space, values)
    nu_min = min((p.lower for p in space.params if p.kind == "nu"), default=0.0)
    if small < nu_min:
        # e.g. a split leaving a founder far below the size bound: not in the model space, and
        # moments' time steps shrink with the size, so such a model could take minutes
        return failed(f"population size {small:.3g} below the bound {nu_min:g}", job=_job())
    if "Nanc" in values and _too_old(space, values, values["Nanc"], cfg):  # known before integrating
        return failed("split older than max_split_years", job=_job())
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            model = expected_fs(space, values, data, cfg)
            why = check_model(model)
            if why is None:
                ll, theta = loglik(model, data, cfg, values)
                if not math.isfinite(ll):
                    why = "log-likelihood is not finite"
    except Exception as exc:  # noqa: BLE001 - any engine failure is a bad individual, not a crash
        why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        log.info("model failed (%s) at %s", why, {k: round(v, 5) for k, v in values.items()})
        return failed(why, job=_job())
    if cfg.mu and cfg.length and _too_old(space, values, values.get("Nanc") or theta / (4 * cfg.mu * cfg.length), cfg):
        return failed("split older than max_split_years", theta, _job())
    return {"loglik": ll, "theta": theta, "error": None, "job": _job()}


def _too_old(space: ModelSpace, values: dict[str, float], nanc: float, cfg: EvalConfig) -> bool:
    """The oldest split is older than ``max_split_years`` (with Nanc in individuals)."""
    splits = space.split_times(values)
    return bool(cfg.max_split_years and splits
                and max(splits) * 2 * nanc * cfg.generation_time > cfg.max_split_years)


def _smallest_size(space: ModelSpace, values: dict[str, float]) -> float:
    """The smallest relative size any population has at the start or end of any interval."""
    return min(min(min(a), min(b)) for _iv, a, b, _d in size_functions(space, values))


def _job() -> str | None:
    """The SLURM job this evaluation ran in (None outside SLURM): shows where the work went."""
    return os.environ.get("SLURM_JOB_ID")


def physical(space: ModelSpace, values: dict[str, float], theta: float, cfg: EvalConfig) -> dict[str, Any]:
    """Nanc and every parameter in physical units: sizes in individuals, times in years, m per generation."""
    if not (cfg.mu and cfg.length):
        return {}
    nanc = float(values["Nanc"]) if "Nanc" in values else theta / (4.0 * cfg.mu * cfg.length)
    out: dict[str, Any] = {"Nanc": nanc}
    for p in space.params:
        v = values[p.name]
        if p.kind == "nu":
            out[p.name] = v * nanc
        elif p.kind == "t":
            out[p.name + "_years"] = v * 2 * nanc * cfg.generation_time
            out[p.name + "_generations"] = v * 2 * nanc
        elif p.kind == "m":
            out[p.name] = v / (2 * nanc)
        elif p.kind == "dyn":
            out[p.name] = int(round(v))
        elif p.kind == "s":
            out[p.name] = v
    return out
