"""What replicate i is: its seed, its S (class or prior draw), and its train/validation/test split.

Everything derives from (stage seed, i) alone, and a batch's ancestry seed from (stage seed, the range's
first image, class), so a store is the same whether one worker or a thousand make it, and any image
can be re-simulated from the store's records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParamError
from ..images import ImageConfig
from ..paths import input_file
from ..seeds import MAX_SEED, derive_seed, rng
from .config import ClassSpec, SimulateConfig, SweepConfig
from .demographies import DemographyModel, model_from_graph, msms_model
from .engines import choose_engine, choose_scaling, msprime_exact
from .forward import ForwardConfig, check_forward, is_de_novo
from .histories import History, ensemble_histories, resolve_history
from .replicate import SimConfig
from .trajectory import generations_between
from .units import onset_generations, selection_coefficient

# ForwardConfig keys -> where the value comes from in the simulate config (for error messages)
FORWARD_KEYS = {"population": "demography.population", "onset": "sweep.onset", "position": "sweep.position",
                "start_frequency": "sweep.start_frequency", "start_frequency_rtol": "sweep.start_frequency_rtol",
                "end_frequency_atol": "sweep.end_frequency_atol", "max_attempts": "sweep.max_attempts",
                "end_condition": "sweep.end_condition",
                "dominance": "sweep.dominance", "S": "classes"}
SPLIT_KEY = 3  # rng(replicate seed, SPLIT_KEY) decides the split
PRIOR_KEY = 4  # rng(replicate seed, PRIOR_KEY) draws S under a continuous prior
MODEL_KEY = 5  # derive_seed(replicate seed, MODEL_KEY) draws the history of an ensemble
BATCH_KEY = 6  # derive_seed(stage seed, BATCH_KEY, first image, class, position) seeds a batch's ancestry
DRAWS_KEY = 7  # derive_seed(stage seed, DRAWS_KEY) seeds the histories drawn from an inferred model's uncertainty


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A whole simulate stage: N replicates, where S comes from, the engine, images and split settings.

    Either ``classes`` with ``n_per_class``, or ``prior`` ({"min", "max", "n", "n_bins"[, "grid"]}). ``split``
    holds the train, validation and test fractions. ``engine`` is ``msprime`` (``sim`` alone decides a
    replicate) or ``fwdpy11`` (``forward`` does; ``sim`` keeps the sweep settings and trajectory).
    ``history`` records the demographic model (source, population, demes graph).
    """

    sim: SimConfig
    image: ImageConfig
    seed: int
    split: dict
    classes: tuple[float, ...] | None = None
    n_per_class: int = 0
    prior: dict | None = None
    engine: str = "msprime"
    forward: ForwardConfig | None = None
    history: dict | None = None
    ensemble: tuple[ForwardConfig, ...] | None = None  # one forward config per history of an ensemble
    weights: tuple[float, ...] | None = None  # the ensemble's model weights
    models: tuple[DemographyModel, ...] | None = None  # msprime's model per drawn history (draw: uncertainty)
    class_names: tuple[str, ...] | None = None  # with classes: each class's name
    parts: tuple[Plan, ...] | None = None  # classes with their own sweeps: one plan per class (its sim, forward)

    @classmethod
    def from_config(cls, cfg: SimulateConfig, seed: int, base_dir: str | Path = ".",
                    stage_dirs: dict[str, Path] | None = None, drawn: dict | None = None) -> Plan:
        """The plan of a simulate stage's config (demes files relative to ``base_dir``; ``stage_dirs``: the
        output folders of demography stages a ``from_stage`` history may name; ``drawn``: for ``draw:
        uncertainty``, the histories drawn from the inferred model (``graphs``, ``names``, ``vectors``, ...)).

        Classes that name their own sweep get a plan each (``parts``), made from the stage's config with that
        class's sweep; one engine and one scaling factor make every class (a CNN must not learn the engine).
        """
        specs = cfg.class_specs()
        if not any(c.own_sweep for c in specs):
            plan = cls._from_config(cfg, seed, base_dir, stage_dirs, drawn)
            return dataclasses.replace(plan, class_names=tuple(c.name for c in specs)) if specs else plan
        parts = cls._parts(cfg, specs, seed, base_dir, stage_dirs, drawn)
        if len({p.engine for p in parts}) > 1:  # the engine one class needs makes every class
            parts = cls._parts(dataclasses.replace(cfg, engine="fwdpy11"), specs, seed, base_dir, stage_dirs, drawn)
        if parts[0].engine == "fwdpy11" and cfg.scaling == "auto":
            q = min(p.forward.scaling for p in parts if p.forward is not None)
            parts = cls._parts(dataclasses.replace(cfg, engine="fwdpy11", scaling=q), specs, seed, base_dir,
                               stage_dirs, drawn)
        return dataclasses.replace(parts[0], classes=tuple(c.S for c in specs), n_per_class=int(cfg.n_per_class or 0),
                                   class_names=tuple(c.name for c in specs), parts=parts)

    @classmethod
    def _parts(cls, cfg: SimulateConfig, specs: tuple[ClassSpec, ...], seed: int, base_dir: str | Path,
               stage_dirs: dict[str, Path] | None, drawn: dict | None) -> tuple[Plan, ...]:
        """One plan per class, each from ``cfg`` with the class's S and sweep (errors name the class)."""
        out = []
        for k, spec in enumerate(specs):
            try:
                one = dataclasses.replace(cfg, classes=(spec.S,), sweep=class_sweep(cfg, spec))
                part = cls._from_config(one, seed, base_dir, stage_dirs, drawn)
                if spec.end_frequency is not None and part.forward is not None:
                    _check_partial(part.forward, spec.S)
                out.append(part)
            except ParamError as exc:
                raise ParamError(_class_key(exc.key, k, spec), f"class {spec.name!r}: {exc.reason}") from None
        return tuple(out)

    @classmethod
    def _from_config(cls, cfg: SimulateConfig, seed: int, base_dir: str | Path = ".",
                     stage_dirs: dict[str, Path] | None = None, drawn: dict | None = None) -> Plan:
        """The plan of a config whose classes share the stage's sweep (see :meth:`from_config`)."""
        ensemble = isinstance(cfg.demography, dict) and "ensemble" in cfg.demography
        drawing = isinstance(cfg.demography, dict) and "draw" in cfg.demography
        try:
            if ensemble:
                histories, weights = ensemble_histories(cfg.demography, base_dir, stage_dirs)
            elif drawing:
                histories, weights = _drawn_histories(cfg.demography, drawn)
            else:
                histories, weights = [resolve_history(cfg.demography, cfg.reference_ne, base_dir, stage_dirs)], [1.0]
        except ParamError as exc:
            raise exc.within("demography") if exc.key != "demography" else exc from None
        sw = cfg.sweep
        sim = SimConfig(demography=None if ensemble or drawing else _msprime_model(cfg, histories[0], base_dir),
                        n_haplotypes=cfg.n_haplotypes, sequence_length=cfg.sequence_length,
                        mutation_rate=cfg.mutation_rate, recombination_rate=cfg.recombination_rate,
                        reference_ne=cfg.reference_ne, onset=onset_generations(sw.onset, sw.onset_unit, sw.generation_time),
                        start_frequency=sw.start_frequency, position=sw.position, dt=sw.dt,
                        max_attempts=sw.max_attempts)
        if cfg.classes is not None:
            plan = cls(sim=sim, image=cfg.image, seed=int(seed), split=cfg.split.fractions(),
                       classes=tuple(c.S for c in cfg.class_specs()), n_per_class=int(cfg.n_per_class or 0))
        else:
            pr = cfg.prior
            assert pr is not None  # SimulateConfig holds classes or a prior
            grid = {"grid": int(pr.grid)} if pr.grid else {}  # absent when continuous: older attrs still match
            plan = cls(sim=sim, image=cfg.image, seed=int(seed), split=cfg.split.fractions(),
                       prior={"min": pr.min, "max": pr.max, "n": pr.n, "n_bins": pr.n_bins, **grid})
        strengths = plan.strengths()
        for history in histories:
            if history.deme().start_time < sim.onset:
                raise ParamError("sweep.onset", f"{sim.onset:g} generations ago is older than population "
                                 f"{history.population!r} ({history.deme().start_time:g} generations) in "
                                 f"{history.source}")
        models: list[DemographyModel] = []
        record: dict[str, Any] | None = None
        if ensemble:
            if cfg.engine == "msprime":
                raise ParamError("engine", "an ensemble of histories runs on the forward engine (fwdpy11 or auto)")
            engine = "fwdpy11"
        elif drawing:
            engine, models = _drawn_engine(cfg, sim, histories, strengths)
        else:
            engine = choose_engine(cfg.engine, histories[0], sim, strengths, standing=sw.standing,
                                   dominance=sw.dominance)
        if drawing:
            assert drawn is not None
            record = {"source": f"draws:{drawn['source']}", "draw": "uncertainty", "method": drawn.get("method"),
                      "seed": drawn.get("seed"), "tried": drawn.get("tried"), "names": list(drawn["names"]),
                      "vectors": [list(v) for v in drawn["vectors"]], "models": [h.to_dict() for h in histories]}
        elif ensemble:
            record = {"source": "ensemble", "weights_rule": cfg.demography["ensemble"]["weights"],
                      "weights": list(weights), "models": [h.to_dict() for h in histories]}
        if engine == "msprime":
            if drawing:
                return dataclasses.replace(plan, engine=engine, models=tuple(models), weights=tuple(weights),
                                           history=record)
            return dataclasses.replace(plan, engine=engine, history=histories[0].to_dict())
        scaling = min(choose_scaling(cfg.scaling, h, sim, strengths) for h in histories)  # one Q for every model
        forwards = tuple(_forward_config(cfg, sim, h, scaling, strengths) for h in histories)
        if not (ensemble or drawing):
            return dataclasses.replace(plan, engine=engine, forward=forwards[0], history=histories[0].to_dict())
        return dataclasses.replace(plan, engine=engine, forward=forwards[0], ensemble=forwards,
                                   weights=tuple(weights), history=record)

    def model_of(self, seed: int) -> int:
        """The history replicate ``seed`` is simulated under: its index in the ensemble or the drawn histories
        (0 without either)."""
        if not (self.ensemble or self.models):
            return 0
        assert self.weights is not None
        u = derive_seed(seed, MODEL_KEY) / MAX_SEED  # uniform in (0, 1]
        return min(int(np.searchsorted(np.cumsum(self.weights), u * sum(self.weights))), len(self.weights) - 1)

    def forward_of(self, seed: int) -> ForwardConfig | None:
        """The forward engine's config for replicate ``seed`` (its ensemble member, or the one model)."""
        return self.ensemble[self.model_of(seed)] if self.ensemble else self.forward

    def part(self, class_index: int) -> Plan:
        """The plan that simulates class ``class_index`` (its own, for classes with their own sweeps; else this)."""
        return self.parts[class_index] if self.parts and class_index >= 0 else self

    def strengths(self) -> list[tuple[float, str]]:
        """(S, label) of the sweeps this plan can simulate: its classes with S > 0, or the prior's ends
        (the weakest sweep has the widest window: it never completes before today)."""
        if self.classes is not None:
            return [(S, f"S={S:g}") for S in self.classes if S > 0]
        assert self.prior is not None
        return [(max(self.prior["min"], 1e-9), f"S={self.prior['min']:g}, the prior's minimum"),
                (self.prior["max"], f"S={self.prior['max']:g}")]

    def end_frequency(self, S: float) -> float | None:
        """The present-day frequency the forward engine conditions on (see :func:`end_frequency`)."""
        return end_frequency(self.sim, S)

    def engine_record(self) -> dict[str, Any]:
        """The engine and its settings, for the store's attrs and the report."""
        out: dict[str, Any] = {"name": self.engine}
        if self.forward is not None:
            f = self.forward
            out.update(scaling=f.scaling, dominance=f.dominance, start_frequency_rtol=f.start_frequency_rtol,
                       end_frequency_atol=f.end_frequency_atol, end_condition=f.end_condition,
                       population=f.population)
        if self.ensemble or self.models:
            out.update(models=len(self.ensemble or self.models or ()), weights=list(self.weights or ()))
        if self.parts:
            out["classes"] = {name: p.class_sweep_record() for name, p in zip(self.class_names or (), self.parts,
                                                                                strict=True)}
        return out

    def class_sweep_record(self) -> dict[str, Any]:
        """This one-class plan's sweep: onset (generations), start frequency, dominance, present-day frequency."""
        S = self.classes[0] if self.classes else 0.0
        out: dict[str, Any] = {"S": S}
        if S > 0:
            out.update(onset=self.sim.onset, start_frequency=self.sim.start_frequency,
                       end_frequency=self.end_frequency(S),
                       dominance=self.forward.dominance if self.forward is not None else 0.5)
            if self.forward is not None:
                out["end_condition"] = self.forward.end_condition
        return out

    @property
    def n_images(self) -> int:
        if self.classes is not None:
            return len(self.classes) * self.n_per_class
        assert self.prior is not None
        return int(self.prior["n"])

    def replicate_seed(self, i: int) -> int:
        return derive_seed(self.seed, i)

    @property
    def batched(self) -> bool:
        """Whether a range's replicates of one S come from one msprime call (classes, or a prior on a grid,
        on msprime; a continuous prior's S differs per replicate, the forward engine runs them one by one)."""
        has_groups = self.classes is not None or bool((self.prior or {}).get("grid"))
        return self.engine == "msprime" and self.forward is None and not self.models and has_groups

    def batch_key(self, i: int, seed: int) -> int:
        """Which batch of its range replicate i joins: its class index, or its grid value's index."""
        if self.classes is not None:
            return i % len(self.classes)
        return self._grid_index(seed)

    def batch_seed(self, first: int, key: int, position: int = 0) -> int:
        """The ancestry seed of the batch ``key`` (class or grid index) in the range starting at image
        ``first``, beginning at ``position`` among that batch's replicates (> 0 after msprime refused one)."""
        return derive_seed(self.seed, BATCH_KEY, first, key, position)

    def _grid_index(self, seed: int) -> int:
        assert self.prior is not None and self.prior.get("grid")
        return int(rng(seed, PRIOR_KEY).integers(int(self.prior["grid"])))

    def s_of(self, i: int, seed: int | None = None) -> tuple[float, int]:
        """(S, class index) of replicate i: classes interleave (i mod C) so every shard mixes classes."""
        if self.classes is not None:
            k = i % len(self.classes)
            return float(self.classes[k]), k
        assert self.prior is not None
        seed = self.replicate_seed(i) if seed is None else seed
        lo, hi, grid = self.prior["min"], self.prior["max"], self.prior.get("grid")
        if grid:
            return float(lo + (hi - lo) * self._grid_index(seed) / (int(grid) - 1)), -1
        return float(rng(seed, PRIOR_KEY).uniform(lo, hi)), -1

    def split_of(self, seed: int) -> int:
        """0 train, 1 validation, 2 test, from the replicate's own seed."""
        return split_of(seed, self.split)

    def prior_dict(self) -> dict:
        if self.classes is not None:
            return {"kind": "classes", "n_per_class": self.n_per_class}
        return {"kind": "uniform", **self.prior}

    def to_dict(self) -> dict:
        return {"sim": self.sim.to_dict(), "image": self.image.to_dict(), "seed": self.seed,
                "classes": list(self.classes) if self.classes is not None else None,
                "n_per_class": self.n_per_class, "prior": dict(self.prior or {}), "split": dict(self.split),
                "engine": self.engine, "history": self.history,
                "forward": forward_to_dict(self.forward) if self.forward is not None else None,
                "ensemble": [forward_to_dict(f) for f in self.ensemble] if self.ensemble else None,
                "weights": list(self.weights) if self.weights else None,
                "models": [m.to_dict() for m in self.models] if self.models else None,
                "class_names": list(self.class_names) if self.class_names else None,
                "parts": [p.to_dict() for p in self.parts] if self.parts else None}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(sim=SimConfig.from_dict(d["sim"]), image=ImageConfig.from_dict(d["image"]), seed=int(d["seed"]),
                   classes=tuple(d["classes"]) if d.get("classes") is not None else None,
                   n_per_class=int(d["n_per_class"]), prior=dict(d["prior"]) if d["prior"] else None,
                   engine=d["engine"], history=d["history"],
                   forward=forward_from_dict(d["forward"]) if d["forward"] else None,
                   ensemble=tuple(forward_from_dict(f) for f in d["ensemble"]) if d["ensemble"] else None,
                   weights=tuple(d["weights"]) if d["weights"] else None,
                   models=tuple(DemographyModel.from_dict(m) for m in d["models"]) if d.get("models") else None,
                   split=dict(d["split"]),
                   class_names=tuple(d["class_names"]) if d.get("class_names") else None,
                   parts=tuple(Plan.from_dict(p) for p in d["parts"]) if d.get("parts") else None)


