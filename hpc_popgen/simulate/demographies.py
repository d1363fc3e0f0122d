"""Single-population demographies: the paper's msms models by name, or a demes YAML file.

A demography is kept as a list of epochs (start/end time in generations, size, growth rate), which is
what the image store records; msprime's Demography is rebuilt from it, so a stored replicate can be
re-simulated without the original file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import demes
import msprime

from ..catalogue import MARTH_2004, TORADA_2019, Catalogue, Entry
from ..errors import ParamError
from ..paths import input_file
from .units import msms_time_to_generations

POPULATION = "pop0"
LINEAR_PIECE_RATIO = 1.02  # size ratio across one exponential piece of a linear epoch (at most)

# The paper's msms models, as (time in 4Ne generations, size in units of Ne), most recent first: ImaGene's
# command lines `-eN 0 2 -eN 0.075 0.2 -eN 0.0875 1` (3 epochs) and `-eN 0 14 -eN 0.05 1` (2 epochs).
MSMS_MODELS: Catalogue[tuple[tuple[float, float], ...]] = Catalogue("demography", "demography")
MSMS_MODELS.add(Entry(id="constant", description="constant size Ne (ImaGene's 1-epoch model)",
                      citations=(TORADA_2019,), value=((0.0, 1.0),)))
MSMS_MODELS.add(Entry(id="marth2", description="2 epochs: Ne, then 14 Ne for the last 0.05 x 4Ne generations "
                      "(ImaGene's 2-epoch expansion after Marth et al.)",
                      citations=(TORADA_2019, MARTH_2004), value=((0.0, 14.0), (0.05, 1.0))))
MSMS_MODELS.add(Entry(id="marth3", description="3 epochs: Ne; a 0.2 Ne bottleneck from 0.0875 to 0.075 x 4Ne "
                      "generations ago; 2 Ne since (European history of Marth et al., ImaGene's main model)",
                      citations=(TORADA_2019, MARTH_2004), value=((0.0, 2.0), (0.075, 0.2), (0.0875, 1.0))))


@dataclass(frozen=True)
class Epoch:
    """One epoch, going back in time: from ``start`` to ``end`` generations ago (end may be inf)."""

    start: float
    end: float
    size: float  # at ``start`` (the recent end)
    growth_rate: float = 0.0

    def to_dict(self) -> dict:
        return {"start": self.start, "end": None if math.isinf(self.end) else self.end,
                "size": self.size, "growth_rate": self.growth_rate}


@dataclass(frozen=True)
class DemographyModel:
    """A named single-population model as a list of epochs (most recent first)."""

    name: str
    epochs: tuple[Epoch, ...]
    source: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "epochs": [e.to_dict() for e in self.epochs]}

    @classmethod
    def from_dict(cls, d: dict) -> DemographyModel:
        eps = tuple(Epoch(e["start"], math.inf if e["end"] is None else e["end"], e["size"], e.get("growth_rate", 0.0))
                    for e in d["epochs"])
        return cls(d["name"], eps, d.get("source", ""))

    def msprime(self) -> msprime.Demography:
        """The msprime Demography: one population, a size change at the start of each older epoch."""
        dem = msprime.Demography()
        first = self.epochs[0]
        dem.add_population(name=POPULATION, initial_size=first.size, growth_rate=first.growth_rate)
        for ep in self.epochs[1:]:
            dem.add_population_parameters_change(time=ep.start, initial_size=ep.size,
                                                 growth_rate=ep.growth_rate, population=POPULATION)
        return dem

    def events_in(self, t0: float, t1: float) -> list[str]:
        """Descriptions of size changes or growth inside the window (t0, t1] generations ago."""
        out = []
        for ep in self.epochs[1:]:
            if t0 < ep.start <= t1:
                out.append(f"size change to {ep.size:g} at {ep.start:g} generations")
        for ep in self.epochs:
            if ep.growth_rate != 0 and ep.start < t1 and ep.end > t0:
                out.append(f"exponential growth (rate {ep.growth_rate:g}) between {ep.start:g} and {ep.end:g} generations")
        return out


def msms_model(name: str, ne: float) -> DemographyModel:
    """One of the paper's msms models with sizes scaled by the reference Ne."""
    if name not in MSMS_MODELS:
        raise ParamError("demography", f"unknown model {name!r} (known: {', '.join(MSMS_MODELS.ids())}; "
                         "or {demes: FILE})")
    rows = MSMS_MODELS.get(name).value
    epochs = []
    for k, (t, size) in enumerate(rows):
        start = msms_time_to_generations(t, ne)
        end = msms_time_to_generations(rows[k + 1][0], ne) if k + 1 < len(rows) else math.inf
        epochs.append(Epoch(start, end, size * ne))
    return DemographyModel(name, tuple(epochs), source="msms")


