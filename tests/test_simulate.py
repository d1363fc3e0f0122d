"""Simulation science: unit conversion, trajectory, demographies, replicates, retries, plan."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import default_split, image_config, sim_config

from hpc_popgen.errors import ManifestError
from hpc_popgen.images import image_and_sites
from hpc_popgen.simulate import (
    Plan,
    demes_model,
    load_demography,
    onset_generations,
    selection_coefficient,
    simulate_range,
    simulate_replicate,
    sweep_timing,
)
from hpc_popgen.simulate.demographies import DemographyModel, Epoch
from hpc_popgen.simulate.replicate import simulate_member, simulate_once
from hpc_popgen.simulate.trajectory import frequency_after


def test_units():
    assert selection_coefficient(200, 10_000) == pytest.approx(0.02)
    assert onset_generations(15_000, "years", 25) == pytest.approx(600)
    assert onset_generations(600, "generations", 25) == 600


def test_trajectory_present_day_and_complete_sweeps():
    t = sweep_timing(0.02, 0.01, 600, 10_000)  # the paper: S=200 is about 0.8 today
    assert t.end_frequency == pytest.approx(0.803, abs=0.005) and t.end_time == 0 and not t.complete
    assert sweep_timing(0.04, 0.01, 600, 10_000).end_frequency > 0.999
    strong = sweep_timing(0.2, 0.01, 600, 10_000)  # fixes long before today
    assert strong.complete and strong.end_frequency == pytest.approx(1 - 1 / 20_000)
    assert frequency_after(0.2, 0.01, 600 - strong.end_time) == pytest.approx(strong.end_frequency)


def test_msms_models_scaled_by_ne():
    m3 = load_demography("marth3", 10_000)
    assert [(e.start, e.size) for e in m3.epochs] == [(0, 20_000), (3000, 2000), (3500, 10_000)]
    m2 = load_demography("marth2", 10_000)
    assert [(e.start, e.size) for e in m2.epochs] == [(0, 140_000), (2000, 10_000)]
    assert load_demography("constant", 5000).epochs[0].size == 5000
    assert m3.events_in(0, 3200) == ["size change to 2000 at 3000 generations"]
    assert DemographyModel.from_dict(m3.to_dict()) == m3
    with pytest.raises(ManifestError, match="unknown model 'marth9'"):
        load_demography("marth9", 1e4)


def test_demes_files(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text("time_units: years\ngeneration_time: 25\ndemes:\n  - name: A\n    epochs:\n"
                   "      - {start_size: 10000, end_time: 100000}\n      - {start_size: 5000, end_size: 20000}\n")
    m = demes_model(one)
    assert m.epochs[1].start == pytest.approx(4000)  # 100,000 years / 25
    assert m.epochs[0].size == 20_000 and m.epochs[0].growth_rate == pytest.approx(math.log(4) / 4000)
    assert m.events_in(0, 600)[0].startswith("exponential growth")
    two = tmp_path / "two.yaml"
    two.write_text("time_units: generations\ndemes:\n  - name: A\n    epochs: [{start_size: 100}]\n"
                   "  - name: B\n    epochs: [{start_size: 100}]\n")
    with pytest.raises(ManifestError, match=r"two.yaml: sweeps need a single-population model; .*\(A, B\)"):
        demes_model(two)
    with pytest.raises(ManifestError, match="demes file not found"):
        demes_model(tmp_path / "none.yaml")


SMALL = dict(n_haplotypes=32, sequence_length=20_000)


def test_replicate_is_determined_by_its_seed():
    cfg = sim_config(load_demography("marth3", 1e4), **SMALL)
    a = simulate_replicate(cfg, 300, 11)
    b = simulate_replicate(cfg, 300, 11)
    c = simulate_replicate(cfg, 300, 12)
    assert np.array_equal(a.matrix, b.matrix) and np.array_equal(a.positions, b.positions)
    assert not (a.matrix.shape == c.matrix.shape and np.array_equal(a.matrix, c.matrix))
    assert a.matrix.dtype == np.uint8 and a.matrix.shape[0] == 32 and set(np.unique(a.matrix)) <= {0, 1}
    assert a.timing.end_frequency == pytest.approx(sweep_timing(0.03, 0.01, 600, 1e4).end_frequency)


def test_sweep_leaves_a_dominant_central_haplotype():
    cfg = sim_config(load_demography("constant", 1e4), n_haplotypes=32, sequence_length=80_000)

    def stats(S):
        shares, sites = [], []
        for seed in range(1, 21):
            r = simulate_replicate(cfg, S, seed)
            centre = (r.positions > 30_000) & (r.positions < 50_000)
            _, counts = np.unique(r.matrix[:, centre], axis=0, return_counts=True)
            shares.append(counts.max() / 32)
            sites.append(centre.sum())
        return float(np.mean(shares)), float(np.mean(sites))

    (share0, sites0), (share400, sites400) = stats(0), stats(400)
    # standing variation at 1%: a soft sweep, but haplotype structure and diversity still move clearly
    assert share400 > share0 + 0.06 and sites400 < 0.8 * sites0


def test_refused_replicates_are_retried_with_derived_seeds():
    # a size change 20 generations before the onset: msprime's random sweep durations often reach it
    dm = DemographyModel("edge", (Epoch(0, 620, 10_000), Epoch(620, math.inf, 5000)))
    cfg = sim_config(dm, n_haplotypes=16, sequence_length=10_000, onset=600)
    retried = [(seed, simulate_replicate(cfg, 200, seed)) for seed in range(1, 20)]
    retried = [(seed, r) for seed, r in retried if r.attempts > 1]
    assert retried, "expected msprime to refuse some replicates"
    seed, rep = retried[0]
    again = simulate_replicate(cfg, 200, seed)
    assert again.attempts == rep.attempts and np.array_equal(again.matrix, rep.matrix)
    m, _ = simulate_once(cfg, 200, seed, rep.attempts - 1)  # the accepted attempt's own seed
    assert np.array_equal(m, rep.matrix)


def test_plan_classes_prior_split_and_shard_arrays():
    sim = sim_config(load_demography("constant", 1e4), **SMALL)
    img = img_cfg = image_config(maf=0.0, size=(16, 16))
    plan = Plan(sim=sim, image=img, seed=99, split=default_split(), classes=(0.0, 200.0), n_per_class=5)
    assert plan.n_images == 10 and [plan.s_of(i)[0] for i in range(4)] == [0, 200, 0, 200]
    assert Plan.from_dict(plan.to_dict()) == plan
    prior = Plan(sim=sim, image=img, seed=99, split=default_split(), prior={"min": 0.0, "max": 400.0, "n": 50, "n_bins": 11})
    draws = [prior.s_of(i) for i in range(50)]
    assert all(0 <= s < 400 and k == -1 for s, k in draws) and len({s for s, _ in draws}) == 50
    splits = [plan.split_of(plan.replicate_seed(i)) for i in range(2000)]
    assert 0.75 < splits.count(0) / 2000 < 0.85 and splits.count(2) > 100
    data = simulate_range(plan, 2, 6)
    assert data["images"].shape == (4, 16, 16) and data["s"].tolist() == [0, 200, 0, 200]
    assert data["seed"].tolist() == [plan.replicate_seed(i) for i in range(2, 6)]
    assert (data["attempts"] >= 1).all() and (data["n_sites"] <= data["n_sites_raw"]).all()
    assert data["end_freq"][1] == pytest.approx(0.803, abs=0.005) and data["end_freq"][0] == 0
    again = simulate_range(plan, 2, 6)
    for name in data:
        assert np.array_equal(again[name], data[name]), name  # a range's content: the plan and the range alone
    longer = simulate_range(plan, 2, 10)  # a batch yields replicate j the same whatever its length
    assert all(np.array_equal(longer[name][:4], data[name]) for name in data)
    # batch seeds derive from the range's first image: one class's replicates share one batch
    assert data["batch_seed"].tolist() == [plan.batch_seed(2, 0), plan.batch_seed(2, 1)] * 2
    assert data["batch_index"].tolist() == [0, 0, 1, 1]
    other = simulate_range(plan, 4, 6)
    assert other["batch_seed"].tolist() == [plan.batch_seed(4, 0), plan.batch_seed(4, 1)]
    assert not np.array_equal(other["images"], data["images"][2:])
    for k in range(4):  # each image is redone alone from its batch seed and index
        m, pos = simulate_member(sim, data["s"][k], int(data["seed"][k]), int(data["batch_seed"][k]),
                                 int(data["batch_index"][k]))
        img, n_sites = image_and_sites(m, pos, img_cfg, centre=sim.position * sim.sequence_length)
        assert np.array_equal(img, data["images"][k]) and n_sites == data["n_sites"][k]


def test_prior_replicates_are_simulated_alone():
    sim = sim_config(load_demography("constant", 1e4), **SMALL)
    plan = Plan(sim=sim, image=image_config(maf=0.0, size=(16, 16)), seed=5, split=default_split(),
                prior={"min": 0.0, "max": 400.0, "n": 6, "n_bins": 3})
    data = simulate_range(plan, 0, 3)
    assert (data["batch_seed"] == 0).all() and (data["batch_index"] == 0).all()
    for k in range(3):
        rep = simulate_replicate(sim, float(data["s"][k]), int(data["seed"][k]))
        assert rep.matrix.shape[1] == data["n_sites_raw"][k]


def test_prior_on_a_grid_batches_per_value():
    sim = sim_config(load_demography("constant", 1e4), **SMALL)
    img_cfg = image_config(maf=0.0, size=(16, 16))
    plan = Plan(sim=sim, image=img_cfg, seed=5, split=default_split(),
                prior={"min": 0.0, "max": 400.0, "n": 40, "n_bins": 3, "grid": 3})
    assert Plan.from_dict(plan.to_dict()) == plan and plan.batched
    data = simulate_range(plan, 0, 12)
    assert set(data["s"].tolist()) == {0.0, 200.0, 400.0} and (data["class_index"] == -1).all()
    assert (data["batch_seed"] > 0).all()
    for S in (0.0, 200.0, 400.0):  # one batch per value: its members numbered 0, 1, ... in image order
        members = data["s"] == S
        key = [0.0, 200.0, 400.0].index(S)
        assert (data["batch_seed"][members] == plan.batch_seed(0, key)).all()
        assert data["batch_index"][members].tolist() == list(range(int(members.sum())))
    centre = sim.position * sim.sequence_length
    for k in range(12):
        m, pos = simulate_member(sim, float(data["s"][k]), int(data["seed"][k]), int(data["batch_seed"][k]),
                                 int(data["batch_index"][k]))
        assert np.array_equal(image_and_sites(m, pos, img_cfg, centre=centre)[0], data["images"][k])


def test_refused_batch_members_are_retried_alone_and_the_batch_goes_on():
    """msprime refuses some sweeps reaching back past a size change: that replicate is retried alone
    (attempts from 1, as today), a new batch starts after it, and the shard stays deterministic."""
    dm = DemographyModel("edge", (Epoch(0, 620, 10_000), Epoch(620, math.inf, 5000)))
    sim = sim_config(dm, n_haplotypes=16, sequence_length=10_000, onset=600)
    img_cfg = image_config(maf=0.0, size=(16, 16))
    plan = Plan(sim=sim, image=img_cfg, seed=3, split=default_split(), classes=(200.0,), n_per_class=40)
    data = simulate_range(plan, 0, 40)
    refused = np.flatnonzero(data["attempts"] > 1)
    assert len(refused), "expected msprime to refuse some replicates"
    assert (data["batch_seed"][refused] == 0).all()
    r0 = int(refused[0])
    assert (data["batch_seed"][:r0] == plan.batch_seed(0, 0)).all() and data["batch_index"][:r0].tolist() == list(range(r0))
    r = next(int(k) for k in refused if k + 1 < 40 and data["attempts"][k + 1] == 1)  # one followed by a batch
    assert data["batch_seed"][r + 1] == plan.batch_seed(0, 0, r + 1) and data["batch_index"][r + 1] == 0
    again = simulate_range(plan, 0, 40)
    assert all(np.array_equal(again[name], data[name]) for name in data)
    centre = sim.position * sim.sequence_length
    for k in (r, r + 1, 0):  # the refused one from its seed and attempt, batched ones from batch seed and index
        if data["batch_seed"][k]:
            m, pos = simulate_member(sim, 200.0, int(data["seed"][k]), int(data["batch_seed"][k]),
                                     int(data["batch_index"][k]))
        else:
            m, pos = simulate_once(sim, 200.0, int(data["seed"][k]), int(data["attempts"][k]) - 1)
        assert np.array_equal(image_and_sites(m, pos, img_cfg, centre=centre)[0], data["images"][k])
