"""Which engine makes a simulate stage's replicates, and the forward engine's scaling factor Q.

msprime's SweepGenicSelection is exact only for a de novo additive sweep in one population with no
demographic event inside the sweep window; its start frequency above 1/(2N) releases the beneficial
lineages into the whole population (msprime issue 1762), which is the paper's model (msms -SI), not
a true history. ``auto`` therefore takes msprime only where it is exact (or where ``standing: paper``
asks for the paper's model) and the forward engine (fwdpy11) everywhere else. One engine makes every
image of a store, so a CNN cannot learn the engine instead of the sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import ParamError
from .histories import History
from .replicate import SimConfig

AUTO_Q_MAX = 10  # stdpopsim's advice: scaling beyond ~10 distorts linked selection
AUTO_Q_MIN_SIZE = 500  # diploids each deme keeps in the sweep window after scaling
AUTO_Q_MAX_S = 0.25  # the scaled selection coefficient of the strongest sweep stays below this


def from_standing_variation(history: History, sim: SimConfig) -> bool:
    """Whether the sweep starts above one copy, 1/(2N) of the population at the onset."""
    return sim.start_frequency > 1.0 / (2.0 * history.size_at(sim.onset))


def msprime_exact(history: History, sim: SimConfig, strengths: Sequence[tuple[float, str]], *, standing: str,
                  dominance: float) -> tuple[str, str] | None:
    """(key, reason) why msprime would not be exact (or not the model asked for) for sweeps of the
    given (S, label) strengths; None when it is."""
    if not strengths:
        return None
    if history.n_populations > 1 or sim.demography is None:
        names = ", ".join(d.name for d in history.graph.demes)
        return "demography", f"msprime cannot simulate a sweep in a model with several populations ({names})"
    if dominance != 0.5:
        return "sweep.dominance", f"msprime's sweeps are additive (dominance {dominance:g})"
    if standing != "paper" and from_standing_variation(history, sim):
        one_copy = 1 / (2 * history.size_at(sim.onset))
        return "sweep.standing", (f"msprime cannot simulate true standing variation (start_frequency "
                                  f"{sim.start_frequency:g} > 1/(2N) = {one_copy:.3g}); its sweeps release "
                                  "the beneficial lineages (sweep.standing: paper)")
    for S, label in strengths:
        timing = sim.timing(S)
        events = sim.demography.events_in(timing.end_time, sim.onset)
        if events:
            return "demography", (f"{events[0]} lies inside the sweep window ({timing.end_time:g}, {sim.onset:g}] "
                                  f"generations ago ({label}); msprime cannot simulate demographic events during a "
                                  "sweep")
    return None


def choose_engine(requested: str, history: History, sim: SimConfig, strengths: Sequence[tuple[float, str]], *,
                  standing: str, dominance: float) -> str:
    """``msprime`` or ``fwdpy11`` for ``requested`` (auto, msprime, fwdpy11); ParamError if it cannot be."""
    why_not = msprime_exact(history, sim, strengths, standing=standing, dominance=dominance)
    if requested == "msprime" and why_not is not None:
        key, reason = why_not
        raise ParamError(key, f"{reason}: use engine fwdpy11 (or auto)")
    if requested == "fwdpy11" and strengths and standing == "paper" and from_standing_variation(history, sim):
        raise ParamError("sweep.standing", "'paper' is msprime's release of the beneficial lineages; the forward "
                         "engine simulates the true history (standing: true_history, or engine: msprime)")
    if requested == "auto":
        return "msprime" if why_not is None else "fwdpy11"
    return requested


def choose_scaling(requested: str | float, history: History, sim: SimConfig,
                   strengths: Sequence[tuple[float, str]]) -> float:
    """The forward engine's Q: as given, or ``auto`` (the largest integer Q <= AUTO_Q_MAX that keeps every
    deme at >= AUTO_Q_MIN_SIZE diploids in the sweep window, Q s <= AUTO_Q_MAX_S for the strongest sweep,
    and enough genomes to sample)."""
    if requested != "auto":
        return float(requested)
    window = max(sim.onset, 1.0)
    bounds = [AUTO_Q_MAX, history.min_size_within(window) / AUTO_Q_MIN_SIZE,
              history.present_size() / max(sim.n_haplotypes, 1)]
    s_max = max((S for S, _label in strengths), default=0.0) / sim.reference_ne
    if s_max > 0:
        bounds.append(AUTO_Q_MAX_S / s_max)
    return float(max(1, math.floor(min(bounds))))
