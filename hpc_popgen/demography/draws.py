"""Histories drawn from a fitted model's uncertainty, for a simulate stage's ``draw: uncertainty``.

The demography stage keeps, per structure's best model, the normal approximation of its fit: the vector
of free continuous parameters (and theta under the multinomial likelihood) with the inverse Fisher
information as covariance (:mod:`.uncertainty`). A draw is a vector from that normal, truncated to the
parameter bounds (and theta > 0) by rejection, turned into a demes graph the way the stage wrote the
point estimate. Seeded: the same seed gives the same draws on any machine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParamError
from .engine import EvalConfig, physical
from .model import ModelSpace
from .outputs import demes_graph
from .uncertainty import FimProblem

log = logging.getLogger(__name__)

MIN_ACCEPTANCE = 1e-3  # fewer accepted draws per normal draw than this: the truncated normal is refused
BATCH = 256  # normal draws per round of the rejection sampler


@dataclass(frozen=True)
class NormalFit:
    """A fitted model's normal approximation: its mean vector, covariance, bounds, and how to make a graph."""

    names: list[str]  # vector components: the free continuous parameters, then theta (multinomial)
    mean: np.ndarray
    cov: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    problem: FimProblem
    pop_ids: list[str]
    method: str

    def inside(self, v: np.ndarray) -> np.ndarray:
        """Which rows of ``v`` lie within the bounds."""
        return np.all((v >= self.lower) & (v <= self.upper), axis=-1)

    def graph(self, v: np.ndarray) -> Any:
        """The demes graph (in generations) of one vector, built as the stage built its point estimate."""
        prob = self.problem
        values = prob.values_of(v)
        theta = float(v[-1]) if prob.multinom else 4.0 * values["Nanc"] * float(prob.cfg.mu or 0) * \
            float(prob.cfg.length or 0)
        nanc = physical(prob.space, values, theta, prob.cfg).get("Nanc")
        gt = prob.cfg.generation_time if nanc else None
        return demes_graph(prob.space, values, nanc or 1e4, self.pop_ids, gt).in_generations()


def normal_fit(stage_dir: str | Path, model_dir: str) -> NormalFit:
    """The normal approximation of the model a demography stage wrote into ``model_dir`` (from its
    results.json); a ParamError (key ``draw``) says why there is none."""
    import demes

    stage_dir = Path(stage_dir)
    results = json.loads((stage_dir / "results.json").read_text())
    entry = next((e for e in results["structures"] if e.get("dir") == model_dir), None)
    where = f"{stage_dir / 'results.json'}: {model_dir}"
    u = (entry or {}).get("uncertainty")
    if not u:
        raise ParamError("draw", f"{where} has no uncertainty to draw from (the demography stage ran with "
                         "uncertainty: none, or its Fisher information failed): use the point estimate")
    if not (u.get("covariance") or {}).get("matrix") or "fit" not in u:
        why = u.get("error") or "no covariance recorded (results.json from an older version: rerun the stage)"
        raise ParamError("draw", f"{where}: no covariance to draw from: {why}")
    fit = u["fit"]
    engine = dict(results["engine"])
    cfg = EvalConfig(**{**engine, "pts": tuple(engine["pts"]),
                        "projection": None if engine.get("projection") is None else tuple(engine["projection"])})
    prob = FimProblem(fit["space"], fit["x"], fit["theta"], cfg)
    names = list(u["covariance"]["names"])
    if names != prob.names + (["theta"] if prob.multinom else []):
        raise ParamError("draw", f"{where}: the covariance's parameters {names} are not the model's")
    space: ModelSpace = prob.space
    bounds = {p.name: (p.lower, p.upper) for p in space.params}
    lower = np.array([bounds[n][0] if n in bounds else np.finfo(float).tiny for n in names])  # theta > 0
    upper = np.array([bounds[n][1] if n in bounds else np.inf for n in names])
    graph = demes.load(stage_dir / model_dir / "model.demes.yaml")
    return NormalFit(names=names, mean=np.array(prob.q0, dtype=float), cov=np.array(u["covariance"]["matrix"]),
                     lower=lower, upper=upper, problem=prob, pop_ids=[d.name for d in graph.demes],
                     method=str(u.get("method")))


def truncated_normal(fit: NormalFit, n: int, seed: int,
                     accept: Callable[[np.ndarray], bool] | None = None) -> tuple[np.ndarray, int]:
    """``n`` vectors from N(mean, cov) within the bounds (and ``accept``-ed), by rejection, seeded; also how
    many normal draws that took. ParamError when fewer than MIN_ACCEPTANCE of the draws are kept."""
    try:
        chol = np.linalg.cholesky(fit.cov)
    except np.linalg.LinAlgError:
        raise ParamError("draw", "the covariance is not positive definite: no normal to draw from") from None
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    tried = 0
    limit = max(int(n / MIN_ACCEPTANCE), BATCH)
    while len(kept) < n and tried < limit:
        v = fit.mean + rng.standard_normal((BATCH, len(fit.mean))) @ chol.T
        tried += BATCH
        for row in v[fit.inside(v)]:
            if accept is None or accept(row):
                kept.append(row)
                if len(kept) == n:
                    break
    if len(kept) < n:
        raise ParamError("draw", f"only {len(kept)} of {tried:,} draws from the normal approximation lie within "
                         f"the parameter bounds{' and give a usable history' if accept else ''}: no draw of "
                         f"{n} histories is possible (parameters {', '.join(fit.names)})")
    return np.array(kept), tried


def draw_histories(stage_dir: str | Path, model_dir: str, n: int, seed: int,
                   accept: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """``n`` demes graphs (generations) drawn from the uncertainty of the model in ``model_dir``.

    ``accept(graph)`` may refuse a graph (e.g. the sampled population is younger than the sweep); refused
    ones are redrawn, so the draws come from the normal truncated to the bounds and to ``accept``. Returns
    {"graphs", "names", "vectors", "tried", "method"}.
    """
    fit = normal_fit(stage_dir, model_dir)
    def ok(v: np.ndarray) -> bool:
        try:
            g = fit.graph(v)
        except Exception as exc:  # noqa: BLE001 - demes refuses an impossible graph: not a usable draw
            log.info("drawn history %s refused by demes: %s", v.tolist(), exc)
            return False
        return accept is None or bool(accept(g))

    vectors, tried = truncated_normal(fit, n, seed, ok)
    log.info("%d histories drawn from %s/%s (%s): %d normal draws", n, stage_dir, model_dir, fit.method, tried)
    return {"graphs": [fit.graph(v) for v in vectors], "names": fit.names, "vectors": vectors.tolist(), "tried": tried,
            "method": fit.method}


__all__ = ["NormalFit", "draw_histories", "normal_fit", "truncated_normal"]