def _drawn_histories(spec: dict, drawn: dict | None) -> tuple[list[History], list[float]]:
    """The histories of ``draw: uncertainty`` (drawn when the stage runs, after its demography stage), equally
    weighted: replicate i takes one of them at random."""
    if drawn is None:
        raise ParamError("draw", "the histories are drawn when the stage runs, from its demography stage's results")
    population, source = spec["population"], drawn["source"]
    histories = [History(graph=g, population=population, source=f"{source}#draw-{k}")
                 for k, g in enumerate(drawn["graphs"])]
    for h in histories[:1]:
        if population not in [d.name for d in h.graph.demes]:
            raise ParamError("population", f"{population!r} is not a population of {source}")
    return histories, [1.0 / len(histories)] * len(histories)


def _drawn_engine(cfg: SimulateConfig, sim: SimConfig, histories: Sequence[History],
                  strengths: list[tuple[float, str]]) -> tuple[str, list[DemographyModel]]:
    """msprime (with each drawn history's epochs) where every draw allows it, else the forward engine: one
    engine makes the whole store. ``engine: msprime`` with a draw msprime cannot run is refused, naming it."""
    sw = cfg.sweep
    models: list[DemographyModel] = []
    why_not: tuple[int, tuple[str, str]] | None = None
    for k, h in enumerate(histories):
        if h.n_populations > 1:
            names = ", ".join(d.name for d in h.graph.demes)
            why_not = why_not or (k, ("demography", f"msprime cannot run a model with several populations ({names})"))
            continue
        model = model_from_graph(h.graph, h.source, h.source)
        models.append(model)
        why = msprime_exact(h, dataclasses.replace(sim, demography=model), strengths, standing=sw.standing,
                            dominance=sw.dominance)
        if why is not None and why_not is None:
            why_not = (k, why)
    if cfg.engine != "fwdpy11" and why_not is None:
        return "msprime", models
    if cfg.engine == "msprime":
        assert why_not is not None
        k, (key, reason) = why_not
        raise ParamError(key, f"drawn history {k}: {reason}: use engine fwdpy11 (or auto)")
    for h in histories:  # the forward engine's own refusals (e.g. standing: paper is msprime's model)
        choose_engine("fwdpy11", h, sim, strengths, standing=sw.standing, dominance=sw.dominance)
    return "fwdpy11", []


