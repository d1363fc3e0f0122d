"""The genetic algorithm of one island as an ask/tell state machine, and the local search.

An island asks for the fitness of a batch of individuals (one generation) and is told the results in
batch order, so its trajectory depends only on its own RNG stream and on the migrants it receives,
never on the order in which evaluations complete. The whole state, RNG included, is a JSON-able dict.

Generation: elites (kept), mutants, uniform-crossover children and random individuals. Mutation
changes 1 + Binomial(n-1, strength) parameters, each by a normal step of size ``rate`` in transformed
coordinates (log for sizes and times, so multiplicative); strength and rate follow the one-fifth rule.
An island stops when it stalls or spends ``max_evals``; the archipelago stops all at the target.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParamError
from .engine import WORST
from .model import ModelSpace

log = logging.getLogger(__name__)


DIGITS = 10  # parameters are rounded to these significant digits (exact cache keys)


@dataclass(frozen=True, kw_only=True)
class GAConfig:
    """Generation make-up, adaptation and stopping rules of an island (the stage's ``ga``)."""

    size: int
    init_factor: int  # the first generation is init_factor * size Sobol points (best size kept)
    elites: int
    mutants: float
    crossovers: float
    mutation_strength: float
    mutation_rate: float
    stall_generations: int
    eps: float
    max_evals: int


@dataclass(frozen=True, kw_only=True)
class LocalSearchConfig:
    """Local optimisation after the genetic algorithm (the stage's ``local_search``)."""

    method: str  # BFGS, Powell, Nelder-Mead or none
    starts: int
    maxiter: int
    max_evals: int
    ga_settings_first: bool  # with other islands' settings: a local search at those first
    jump_rounds: int  # rounds of jumps (dynamics changes, revived intervals) after the first local search
    jump_evals: int  # evaluations of each short local search from a jump


def round_sig(x: np.ndarray, digits: int) -> np.ndarray:
    """Round every entry to ``digits`` significant digits."""
    x = np.asarray(x, float)
    out = np.empty_like(x)
    for i, v in enumerate(x):
        out[i] = float(f"{v:.{digits - 1}e}") if v != 0 and math.isfinite(v) else v
    return out


class Island:
    """One GA population with its own RNG; ``ask()`` a batch, ``tell(fitnesses)`` to advance."""

    def __init__(self, space: ModelSpace, cfg: GAConfig, seed: int | np.random.SeedSequence,
                 initial: list[np.ndarray] | list[list[float]] | None = None, index: int = 0) -> None:
        self.space = space
        self.cfg = cfg
        self.index = index
        self.rng = np.random.default_rng(seed)
        self.generation = 0  # generations completed
        self.start_generation = 0  # generation counter when this island was created (structures go on counting)
        self.population: list[tuple[list[float], float]] = []
        self.batch: list[list[float]] | None = None
        self.batch_parents: list[float | None] = []  # parent fitness of each mutant (one-fifth rule)
        self.strength = cfg.mutation_strength
        self.rate = cfg.mutation_rate
        self.n_evals = 0
        self.stall = 0
        self.best_history: dict[int, tuple[list[float], float]] = {}
        self.done = False
        self.stop_reason: str | None = None
        self.migrants_received = 0
        self._initial = [list(map(float, x)) for x in (initial or [])]

    # --- GA steps ------------------------------------------------------------------------------
    @property
    def best(self) -> tuple[list[float], float] | None:
        """The best individual and its fitness (None before the first generation)."""
        return self.population[0] if self.population else None

    @property
    def best_loglik(self) -> float:
        """The best fitness so far (WORST before the first generation)."""
        return self.population[0][1] if self.population else WORST

    def _fix(self, x: np.ndarray) -> list[float]:
        """Clipped to the bounds and rounded (exact cache keys and JSON round trips)."""
        return [float(v) for v in round_sig(self.space.clip(x), DIGITS)]

    def ask(self) -> list[list[float]]:
        """The individuals of the next generation still to be evaluated (created once, then cached)."""
        if self.batch is not None:
            return self.batch
        n = self.cfg.size
        if not self.population:
            n0 = max(n * self.cfg.init_factor, len(self._initial))
            batch = [self._fix(np.asarray(x)) for x in self._initial]
            batch += [self._fix(x) for x in self.space.sobol(n0 - len(batch), self.rng)] if n0 > len(batch) else []
            self.batch, self.batch_parents = batch, [None] * len(batch)
            return batch
        n_mut = int(round(self.cfg.mutants * n))
        n_cross = int(round(self.cfg.crossovers * n))
        n_elite = min(self.cfg.elites, len(self.population))
        n_rand = max(0, n - n_elite - n_mut - n_cross)
        batch, parents = [], []
        for _ in range(n_mut):
            px, pf = self._select()
            batch.append(self._fix(self.mutate(np.asarray(px))))
            parents.append(pf)
        for _ in range(n_cross):
            (ax, _af), (bx, _bf) = self._select(), self._select()
            child = self.crossover(np.asarray(ax), np.asarray(bx))
            batch.append(self._fix(self.mutate(child) if self.rng.random() < 0.3 else child))
            parents.append(None)
        for _ in range(n_rand):
            batch.append(self._fix(self.space.random(self.rng)))
            parents.append(None)
        self.batch, self.batch_parents = batch, parents
        return batch

    def _select(self) -> tuple[list[float], float]:
        """Rank-weighted choice of a parent among the current population."""
        k = len(self.population)
        w = np.arange(k, 0, -1, dtype=float)
        i = int(self.rng.choice(k, p=w / w.sum()))
        return self.population[i]

    def mutate(self, x: np.ndarray) -> np.ndarray:
        """Change 1 + Binomial(n-1, strength) parameters, each by a normal step of size ``rate``."""
        sp = self.space
        n = len(sp.free)
        k = 1 + int(self.rng.binomial(max(n - 1, 0), self.strength))
        idx = self.rng.choice(n, size=min(k, n), replace=False)
        z = sp.to_unit(x)
        codes = sp.allowed_dyn_codes()
        for i in idx:
            if sp.free[i].discrete:
                others = [c for c in codes if c != int(round(x[i]))]
                if others:
                    z[i] = float(others[int(self.rng.integers(len(others)))])
            else:
                z[i] += self.rng.normal(0.0, self.rate)
        return sp.from_unit(z)

    def crossover(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Uniform crossover: each parameter from either parent with probability 1/2."""
        mask = self.rng.random(len(a)) < 0.5
        return np.where(mask, a, b)

    def tell(self, fitness: list[float]) -> None:
        """Fitnesses of the asked batch, in batch order: select, adapt, check the stopping rules."""
        if self.batch is None or len(fitness) != len(self.batch):
            raise ValueError("tell() needs one fitness per asked individual")
        old_best = self.best_loglik
        self.n_evals += len(fitness)
        # one-fifth rule over the mutants
        tried = [(f, p) for f, p in zip(fitness, self.batch_parents, strict=True) if p is not None]
        if tried:
            success = sum(1 for f, p in tried if f > p) / len(tried)
            factor = 1.2 if success > 0.2 else (1 / 1.2 if success < 0.2 else 1.0)
            self.strength = float(np.clip(self.strength * factor, 0.05, 1.0))
            self.rate = float(np.clip(self.rate * factor, 0.01, 2.0))
        n_elite = min(self.cfg.elites, len(self.population))
        pool = self.population[:n_elite] + [(x, float(f)) for x, f in zip(self.batch, fitness, strict=True)]
        self.population = _unique_sorted(pool)[: self.cfg.size]
        self.batch, self.batch_parents = None, []
        self.generation += 1
        improved = self.best_loglik - old_best >= self.cfg.eps
        self.stall = 0 if improved else self.stall + 1
        self.best_history[self.generation] = (list(self.best[0]), self.best[1])  # type: ignore[index]
        if self.stall >= self.cfg.stall_generations:
            self.stop("stalled")
        elif self.n_evals >= self.cfg.max_evals:
            self.stop("max_evals")

    def stop(self, reason: str) -> None:
        """End this island (stalled, max_evals, or the archipelago's target reached)."""
        self.done = True
        self.stop_reason = reason
        self.batch = None

    def receive(self, migrant: tuple[list[float], float]) -> None:
        """A migrant replaces the worst individual (if it is not already there)."""
        x, f = migrant
        if any(list(x) == list(p[0]) for p in self.population):
            return
        pool = self.population[:-1] + [(list(x), float(f))] if len(self.population) >= self.cfg.size \
            else self.population + [(list(x), float(f))]
        self.population = _unique_sorted(pool)
        self.migrants_received += 1

    def migrant_at(self, generation: int) -> tuple[list[float], float] | None:
        """The best individual right after ``generation`` (or the final best if it stopped before)."""
        if generation in self.best_history:
            return self.best_history[generation]
        if self.done and self.generation < generation:
            return self.best
        return None

    # --- checkpoint --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole island state, RNG included, as JSON-able data (its checkpoint)."""
        return {"index": self.index, "generation": self.generation, "start_generation": self.start_generation,
                "population": [[x, f] for x, f in self.population],
                "batch": self.batch, "batch_parents": self.batch_parents, "strength": self.strength,
                "rate": self.rate, "n_evals": self.n_evals, "stall": self.stall,
                "best_history": {str(g): [x, f] for g, (x, f) in self.best_history.items()},
                "done": self.done, "stop_reason": self.stop_reason, "initial": self._initial,
                "migrants_received": self.migrants_received,
                "rng": self.rng.bit_generator.state}

    @classmethod
    def from_dict(cls, d: dict[str, Any], space: ModelSpace, cfg: GAConfig) -> Island:
        """The island of a checkpoint: it continues exactly as the one that wrote it would have."""
        isl = cls(space, cfg, 0, initial=d["initial"], index=d["index"])
        isl.generation = d["generation"]
        isl.start_generation = d.get("start_generation", 0)
        isl.population = [(list(x), float(f)) for x, f in d["population"]]
        isl.batch = d["batch"]
        isl.batch_parents = d["batch_parents"]
        isl.strength, isl.rate = d["strength"], d["rate"]
        isl.n_evals, isl.stall = d["n_evals"], d["stall"]
        isl.best_history = {int(g): (list(x), float(f)) for g, (x, f) in d["best_history"].items()}
        isl.done, isl.stop_reason = d["done"], d["stop_reason"]
        isl.migrants_received = d.get("migrants_received", 0)
        isl.rng.bit_generator.state = d["rng"]
        return isl


def _unique_sorted(pool: list[tuple[list[float], float]]) -> list[tuple[list[float], float]]:
    """Best first, duplicates removed (ties broken by the parameters, for determinism)."""
    seen: set[tuple[float, ...]] = set()
    out = []
    for x, f in sorted(pool, key=lambda p: (-p[1], tuple(p[0]))):
        key = tuple(x)
        if key in seen:
            continue
        seen.add(key)
        out.append((list(x), float(f)))
    return out


class _Stop(Exception):
    """Raised inside the objective to end a local search early (target reached)."""


def jumps(space: ModelSpace, x: list[float], collapsed: float = 0.05) -> list[list[float]]:
    """Points a local search cannot reach from ``x``: each one-gene change of its dynamics, and each
    collapsed interval (free duration under ``collapsed`` of the total) revived at the mean duration of
    the others.

    Local search keeps the dynamics fixed, and the islands can settle on a wrong one (linear growth where
    the data want exponential); an interval shrunk to nothing sits on a flat ridge. Both end tens of
    log-likelihood units short on bench ga3.
    """
    codes = space.allowed_dyn_codes()
    out = []
    for i, p in enumerate(space.free):
        if not p.discrete:
            continue
        for c in codes:
            if c != int(round(x[i])):
                y = [float(v) for v in x]
                y[i] = float(c)
                out.append(y)
    values = space.full(x)
    times = {p.name: values[p.name] for p in space.params if p.kind == "t"}
    total = sum(times.values())
    for i, p in enumerate(space.free):
        if p.kind == "t" and len(times) > 1 and x[i] < collapsed * total:
            others = (total - x[i]) / (len(times) - 1)
            y = [float(v) for v in x]
            y[i] = float(min(max(others, p.lower), p.upper))
            out.append(y)
    return out


def local_search(space: ModelSpace, x0: list[float], evaluate_many: Callable[[list[list[float]]], list[dict]], *,
                 method: str, maxiter: int, max_evals: int | None = None,
                 should_stop: Callable[[], bool] | None = None, step: float = 1e-4) -> dict[str, Any]:
    """Refine ``x0`` with scipy (BFGS, Powell or Nelder-Mead) on transformed (log) parameters.

    ``evaluate_many`` evaluates a list of individuals (the caller may spread them over workers): for
    BFGS, the point and its forward-difference gradient are one batch of n+1 evaluations. Discrete
    genes (dynamics) stay fixed; ``max_evals`` caps the evaluations. Returns the best point seen, its
    log-likelihood and theta, the log-likelihood of its start (``start_loglik``), the number of evaluations
    and why it stopped (``stop``: converged, max_evals, target or scipy's message).
    """
    from scipy import optimize

    x0 = np.asarray(x0, float)
    cont = [i for i, p in enumerate(space.free) if not p.discrete]
    z_full = space.to_unit(x0)
    best: dict[str, Any] = {"x": list(map(float, x0)), "loglik": WORST, "theta": None, "stop": "converged",
                            "start_loglik": WORST}
    n = 0
    memo: dict[tuple[float, ...], tuple[float, np.ndarray | None]] = {}

    def point(z: np.ndarray) -> list[float]:
        zz = z_full.copy()
        zz[cont] = z
        return [float(v) for v in space.from_unit(zz)]

    def run(zs: list[np.ndarray]) -> list[float]:
        nonlocal n
        res = evaluate_many([point(z) for z in zs])
        if n == 0 and res:
            best["start_loglik"] = float(res[0]["loglik"])
        n += len(zs)
        out = []
        for z, r in zip(zs, res, strict=True):
            if r["loglik"] > best["loglik"]:
                best.update(x=point(z), loglik=float(r["loglik"]), theta=r["theta"])
            out.append(-r["loglik"] if r["loglik"] > WORST else 1e10)
        if should_stop is not None and should_stop():
            best["stop"] = "target"
            raise _Stop
        if max_evals is not None and n >= max_evals:
            best["stop"] = "max_evals"
            raise _Stop
        return out

    def fun_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        key = tuple(z)
        if key not in memo or memo[key][1] is None:
            zs = [z] + [z + step * e for e in np.eye(len(z))]
            vals = run(zs)
            g = np.array([(v - vals[0]) / step if v < 1e10 and vals[0] < 1e10 else 0.0 for v in vals[1:]])
            memo.clear()
            memo[key] = (vals[0], g)
        return memo[key]  # type: ignore[return-value]

    def fun(z: np.ndarray) -> float:
        return run([z])[0]

    z0 = z_full[cont]
    lo = space.to_unit(np.array([p.lower for p in space.free]))[cont]
    hi = space.to_unit(np.array([p.upper for p in space.free]))[cont]
    bounds = list(zip(lo, hi - step * 1.01, strict=True))  # room for the forward difference
    z0 = np.clip(z0, lo, hi - step * 1.01)
    res = None  # scipy's result, when it returns
    try:
        if not cont:
            fun(np.array([]))
        elif method == "BFGS":
            # limited-memory BFGS with the bounds in transformed coordinates (no flat clipped regions).
            # Its first step follows the gradient as if the curvature were 1: with log-likelihood gradients
            # of thousands that step lands in a corner of the bounds (every time 5, size 0.01 or 100), where
            # a moments evaluation costs 10 to 20 times more. The objective is divided by the first
            # gradient's largest entry, so that the first step moves parameters by about one log unit;
            # gtol (0.05 log-likelihood units per log unit) is divided alike.
            g0 = fun_grad(z0)[1]
            scale = max(1.0, float(np.max(np.abs(g0)))) if g0.size else 1.0
            res = optimize.minimize(lambda z: fun_grad(z)[0] / scale, z0, jac=lambda z: fun_grad(z)[1] / scale,
                                    method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter, "gtol": 0.05 / scale})
        elif method == "Powell":
            res = optimize.minimize(fun, z0, method="Powell", options={"maxiter": maxiter, "xtol": 1e-4,
                                                                       "ftol": 1e-6})
        elif method == "Nelder-Mead":
            res = optimize.minimize(fun, z0, method="Nelder-Mead", options={"maxiter": maxiter, "xatol": 1e-4,
                                                                            "fatol": 1e-4})
        else:
            raise ParamError("method", f"unknown local search method {method!r}")
        if res is not None and not res.success:
            best["stop"] = f"scipy: {res.message}"
    except _Stop:
        log.info("local search stopped early at log-likelihood %.3f", best["loglik"])
    best["evals"] = n
    return best
