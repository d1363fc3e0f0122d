"""Shared fixtures: loopback-only cluster profiles, manifest writing, the real single-node SLURM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
HPCPOP = [sys.executable, "-m", "hpc_popgen.cli"]

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def local_profile(tmp_path) -> Path:
    """A LocalCluster profile with two workers whose scheduler and dashboard listen on loopback only."""
    return write_yaml(tmp_path / "profiles" / "test-local.yaml", {
        "description": "test: LocalCluster on loopback",
        "kind": "local",
        "cluster": {"n_workers": 2, "threads_per_worker": 1},
        "dashboard_address": "127.0.0.1:0",
        "horovod": {"launcher": "horovodrun", "ranks": 2},
    })


def slurm_profile_data(**cluster) -> dict:
    base = {"queue": "debug", "cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:15:00",
            "interface": "lo", "job_extra_directives": []}
    base.update(cluster)
    return {"description": "test: single-node SLURM on loopback", "kind": "slurm", "cluster": base,
            "adapt": {"minimum_jobs": 1, "maximum_jobs": 1}, "dashboard_address": "127.0.0.1:0",
            "driver": {"cores": 1, "memory": "1GB", "walltime": "00:20:00"}}


@pytest.fixture
def slurm_profile(tmp_path, slurm) -> Path:
    return write_yaml(tmp_path / "profiles" / "test-slurm.yaml", slurm_profile_data())


def _sinfo_ok() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


@pytest.fixture(scope="session")
def slurm():
    """The real single-node SLURM cluster (started by scripts/slurm-up.sh; started here if not up)."""
    if not _sinfo_ok():
        subprocess.run(["bash", str(REPO / "scripts" / "slurm-up.sh")], check=False, timeout=600)
    if not _sinfo_ok():
        pytest.fail("SLURM is not running: `make slurm-up` (scripts/slurm-up.sh) must start it")
    yield
    # Cancel whatever a test left behind (every job the tests start is named hpcpop-*).
    _scancel_ours()


def _scancel_ours() -> None:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=20)
    ids = [line.split()[0] for line in out.stdout.splitlines() if "hpcpop" in line or "dask" in line]
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=30)


@pytest.fixture
def slurm_cleanup(slurm):
    """Cancel jobs the test leaves behind, even when it fails."""
    yield
    _scancel_ours()


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
