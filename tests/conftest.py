"""Fixtures: loopback-only cluster profiles, the real single-node SLURM, and artefacts made once per session
(a tiny trained model); helpers live in helpers.py."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest
from helpers import REPO, scancel_ours, sinfo_ok, slurm_profile_data, write_yaml

from hpc_popgen.train.tfenv import keras2_env

keras2_env()  # before any test imports TensorFlow


def pytest_configure(config):
    """LocalCluster workers fork from one server per test process that has imported every stage kind's
    modules once (msprime, moments, dadi, TensorFlow, our code: hpc_popgen/cluster/forkserver.py, as a driver
    does for its run's stage kinds): here for every in-process test, whatever it runs first. Not in pytest-xdist's
    controller, which runs no test. CLI runs set it up themselves; Horovod ranks and SLURM jobs start their
    own interpreters."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        from hpc_popgen.cluster.forkserver import PRELOAD, fork_local_workers, preload_for

        fork_local_workers(preload_for(PRELOAD, ["dadi"]))  # every stage kind's modules: tests run them all


# test groups by their time in a CI run (seconds, 2 processes): scheduled first, in this order
LONGEST_GROUPS = ("cluster", "test_demography3", "test_platform_runs", "test_bench_scan", "test_train", "test_progress",
                  "test_forward_stage", "test_demography", "test_demography_stage", "test_genome_scan_job",
                  "test_probe_scan", "test_scan_null")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist (``-n 2 --dist loadgroup``): tests on the one SLURM cluster or with Horovod ranks
    run in one worker, one after another (they share its nodes and CPUs, and each cancels the jobs left
    behind); every other test runs in the worker of its module, so module and session artefacts are made once."""
    group = {}
    for item in items:
        if "slurm" in item.fixturenames or item.get_closest_marker("slurm") or item.get_closest_marker("horovod"):
            group[item.nodeid] = "cluster"
        else:
            group[item.nodeid] = item.path.stem
        item.add_marker(pytest.mark.xdist_group(group[item.nodeid]))
    # the longest groups first (Makefile: --no-loadscope-reorder keeps this order), so that no long group starts
    # last while the other process idles; xdist's own order (most tests first) left a 2.5-minute module last
    first = {g: i for i, g in enumerate(LONGEST_GROUPS)}
    items.sort(key=lambda it: first.get(group[it.nodeid], len(first)))


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


@pytest.fixture(scope="session")
def tiny_binary_run(tmp_path_factory):
    """A tiny binary CNN trained on a fake store (320 images, 32x32, 3 epochs, one rank on one LocalCluster
    worker) and evaluated on its test split and on a second store: made once, for the tests that need a
    trained model. Fields: ``tmp`` (its storage is ``tmp/storage``), ``run`` (the run directory), ``report``."""
    from test_train_helpers import make_store, write_manifest

    from hpc_popgen.pipeline import create_run, execute

    tmp = tmp_path_factory.mktemp("tiny-binary")
    profile = write_yaml(tmp / "profiles" / "one.yaml", {
        "kind": "local", "cluster": {"n_workers": 1}, "dashboard_address": "127.0.0.1:0",
        "horovod": {"launcher": "horovodrun", "ranks": 1}})
    make_store(tmp / "storage" / "fake.zarr", n_per_class=160, size=32, shard_images=64)
    make_store(tmp / "storage" / "other.zarr", n_per_class=30, size=32, shard_images=64, split=(0, 0, 1), seed=99)
    path = write_manifest(tmp, [
        {"name": "train", "resources": {"cores": 2},
         "train": {"store": "fake.zarr", "model": {"preset": "binary"}, "labels": {"mode": "binary"},
                   "epochs": 3, "batch_size": 32}},
        {"name": "evaluate", "evaluate": {}},
        {"name": "evaluate-other", "evaluate": {"model": "train", "store": "other.zarr", "title": "other store"}},
    ], profile=profile)
    rd = create_run(path, run_dir=tmp / "run")
    return SimpleNamespace(tmp=tmp, run=rd.path, rd=rd, report=execute(rd, progress=False))
