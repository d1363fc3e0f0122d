"""Demographic histories for the simulate stage: a demes graph and the population where the sweep happens.

A history comes from the catalogue (the paper's msms models), a demes file, a stdpopsim model, or the
demes YAML that a ``demography`` stage wrote (``RUN_DIR/<stage>/structure-*/model.demes.yaml``). All
become a :class:`History`, whose graph is in generations; errors are ``ParamError`` naming the key
relative to the ``demography`` entry of the simulate config.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import demes

from ..errors import ParamError
from ..paths import input_file


@dataclass(frozen=True, kw_only=True)
class History:
    """A demes graph (time units: generations) and the population sampled and swept in it."""

    graph: demes.Graph
    population: str
    source: str  # what the user named: "marth3", "demes:model.yaml", "stdpopsim:HomSap/...", "stage:..."

    @property
    def n_populations(self) -> int:
        return len(self.graph.demes)

    def deme(self) -> demes.Deme:
        return self.graph[self.population]

    def present_size(self) -> float:
        """The population's size at the present (its most recent epoch's end size)."""
        return float(self.deme().epochs[-1].end_size)

    def size_at(self, t: float) -> float:
        """The population's size ``t`` generations ago (0 where it did not exist)."""
        for ep in self.deme().epochs:
            if ep.end_time <= t <= ep.start_time:
                return _epoch_size_at(ep, t)
        return 0.0

    def min_size_within(self, t: float) -> float:
        """The smallest size of any deme alive in the last ``t`` generations, over that window."""
        return float(min(min(ep.end_size, _epoch_size_at(ep, min(ep.start_time, t)))
                         for deme in self.graph.demes for ep in deme.epochs if ep.end_time < t))

    def events_in(self, t0: float, t1: float) -> list[str]:
        """What changes inside (t0, t1] generations ago, for the population's lineages: sizes, growth,
        migration, splits and pulses; empty when the window is demographically quiet."""
        out = []
        deme = self.deme()
        for ep in deme.epochs:
            if t0 < ep.end_time <= t1 and ep.end_time > 0:
                out.append(f"{deme.name}: size change at {ep.end_time:g} generations")
            if ep.size_function != "constant" and ep.start_size != ep.end_size and ep.end_time < t1 \
                    and ep.start_time > t0:
                out.append(f"{deme.name}: {ep.size_function} size change between {ep.end_time:g} and "
                           f"{min(ep.start_time, 1e300):g} generations")
        if math.isfinite(deme.start_time) and t0 < deme.start_time <= t1:
            out.append(f"{deme.name}: founded at {deme.start_time:g} generations")
        for m in self.graph.migrations:
            if self.population in (m.source, m.dest) and m.end_time < t1 and m.start_time > t0:
                out.append(f"migration {m.source} -> {m.dest} between {m.end_time:g} and "
                           f"{min(m.start_time, 1e300):g} generations")
        for p in self.graph.pulses:
            if (self.population == p.dest or self.population in p.sources) and t0 < p.time <= t1:
                out.append(f"pulse into {p.dest} at {p.time:g} generations")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (for store attrs and the report): the source, population and demes graph."""
        return {"source": self.source, "population": self.population, "graph": self.graph.asdict_simplified()}


def _epoch_size_at(ep: demes.Epoch, t: float) -> float:
    """Size of a demes epoch ``t`` generations ago (``t`` inside it; constant, exponential or linear)."""
    if ep.size_function == "constant" or ep.start_size == ep.end_size or math.isinf(ep.start_time):
        return float(ep.end_size)
    frac = (ep.start_time - t) / (ep.start_time - ep.end_time)
    if ep.size_function == "linear":
        return float(ep.start_size + (ep.end_size - ep.start_size) * frac)
    return float(ep.start_size * (ep.end_size / ep.start_size) ** frac)


def _stage_dir(stage_dirs: dict[str, Path] | None, stage: str, key: str) -> Path:
    if not stage_dirs or stage not in stage_dirs:
        raise ParamError(key, f"stage {stage!r} has no output folder here")
    return Path(stage_dirs[stage])


def _stage_model_history(stage_dir: Path, model_dir: str, population: str | None, stage: str) -> History:
    """The demes YAML a demography stage wrote into ``model_dir``, as a History named after both."""
    h = demes_history(stage_dir / model_dir / "model.demes.yaml", population)
    return History(graph=h.graph, population=h.population, source=f"stage:{stage}/{model_dir}")


def _choose_population(graph: demes.Graph, population: str | None, source: str) -> str:
    names = [d.name for d in graph.demes]
    if population is None:
        if len(names) == 1:
            return names[0]
        raise ParamError("population", f"{source} has {len(names)} populations ({', '.join(names)}): "
                         "name the one to sample and sweep")
    if population not in names:
        raise ParamError("population", f"{population!r} is not a population of {source} "
                         f"(populations: {', '.join(names)})")
    if graph[population].end_time > 0:
        raise ParamError("population", f"{population!r} in {source} ends {graph[population].end_time:g} "
                         "generations ago: sample a population that exists today")
    return population


def demes_history(path: str | Path, population: str | None) -> History:
    """A demes YAML file; ``population`` may be left out when the file has one deme."""
    path = Path(path)
    try:
        graph = demes.load(path)
    except FileNotFoundError:
        raise ParamError("demes", f"{path}: demes file not found") from None
    except Exception as exc:  # noqa: BLE001 - demes raises many kinds for bad files
        raise ParamError("demes", f"{path}: not a valid demes model: {type(exc).__name__}: {exc}") from None
    graph = graph.in_generations()
    source = f"demes:{path.name}"
    return History(graph=graph, population=_choose_population(graph, population, str(path)), source=source)


def stdpopsim_history(model_id: str, population: str | None) -> History:
    """A published model from the stdpopsim catalogue, ``"Species/ModelId"`` (e.g. HomSap/OutOfAfrica_3G09)."""
    import stdpopsim

    species_id, _, model_name = model_id.partition("/")
    try:
        species = stdpopsim.get_species(species_id)
    except ValueError:
        known = ", ".join(s.id for s in stdpopsim.all_species())
        raise ParamError("stdpopsim", f"unknown species {species_id!r} (known: {known})") from None
    try:
        model = species.get_demographic_model(model_name)
    except ValueError:
        known = ", ".join(m.id for m in species.demographic_models)
        raise ParamError("stdpopsim", f"{species_id} has no demographic model {model_name!r} "
                         f"(known: {known})") from None
    graph = model.model.to_demes().in_generations()
    return History(graph=graph, population=_choose_population(graph, population, model_id),
                   source=f"stdpopsim:{model_id}")


def stage_results(stage_dir: str | Path) -> dict[str, Any]:
    """A demography stage's results.json (its ``structures``: structure, loglik, aic, dir; ``best``)."""
    results = Path(stage_dir) / "results.json"
    try:
        summary = json.loads(results.read_text())
    except FileNotFoundError:
        raise ParamError("from_stage", f"{results}: the demography stage has no results yet") from None
    if not summary.get("structures"):
        raise ParamError("from_stage", f"{results}: no structure was inferred")
    return summary


