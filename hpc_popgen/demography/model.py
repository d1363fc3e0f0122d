"""GADMA-style demographic model space: a structure of time intervals around population splits.

A structure ``(s1, s2, ..., sp)`` for ``p`` populations has ``s1`` intervals with one population,
then a split, ``s2`` intervals with two, and so on. Every interval has a duration ``t`` (in
2·Nanc generations), an end size per population (relative to Nanc), a dynamics per population
(0 sudden, 1 linear, 2 exponential) and, with two or more populations, migration rates
(``m{j}_{a}{b}``: into population a from population b, scaled 2·Nanc·m).

Splits form a chain: split i makes population i+1 split off population i, so population i+1 is
the one that appeared at split i and the newest population is the last axis. The populations of
the data (``input.populations``, the spectrum's axes) are therefore named in split order: the
first is the lineage that never split off, the last the youngest (e.g. YRI, CEU, CHB).

``split_sizes`` says how the two daughters start (both relative to Nanc):

- ``fraction`` (default): one parameter ``s{i}``, the fraction of the parent that stays; the new
  population starts with the rest, so the two sizes add up to the parent's;
- ``free``: each daughter has its own start size, ``ns{i}_{p}`` for population ``p`` right after
  split ``i`` (``ns1_1``, ``ns1_2``, then ``ns2_2``, ``ns2_3``), as GADMA without split fractions;
  published histories whose founders do not add up to the parent need it.

Start sizes only matter where the interval after the split has linear or exponential dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DYNAMICS = ("sudden", "linear", "exponential")
SPLIT_SIZES = ("fraction", "free")

DEFAULT_BOUNDS = {"t": (1e-3, 5.0), "nu": (1e-2, 100.0), "m": (0.0, 10.0), "s": (1e-3, 0.999),
                  "Nanc": (1e2, 1e7)}


@dataclass(frozen=True)
class Param:
    """One model parameter: a name, its kind (t, nu, m, s, dyn, Nanc) and bounds."""

    name: str
    kind: str
    lower: float
    upper: float

    @property
    def discrete(self) -> bool:
        """Dynamics codes are integers: mutated by choice, fixed during local search."""
        return self.kind == "dyn"


@dataclass(frozen=True)
class Interval:
    """One time interval: its index (oldest first), number of populations, and parameter names."""

    index: int
    n_pops: int
    t: str
    nu: tuple[str, ...]
    dyn: tuple[str, ...]
    mig: tuple[tuple[int, int, str], ...]  # (into a, from b, parameter name); symmetric share names
    split: tuple[str, ...] = ()  # parameters of the split at its start: (s{i},) or (ns{i}_{a}, ns{i}_{b})

    @property
    def split_before(self) -> bool:
        """A split takes effect at the start of this interval."""
        return bool(self.split)


@dataclass(kw_only=True)
class ModelSpace:
    """All parameters of one structure, with bounds and fixed values from the manifest.

    A name in ``fixed`` or ``bounds`` that is not a parameter (nor a kind, for bounds) raises KeyError.
    """

    structure: tuple[int, ...]
    sym_migration: bool
    migration: bool
    dynamics: tuple[str, ...]  # allowed dynamics
    bounds: dict[str, tuple[float, float]]
    fixed: dict[str, float]
    poisson: bool  # Nanc is then a free parameter (theta = 4·Nanc·mu·L)
    split_sizes: str  # fraction (s{i}) or free (ns{i}_{p}): see the module docstring

    def __post_init__(self) -> None:
        self.structure = tuple(int(s) for s in self.structure)
        if not self.structure or any(s < 1 for s in self.structure):
            raise ValueError(f"structure {self.structure}: every entry must be >= 1")
        if self.split_sizes not in SPLIT_SIZES:
            raise ValueError(f"split_sizes {self.split_sizes!r}: one of {', '.join(SPLIT_SIZES)}")
        self.intervals: list[Interval] = []
        self.params: list[Param] = []
        j = 0
        for period, count in enumerate(self.structure):
            k = period + 1
            for c in range(count):
                j += 1
                split: tuple[str, ...] = ()
                if c == 0 and period > 0:
                    split = self._add_split(period)
                t = f"t{j}"
                self._add(t, "t")
                nus = tuple(f"nu{j}_{p + 1}" for p in range(k))
                dyns = tuple(f"g{j}_{p + 1}" for p in range(k))
                for nu, g in zip(nus, dyns, strict=True):
                    self._add(nu, "nu")
                    if len(self.dynamics) > 1:
                        self._add(g, "dyn")
                migs: list[tuple[int, int, str]] = []
                if self.migration and k > 1:
                    for a in range(k):
                        for b in range(k):
                            if a == b:
                                continue
                            lo, hi = min(a, b), max(a, b)
                            name = f"m{j}_{lo + 1}{hi + 1}" if self.sym_migration else f"m{j}_{a + 1}{b + 1}"
                            if not any(p.name == name for p in self.params):
                                self._add(name, "m")
                            migs.append((a, b, name))
                self.intervals.append(Interval(j, k, t, nus, dyns, tuple(migs), split))
        if self.poisson:
            self._add("Nanc", "Nanc")
        names = {p.name for p in self.params}
        for key in list(self.fixed) + [b for b in self.bounds if b not in DEFAULT_BOUNDS]:
            if key not in names:
                raise KeyError(key)
        self.free = [p for p in self.params if p.name not in self.fixed]

    def _add_split(self, period: int) -> tuple[str, ...]:
        """Parameters of split ``period`` (population period+1 splits off population period)."""
        if self.split_sizes == "free":
            names = (f"ns{period}_{period}", f"ns{period}_{period + 1}")
            for name in names:
                self._add(name, "nu")
            return names
        self._add(f"s{period}", "s")
        return (f"s{period}",)

    def _add(self, name: str, kind: str) -> None:
        """A parameter with its bounds: by name, else by kind, else the defaults of its kind."""
        if kind == "dyn":
            lo, hi = 0.0, float(len(DYNAMICS) - 1)
        else:
            lo, hi = self.bounds.get(name, DEFAULT_BOUNDS[kind] if kind not in self.bounds else self.bounds[kind])
        self.params.append(Param(name, kind, float(lo), float(hi)))

    @property
    def n_pops(self) -> int:
        """Populations at present."""
        return len(self.structure)

    @property
    def names(self) -> list[str]:
        """Names of the free parameters, in vector order."""
        return [p.name for p in self.free]

    @property
    def n_continuous(self) -> int:
        """Free continuous parameters (what AIC counts)."""
        return sum(1 for p in self.free if not p.discrete)

    def allowed_dyn_codes(self) -> list[int]:
        """Codes (indices in DYNAMICS) of the allowed dynamics."""
        return [DYNAMICS.index(d) for d in self.dynamics]

    def full(self, x: np.ndarray | list[float]) -> dict[str, float]:
        """Free-parameter vector -> all parameter values by name (fixed ones included)."""
        out = dict(self.fixed)
        for p, v in zip(self.free, x, strict=True):
            out[p.name] = float(v)
        if len(self.dynamics) == 1:
            code = float(DYNAMICS.index(self.dynamics[0]))
            for iv in self.intervals:
                for g in iv.dyn:
                    out[g] = code
        return out

    def vector(self, values: dict[str, float]) -> np.ndarray:
        """Parameter values by name -> free-parameter vector."""
        return np.array([float(values[p.name]) for p in self.free])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (checkpoints, results); ``from_dict`` rebuilds the same space."""
        return {"structure": list(self.structure), "sym_migration": self.sym_migration,
                "migration": self.migration, "dynamics": list(self.dynamics),
                "bounds": {k: list(v) for k, v in self.bounds.items()}, "fixed": dict(self.fixed),
                "poisson": self.poisson, "split_sizes": self.split_sizes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpace:
        """The space of ``to_dict()`` (``poisson`` false and split fractions where an older checkpoint lacks them)."""
        return cls(structure=tuple(d["structure"]), sym_migration=d["sym_migration"], migration=d["migration"],
                   dynamics=tuple(d["dynamics"]), bounds={k: tuple(v) for k, v in d["bounds"].items()},
                   fixed=dict(d["fixed"]), poisson=d.get("poisson", False),
                   split_sizes=d.get("split_sizes", "fraction"))

    # --- transformed coordinates (mutation and BFGS work here) ---------------------------------
    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Map free parameters to an unbounded-ish space: log for t/nu/Nanc, log(m+0.1), logit for s."""
        out = np.empty(len(self.free))
        for i, p in enumerate(self.free):
            out[i] = _fwd(p.kind, x[i])
        return out

    def from_unit(self, z: np.ndarray) -> np.ndarray:
        """Back from transformed coordinates, clipped to the bounds."""
        out = np.empty(len(self.free))
        for i, p in enumerate(self.free):
            out[i] = _bwd(p.kind, z[i])
        return self.clip(out)

    def clip(self, x: np.ndarray) -> np.ndarray:
        """Free parameters clipped to their bounds, dynamics codes rounded."""
        lo = np.array([p.lower for p in self.free])
        hi = np.array([p.upper for p in self.free])
        x = np.clip(np.asarray(x, float), lo, hi)
        for i, p in enumerate(self.free):
            if p.discrete:
                x[i] = float(round(x[i]))
        return x

    def random(self, rng: np.random.Generator, u: np.ndarray | None = None) -> np.ndarray:
        """A random individual concentrated on plausible values (sizes near 1, moderate times).

        ``u`` (uniforms in [0, 1), e.g. a Sobol point) replaces the random draws, for even coverage.
        """
        from scipy.stats import norm

        d = len(self.free)
        u = rng.random(d) if u is None else np.clip(np.asarray(u, float), 1e-9, 1 - 1e-9)
        x = np.empty(d)
        codes = self.allowed_dyn_codes()
        for i, p in enumerate(self.free):
            if p.kind == "nu":
                v = math.exp(1.2 * norm.ppf(u[i]))
            elif p.kind == "t":
                v = math.exp(math.log(0.01) + u[i] * (math.log(1.0) - math.log(0.01)))
            elif p.kind == "m":
                v = math.exp(math.log(0.05) + u[i] * (math.log(5.0) - math.log(0.05)))
            elif p.kind == "s":
                lo, hi = _fwd("s", max(p.lower, 0.01)), _fwd("s", min(p.upper, 0.99))
                v = _bwd("s", lo + u[i] * (hi - lo))  # uniform in logit: deep founder bottlenecks too
            elif p.kind == "dyn":
                v = float(codes[min(int(u[i] * len(codes)), len(codes) - 1)])
            else:  # Nanc
                v = math.exp(math.log(p.lower) + u[i] * (math.log(p.upper) - math.log(p.lower)))
            x[i] = min(max(v, p.lower), p.upper)
        return x

    def sobol(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n`` individuals from a scrambled Sobol sequence through the same distributions as random()."""
        from scipy.stats import qmc

        d = max(len(self.free), 1)
        m = max(int(math.ceil(math.log2(max(n, 2)))), 1)
        pts = qmc.Sobol(d, scramble=True, seed=rng).random_base2(m)[:n]
        return [self.random(rng, p[: len(self.free)]) for p in pts]

    # --- physical quantities ----------------------------------------------------------------
    def split_times(self, values: dict[str, float]) -> list[float]:
        """Time of each split before present, in 2·Nanc generations (oldest first)."""
        out = []
        for iv in self.intervals:
            if iv.split_before:
                out.append(sum(values[v.t] for v in self.intervals if v.index >= iv.index))
        return out

    def increase(self, period: int, values: dict[str, float], frac: float = 0.5) -> tuple[ModelSpace, dict[str, float]]:
        """One more interval in ``period``: its last interval split in two, same likelihood."""
        new_struct = list(self.structure)
        new_struct[period] += 1
        target = sum(self.structure[: period + 1])  # index of the interval to split (1-based)
        new: dict[str, float] = {}
        if "Nanc" in values:
            new["Nanc"] = values["Nanc"]
        sizes = _start_sizes(self, values)
        for iv in self.intervals:
            shift = 1 if iv.index > target else 0
            ja = iv.index + shift
            for name in iv.split:  # split parameters are named by period: unchanged
                new[name] = values[name]
            if iv.index != target:
                _copy_interval(values, iv, ja, new)
                continue
            t = values[iv.t]
            new[f"t{ja}"] = t * frac
            new[f"t{ja + 1}"] = t * (1 - frac)
            for p in range(iv.n_pops):
                n0, n1, g = sizes[iv.index][p], values[iv.nu[p]], int(values[iv.dyn[p]])
                mid = size_at(g, n0, n1, frac)
                new[f"nu{ja}_{p + 1}"] = mid
                new[f"nu{ja + 1}_{p + 1}"] = n1
                new[f"g{ja}_{p + 1}"] = g
                new[f"g{ja + 1}_{p + 1}"] = g
            for _a, _b, name in iv.mig:
                rest = name.split("_", 1)[1]
                new[f"m{ja}_{rest}"] = values[name]
                new[f"m{ja + 1}_{rest}"] = values[name]
        rename = _rename_map(self, target)
        fixed = {n: new[n] for old in self.fixed for n in rename.get(old, [old]) if n in new}
        bounds = {k: v for k, v in self.bounds.items() if k in DEFAULT_BOUNDS}
        for old, b in self.bounds.items():
            for n in rename.get(old, []):
                bounds[n] = b
        bigger = ModelSpace(structure=tuple(new_struct), sym_migration=self.sym_migration, migration=self.migration,
                            dynamics=self.dynamics, bounds=bounds, fixed=fixed, poisson=self.poisson,
                            split_sizes=self.split_sizes)
        return bigger, new


def _rename_map(space: ModelSpace, target: int) -> dict[str, list[str]]:
    """Old parameter name -> new name(s) when interval ``target`` is split in two."""
    out: dict[str, list[str]] = {}
    for iv in space.intervals:
        ja = iv.index + (1 if iv.index > target else 0)
        news = [ja, ja + 1] if iv.index == target else [ja]
        names = [iv.t, *iv.nu, *iv.dyn, *(m for _a, _b, m in iv.mig)]
        for name in names:
            prefix, rest = name[0] if name[0] != "n" else "nu", name.split("_", 1)[1] if "_" in name else ""
            out[name] = [f"{prefix}{j}" + (f"_{rest}" if rest else "") for j in news]
    return out


def _copy_interval(values: dict[str, float], iv: Interval, ja: int, new: dict[str, float]) -> None:
    """Copy interval ``iv``'s values into ``new`` as interval ``ja``."""
    new[f"t{ja}"] = values[iv.t]
    for p in range(iv.n_pops):
        new[f"nu{ja}_{p + 1}"] = values[iv.nu[p]]
        new[f"g{ja}_{p + 1}"] = values[iv.dyn[p]]
    for _a, _b, name in iv.mig:
        new[f"m{ja}_{name.split('_', 1)[1]}"] = values[name]


def size_at(dyn: int, n0: float, n1: float, frac: float) -> float:
    """Population size at fraction ``frac`` of an interval going from n0 to n1 with dynamics ``dyn``."""
    if dyn == 0:
        return n1
    if dyn == 1:
        return n0 + (n1 - n0) * frac
    return n0 * (n1 / n0) ** frac


def _start_sizes(space: ModelSpace, values: dict[str, float]) -> dict[int, list[float]]:
    """Size of every population at the start of every interval (after any split)."""
    out: dict[int, list[float]] = {}
    current = [1.0]
    for iv in space.intervals:
        if len(iv.split) == 2:  # free sizes
            current = current[:-1] + [values[iv.split[0]], values[iv.split[1]]]
        elif iv.split:
            f = values[iv.split[0]]
            parent = current[-1]
            current = current[:-1] + [parent * f, parent * (1 - f)]
        out[iv.index] = list(current)
        current = [values[n] for n in iv.nu]
    return out


def size_functions(space: ModelSpace, values: dict[str, float]) -> list[tuple[Interval, list[float], list[float], list[int]]]:
    """Per interval: (interval, start sizes, end sizes, dynamics codes)."""
    starts = _start_sizes(space, values)
    return [(iv, starts[iv.index], [values[n] for n in iv.nu], [int(round(values[g])) for g in iv.dyn])
            for iv in space.intervals]


def nu_func(n0: list[float], n1: list[float], dyn: list[int], t: float) -> list[float] | Callable[[float], list[float]]:
    """A moments/dadi size function of time within an interval (or a constant list when all sudden)."""
    if all(d == 0 for d in dyn):
        return list(n1)

    def f(tt: float) -> list[float]:
        frac = min(max(tt / t, 0.0), 1.0) if t > 0 else 1.0
        return [size_at(d, a, b, frac) for d, a, b in zip(dyn, n0, n1, strict=True)]

    return f


def _fwd(kind: str, v: float) -> float:
    """One value into transformed coordinates (see ``ModelSpace.to_unit``)."""
    if kind in ("t", "nu", "Nanc"):
        return math.log(v)
    if kind == "m":
        return math.log(v + 0.1)
    if kind == "s":
        v = min(max(v, 1e-9), 1 - 1e-9)
        return math.log(v / (1 - v))
    return float(v)


def _bwd(kind: str, z: float) -> float:
    """Inverse of ``_fwd`` (overflow-safe)."""
    z = float(np.clip(z, -700.0, 700.0))
    if kind in ("t", "nu", "Nanc"):
        return math.exp(z)
    if kind == "m":
        return max(math.exp(z) - 0.1, 0.0)
    if kind == "s":
        return 1.0 / (1.0 + math.exp(-z))
    return z