def _forward_config(cfg: SimulateConfig, sim: SimConfig, history: History, scaling: float,
                    strengths: list[tuple[float, str]]) -> ForwardConfig:
    """The forward engine's config for one history, checked without simulating (errors name simulate keys)."""
    sw = cfg.sweep
    forward = ForwardConfig(
        demography=history.graph, population=history.population, n_haplotypes=sim.n_haplotypes,
        sequence_length=sim.sequence_length, mutation_rate=sim.mutation_rate,
        recombination_rate=sim.recombination_rate, reference_ne=sim.reference_ne, onset=sim.onset,
        start_frequency=sim.start_frequency, start_frequency_rtol=sw.start_frequency_rtol,
        end_frequency_atol=sw.end_frequency_atol, dominance=sw.dominance, position=sim.position,
        scaling=scaling, max_attempts=sim.max_attempts, end_condition=sw.end_condition)
    try:
        check_forward(forward, max((S for S, _label in strengths), default=0.0),
                      min((S for S, _label in strengths), default=0.0))
    except ParamError as exc:
        raise ParamError(FORWARD_KEYS.get(exc.key, exc.key), exc.reason) from None
    return forward


def _msprime_model(cfg: SimulateConfig, history: History, base_dir: str | Path):
    """The one-population epochs msprime runs (named and recorded as before the forward engine), or None.

    Built from the history's graph, so a demes file is read once.
    """
    if history.n_populations > 1:
        return None
    if isinstance(cfg.demography, str):
        return msms_model(cfg.demography, cfg.reference_ne)
    if "demes" in cfg.demography:
        path = str(input_file(cfg.demography["demes"], base_dir))
        return model_from_graph(history.graph, history.source, path, "demography.demes")
    return model_from_graph(history.graph, history.source, history.source)


