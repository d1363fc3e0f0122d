"""The forward-time sweep engine: real fwdpy11 and msprime runs at small sizes."""

from __future__ import annotations

import dataclasses
import math

import demes
import msprime
import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from hpc_popgen.errors import ParamError
from hpc_popgen.simulate.demographies import DemographyModel, Epoch, graph_from_model, msms_model
from hpc_popgen.simulate.forward import (
    ForwardConfig,
    ForwardRefused,
    ForwardReplicate,
    check_forward,
    establishment_probability,
    simulate_forward,
)
from hpc_popgen.simulate.trajectory import frequency_after, sweep_timing
from hpc_popgen.simulate.units import selection_coefficient

N = 1000
L = 20_000.0
RATE = 1e-7  # mutation and recombination per bp: theta = rho = 4 N L RATE = 8 over the region


def constant(size: float = N) -> demes.Graph:
    b = demes.Builder(time_units="generations")
    b.add_deme("pop0", epochs=[dict(start_size=size)])
    return b.resolve()


def two_populations(migration: float = 1e-3) -> demes.Graph:
    """Split 500 generations ago; A grows exponentially from 500 to 2000 over the last 100 generations."""
    b = demes.Builder(time_units="generations")
    b.add_deme("anc", epochs=[dict(start_size=1000, end_time=500)])
    b.add_deme("A", ancestors=["anc"], epochs=[dict(start_size=500, end_time=100),
                                               dict(start_size=500, end_size=2000, end_time=0)])
    b.add_deme("B", ancestors=["anc"], epochs=[dict(start_size=300)])
    b.add_migration(demes=["A", "B"], rate=migration, start_time=400)
    return b.resolve()


def config(**changes) -> ForwardConfig:
    base = ForwardConfig(demography=constant(), population="pop0", n_haplotypes=20, sequence_length=L,
                         mutation_rate=RATE, recombination_rate=RATE, reference_ne=N, onset=152,
                         start_frequency=1 / (2 * N), start_frequency_rtol=0.25, end_frequency_atol=0.05,
                         end_condition="auto", dominance=0.5, position=0.5, scaling=1, max_attempts=200)
    return dataclasses.replace(base, **changes)


def distinct_central(rep: ForwardReplicate, half_width: float = 2000) -> int:
    """Distinct haplotypes within +- half_width bp of the centre."""
    keep = np.abs(rep.positions - L / 2) <= half_width
    return len({row.tobytes() for row in rep.matrix[:, keep]})


def msprime_hard_sweep(S: float, seed: int, end_time: float = 0, n: int = 20) -> np.ndarray:
    """msprime's SweepGenicSelection from 1/(2N) to 1 - 1/(2N), ending ``end_time`` generations ago (the
    msprime path's hard sweep)."""
    sweep = msprime.SweepGenicSelection(position=L / 2, start_frequency=1 / (2 * N), end_frequency=1 - 1 / (2 * N),
                                        s=selection_coefficient(S, N), dt=1e-6)
    before = [msprime.StandardCoalescent(duration=end_time)] if end_time > 0 else []
    ts = msprime.sim_ancestry(samples=[msprime.SampleSet(n, ploidy=1)], population_size=N, ploidy=2,
                              sequence_length=L, recombination_rate=RATE,
                              model=[*before, sweep, msprime.StandardCoalescent()], random_seed=seed)
    ts = msprime.sim_mutations(ts, rate=RATE, model=msprime.BinaryMutationModel(), discrete_genome=False,
                               random_seed=seed)
    return ts.genotype_matrix().T


def test_replicate_is_determined_by_its_seed():
    cfg = config(scaling=10, onset=600)
    a, b = simulate_forward(cfg, 50, 11, end_frequency=1.0), simulate_forward(cfg, 50, 11, end_frequency=1.0)
    assert a.matrix.dtype == np.uint8 and a.matrix.shape[0] == 20
    assert np.array_equal(a.matrix, b.matrix) and np.array_equal(a.positions, b.positions)
    assert a.attempts == b.attempts and a.frequency == b.frequency
    c = simulate_forward(cfg, 50, 12, end_frequency=1.0)
    assert not (c.matrix.shape == a.matrix.shape and np.array_equal(c.matrix, a.matrix)
                and np.array_equal(c.positions, a.positions))


def test_neutral_replicate_has_the_same_shape():
    rep = simulate_forward(config(), 0, 3)
    assert rep.matrix.shape == (20, len(rep.positions)) and rep.matrix.dtype == np.uint8
    assert rep.frequency == 0 and rep.attempts == 1
    assert np.all(np.diff(rep.positions) > 0) and 0 <= rep.positions[0] and rep.positions[-1] < L
    assert set(np.unique(rep.matrix)) <= {0, 1}


