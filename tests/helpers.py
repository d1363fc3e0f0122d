"""Helpers the tests share: writing YAML, profiles on loopback, running the CLI, the real SLURM's queue."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
HPCPOP = [sys.executable, "-m", "hpc_popgen.cli"]
YRI_CEU = REPO / "hpc_popgen" / "data" / "YRI_CEU.fs"  # the 20x20 spectrum of Gutenkunst et al. 2009, shipped


def write_yaml(path: Path, data) -> Path:
    """Write ``data`` as YAML at ``path`` (folders created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def profile_of(data: dict):
    """The typed Profile of a profile mapping (schema defaults filled), as ``resolve_profile`` gives for a file."""
    from hpc_popgen.cluster.profiles import profile_from_data

    return profile_from_data(data, name=data.get("name", "test"), source="<test>")


def resources(**values):
    """A stage's typed Resources (keys left out are None)."""
    from hpc_popgen.job import Resources

    return Resources.from_dict(values)


def slurm_profile_data(**cluster) -> dict:
    """A SLURM profile for the single-node test cluster, scheduler and dashboard on loopback."""
    base = {"queue": "debug", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:15:00",
            "interface": "lo", "job_extra_directives": []}
    base.update(cluster)
    return {"description": "test: single-node SLURM on loopback", "kind": "slurm", "cluster": base,
            "adapt": {"minimum_jobs": 1, "maximum_jobs": 1}, "dashboard_address": "127.0.0.1:0",
            "driver": {"cores": 1, "memory": "1GB", "walltime": "00:20:00"},
            "lost_worker_timeout_s": 5}  # a cancelled or retired worker job is replaced 5 s later, not Dask's 15


def sinfo_ok() -> bool:
    """Whether the single-node SLURM answers and its node is usable."""
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


def scancel_ours() -> None:
    """Cancel every job the tests started (all are named hpcpop-* or dask-*)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=20)
    ids = [line.split()[0] for line in out.stdout.splitlines() if "hpcpop" in line or "dask" in line]
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=30)


def run_cli(*args, cwd=None, timeout=600, check=False, env=None) -> subprocess.CompletedProcess:
    """Run ``hpcpop ARGS`` in a subprocess (the way a user does)."""
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run([*HPCPOP, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=e)
    if check and proc.returncode != 0:
        raise AssertionError(f"hpcpop {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def stage_params(kind: str, **params) -> dict:
    """A stage's parameters with its schema's defaults filled in (what a stage receives)."""
    from hpc_popgen.manifest import fill_defaults, load_schema

    return fill_defaults(params, load_schema(f"stages/{kind}.schema.json"))


def image_config(**overrides):
    """An ImageConfig with the simulate schema's defaults, some overridden."""
    from hpc_popgen.config import from_params
    from hpc_popgen.images import ImageConfig

    return from_params(ImageConfig, {**stage_params("simulate", store="x")["image"], **overrides})


def sim_config(demography, **overrides):
    """A SimConfig for ``demography`` (a DemographyModel) with the simulate schema's defaults."""
    from hpc_popgen.simulate import SimConfig

    p = stage_params("simulate", store="x")
    sw = p["sweep"]
    base = {k: p[k] for k in ("n_haplotypes", "sequence_length", "mutation_rate", "recombination_rate",
                              "reference_ne")}
    base.update(onset=sw["onset"], start_frequency=sw["start_frequency"], position=sw["position"], dt=sw["dt"],
                max_attempts=sw["max_attempts"])
    return SimConfig(demography=demography, **{**base, **overrides})


def default_split() -> dict:
    """The simulate schema's train/validation/test fractions."""
    sp = stage_params("simulate", store="x")["split"]
    return {"train": round(1.0 - sp["validation"] - sp["test"], 12), **sp}


# three demes: A splits 2,000 generations ago into B (growing 1,000 -> 6,000) and C (3,000), with migration
THREE_DEMES = """time_units: generations
demes:
  - name: A
    epochs: [{start_size: 4000, end_time: 2000}]
  - name: B
    ancestors: [A]
    epochs: [{start_size: 1000, end_size: 6000}]
  - name: C
    ancestors: [A]
    epochs: [{start_size: 3000}]
migrations:
  - {demes: [B, C], rate: 2e-4}
"""
