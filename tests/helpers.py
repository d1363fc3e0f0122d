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


def slurm_profile_data(**cluster) -> dict:
    """A SLURM profile for the single-node test cluster, scheduler and dashboard on loopback."""
    base = {"queue": "debug", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:15:00",
            "interface": "lo", "job_extra_directives": []}
    base.update(cluster)
    return {"description": "test: single-node SLURM on loopback", "kind": "slurm", "cluster": base,
            "adapt": {"minimum_jobs": 1, "maximum_jobs": 1}, "dashboard_address": "127.0.0.1:0",
            "driver": {"cores": 1, "memory": "1GB", "walltime": "00:20:00"}}


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
