#!/usr/bin/env python
"""Make the test data of jobs/genome_scan.yaml: a chromosome VCF with one planted hard sweep.

msprime simulates one population with a size change and a de novo sweep at a known position; tskit writes
the phased diploid VCF (with INFO/AA), pysam bgzips and CSI-indexes it; a popmap and a truth file
(sweep position, S, onset) go next to it. Deterministic from --seed. The shipped data was made by

    .venv/bin/python scripts/planted_sweep_vcf.py jobs/data/genome_scan
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields

from hpc_popgen.simulate.planted import PlantedSweep, write


def main(argv: list[str] | None = None) -> None:
    """Parse the settings (defaults: PlantedSweep's), write the files, print the truth as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="folder for chrom.vcf.gz(.csi), chrom.popmap, chrom.truth.json")
    ap.add_argument("--stem", default="chrom", help="file name stem")
    for f in fields(PlantedSweep):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                        help=f"(default {f.default})")
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("msprime").setLevel(logging.WARNING)  # its per-model progress lines
    out_dir, stem = args.pop("out_dir"), args.pop("stem")
    try:
        truth = write(PlantedSweep(**args), out_dir, stem)
    except ValueError as exc:  # settings msprime cannot simulate: one line, nothing written
        raise SystemExit(f"{ap.prog}: {exc}") from None
    print(json.dumps(truth))


if __name__ == "__main__":
    main()