def demes_model(path: str | Path) -> DemographyModel:
    """A single-deme demes YAML file as epochs in generations (years converted by its generation_time)."""
    path = Path(path)
    key = "demography.demes"
    try:
        graph = demes.load(path)
    except FileNotFoundError:
        raise ParamError(key, f"{path}: demes file not found") from None
    except KeyError as exc:
        raise ParamError(key, f"{path}: not a valid demes model: missing key {exc}") from None
    except Exception as exc:  # noqa: BLE001 - demes raises many kinds for bad files
        raise ParamError(key, f"{path}: not a valid demes model: {type(exc).__name__}: {exc}") from None
    if len(graph.demes) != 1:
        names = ", ".join(d.name for d in graph.demes)
        raise ParamError(key, f"{path}: sweeps need a single-population model; this one has {len(graph.demes)} "
                         f"demes ({names})")
    return model_from_graph(graph, f"demes:{path.name}", str(path), key)


def linear_as_exponential(graph: demes.Graph) -> demes.Graph:
    """The graph in generations with each linear size change (GADMA's dynamic 1, which msprime cannot
    run) as consecutive exponential pieces that meet the line at their ends, each spanning a size ratio
    r <= LINEAR_PIECE_RATIO; within a piece the sizes differ from the line by at most (1 + r) / (2 sqrt r)
    - 1 (5e-5 at r = 1.02). fwdpy11 runs linear epochs itself; this is for msprime."""
    graph = graph.in_generations()
    if not any(ep.size_function == "linear" and ep.start_size != ep.end_size for d in graph.demes for ep in d.epochs):
        return graph
    data = graph.asdict()
    for d in data["demes"]:
        epochs, start = [], d["start_time"]
        for ep in d["epochs"]:
            n0, n1, end = ep["start_size"], ep["end_size"], ep["end_time"]
            if ep["size_function"] != "linear" or n0 == n1:
                epochs.append({**ep, "size_function": "constant"} if n0 == n1 else ep)
                start = end
                continue
            n = max(1, math.ceil(abs(math.log(n1 / n0)) / math.log(LINEAR_PIECE_RATIO)))
            size = n0
            for k in range(1, n + 1):
                nxt = n1 if k == n else n0 * (n1 / n0) ** (k / n)  # sizes on a geometric grid, times on the line
                t = end if k == n else start - (start - end) * (nxt - n0) / (n1 - n0)
                epochs.append({**ep, "end_time": t, "start_size": size, "end_size": nxt, "size_function": "exponential"})
                size = nxt
            start = end
        d["epochs"] = epochs
    return demes.Builder.fromdict(data).resolve()


def msprime_demography(graph: demes.Graph) -> msprime.Demography:
    """msprime's Demography of a demes graph, linear size changes included (:func:`linear_as_exponential`)."""
    return msprime.Demography.from_demes(linear_as_exponential(graph))


def model_from_graph(graph, name: str, source: str, key: str = "demography") -> DemographyModel:
    """A one-deme demes graph as epochs in generations (msprime's growth convention; linear size changes
    as exponential pieces, :func:`linear_as_exponential`)."""
    graph = linear_as_exponential(graph)
    deme = graph.demes[0]
    epochs = []
    for ep in sorted(deme.epochs, key=lambda e: e.end_time):
        if ep.size_function not in ("constant", "exponential"):
            raise ParamError(key, f"{source}: deme {deme.name}: size function {ep.size_function!r} is not supported")
        growth = 0.0
        if ep.size_function == "exponential" and ep.start_size != ep.end_size:
            growth = math.log(ep.end_size / ep.start_size) / (ep.start_time - ep.end_time)
        epochs.append(Epoch(float(ep.end_time), float(ep.start_time), float(ep.end_size), growth))
    return DemographyModel(name, tuple(epochs), source=source)


def graph_from_model(model: DemographyModel) -> demes.Graph:
    """The project's single-population epochs (msprime growth convention) as a one-deme demes graph
    named like the msprime path's population, for the forward engine
    (the inverse of :func:`model_from_graph`)."""
    b = demes.Builder(description=model.name, time_units="generations")
    epochs = []
    for ep in reversed(model.epochs):  # oldest first
        if math.isinf(ep.end):
            if ep.growth_rate != 0:
                raise ParamError("demography", f"{model.name}: the oldest epoch cannot grow")
            epochs.append(dict(start_size=ep.size, end_time=ep.start))
        else:
            older = ep.size * math.exp(-ep.growth_rate * (ep.end - ep.start))
            epochs.append(dict(start_size=older, end_size=ep.size, end_time=ep.start))
    b.add_deme(POPULATION, epochs=epochs)
    return b.resolve()


def load_demography(spec: str | dict, ne: float, base_dir: str | Path = ".") -> DemographyModel:
    """``'marth3'`` or ``{'demes': 'model.yaml'}`` (relative to ``base_dir``) -> DemographyModel."""
    if isinstance(spec, str):
        return msms_model(spec, ne)
    return demes_model(input_file(spec["demes"], base_dir))