def test_hard_sweep_reduces_diversity_and_agrees_with_msprime():
    """S = 200 from one copy, onset = the deterministic duration (152 generations), conditioned on
    fixation: fewer segregating sites and central haplotypes than neutral, like msprime's sweep ending
    when the forward replicate of the same index fixed."""
    S, reps = 200, 30
    cfg = config(end_frequency_atol=0.0)
    sweep = [simulate_forward(cfg, S, seed, end_frequency=1.0) for seed in range(reps)]
    neutral = [simulate_forward(cfg, 0, 1000 + seed) for seed in range(reps)]
    assert all(r.frequency == 1.0 and 0 <= r.fixation_time < cfg.onset for r in sweep)
    seg_sweep = [r.matrix.shape[1] for r in sweep]
    seg_neutral = [r.matrix.shape[1] for r in neutral]
    assert np.mean(seg_sweep) < 0.7 * np.mean(seg_neutral)
    assert mannwhitneyu(seg_sweep, seg_neutral, alternative="less").pvalue < 0.001
    assert np.mean([distinct_central(r) for r in sweep]) < np.mean([distinct_central(r) for r in neutral])
    seg_msprime = [msprime_hard_sweep(S, 5000 + seed, r.fixation_time).shape[1] for seed, r in enumerate(sweep)]
    assert mannwhitneyu(seg_sweep, seg_msprime).pvalue > 0.001
    assert 0.75 < np.mean(seg_sweep) / np.mean(seg_msprime) < 1.33


def test_standing_variation_reaches_requested_frequency():
    S, f0, onset = 100, 0.01, 60
    target = frequency_after(selection_coefficient(S, N), f0, onset)  # about 0.17
    cfg = config(start_frequency=f0, onset=onset, end_frequency_atol=0.08)
    for seed in range(3):
        rep = simulate_forward(cfg, S, seed, end_frequency=target)
        assert abs(rep.start_frequency - f0) <= f0 * cfg.start_frequency_rtol + 1e-12
        assert abs(rep.frequency - target) <= cfg.end_frequency_atol
        assert rep.matrix.shape[0] == 20


def test_standing_variation_sweep_is_softer_than_de_novo():
    """From 20% (the carriers at the onset share the older neutral genealogy) more variation survives
    than after a sweep from one copy; both end fixed (observed: about 10 vs 6 segregating sites)."""
    S, reps = 200, 20
    de_novo = [simulate_forward(config(), S, seed, end_frequency=1.0) for seed in range(reps)]
    standing = [simulate_forward(config(start_frequency=0.2, onset=90), S, seed, end_frequency=1.0)
                for seed in range(reps)]
    assert all(r.frequency >= 0.95 for r in standing)
    assert all(abs(r.start_frequency - 0.2) <= 0.2 * 0.25 + 1e-12 for r in standing)
    seg_standing = [r.matrix.shape[1] for r in standing]
    seg_de_novo = [r.matrix.shape[1] for r in de_novo]
    assert np.mean(seg_standing) > 1.3 * np.mean(seg_de_novo)
    assert mannwhitneyu(seg_standing, seg_de_novo, alternative="greater").pvalue < 0.05


def test_two_populations_with_migration_and_growth_during_the_sweep():
    S, f0, onset = 60, 0.02, 150
    target = frequency_after(selection_coefficient(S, 1000), f0, onset)  # about 0.65
    cfg = config(demography=two_populations(), population="A", onset=onset, reference_ne=1000, scaling=2,
                 start_frequency=f0, n_haplotypes=16, end_frequency_atol=0.2)
    rep = simulate_forward(cfg, S, 5, end_frequency=target)
    assert rep.matrix.shape[0] == 16 and abs(rep.frequency - target) <= cfg.end_frequency_atol
    assert rep.start_frequency > 0
    # B (300 diploids, 150 at Q=2) is the deme sampled when named
    neutral = simulate_forward(dataclasses.replace(cfg, population="B", n_haplotypes=300), 0, 5)
    assert neutral.matrix.shape[0] == 300
    for n, key in ((700, "n_haplotypes"), (500, "scaling")):  # B has 600 genomes, 300 at Q=2
        with pytest.raises(ParamError) as err:
            simulate_forward(dataclasses.replace(cfg, population="B", n_haplotypes=n), 0, 5)
        assert err.value.key == key


