"""Fixtures: loopback-only cluster profiles and the real single-node SLURM (helpers live in helpers.py)."""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import REPO, scancel_ours, sinfo_ok, slurm_profile_data, write_yaml

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``) tests on the one SLURM cluster or with Horovod ranks run
    in one worker, one after another: they share its nodes and CPUs, and each cancels the jobs left behind."""
    for item in items:
        if "slurm" in item.fixturenames or item.get_closest_marker("slurm") or item.get_closest_marker("horovod"):
            item.add_marker(pytest.mark.xdist_group("cluster"))


def pytest_collection_finish(session):
    """Refuse to run when pytest-xdist did not tag the grouped tests (pytest 9.2 made its loadgroup silently
    a plain load, pytest-dev/pytest-xdist#1386): SLURM tests would then cancel each other's jobs."""
    if getattr(session.config.option, "loadgroup", False):
        lost = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
        if lost:
            raise pytest.UsageError(f"--dist loadgroup does not group tests with this pytest ({lost[0]}): "
                                    "install the test extras' pytest (setup.cfg), or run without -n")


@pytest.fixture(autouse=True, scope="session")
def vcf_cache(tmp_path_factory):
    """Indexed copies of the tests' plain VCFs go to a temporary cache, not the home folder."""
    os.environ["HPCPOP_CACHE_DIR"] = str(tmp_path_factory.mktemp("hpcpop-cache"))


@pytest.fixture
def local_profile(tmp_path):
    """A LocalCluster profile with two workers whose scheduler and dashboard listen on loopback only."""
    return write_yaml(tmp_path / "profiles" / "test-local.yaml", {
        "description": "test: LocalCluster on loopback",
        "kind": "local",
        "cluster": {"n_workers": 2, "threads_per_worker": 1},
        "dashboard_address": "127.0.0.1:0",
        "horovod": {"launcher": "horovodrun", "ranks": 2},
    })


@pytest.fixture
def slurm_profile(tmp_path, slurm):
    return write_yaml(tmp_path / "profiles" / "test-slurm.yaml", slurm_profile_data())


@pytest.fixture(scope="session")
def slurm():
    """The real single-node SLURM cluster (started by scripts/slurm-up.sh; started here if not up)."""
    if not sinfo_ok():
        subprocess.run(["bash", str(REPO / "scripts" / "slurm-up.sh")], check=False, timeout=600)
    if not sinfo_ok():
        pytest.fail("SLURM is not running: `make slurm-up` (scripts/slurm-up.sh) must start it")
    yield
    scancel_ours()  # whatever a test left behind


@pytest.fixture
def slurm_cleanup(slurm):
    """Cancel jobs the test leaves behind, even when it fails."""
    yield
    scancel_ours()