def check_classes(cfg: SimulateConfig) -> None:
    """What can be checked of the classes' own sweeps without a history (one inferred later, by a demography
    stage): each class's sweep settings, errors naming the class."""
    for k, spec in enumerate(cfg.class_specs()):
        try:
            class_sweep(cfg, spec)
        except ParamError as exc:
            raise ParamError(_class_key(exc.key, k, spec), f"class {spec.name!r}: {exc.reason}") from None


def _check_partial(forward: ForwardConfig, S: float) -> None:
    """A partial sweep on the forward engine must start from standing variation: a new allele's age at a given
    frequency is random (survivors run ahead of the trajectory from one copy), so few attempts would be near
    the end frequency today."""
    if is_de_novo(forward, check_forward(forward, S)):
        raise ParamError("sweep.end_frequency", "a partial sweep of a new allele (start_frequency at most 1/(2N)) "
                         "cannot be conditioned on the forward engine, which this store needs; start it from "
                         "standing variation (a start_frequency above 1/(2N)), or keep every class on msprime")


def _class_key(key: str, k: int, spec: ClassSpec) -> str:
    """The manifest key behind an error in class ``k``'s plan: the class's own setting where it gives the value
    at fault (a partial sweep's onset comes from its end_frequency), else the stage's key."""
    name = key.removeprefix("sweep.")
    if name == "onset" and spec.end_frequency is not None:
        name = "end_frequency"
    if name == "standing":  # msprime and standing variation: the class's start frequency asks for it
        name = "start_frequency"
    return f"classes[{k}].{name}" if key.startswith("sweep.") and getattr(spec, name, None) is not None else key


