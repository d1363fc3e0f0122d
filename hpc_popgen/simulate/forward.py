"""Forward-time sweep engine (fwdpy11): sweeps during size changes, in multi-population models, and
true sweeps from standing variation, which msprime's structured coalescent cannot simulate.

A replicate has three parts:

1. **Neutral past (msprime).** The ancestry of every genome alive ``onset`` generations ago (all demes
   alive then, at their sizes then) is simulated with msprime under the same demes graph, sampled at
   that time and shifted to time 0, and loaded as the initial population
   (:func:`population_from_tskit`, fwdpy11's ``create_from_tskit`` without its slow loop). No burn-in: the forward phase covers only
   the ``onset`` generations of selection.
2. **Forward phase (fwdpy11).** The demes graph restricted to the last ``onset`` generations (demes
   alive at the onset become root demes of constant size, older events are dropped) runs as a
   :class:`fwdpy11.ForwardDemesGraph`; the selected allele is the only mutation in the forward phase.
3. **Neutral mutations (msprime).** ``n_haplotypes`` genomes of ``population`` are drawn at random from
   the present generation, fwdpy11's nodes and edges (as ``dump_tables_to_tskit`` writes them, without
   its slow per-individual metadata) are simplified to them and ``msprime.sim_mutations`` adds neutral
   mutations (binary, continuous genome, as the msprime path). The selected site itself is not in the
   matrix (as in the msprime path).

API: :func:`simulate_forward` (``ForwardConfig``, S, seed, ``end_frequency``) -> :class:`ForwardReplicate`,
raising :class:`ForwardRefused` when no attempt is accepted; :func:`hpc_popgen.simulate.demographies.graph_from_model` turns the
project's single-population epoch models (``marth3``...) into a demes graph.

**Selection.** S is in 2Ne units for the reference Ne, as the msprime path: msprime's ``s = S / Ne``
with fitnesses 1, 1 + h s, 1 + s (h = ``dominance``, 0.5 = additive, i.e. msprime's 1, 1+s/2, 1+s).
Those are rates of a continuous-time model; a Wright-Fisher generation with fitness 1 + x grows the
allele by log(1 + x), not x, which at Q s = 0.24 makes a sweep 11% slower than msprime's (its logit
rises by s/2 per generation). So the forward engine uses the fitnesses exp(Q h s) and exp(Q s), whose
logarithms are the scaled rates: with h = 0.5 the logit then rises by exactly Q s / 2 per generation
at every frequency, as in msprime's trajectory, whatever Q. fwdpy11's :class:`fwdpy11.Additive` with
``scaling=2`` gives 1, 1 + h' e, 1 + 2e, so ``e = expm1(Q s) / 2`` and ``h' = expm1(Q h s) / e``.

**De novo hard sweep** (``start_frequency`` <= 1/(2N) of ``population`` at the onset): one new copy on
a random genome of ``population`` at the onset (:meth:`fwdpy11.DiploidPopulation.add_mutation`).

**Standing variation** (``start_frequency`` f > 1/(2N)): the allele arose once, as a neutral mutation,
on a branch of the genealogy of the population at the onset, and is beneficial from the onset on.
Under neutrality the genealogy does not depend on the mutation, and a mutation that arose once sits on
one branch with probability proportional to the branch's length; conditioning on its count k in
``population`` at the onset, the branch is one whose node has k descendants in ``population``
(copies in other demes allowed). So, on the msprime genealogy at the selected position, we draw a
branch among those with k in [f (1 - rtol), f (1 + rtol)] x 2N (``start_frequency_rtol``), weighted by
branch length, put the mutation on it at an integer time drawn uniformly on the branch, and import it
with fwdpy11's metadata (``import_mutations=True``). This samples "arose once in the past, drifted
neutrally, is near f at the onset" (up to the coalescent approximation of the neutral past and integer
mutation times) without rejection-sampling a forward neutral phase (a new mutation ever reaches 1%
with probability ~1/(2N f)); unlike msprime's start_frequency (msprime issue 1762), the carriers share
the neutral genealogy they had before selection started, so linked variation is that of a real
standing variant. (fwdpy11's own ``add_mutation`` also weights by branch length but needs an exact
count and all carriers in one deme.)

**Conditioning.** As :mod:`fwdpy11.conditional_models` does, by rejection: an attempt restarts when
the allele is lost, or ends with the present-day frequency in ``population`` failing ``end_condition``
against ``end_frequency`` (from the caller: the deterministic trajectory's, or 1 for fixation; ``None``
conditions on not being lost): ``near``, within ``end_frequency_atol`` of it; ``at_least``, at or above it
less ``end_frequency_atol`` (fixation included); ``auto``, ``at_least`` for a de novo sweep and ``near``
for standing variation. A new allele's establishment time is random, and those that escape drift run
ahead of the deterministic trajectory from 1/(2N) by a random amount, so "near the trajectory's
frequency today" is an event few de novo sweeps meet (it failed every attempt of a genome-scan job); "at
least there by today" is what a user means by a sweep that started ``onset`` generations ago. An attempt
stops as soon as the allele is lost, or has fixed where ``near`` wants less than 1 - atol (both states are
absorbing, so a rejected attempt costs only its generations up to then). A de novo allele escapes drift
with probability about 2 Q h s (:func:`establishment_probability`); :func:`check_forward` refuses a
config whose weakest sweep would fail all ``max_attempts`` attempts in more than 1% of replicates. The neutral past is simulated
once per replicate: given the allele's copies at the onset, its future does not depend on the neutral
genealogy, so rejecting on the forward phase alone samples the right conditional distribution. The
standing-variation branch and the de novo carrier are drawn anew in every attempt. Attempt ``a`` uses
seeds derived from (seed, a) (:func:`hpc_popgen.seeds.derive_seed`), so a replicate is determined by
its seed. ``S = 0`` runs the same path without the allele (one attempt, ``end_frequency`` ignored), so
neutral and sweep replicates share the engine's discretisation and scaling.

**Scaling factor Q** (as stdpopsim does for SLiM): sizes and times are divided by Q, s, r, mu and
migration rates multiplied by Q, S = 2 Ne s_het stays fixed; the onset becomes ``round(onset / Q)``
generations. A Q that makes a size, the onset or a migration rate invalid, or a scaled selection
coefficient exceed 1, is refused (``ParamError("scaling", ...)``).

Linear size changes run as fwdpy11 runs them (demes-forward) in the forward phase, and as exponential
pieces on the line in msprime's past (:func:`hpc_popgen.simulate.demographies.linear_as_exponential`).
Not supported (``ParamError("demography", ...)``): selfing, cloning; an onset that
falls exactly on a deme's start/end or a pulse (``ParamError("onset", ...)``).
"""