def test_linear_growth_through_the_onset_runs_on_the_line():
    """GADMA's linear dynamic across the onset (as the demography stage writes it): the forward phase starts
    from the line's size at the onset and ends at its end size; msprime's past runs exponential pieces."""
    b = demes.Builder(time_units="generations")
    b.add_deme("anc", epochs=[dict(start_size=1000, end_time=500)])
    b.add_deme("A", ancestors=["anc"], epochs=[dict(start_size=50, end_size=1050, size_function="linear", end_time=0)])
    b.add_deme("B", ancestors=["anc"], epochs=[dict(start_size=600)])
    b.add_migration(demes=["A", "B"], rate=1e-3)
    cfg = config(demography=b.resolve(), population="A", onset=150, start_frequency=0.05, n_haplotypes=16,
                 end_frequency_atol=0.3)
    model = check_forward(cfg, 60)
    assert model.sizes_at_T["A"] == 750  # 50 + 1000 * 350 / 500
    assert model.present_size == 1050
    rep = simulate_forward(cfg, 60, 3, end_frequency=0.5)
    assert rep.matrix.shape[0] == 16 and rep.start_frequency == pytest.approx(0.05, rel=0.25)
    assert abs(rep.frequency - 0.5) <= 0.3


def test_population_from_tskit_is_fwdpy11s_create_from_tskit():
    """Our fast constructor builds the population fwdpy11's own does (nodes, edges, the standing variant's
    copies), and both evolve identically under one seed."""
    import fwdpy11

    from hpc_popgen.simulate import forward as fw

    cfg = config(start_frequency=0.05, onset=40)
    model = fw._model(cfg)
    tables = fw._neutral_past(cfg, model, 11)
    x = cfg.position * cfg.sequence_length
    candidates = fw._standing_candidates(tables, x, model.deme_id, 80, 120)
    ts = fw._place_standing(tables, candidates, x, 0.01, 1.0, np.random.default_rng(3))
    params = fw._params(cfg, fw._forward_graph(model))
    pops = []
    for make in (fw.population_from_tskit, fwdpy11.DiploidPopulation.create_from_tskit):
        pop = make(ts, import_mutations=True)
        assert pop.N == N and pop.mcounts[0] == len(set(ts.first().samples(ts.mutation(0).node))) > 0
        fwdpy11.evolvets(fwdpy11.GSLrng(5), pop, params, 10, track_mutation_counts=True)
        pops.append(pop)
    ours, theirs = pops
    assert np.array_equal(np.asarray(ours.tables.nodes), np.asarray(theirs.tables.nodes))
    assert np.array_equal(np.asarray(ours.tables.edges), np.asarray(theirs.tables.edges))
    assert [m.key for m in ours.mutations] == [m.key for m in theirs.mutations]
    assert list(ours.mcounts) == list(theirs.mcounts) and ours.generation == theirs.generation == 40
    neutral = fw.population_from_tskit(tables.tree_sequence())
    assert neutral.N == N and len(neutral.mutations) == 0


def selfing() -> demes.Graph:
    b = demes.Builder(time_units="generations")
    b.add_deme("pop0", epochs=[dict(start_size=N, selfing_rate=0.1)])
    return b.resolve()


@pytest.mark.parametrize("changes, S, key", [
    (dict(population="nowhere"), 100, "population"),
    (dict(demography=two_populations(), population="B", onset=600), 100, "onset"),
    (dict(demography=two_populations(), population="A", onset=500), 100, "onset"),
    (dict(demography=selfing()), 100, "demography"),
    (dict(scaling=10), 200, "scaling"),  # scaled s = 10 * 200 / 1000 = 2 > 1
    (dict(scaling=2000), 1, "scaling"),  # 0.5 diploids
    (dict(scaling=0.5), 1, "scaling"),
    (dict(position=1.5), 100, "position"),
])
def test_bad_inputs_name_their_key(changes, S, key):
    with pytest.raises(ParamError) as err:
        simulate_forward(config(**changes), S, 1, end_frequency=1.0)
    assert err.value.key == key


def test_project_demography_models_convert_to_demes():
    """graph_from_model keeps the sizes of the project's epoch models (msprime growth convention)."""
    growth = DemographyModel("growth", (Epoch(0, 100, 2000, math.log(4) / 100), Epoch(100, math.inf, 500)))
    times = np.array([0, 30, 99, 150, 1000])
    for model in (growth, msms_model("marth3", N)):
        ours = msprime.Demography.from_demes(graph_from_model(model)).debug().population_size_trajectory(times)
        theirs = model.msprime().debug().population_size_trajectory(times)
        assert np.allclose(ours, theirs, rtol=1e-2)
    rep = simulate_forward(config(demography=graph_from_model(msms_model("marth3", N)), onset=100,
                                  start_frequency=0.01), 200, 1, end_frequency=None)
    assert rep.matrix.shape[0] == 20 and rep.frequency > 0


