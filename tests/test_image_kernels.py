"""The compiled rows-sort + resize image step is bit-identical to the numpy chain in images.process."""

from __future__ import annotations

import msprime
import numpy as np
import pytest

from hpc_popgen.images import ImageConfig
from hpc_popgen.images.kernels import image_rows_resized
from hpc_popgen.images.process import image_and_sites, numpy_image_and_sites

POLS = ("derived", "major_minor")
MAFS = (0.0, 0.05)
SIZES = ((128, 128), (64, 32))


def assert_same(haps: np.ndarray, polarisation: str, maf: float, size: tuple[int, int]) -> int:
    """Kernel and numpy give the same image (dtype, shape, bits) and site count; returns the count."""
    cfg = ImageConfig(polarisation=polarisation, maf=maf, sort="rows", size=size, resize="resize")
    pos = np.arange(haps.shape[1], dtype=np.float64)
    want, want_sites = numpy_image_and_sites(haps, pos, cfg)
    assert np.array_equal(image_and_sites(haps, pos, cfg)[0], want)  # the dispatch takes the kernel
    got, got_sites = image_rows_resized(haps, polarisation == "major_minor", maf, size)
    assert got.dtype == np.uint8 and got.shape == size
    assert got_sites == want_sites
    np.testing.assert_array_equal(got, want, err_msg=f"{haps.shape} {polarisation} maf={maf} size={size}")
    return got_sites


def assert_same_all(haps: np.ndarray, sizes=SIZES) -> None:
    for pol in POLS:
        for maf in MAFS:
            for size in sizes:
                assert_same(haps, pol, maf, size)


def msprime_haps(seed: int, samples: int = 64) -> np.ndarray:
    ts = msprime.sim_ancestry(samples=samples, population_size=1e4, sequence_length=8e4,
                              recombination_rate=1e-8, random_seed=seed)
    ts = msprime.sim_mutations(ts, rate=1.5e-8, model=msprime.BinaryMutationModel(), discrete_genome=False,
                               random_seed=seed)
    return ts.genotype_matrix().T.astype(np.uint8)


def duplicated_haps(rng: np.random.Generator, n: int, s: int, n_types: int, noise: float = 0.01) -> np.ndarray:
    """n rows drawn from a few haplotypes, with a little noise: many identical rows, tied group sizes."""
    base = (rng.random((n_types, s)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
    haps = base[rng.integers(0, n_types, n)]
    return haps ^ (rng.random((n, s)) < noise).astype(np.uint8)


@pytest.mark.parametrize("samples", [64, 32, 100])
def test_msprime_replicates(samples):
    """Realistic haplotypes: 128 haps (= H), 64 (< H, and > H for size 64x32) and 200 (> H)."""
    kept = []
    for seed in range(1, 13):
        haps = msprime_haps(seed, samples)
        assert_same_all(haps)
        kept.append(assert_same(haps, "derived", 0.05, (128, 128)))
    assert min(kept) > 0


def test_duplicate_rows_and_shapes():
    rng = np.random.default_rng(7)
    for n in (2, 3, 50, 64, 128, 129, 200):
        for s in (1, 2, 31, 63, 64, 65, 127, 128, 129, 300, 700):
            assert_same_all(duplicated_haps(rng, n, s, n_types=int(rng.integers(1, 12)),
                                            noise=float(rng.choice([0.0, 0.005, 0.05]))))


def test_upsampling_and_odd_sizes():
    rng = np.random.default_rng(3)
    haps = duplicated_haps(rng, 40, 90, n_types=6)
    assert_same_all(haps, sizes=((1, 1), (7, 300), (300, 7), (40, 90), (41, 89)))


def test_sites_equal_width_after_filter():
    """Exactly W sites survive the filter (no column resize); with n == H neither product runs."""
    rng = np.random.default_rng(11)
    keep = (rng.random((128, 128)) < 0.4).astype(np.uint8)
    keep[:20, :] = 1  # every column: 20 <= count <= 128 - 20
    keep[20:40, :] = 0
    rare = np.zeros((128, 40), dtype=np.uint8)
    rare[0, :] = 1  # singletons: dropped at maf 0.05, kept at maf 0
    fixed = np.ones((128, 10), dtype=np.uint8)  # never segregating
    haps = np.concatenate([keep[:, :50], rare, keep[:, 50:], fixed], axis=1)
    for pol in POLS:
        assert assert_same(haps, pol, 0.05, (128, 128)) == 128
        assert assert_same(haps, pol, 0.05, (64, 128)) == 128
        assert assert_same(haps, pol, 0.0, (128, 168)) == 168
    assert_same_all(haps)


def test_edge_cases():
    rng = np.random.default_rng(5)
    cases = [
        np.zeros((128, 0), dtype=np.uint8),  # no sites
        np.zeros((0, 10), dtype=np.uint8),  # no haplotypes
        np.zeros((0, 0), dtype=np.uint8),
        np.zeros((1, 5), dtype=np.uint8) | np.array([[0, 1, 1, 0, 1]], dtype=np.uint8),  # one haplotype
        (rng.random((128, 1)) < 0.5).astype(np.uint8),  # one site
        np.eye(128, 200, dtype=np.uint8),  # singletons only: all filtered at maf 0.05
        np.ones((128, 30), dtype=np.uint8),  # fixed sites only: all filtered
        np.zeros((128, 30), dtype=np.uint8),
        np.tile(np.array([[1], [0]], dtype=np.uint8), (64, 3)),  # two groups of equal size
        1 - np.eye(128, 60, dtype=np.uint8),  # majority-1 sites: flipped by major_minor
    ]
    for haps in cases:
        assert_same_all(haps)
    assert assert_same(np.eye(128, 200, dtype=np.uint8), "derived", 0.05, (128, 128)) == 0


def test_input_layouts():
    """Non-contiguous and non-uint8 inputs are read like the numpy chain reads them."""
    haps = msprime_haps(99)
    assert_same_all(np.asfortranarray(haps))
    assert_same_all(haps[::2, ::3])
    assert_same_all(haps.astype(bool))


def test_a_big_endian_machine_takes_the_numpy_chain(monkeypatch):
    """The kernel packs bytes into little-endian words; elsewhere the dispatch must not call it."""
    import hpc_popgen.images.kernels as kernels

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled kernel ran on a big-endian machine")

    haps = msprime_haps(3)
    cfg = ImageConfig(polarisation="derived", maf=0.05, sort="rows", size=(64, 64), resize="resize")
    pos = np.arange(haps.shape[1], dtype=np.float64)
    want = numpy_image_and_sites(haps, pos, cfg)
    monkeypatch.setattr(kernels, "image_rows_resized", refuse)
    monkeypatch.setattr("sys.byteorder", "big")
    got = image_and_sites(haps, pos, cfg)
    assert np.array_equal(got[0], want[0]) and got[1] == want[1]


def test_warmup_caches_every_kernel_the_simulate_stage_calls(tmp_path):
    """``make install`` runs hpc_popgen.simulate.warmup: each numba kernel lands in the on-disk cache (here a
    temporary NUMBA_CACHE_DIR), so that a fresh checkout's workers load them instead of compiling."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "hpc_popgen.simulate.warmup"], env=env, check=True, timeout=300)
    cached = sorted(p.name.split("-")[0] for p in tmp_path.rglob("*.nbi"))
    assert cached == ["genotypes._fill", "kernels._resize_groups", "kernels._rows_before",
                      "kernels._sorted_unique_rows"], cached