from __future__ import annotations

import copy
import decimal
import logging
import math
from dataclasses import dataclass

import demes
import fwdpy11
import msprime
import numpy as np
import tskit
from scipy.special import lambertw

from ..errors import ParamError
from ..seeds import derive_seed
from .demographies import msprime_demography
from .replicate import SimulationRefused
from .units import selection_coefficient

log = logging.getLogger(__name__)

SIMPLIFICATION_INTERVAL = 100  # generations between fwdpy11 table simplifications
MAX_FAILED_FRACTION = 0.01  # check_forward refuses a de novo sweep that fails all attempts more often


class ForwardRefused(SimulationRefused):
    """No attempt of a forward replicate met the conditioning within ``max_attempts``."""


@dataclass(frozen=True, kw_only=True)
class ForwardConfig:
    """Everything but S and the seed that decides a forward replicate (defaults: the stage's schema)."""

    demography: demes.Graph
    population: str  # deme where the sweep happens and the haplotypes are sampled (at present)
    n_haplotypes: int
    sequence_length: float  # bp
    mutation_rate: float  # per bp per generation
    recombination_rate: float  # per bp per generation
    reference_ne: float  # Ne of the S = 2 Ne s_het convention
    onset: float  # generations before present when selection starts
    start_frequency: float  # at the onset; <= 1/(2N) means a de novo sweep from one copy
    start_frequency_rtol: float  # relative tolerance on the count at the onset (standing variation)
    end_frequency_atol: float  # absolute tolerance on the present-day frequency
    dominance: float  # h: fitness 1, 1 + h s, 1 + s (0.5 = additive)
    position: float  # selected site, fraction of the region
    scaling: float  # Q
    max_attempts: int
    end_condition: str  # near, at_least or auto (module docstring)


@dataclass
class ForwardReplicate:
    """A simulated region: haplotypes (n_haps, n_sites) uint8, positions in bp, attempts used, the
    selected allele's frequency in ``population`` at the onset and at the present (0 when neutral), and
    when it fixed in the whole population, in unscaled generations ago (None: not fixed)."""

    matrix: np.ndarray
    positions: np.ndarray
    attempts: int
    frequency: float
    start_frequency: float
    fixation_time: float | None = None


def _round_half_up(x: float) -> int:
    """Rounding as fwdpy11 rounds demes sizes and times (so msprime's samples match its sizes)."""
    with decimal.localcontext() as ctx:
        ctx.rounding = decimal.ROUND_HALF_UP
        return int(decimal.Decimal(float(x)).to_integral_value())


