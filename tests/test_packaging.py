"""A non-editable install finds its schemas, profiles and data as package data (nothing from the checkout)."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO

PROBE = """
import json, sys
from hpc_popgen.paths import PACKAGE_DIR, SCHEMA_DIR, YRI_CEU_FS
from hpc_popgen.manifest import load_schema
from hpc_popgen.cluster.profiles import list_profiles
print(json.dumps({"package": str(PACKAGE_DIR), "schema": load_schema("stages/simulate.schema.json")["title"],
                  "profiles": sorted(p.name for p in list_profiles() if p.origin == "packaged"),
                  "afs": YRI_CEU_FS.exists()}))
"""


def test_wheel_install_reads_package_data(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO),
                    "-w", str(wheels)], check=True, timeout=300)
    wheel = next(wheels.glob("hpc_popgen-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target), "HPCPOP_USER_PROFILE_DIR": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n{PROBE}"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=True)
    import json

    got = json.loads(out.stdout)
    assert got["package"].startswith(str(target))  # the installed copy, not the checkout
    assert got["schema"] == "simulate stage parameters"
    assert {"local", "slurm", "slurm-gpu"} <= set(got["profiles"]) and got["afs"] is True


def test_cyvcf2_pgo_workload_runs(tmp_path):
    """The workload that trains the profile-guided cyvcf2 build (scripts/build-cyvcf2.sh) runs: were it to
    break, the install would quietly fall back to the slower plain -O3 build."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "cyvcf2_pgo_workload.py"), str(tmp_path)],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    records = int(out.split("pgo workload: ")[1].split()[0])
    assert records > 1000 and "2000 diploids" in out
    assert (tmp_path / "train.vcf.gz").stat().st_size > 0 and (tmp_path / "train.vcf.gz.tbi").exists()