def test_region_stats_on_a_known_matrix():
    from hpc_popgen.simulate.stats import region_stats

    m = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=np.uint8)
    st = region_stats(m, np.array([10.0, 45.0, 50.0, 90.0]), 100.0, centre_bp=20.0)
    assert st["segregating_sites"] == 4
    # per-site 2p(1-p) n/(n-1): p = 1/2, 1/4, 3/4, 1/4 -> (0.5 + 3 * 0.375) * 4/3 / 100
    assert st["pi"] == pytest.approx((0.5 + 3 * 0.375) * 4 / 3 / 100)
    # centre (40..60): columns at 45 and 50 -> haplotypes 01,01,11,00... counts [2,1,1]: H12 = (3/4)^2 + (1/4)^2
    assert st["distinct_haplotypes_centre"] == 3 and st["h12_centre"] == pytest.approx(0.625)


@pytest.mark.parametrize("s", [0.015, 0.12, 0.24])
def test_fitness_grows_the_allele_as_msprime_trajectory_at_any_scaled_s(s):
    """A Wright-Fisher generation with the forward engine's fitnesses moves an additive allele exactly as
    the deterministic trajectory (logit + s/2 per generation), whatever the scaled s."""
    from hpc_popgen.simulate.forward import fitness_effect

    e, h = fitness_effect(s, 0.5)
    w_het, w_hom = 1 + h * e, 1 + 2 * e  # fwdpy11.Additive(scaling=2)
    assert w_het == pytest.approx(math.exp(s / 2)) and w_hom == pytest.approx(math.exp(s))
    p, generations = 1e-3, 40
    for _ in range(generations):
        q = 1 - p
        p = (p * p * w_hom + p * q * w_het) / (p * p * w_hom + 2 * p * q * w_het + q * q)
    assert p == pytest.approx(frequency_after(s, 1e-3, generations), rel=1e-9)


def test_de_novo_sweep_across_a_size_change_is_conditioned_on_reaching_the_trajectory():
    """The genome-scan case that failed every shard (issue 29): 9,660 -> 22,746 diploids 1,186 generations
    ago, S = 200 de novo from 1,200 generations ago. Copies that escape drift run far ahead of the
    deterministic trajectory from 1/(2N) (0.62 today), so `near` it almost never holds; `auto` (at least
    there) takes a de novo sweep as a user means it, in a few attempts."""
    b = demes.Builder(time_units="generations")
    b.add_deme("POP", epochs=[dict(start_size=9660, end_time=1186), dict(start_size=22746)])
    S, ne, f0 = 200, 10_000, 1e-5
    cfg = config(demography=b.resolve(), population="POP", reference_ne=ne, onset=1200, start_frequency=f0,
                 scaling=10, max_attempts=30)
    target = sweep_timing(selection_coefficient(S, ne), f0, cfg.onset, ne).end_frequency
    assert 0.55 < target < 0.7
    with pytest.raises(ForwardRefused):
        simulate_forward(dataclasses.replace(cfg, end_condition="near"), S, 0, end_frequency=target)
    reps = [simulate_forward(cfg, S, seed, end_frequency=target) for seed in range(3)]
    assert all(r.frequency >= target - cfg.end_frequency_atol and r.attempts <= 10 for r in reps)
    assert np.mean([r.frequency for r in reps]) > 0.9  # ahead of the trajectory, as survivors are


def test_a_de_novo_sweep_that_would_rarely_escape_drift_is_refused_before_simulating():
    """At Q = 1, S = 200 (2 Ne s) a new copy escapes drift about 2 h s = 2% of the time: 100 attempts fail
    13% of replicates, so check_forward refuses, naming max_attempts and what would do."""
    ne = 10_000
    p = establishment_probability(selection_coefficient(200, ne), 0.5)
    assert 0.018 < p < 0.021
    cfg = config(reference_ne=ne, demography=constant(ne), start_frequency=1e-6, max_attempts=100)
    with pytest.raises(ParamError) as err:
        check_forward(cfg, 400, 200)
    assert err.value.key == "max_attempts" and "S=200" in err.value.reason and "230" in err.value.reason
    check_forward(dataclasses.replace(cfg, max_attempts=250), 400, 200)  # 0.7% fail: accepted
    check_forward(dataclasses.replace(cfg, start_frequency=0.01), 400, 200)  # standing variation: no drift loss