def _size_at(epoch: dict, t: float) -> float:
    """Size of a demes epoch (dict form, with its start_time added) at time t inside it."""
    if epoch["size_function"] == "constant" or epoch["start_size"] == epoch["end_size"]:
        return float(epoch["end_size"])
    span = epoch["start_time"] - epoch["end_time"]
    if epoch["size_function"] == "linear":
        return float(epoch["start_size"]) + (epoch["end_size"] - epoch["start_size"]) * (epoch["start_time"] - t) / span
    return float(epoch["start_size"]) * (epoch["end_size"] / epoch["start_size"]) ** ((epoch["start_time"] - t) / span)


def _epochs_with_start(deme: dict) -> list[dict]:
    out, start = [], deme["start_time"]
    for ep in deme["epochs"]:
        out.append({**ep, "start_time": start})
        start = ep["end_time"]
    return out


def _check_features(graph: demes.Graph) -> None:
    for d in graph.demes:
        for ep in d.epochs:
            if ep.selfing_rate or ep.cloning_rate:
                raise ParamError("demography", f"deme {d.name}: selfing and cloning are not supported by the "
                                 "forward engine")
            if ep.size_function not in ("constant", "exponential", "linear"):
                raise ParamError("demography", f"deme {d.name}: size function {ep.size_function!r} is not "
                                 "supported (constant, exponential or linear)")


def _scaled_dict(graph: demes.Graph, Q: float) -> dict:
    """The graph (in generations) as a dict with sizes and times / Q and migration rates x Q."""
    data = graph.in_generations().asdict()
    for d in data["demes"]:
        d["start_time"] = d["start_time"] / Q
        for ep in d["epochs"]:
            ep["end_time"] = ep["end_time"] / Q
            ep["start_size"] = ep["start_size"] / Q
            ep["end_size"] = ep["end_size"] / Q
    for m in data.get("migrations", []):
        m["start_time"] = m["start_time"] / Q
        m["end_time"] = m["end_time"] / Q
        m["rate"] = m["rate"] * Q
    for p in data.get("pulses", []):
        p["time"] = p["time"] / Q
    return data


def _sliced_dict(data: dict, T: int) -> tuple[dict, dict[str, int]]:
    """The model of the last T generations: demes alive T generations ago become root demes, constant
    at their (rounded) size then, followed by the rest of their history; older demes, migrations and
    pulses are dropped. Returns the dict and the rounded sizes of the root demes at T."""
    out = {k: v for k, v in data.items() if k not in ("demes", "migrations", "pulses")}
    demes_out, sizes = [], {}
    for d in data["demes"]:
        end = d["epochs"][-1]["end_time"]
        if end >= T:
            continue  # gone before the forward phase
        if d["start_time"] <= T:
            demes_out.append(copy.deepcopy(d))
            continue
        eps = _epochs_with_start(d)
        k = next(i for i, ep in enumerate(eps) if ep["end_time"] < T <= ep["start_time"])
        n_t = _round_half_up(_size_at(eps[k], T))
        sizes[d["name"]] = n_t
        first = {**eps[k], "end_time": T, "start_size": n_t, "end_size": n_t, "size_function": "constant"}
        rest = {**eps[k], "start_size": n_t if eps[k]["size_function"] != "constant" else eps[k]["start_size"]}
        if _round_half_up(eps[k]["end_time"]) >= T:  # the rest of the epoch rounds to no generation at all
            first["end_time"], rest = eps[k]["end_time"], None
        new_eps = [first] + ([rest] if rest else []) + eps[k + 1:]
        for ep in new_eps:
            ep.pop("start_time")
        demes_out.append({**d, "start_time": math.inf, "ancestors": [], "proportions": [], "epochs": new_eps})
    out["demes"] = demes_out
    out["migrations"] = [{**m, "start_time": min(m["start_time"], T)} for m in data.get("migrations", [])
                         if m["end_time"] < T]
    out["pulses"] = [p for p in data.get("pulses", []) if p["time"] < T]
    return out, sizes


@dataclass(frozen=True)
class _Model:
    """The scaled, sliced model of one config (shared by all attempts of a replicate)."""

    scaled: demes.Graph  # whole history, scaled by Q (msprime's neutral past)
    forward: demes.Graph  # last T generations (fwdpy11)
    T: int  # forward generations (scaled onset)
    sizes_at_T: dict[str, int]  # diploids per deme alive at T
    deme_id: int  # of ``population`` in ``forward``
    present_size: int  # diploids of ``population`` today (scaled, rounded)