def class_sweep(cfg: SimulateConfig, spec: ClassSpec) -> SweepConfig:
    """The stage's ``sweep`` with a class's own settings: a partial sweep's onset (generations) is when the
    deterministic trajectory from its start frequency reaches its end frequency, and its forward replicates
    are conditioned on being near that frequency today."""
    sw = cfg.sweep
    own = {k: v for k, v in (("start_frequency", spec.start_frequency), ("onset", spec.onset),
                             ("dominance", spec.dominance)) if v is not None}
    if spec.end_frequency is not None:
        start = own.get("start_frequency", sw.start_frequency)
        if spec.end_frequency <= start:
            raise ParamError("sweep.end_frequency", f"{spec.end_frequency:g} must be above the start frequency "
                             f"({start:g})")
        s = selection_coefficient(spec.S, cfg.reference_ne)
        own.update(onset=generations_between(s, start, spec.end_frequency), onset_unit="generations",
                   end_condition="near")
    return dataclasses.replace(sw, **own)


def split_of(seed: int, split: dict) -> int:
    """0 train, 1 validation, 2 test, from a replicate's own seed and the split fractions."""
    u = derive_seed(seed, SPLIT_KEY) / MAX_SEED  # uniform in (0, 1], cheaper than a Generator
    if u < split["train"]:
        return 0
    if u < split["train"] + split["validation"]:
        return 1
    return 2


def end_frequency(sim: SimConfig, S: float) -> float | None:
    """The present-day frequency a forward replicate is conditioned on: the deterministic trajectory's,
    1 (fixation) for a sweep complete before today, None for a neutral replicate."""
    timing = sim.timing(S)
    if timing is None:
        return None
    return 1.0 if timing.complete else timing.end_frequency


def forward_to_dict(cfg: ForwardConfig) -> dict[str, Any]:
    """JSON-ready ForwardConfig (its demes graph as a dict), for tasks and the store's attrs."""
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    d["demography"] = cfg.demography.asdict()
    return d


def forward_from_dict(d: dict[str, Any]) -> ForwardConfig:
    """Inverse of :func:`forward_to_dict`."""
    import demes

    # stores written before end_condition conditioned every sweep on being near the trajectory's frequency
    return ForwardConfig(**{"end_condition": "near", **d,
                            "demography": demes.Builder.fromdict(d["demography"]).resolve()})
