"""The workload that trains the profile-guided build of cyvcf2's htslib (scripts/build-cyvcf2.sh).

Writes a phased chromosome VCF of its own (msprime + tskit's VCF writer, bgzipped and indexed with pysam)
and reads it the ways our stages do: a spread subset of samples over the whole chromosome (scans, AFS), a
region with a few samples (predict --region), and a region with every sample. Its data and seed are its
own: the reading benchmark's file (``hpcpop bench scan``) is never used to train the build.

    PYTHONPATH=<instrumented cyvcf2> python scripts/cyvcf2_pgo_workload.py WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import msprime
import numpy as np
import pysam

from hpc_popgen.readers.vcf import read_vcf

DIPLOIDS, LENGTH, SEED = 2000, 1_000_000, 90_417


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    ts = msprime.sim_ancestry(DIPLOIDS, population_size=10_000, sequence_length=LENGTH, recombination_rate=1e-8,
                              random_seed=SEED)
    ts = msprime.sim_mutations(ts, rate=1e-8, random_seed=SEED, model=msprime.BinaryMutationModel())
    text = work / "train.vcf"
    with open(text, "w") as f:
        ts.write_vcf(f, contig_id="chr1", position_transform=lambda x: np.floor(x).astype(int) + 1)
    vcf = pysam.tabix_index(str(text), preset="vcf", force=True)
    names = [f"tsk_{i}" for i in range(DIPLOIDS)]
    spread = names[:: DIPLOIDS // 80]
    for _ in range(3):
        read_vcf(vcf, region="chr1", samples=spread)
    read_vcf(vcf, region="chr1:400001-480000", samples=names[:40])
    read_vcf(vcf, region="chr1:600001-650000")
    print(f"pgo workload: {ts.num_sites} records, {DIPLOIDS} diploids")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