def _model(cfg: ForwardConfig) -> _Model:
    """Validate the config's demography, population, onset and Q and build the scaled model."""
    graph = cfg.demography
    if not isinstance(graph, demes.Graph):
        raise ParamError("demography", f"expected a demes.Graph, got {type(graph).__name__}")
    graph = graph.in_generations()
    _check_features(graph)
    names = [d.name for d in graph.demes]
    if cfg.population not in names:
        raise ParamError("population", f"{cfg.population!r} is not a deme of the model ({', '.join(names)})")
    deme = graph[cfg.population]
    if deme.end_time != 0:
        raise ParamError("population", f"deme {cfg.population!r} does not exist today (ends {deme.end_time:g} "
                         "generations ago)")
    if not cfg.onset > 0:
        raise ParamError("onset", f"must be > 0 generations, got {cfg.onset}")
    if cfg.onset >= deme.start_time:
        raise ParamError("onset", f"{cfg.onset:g} generations is older than deme {cfg.population!r} "
                         f"(starts {deme.start_time:g} generations ago)")
    Q = float(cfg.scaling)
    if not (math.isfinite(Q) and Q >= 1):
        raise ParamError("scaling", f"Q must be >= 1, got {cfg.scaling}")
    T = _round_half_up(cfg.onset / Q)
    if T < 1:
        raise ParamError("scaling", f"Q={Q:g} makes the onset ({cfg.onset:g} generations) shorter than a generation")
    data = _scaled_dict(graph, Q)
    for d in data["demes"]:
        if any(min(ep["start_size"], ep["end_size"]) < 1 for ep in d["epochs"]):
            raise ParamError("scaling", f"Q={Q:g} makes deme {d['name']} smaller than one individual")
    boundaries = [d["start_time"] for d in data["demes"]] + [d["epochs"][-1]["end_time"] for d in data["demes"]]
    boundaries += [p["time"] for p in data.get("pulses", [])]
    if any(math.isfinite(t) and t > 0 and _round_half_up(t) == T for t in boundaries):
        raise ParamError("onset", f"{cfg.onset:g} generations coincides with a deme's start or end or a pulse "
                         "(in generations / Q); move it by a generation")
    try:
        scaled = demes.Builder.fromdict(copy.deepcopy(data)).resolve()
    except Exception as exc:  # noqa: BLE001 - demes raises several kinds for invalid models
        raise ParamError("scaling", f"Q={Q:g} makes the demography invalid: {exc}") from None
    sliced, sizes = _sliced_dict(data, T)
    forward = demes.Builder.fromdict(sliced).resolve()
    deme_id = [d.name for d in forward.demes].index(cfg.population)
    present = _round_half_up(forward[cfg.population].epochs[-1].end_size)
    if cfg.n_haplotypes < 2 or cfg.n_haplotypes > 2 * present:
        key = "scaling" if cfg.n_haplotypes <= 2 * deme.epochs[-1].end_size else "n_haplotypes"
        raise ParamError(key, f"{cfg.n_haplotypes} haplotypes cannot be sampled from {present} diploids of "
                         f"{cfg.population!r} (Q={Q:g})")
    return _Model(scaled, forward, T, sizes, deme_id, present)


def _check_scalars(cfg: ForwardConfig) -> None:
    if not 0 <= cfg.position < 1:
        raise ParamError("position", f"must be a fraction of the region in [0, 1), got {cfg.position}")
    if not 0 < cfg.start_frequency < 1:
        raise ParamError("start_frequency", f"must be in (0, 1), got {cfg.start_frequency}")
    if not 0 <= cfg.start_frequency_rtol < 1:
        raise ParamError("start_frequency_rtol", f"must be in [0, 1), got {cfg.start_frequency_rtol}")
    if not 0 <= cfg.end_frequency_atol <= 1:
        raise ParamError("end_frequency_atol", f"must be in [0, 1], got {cfg.end_frequency_atol}")
    if cfg.max_attempts < 1:
        raise ParamError("max_attempts", f"must be >= 1, got {cfg.max_attempts}")
    if cfg.end_condition not in ("near", "at_least", "auto"):
        raise ParamError("end_condition", f"must be near, at_least or auto, got {cfg.end_condition!r}")
    if not cfg.sequence_length > 0:
        raise ParamError("sequence_length", f"must be > 0, got {cfg.sequence_length}")


