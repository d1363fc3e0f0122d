"""The compiled haplotype matrix is tskit's genotype matrix, site for site."""

from __future__ import annotations

import msprime
import numpy as np
import pytest

from hpc_popgen.simulate.genotypes import _binary, haplotype_matrix


def _ts(seed: int, *, rho: float = 1e-8, discrete: bool = False, rate: float = 1.5e-8, model=None,
        length: float = 8e4):
    ts = msprime.sim_ancestry(samples=32, population_size=1e4, sequence_length=length, recombination_rate=rho,
                              random_seed=seed)
    return msprime.sim_mutations(ts, rate=rate, model=model or msprime.BinaryMutationModel(),
                                 discrete_genome=discrete, random_seed=seed)


@pytest.mark.parametrize("rho", [0.0, 1e-8, 1e-7])
def test_binary_infinite_sites_match_tskit(rho):
    for seed in range(1, 9):
        ts = _ts(seed, rho=rho)
        assert _binary(ts) and ts.num_sites > 0
        want = ts.genotype_matrix().T.astype(np.uint8)
        got = haplotype_matrix(ts)
        assert got.dtype == np.uint8 and np.array_equal(got, want), seed
        assert np.array_equal(haplotype_matrix(ts, binary=True), want)  # the simulate path skips the check


def test_recurrent_and_back_mutations_match_tskit():
    """A short discrete genome at a high rate: sites with two or more mutations, some back to 0."""
    seen_multi = 0
    for seed in range(1, 6):
        ts = _ts(seed, discrete=True, rate=5e-6, length=2e3)
        seen_multi += int(np.sum(np.bincount(ts.mutations_site) > 1))
        assert _binary(ts)
        assert np.array_equal(haplotype_matrix(ts), ts.genotype_matrix().T.astype(np.uint8)), seed
    assert seen_multi > 10


def test_other_models_and_empty_sequences_go_through_tskit():
    ts = _ts(3, model=msprime.JC69())  # nucleotides: not the binary model, tskit decodes it
    assert not _binary(ts)
    assert np.array_equal(haplotype_matrix(ts), ts.genotype_matrix().T.astype(np.uint8))
    none = _ts(3, rate=0.0)
    assert haplotype_matrix(none).shape == (64, 0)
