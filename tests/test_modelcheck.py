"""The scan's model check (issue 26, item 3): window statistics against tskit and by hand, a verdict that
says ``fits`` for a matched simulation and ``does_not_fit`` for a badly misspecified one, and the scan
stage writing model_check.json, its plot, the verdict in the report and beside each candidate."""

from __future__ import annotations

import msprime
import numpy as np
import pytest

from hpc_popgen.infer.calibrate import simulate_null_chromosome
from hpc_popgen.infer.modelcheck import (
    DOES_NOT_FIT,
    FITS,
    check_model,
    choose_threshold,
    sfs_classes,
    window_statistics,
    with_verdict_column,
)
from hpc_popgen.infer.scan import plan_windows


def _tiny_ts(seed: int = 3):
    ts = msprime.sim_ancestry(samples=6, population_size=1_000, sequence_length=30_000, recombination_rate=1e-7,
                              random_seed=seed)
    return msprime.sim_mutations(ts, rate=2e-6, model=msprime.BinaryMutationModel(), random_seed=seed)


def test_window_statistics_equal_tskit_on_a_tiny_tree_sequence():
    ts = _tiny_ts()
    matrix = ts.genotype_matrix().T.astype(np.uint8)
    pos = ts.tables.sites.position.astype(np.int64) + 1  # 1-based, as the scan's positions
    breaks = [0, 10_000, 20_000, 30_000]
    windows = []
    for a, b in zip(breaks[:-1], breaks[1:], strict=True):  # tskit's [a, b) is 1-based [a + 1, b]
        lo, hi = int(np.searchsorted(pos, a + 1)), int(np.searchsorted(pos, b, side="right"))
        windows.append((lo, hi, a + 1, b))
    assert min(hi - lo for lo, hi, _, _ in windows) > 20
    st = window_statistics(matrix, pos, windows)
    n = ts.num_samples
    a_n = np.sum(1.0 / np.arange(1, n))
    assert np.allclose(st["pi"], ts.diversity(windows=breaks, mode="site"))
    assert np.allclose(st["theta_w"], ts.segregating_sites(windows=breaks, mode="site") / a_n)
    assert np.allclose(st["tajima_d"], ts.Tajimas_D(windows=breaks, mode="site"))
    afs = ts.allele_frequency_spectrum(windows=breaks, polarised=False, span_normalise=False, mode="site")
    for (lo, hi), share in zip(sfs_classes(n), [st[k] for k in st if k.startswith("sfs_")], strict=True):
        expect = afs[:, lo:hi + 1].sum(axis=1) / afs[:, 1:].sum(axis=1)
        assert np.allclose(share, expect), (lo, hi)


def test_h12_sfs_classes_and_an_empty_window_by_hand():
    # 6 haplotypes over 4 sites: haplotype classes of sizes 3, 2, 1 -> p = .5, .333, .167
    matrix = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 0]],
                      dtype=np.uint8)
    pos = np.array([10, 20, 30, 40])
    st = window_statistics(matrix, pos, [(0, 4, 1, 100), (0, 0, 101, 200)])
    p = np.array([3, 2, 1]) / 6
    assert st["h12"][0] == pytest.approx((p[0] + p[1]) ** 2 + p[2] ** 2)
    assert sfs_classes(6) == [(1, 1), (2, 2), (3, 3)] and sfs_classes(40)[-2:] == [(9, 16), (17, 20)]
    # minor counts 2, 1, 3, 1 -> classes 1: 2 sites, 2: 1, 3: 1 (of 4)
    assert (st["sfs_1"][0], st["sfs_2"][0], st["sfs_3"][0]) == (0.5, 0.25, 0.25)
    assert st["pi"][0] == pytest.approx(sum(2 * k * (6 - k) / 30 for k in (2, 1, 3, 5)) / 100)  # derived counts
    assert st["pi"][1] == st["theta_w"][1] == 0.0  # no site: no diversity, and nothing else to say
    assert all(np.isnan(st[k][1]) for k in st if k not in ("pi", "theta_w"))


def _chromosome(size: float, seed: int) -> dict[str, np.ndarray]:
    import demes

    b = demes.Builder(time_units="generations")
    b.add_deme("pop", epochs=[{"start_size": size}])
    matrix, pos = simulate_null_chromosome(b.resolve().asdict(), "pop", 10, 1_000_000, mutation_rate=2e-8,
                                           recombination_rate=1e-8, seed=seed)
    windows = [(w.lo, w.hi, w.start, w.end) for w in plan_windows(pos, size=80_000, step=40_000, unit="bp",
                                                                  min_sites=10)]
    return window_statistics(matrix, pos, windows)


def test_a_matched_simulation_fits_and_a_tenfold_population_does_not():
    nulls = [_chromosome(10_000, s) for s in range(10, 16)]
    matched = check_model(_chromosome(10_000, 101), nulls, threshold=2.0)
    wrong = check_model(_chromosome(100_000, 102), nulls, threshold=2.0)
    assert matched["verdict"] == FITS and matched["max_score"] < 2.0, matched["max_score"]
    assert wrong["verdict"] == DOES_NOT_FIT and wrong["max_score"] > 3.0
    assert wrong["statistics"]["pi"]["ks"] > 0.9  # ten times the diversity: every window above the null's
    assert wrong["statistics"]["pi"]["real_mean"] > 5 * wrong["statistics"]["pi"]["null_mean"]
    q = matched["statistics"]["tajima_d"]
    assert len(q["real_quantiles"]) == len(matched["quantiles"]) and q["real_quantiles"] == sorted(q["real_quantiles"])
    assert set(matched["statistics"]) == {"pi", "theta_w", "tajima_d", "h12", "sfs"}
    assert set(matched["statistics"]["sfs"]["classes"]) == {"sfs_1", "sfs_2", "sfs_3_4", "sfs_5_8", "sfs_9_10"}
    with pytest.raises(ValueError, match="at least 2 null"):
        check_model(nulls[0], nulls[:1], 2.0)
    assert choose_threshold([1.0, 2.0, 3.0, np.nan], flag_rate=0.5) == 2.0
    text = with_verdict_column("chrom\tstart\nc1\t5\n", FITS)
    assert text == "chrom\tstart\tmodel_check\nc1\t5\tfits\n"


# The scan stage's model_check.json, plot and candidates column: tests/test_scan_null.py (its null run).