def _neutral_past(cfg: ForwardConfig, model: _Model, seed: int) -> tskit.TableCollection:
    """msprime ancestry of every genome alive at the onset, shifted to time 0, populations renumbered as
    the forward graph's demes (fwdpy11 deme ids)."""
    Q = float(cfg.scaling)
    samples = [msprime.SampleSet(n, population=name, time=model.T, ploidy=2) for name, n in model.sizes_at_T.items()]
    ts = msprime.sim_ancestry(samples=samples, demography=msprime_demography(model.scaled),
                              sequence_length=cfg.sequence_length, recombination_rate=cfg.recombination_rate * Q,
                              ploidy=2, discrete_genome=False, random_seed=seed)
    tables = ts.dump_tables()
    old = [p.metadata["name"] for p in ts.populations()]
    new = {d.name: i for i, d in enumerate(model.forward.demes)}
    remap = np.array([new.get(name, tskit.NULL) for name in old], dtype=np.int32)
    nodes = tables.nodes
    population = np.where(nodes.population >= 0, remap[np.maximum(nodes.population, 0)], tskit.NULL)
    is_sample = (nodes.flags & tskit.NODE_IS_SAMPLE) != 0
    population[~is_sample] = tskit.NULL
    nodes.set_columns(flags=nodes.flags, time=nodes.time - model.T, population=population.astype(np.int32),
                      individual=np.full(nodes.num_rows, tskit.NULL, dtype=np.int32), metadata=nodes.metadata,
                      metadata_offset=nodes.metadata_offset)
    tables.individuals.clear()
    tables.populations.clear()
    for d in model.forward.demes:
        tables.populations.add_row(metadata={"name": d.name, "description": ""})
    return tables


def population_from_tskit(ts: tskit.TreeSequence, *, import_mutations: bool = False) -> fwdpy11.DiploidPopulation:
    """:meth:`fwdpy11.DiploidPopulation.create_from_tskit` for our neutral pasts, 50 times faster.

    fwdpy11 0.24.7 (pinned) spends about 130 ms per call at N = 3,333 in a Python loop over every node
    (``min([i.time for i in ts.nodes()])``), a third of a forward replicate. This does what it does, in the
    same order, with that minimum taken by numpy: its low-level constructor, then (``import_mutations``)
    the mutations with their fwdpy11 metadata, at times relative to the youngest node."""
    from fwdpy11._fwdpy11 import MutationVector, ll_DiploidPopulation
    from fwdpy11.tskit_tools import decode_mutation_metadata

    assert ts.time_units == "generations"
    generation = int(ts.metadata["generation"]) if len(ts.metadata) and "generation" in ts.metadata else 0
    ll = ll_DiploidPopulation._create_from_tskit(ts, generation)
    if import_mutations and ts.num_mutations:
        times = ts.tables.mutations.time
        if not np.all(np.mod(times, 1.0) == 0):
            raise ValueError("mutation times cannot contain decimals")
        decoded = decode_mutation_metadata(ts)
        mvec = MutationVector()
        for md in decoded:
            if md is not None:
                mvec.append(md)
        youngest = int(ts.tables.nodes.time.min())
        ll._set_mutations(mvec, ts.tables.mutations.node.tolist(),
                          [int(t) - (ll._generation + youngest) for t in times])
    return fwdpy11.DiploidPopulation(0, 0.0, ll_pop=ll)


def _deme_sample_counts(tree: tskit.Tree, deme_nodes: np.ndarray, num_nodes: int) -> np.ndarray:
    """Number of ``deme_nodes`` below each node of ``tree``."""
    counts = np.zeros(num_nodes + 1, dtype=np.int64)  # last slot: tskit.NULL parent of roots
    counts[deme_nodes] = 1
    parent = tree.parent_array
    for u in tree.nodes(order="postorder"):
        counts[parent[u]] += counts[u]
    return counts[:num_nodes]


def _standing_candidates(tables: tskit.TableCollection, x: float, deme: int, lo: int, hi: int):
    """Branches of the tree at x whose node has lo..hi descendants in ``deme`` at time 0, with their
    (node, node time, parent time); only branches that contain an integer time (fwdpy11 needs one)."""
    ts = tables.tree_sequence()
    tree = ts.at(x)
    nodes = tables.nodes
    alive = np.flatnonzero((nodes.time == 0) & (nodes.population == deme))
    counts = _deme_sample_counts(tree, alive, ts.num_nodes)
    out = []
    for u in np.flatnonzero((counts >= lo) & (counts <= hi)):
        p = tree.parent(int(u))
        if p == tskit.NULL:
            continue
        t0, t1 = float(nodes.time[u]), float(nodes.time[p])
        if math.ceil(t0) < t1:
            out.append((int(u), t0, t1))
    return out