def stage_models(stage_dir: str | Path) -> list[dict[str, Any]]:
    """The models a demography stage wrote (one per structure: structure, loglik, aic, dir), from results.json."""
    return stage_results(stage_dir)["structures"]


def stage_model_dir(stage_dir: str | Path, structure: str) -> str:
    """The folder of the model a demography stage wrote for ``structure``: ``best`` (what an information
    criterion prefers: the stage's ``best``, CLAIC where it had bootstraps, else AIC), ``best_aic``,
    ``best_loglik`` (the highest likelihood: for nested structures always the largest) or ``2-1``."""
    summary = stage_results(stage_dir)
    entries = summary["structures"]
    if structure == "best":
        chosen = summary.get("best")
        if chosen:
            return chosen["dir"]
        have_claic = all(e.get("claic") is not None for e in entries)
        return min(entries, key=lambda e: e["claic"] if have_claic else e["aic"])["dir"]
    if structure == "best_aic":
        return min(entries, key=lambda e: e["aic"])["dir"]
    if structure == "best_loglik":
        return max(entries, key=lambda e: e["loglik"])["dir"]
    pick = next((e for e in entries if "-".join(map(str, e["structure"])) == structure), None)
    if pick is None:
        have = ", ".join("-".join(map(str, e["structure"])) for e in entries)
        raise ParamError("structure", f"{structure!r} was not inferred by that stage (structures: {have})")
    return pick["dir"]


def stage_history(stage_dir: str | Path, structure: str, population: str | None, stage: str) -> History:
    """The history a demography stage inferred for ``structure``, read from its demes YAML."""
    return _stage_model_history(Path(stage_dir), stage_model_dir(stage_dir, structure), population, stage)


def resolve_history(spec: str | dict, ne: float, base_dir: str | Path,
                    stage_dirs: dict[str, Path] | None = None) -> History:
    """The ``demography`` entry of a simulate config as a History (``stage_dirs``: demography stage -> folder)."""
    from .demographies import POPULATION, graph_from_model, msms_model

    if isinstance(spec, str):
        return History(graph=graph_from_model(msms_model(spec, ne)), population=POPULATION, source=spec)
    population = spec.get("population")
    if "demes" in spec:
        return demes_history(input_file(spec["demes"], base_dir), population)
    if "stdpopsim" in spec:
        return stdpopsim_history(spec["stdpopsim"], population)
    stage = spec["from_stage"]
    return stage_history(_stage_dir(stage_dirs, stage, "from_stage"), spec["structure"], population, stage)


def ensemble_histories(spec: dict, base_dir: str | Path,
                       stage_dirs: dict[str, Path] | None = None) -> tuple[list[History], list[float]]:
    """``{ensemble: {from_stage, top, weights} | {demes: [...], weights}, population}`` -> (histories, weights).

    From a demography stage: its best model of each structure, the ``top`` best by AIC first, weighted
    equally or by Akaike weights (exp(-dAIC/2), normalised). From demes files: equal weights.
    """
    ens, population = spec["ensemble"], spec["population"]
    if ("from_stage" in ens) == ("demes" in ens):
        raise ParamError("ensemble", "give either from_stage (a demography stage's models) or demes (files)")
    if "demes" in ens:
        if ens["weights"] == "akaike":
            raise ParamError("ensemble.weights", "akaike weights need each model's AIC: use from_stage, or "
                             "weights: equal")
        histories = []
        for i, name in enumerate(ens["demes"]):
            try:
                histories.append(demes_history(input_file(name, base_dir), population))
            except ParamError as exc:
                raise ParamError(f"ensemble.demes[{i}]" if exc.key == "demes" else exc.key, exc.reason) from None
        return histories, [1.0 / len(histories)] * len(histories)
    stage = ens["from_stage"]
    stage_dir = _stage_dir(stage_dirs, stage, "ensemble.from_stage")
    entries = sorted(stage_models(stage_dir), key=lambda e: e["aic"])[: ens["top"]]
    histories = [_stage_model_history(stage_dir, e["dir"], population, stage) for e in entries]
    if ens["weights"] == "akaike":
        raw = [math.exp(-(e["aic"] - entries[0]["aic"]) / 2.0) for e in entries]
    else:
        raw = [1.0] * len(entries)
    return histories, [w / sum(raw) for w in raw]
