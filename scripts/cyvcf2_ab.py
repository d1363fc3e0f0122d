"""Reading speed of cyvcf2 builds against the installed (rebuilt) cyvcf2 (scripts/build-cyvcf2.sh), interleaved.

The machine's speed drifts between minutes, so the builds are timed in alternating processes, round
after round, and compared within each round. Prints one JSON object: per round and build, records per
CPU-second of ``read_vcf`` (99 of 2,504 samples, the whole chromosome) and of a bare cyvcf2 record loop,
and the median ratio of the installed build to each other build.

    .venv/bin/pip install --no-deps --target /tmp/cywheel cyvcf2==0.35.0   # the wheel, aside
    .venv/bin/python scripts/cyvcf2_ab.py wheel=/tmp/cywheel [o3=/tmp/cy-o3 ...] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ONE = r"""
import json, sys, time
import numpy as np
import cyvcf2.cyvcf2
from hpc_popgen.bench.scan import cyvcf2_iterate, htslib_version
from hpc_popgen.readers.vcf import read_vcf
vcf, n_samples, pick, records = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
idx = np.unique(np.linspace(0, n_samples - 1, pick).round().astype(int))
names = [f"ind{i}" for i in idx]
read_vcf(vcf, region="chr1", samples=names)
reader, bare = [], []
for _ in range(5):
    t = time.process_time(); read_vcf(vcf, region="chr1", samples=names); reader.append(time.process_time() - t)
    t = time.process_time(); cyvcf2_iterate(vcf, names); bare.append(time.process_time() - t)
print(json.dumps({"htslib": htslib_version(cyvcf2.cyvcf2), "reader": records / float(np.median(reader)),
                  "bare": records / float(np.median(bare))}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("builds", nargs="+", metavar="NAME=DIR",
                    help="other cyvcf2 builds, each a folder it was installed into (pip install --target)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--samples", type=int, default=2504)
    ap.add_argument("--pick", type=int, default=99)
    ap.add_argument("--length-mb", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=501)
    args = ap.parse_args()
    others = dict(b.split("=", 1) if "=" in b else ("wheel", b) for b in args.builds)
    builds = [*others.items(), ("installed", None)]
    from hpc_popgen.bench.scan import chromosome

    with tempfile.TemporaryDirectory(prefix="hpcpop-cyvcf2-ab-") as tmp:
        truth = chromosome(Path(tmp), args.length_mb, args.samples, args.seed, neutral=True)
        cmd = [sys.executable, "-c", ONE, truth["path"], str(args.samples), str(args.pick), str(truth["records"])]
        rounds = []
        for _ in range(args.rounds):
            row = {}
            for build, extra in builds:
                env = dict(os.environ)
                if extra:
                    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
                row[build] = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                                       text=True).stdout)
            rounds.append(row)
    out = {"records": truth["records"], "samples_in_file": args.samples, "samples_read": args.pick,
           "htslib": {b: rounds[0][b]["htslib"] for b, _ in builds}, "rounds": rounds}
    for key in ("reader", "bare"):
        for b, _ in builds:
            out[f"{key}_{b}_median"] = round(float(np.median([r[b][key] for r in rounds])), 1)
        for b in others:
            ratio = [r["installed"][key] / r[b][key] for r in rounds]
            out[f"{key}_ratio_installed_to_{b}_median"] = round(float(np.median(ratio)), 3)
            out[f"{key}_ratio_installed_to_{b}_range"] = [round(min(ratio), 3), round(max(ratio), 3)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