def _place_standing(tables: tskit.TableCollection, candidates: list, x: float, effect: float, h: float,
                    rng: np.random.Generator) -> tskit.TreeSequence:
    """Put the selected mutation on one candidate branch (probability ~ length), at an integer time on it."""
    lengths = np.array([t1 - t0 for _, t0, t1 in candidates])
    u, t0, t1 = candidates[int(rng.choice(len(candidates), p=lengths / lengths.sum()))]
    lo, hi = math.ceil(t0), math.ceil(t1) - 1  # integer times in [t0, t1)
    time = int(rng.integers(lo, hi + 1))
    tables = tables.copy()
    tables.mutations.metadata_schema = fwdpy11.tskit_tools.metadata_schema.MutationMetadata
    md = {"s": effect, "h": h, "origin": time, "label": np.uint16(0), "neutral": 0, "key": np.uint64(0)}
    site = tables.sites.add_row(position=x, ancestral_state="0")
    tables.mutations.add_row(site=site, node=u, derived_state="1", time=time, metadata=md)
    tables.sort()
    return tables.tree_sequence()


def _deme_frequency(pop: fwdpy11.DiploidPopulation, index: int, key: tuple, deme: int) -> float:
    """Frequency of mutation ``index`` among the genomes of ``deme`` alive now."""
    if pop.mutations[index].key != key:
        return 1.0 if any(f.key == key for f in pop.fixations) else 0.0
    ids, sizes = pop.deme_sizes()
    if len(ids) == 1:  # one deme alive: the population-wide count is the deme's (no loop over genomes)
        return float(pop.mcounts[index]) / (2.0 * float(sizes[0])) if int(ids[0]) == deme else 0.0
    genomes = pop.haploid_genomes
    carriers = total = 0
    for md, dip in zip(pop.diploid_metadata, pop.diploids, strict=True):
        if md.deme != deme:
            continue
        total += 2
        carriers += (index in genomes[dip.first].smutations) + (index in genomes[dip.second].smutations)
    return carriers / total if total else 0.0


class _AlleleWatch:
    """fwdpy11 stopping criterion: stop an attempt as soon as the tracked mutation is lost everywhere, or
    has fixed everywhere when ``stop_if_fixed`` (a present-day target below fixation cannot be met then:
    both states are absorbing). Notes the generation it first fixed in the whole population."""

    def __init__(self, index: int, key: tuple, stop_if_fixed: bool = False):
        self.index, self.key, self.lost, self.stop_if_fixed = index, key, False, stop_if_fixed
        self.fixed_at: int | None = None

    def __call__(self, pop: fwdpy11.DiploidPopulation, _simplified: bool) -> bool:
        m = pop.mutations[self.index]
        if m.key == self.key and pop.mcounts[self.index] > 0:
            if self.fixed_at is None and pop.mcounts[self.index] == 2 * pop.N:
                self.fixed_at = pop.generation
            return self.fixed_at is not None and self.stop_if_fixed
        fixed = any(f.key == self.key for f in pop.fixations)
        if fixed and self.fixed_at is None:
            self.fixed_at = pop.generation
        self.lost = not fixed
        return self.lost or self.stop_if_fixed


def _params(cfg: ForwardConfig, fdg: fwdpy11.ForwardDemesGraph) -> fwdpy11.ModelParams:
    Q = float(cfg.scaling)
    L = float(cfg.sequence_length)
    return fwdpy11.ModelParams(
        nregions=[], sregions=[], recregions=[fwdpy11.PoissonInterval(0, L, cfg.recombination_rate * Q * L)],
        rates=(0.0, 0.0, None), gvalue=fwdpy11.Additive(scaling=2.0), demography=fdg,
        simlen=fdg.final_generation, prune_selected=False)


def _forward_graph(model: _Model) -> fwdpy11.ForwardDemesGraph:
    """fwdpy11's model of the last T generations: starts at the onset (burn-in pads to exactly T)."""
    base = fwdpy11.ForwardDemesGraph.from_demes(model.forward, burnin=0, burnin_is_exact=True,
                                                round_non_integer_sizes=True)
    pad = model.T - base.final_generation
    if pad == 0:
        return base
    return fwdpy11.ForwardDemesGraph.from_demes(model.forward, burnin=pad, burnin_is_exact=True,
                                                round_non_integer_sizes=True)


