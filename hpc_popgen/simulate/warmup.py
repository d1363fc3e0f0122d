"""Compile numba's kernels into their on-disk cache once (``make install``), so that the first shards of a
fresh checkout load them instead of compiling them in every worker (about 10 s a process on 2 cores).

Each kernel is called through the path the simulate stage uses (a binary msprime tree sequence to a
haplotype matrix, then the rows-sorted, resized image, with and without resizing either axis), so that the
cached specialisations are the ones the workers look up.
"""

from __future__ import annotations


def compile_kernels() -> None:
    """Run each compiled kernel once on a small msprime region."""
    import msprime

    from ..images.kernels import image_rows_resized
    from .genotypes import haplotype_matrix

    ts = msprime.sim_ancestry(8, sequence_length=20_000, recombination_rate=1e-8, population_size=10_000,
                              random_seed=1)
    ts = msprime.sim_mutations(ts, rate=1e-7, model=msprime.BinaryMutationModel(), discrete_genome=False,
                               random_seed=1, record_provenance=False)
    haps = haplotype_matrix(ts, binary=True)
    n, k = haps.shape
    for major_minor in (False, True):
        image_rows_resized(haps, major_minor, 0.0, (8, 8))  # both axes resized
        image_rows_resized(haps, major_minor, 0.0, (n, k))  # neither: the no-index arguments


if __name__ == "__main__":
    compile_kernels()