def _genealogy(pop: fwdpy11.DiploidPopulation) -> tskit.TableCollection:
    """Nodes and edges of the population's tables as tskit tables (times before present, no mutations):
    ``dump_tables_to_tskit`` without its per-individual metadata, which takes seconds at N = 1e4."""
    nodes = np.array(pop.tables.nodes, copy=True)
    edges = np.asarray(pop.tables.edges)
    tables = tskit.TableCollection(sequence_length=pop.tables.genome_length)
    tables.time_units = "generations"
    for _ in range(int(nodes["deme"].max()) + 1):
        tables.populations.add_row()
    tables.nodes.set_columns(flags=np.zeros(len(nodes), dtype=np.uint32),
                             time=nodes["time"].max() - nodes["time"], population=nodes["deme"])
    tables.edges.set_columns(left=edges["left"], right=edges["right"], parent=edges["parent"], child=edges["child"])
    tables.sort()
    return tables


def _sample(cfg: ForwardConfig, pop: fwdpy11.DiploidPopulation, deme: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random present-day genomes of ``deme`` -> (haplotype matrix, positions) with msprime mutations."""
    tables = _genealogy(pop)
    alive = np.asarray(pop.alive_nodes)
    alive = alive[tables.nodes.population[alive] == deme]
    rng = np.random.default_rng(derive_seed(seed, 3))
    chosen = np.sort(rng.choice(alive, size=cfg.n_haplotypes, replace=False))
    tables.simplify(samples=chosen)
    ts = msprime.sim_mutations(tables.tree_sequence(), rate=cfg.mutation_rate * float(cfg.scaling),
                               model=msprime.BinaryMutationModel(), discrete_genome=False,
                               random_seed=derive_seed(seed, 4))
    return ts.genotype_matrix().T.astype(np.uint8), ts.sites_position.copy()


def fitness_effect(s: float, dominance: float) -> tuple[float, float]:
    """fwdpy11 (effect e, dominance h') of ``Additive(scaling=2)`` for the scaled rates s and h s: fitnesses
    1, exp(h s), exp(s), so a generation's growth of the allele is the continuous model's (module docstring)."""
    if s <= 0:
        return 0.0, 2.0 * dominance
    e = math.expm1(s) / 2.0
    return e, math.expm1(dominance * s) / e


def establishment_probability(s: float, dominance: float) -> float:
    """Probability that one new copy with the scaled rate ``s`` (heterozygote fitness exp(h s)) escapes
    loss by drift: the survival of a Poisson branching process with mean exp(h s), the root of
    1 - p = exp(-m p) (about 2 h s when small)."""
    m = math.exp(dominance * s)
    if m <= 1.0:
        return 0.0
    return float(1.0 + lambertw(-m * math.exp(-m)).real / m)


def is_de_novo(cfg: ForwardConfig, model: _Model) -> bool:
    """A sweep from one new copy: start_frequency at most 1/(2N) of ``population`` at the onset."""
    return cfg.start_frequency * 2 * model.sizes_at_T[cfg.population] <= 1


def check_forward(cfg: ForwardConfig, S_max: float, S_min: float | None = None) -> _Model:
    """Everything about ``cfg`` that can be wrong, for sweeps of S_min..S_max (S_min: S_max when None),
    without simulating (``hpcpop validate`` calls it); returns the scaled model."""
    _check_scalars(cfg)
    if not (math.isfinite(S_max) and S_max >= 0):
        raise ParamError("S", f"must be >= 0, got {S_max}")
    model = _model(cfg)
    Q = float(cfg.scaling)
    s = Q * selection_coefficient(S_max, cfg.reference_ne)  # scaled msprime s: homozygote 1 + s
    if s * max(cfg.dominance, 1.0) > 1:
        raise ParamError("scaling", f"Q={Q:g} makes the selection coefficient {s:g} (S={S_max:g}) exceed 1")
    weakest = S_max if S_min is None else S_min
    if weakest > 0 and is_de_novo(cfg, model):
        p = establishment_probability(Q * selection_coefficient(weakest, cfg.reference_ne), cfg.dominance)
        failed = (1.0 - p) ** cfg.max_attempts
        if failed > MAX_FAILED_FRACTION:
            need = math.ceil(math.log(MAX_FAILED_FRACTION) / math.log1p(-p)) if p > 0 else math.inf
            raise ParamError("max_attempts", (
                f"a de novo sweep of S={weakest:g} escapes loss by drift in {p:.1%} of attempts at Q={Q:g}, so "
                f"{failed:.0%} of its replicates would fail all {cfg.max_attempts} attempts: raise max_attempts to "
                f"{need:g} (at most 255), the scaling Q or the weakest S, or start from standing variation"))
    return model


def _meets(f1: float, target: float, atol: float, condition: str) -> bool:
    """Whether the present-day frequency f1 meets the condition ``near`` or ``at_least`` the target."""
    return f1 >= target - atol if condition == "at_least" else abs(f1 - target) <= atol


def simulate_forward(cfg: ForwardConfig, S: float, seed: int, *, end_frequency: float | None = None) -> ForwardReplicate:
    """One replicate: a sweep of strength S (2Ne s_het, reference Ne) in ``cfg.population`` starting
    ``cfg.onset`` generations ago, conditioned on a present-day frequency ``end_frequency`` (within
    ``cfg.end_frequency_atol``; None: not lost). S = 0 gives a neutral replicate."""
    if end_frequency is not None and not 0 < end_frequency <= 1:
        raise ParamError("end_frequency", f"must be in (0, 1], got {end_frequency}")
    model = check_forward(cfg, S)
    Q = float(cfg.scaling)
    effect, h = fitness_effect(Q * selection_coefficient(S, cfg.reference_ne), cfg.dominance)
    fdg = _forward_graph(model)
    params = _params(cfg, fdg)
    tables = _neutral_past(cfg, model, derive_seed(seed, 0))
    x = cfg.position * cfg.sequence_length
    deme, n_t = model.deme_id, model.sizes_at_T[cfg.population]

    if S == 0:
        pop = population_from_tskit(tables.tree_sequence())
        fwdpy11.evolvets(fwdpy11.GSLrng(derive_seed(seed, 1, 0)), pop, params, SIMPLIFICATION_INTERVAL)
        matrix, positions = _sample(cfg, pop, deme, seed)
        return ForwardReplicate(matrix, positions, 1, 0.0, 0.0)

    de_novo = is_de_novo(cfg, model)
    condition = cfg.end_condition if cfg.end_condition != "auto" else ("at_least" if de_novo else "near")
    if de_novo:
        base = population_from_tskit(tables.tree_sequence())
        candidates = None
    else:
        target = cfg.start_frequency * 2 * n_t
        lo = max(1, math.ceil(target * (1 - cfg.start_frequency_rtol)))
        hi = min(2 * n_t - 1, math.floor(target * (1 + cfg.start_frequency_rtol)))
        candidates = _standing_candidates(tables, x, deme, lo, hi) if lo <= hi else []
        if not candidates:
            raise ParamError("start_frequency_rtol", f"no branch of the genealogy at the onset carries "
                             f"{lo}..{hi} copies in {cfg.population!r}; widen the tolerance")

    for attempt in range(cfg.max_attempts):
        gsl = fwdpy11.GSLrng(derive_seed(seed, 1, attempt))
        if de_novo:
            pop = copy.deepcopy(base)
            index = pop.add_mutation(gsl, window=(x, math.nextafter(x, math.inf)), ndescendants=1, deme=deme,
                                     data=fwdpy11.NewMutationData(effect_size=effect, dominance=h))
            if index is None:
                raise RuntimeError("fwdpy11 could not add the selected mutation")
        else:
            ts = _place_standing(tables, candidates, x, effect, h, np.random.default_rng(derive_seed(seed, 2, attempt)))
            pop = population_from_tskit(ts, import_mutations=True)
            index = 0
        key = pop.mutations[index].key
        f0 = _deme_frequency(pop, index, key, deme)
        watch = _AlleleWatch(index, key, stop_if_fixed=end_frequency is not None and condition == "near"
                             and end_frequency + cfg.end_frequency_atol < 1)
        fwdpy11.evolvets(gsl, pop, copy.deepcopy(params), SIMPLIFICATION_INTERVAL, stopping_criterion=watch,
                         track_mutation_counts=True)
        if watch.lost:
            log.debug("seed %d S=%g attempt %d: allele lost at generation %d", seed, S, attempt, pop.generation)
            continue
        if watch.stop_if_fixed and watch.fixed_at is not None:
            log.debug("seed %d S=%g attempt %d: allele fixed at generation %d, wanted %.3f today", seed, S,
                      attempt, watch.fixed_at, end_frequency)
            continue
        if pop.generation != model.T:
            raise RuntimeError(f"forward phase ran {pop.generation} generations, expected {model.T}")
        f1 = _deme_frequency(pop, index, key, deme)
        if end_frequency is not None and not _meets(f1, end_frequency, cfg.end_frequency_atol, condition):
            log.debug("seed %d S=%g attempt %d: present frequency %.3f, wanted %s %.3f", seed, S, attempt, f1,
                      condition, end_frequency)
            continue
        matrix, positions = _sample(cfg, pop, deme, seed)
        fixed = None if watch.fixed_at is None else (model.T - watch.fixed_at) * Q
        return ForwardReplicate(matrix, positions, attempt + 1, f1, f0, fixed)
    raise ForwardRefused(f"forward replicate (seed {seed}, S={S:g}) not conditioned in {cfg.max_attempts} attempts")
