"""Faults a shared cluster brings, on the real SLURM (and a LocalCluster where SLURM adds nothing):
a worker job cancelled mid-stage, workers retiring before their walltime, the driver terminated, sbatch
refusing the worker jobs, a GA evaluation that never ends. Every job a test starts is cancelled by it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import HPCPOP, profile_of, run_cli, slurm_profile_data, write_yaml
from test_platform_runs import done_units, read_json, sim_stage, wait_for

from hpc_popgen.cluster.clusters import start_cluster


def sim_job(tmp_path: Path, profile: Path | dict, name: str, **stage) -> Path:
    """A simulate job in ``tmp_path`` on ``profile`` (a path, or a profile dict written next to the job)."""
    if isinstance(profile, dict):
        profile = write_yaml(tmp_path / f"{name}-profile.yaml", profile)
    return write_yaml(tmp_path / f"{name}.yaml", {"name": name, "seed": 7, "profile": str(profile),
                                                  "storage": str(tmp_path / "s"), "stages": [sim_stage(**stage)]})


def store_arrays(run: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(run / "images.zarr"), mode="r")
    return {name: arr[:] for name, arr in group.arrays()}


def assert_same_store(a: Path, b: Path) -> None:
    """Every array of two runs' image stores is identical (images, seeds, labels, flags)."""
    left, right = store_arrays(a), store_arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        assert np.array_equal(left[name], right[name]), f"{name} differs"


def squeue_ids(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, timeout=20)
    return out.stdout.split()


# 16 shards of the forward engine (seconds each): slow enough for a worker job to be cancelled mid-stage
SHARDS = {"n_per_class": 16, "shard_images": 2, "n_haplotypes": 32, "sequence_length": 40_000, "engine": "fwdpy11"}


@pytest.mark.slurm
def test_worker_job_cancelled_mid_stage_is_replaced_and_store_is_identical(tmp_path, local_profile, slurm_cleanup):
    reference = tmp_path / "reference"
    run_cli("submit", sim_job(tmp_path, local_profile, "ref", **SHARDS), "--run-dir", reference, "--no-progress",
            check=True)

    run = tmp_path / "run"
    job = sim_job(tmp_path, slurm_profile_data(), "killed", **SHARDS)
    proc = subprocess.Popen([*HPCPOP, "submit", str(job), "--run-dir", str(run), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_for(lambda: (ids := squeue_ids("hpcpop-killed-simulate")) and done_units(run) and ids, 180,
                         "a worker job with finished shards", proc)
        subprocess.run(["scancel", *first], check=True, timeout=30)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    units = done_units(run)
    assert len(units) == 16
    jobs = {r["slurm_job_id"] for r in units.values()}
    assert len(jobs) >= 2 and set(first) & jobs, "shards ran in the cancelled job and in its replacement"
    assert read_json(run / "report.json")["status"] == "completed"
    assert_same_store(run, reference)


@pytest.mark.slurm
def test_workers_retire_before_walltime_and_tasks_move(tmp_path, slurm_cleanup):
    def sleep_then_say_job(i: int) -> str:  # nested: pickled by value for the workers
        import os
        import time

        time.sleep(0.5)
        return os.environ.get("SLURM_JOB_ID", "")

    profile = slurm_profile_data(walltime="00:01:00")
    profile["worker_lifetime"] = {"margin_seconds": 40, "stagger_seconds": 4}  # --lifetime 30s, stagger 4s
    handle = start_cluster(profile_of({**profile, "name": "retire"}), None, name="retire",
                           log_directory=str(tmp_path / "slurm-logs"), security_directory=tmp_path / "security")
    try:
        assert "--lifetime 30s --lifetime-stagger 4s" in handle.cluster.job_script()
        import dask
        from dask.utils import parse_timedelta

        assert parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")) == 5  # the profile's
        from distributed import as_completed

        jobs = []  # results fetched as they come, as run_units does: a retiring worker's memory goes with it
        for fut in as_completed(handle.client.map(sleep_then_say_job, range(80), pure=False)):  # 40 s
            jobs.append(fut.result())
            fut.release()
    finally:
        handle.close()
    assert len(set(jobs)) >= 2 and "" not in jobs, "the first worker job retired after its lifetime"
    logs = "".join(p.read_text() for p in (tmp_path / "slurm-logs").glob("*.err"))
    assert "lifetime" in logs.lower(), logs[-2000:]


@pytest.mark.slurm
def test_sbatch_refusing_worker_jobs_fails_fast_with_its_reason(tmp_path, slurm_cleanup):
    run = tmp_path / "run"
    job = sim_job(tmp_path, slurm_profile_data(queue="nosuchpartition"), "refused")
    t0 = time.time()
    proc = run_cli("submit", job, "--run-dir", run, "--no-progress", timeout=120)
    assert time.time() - t0 < 60
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = errors[0]
    assert "sbatch refuses the worker jobs" in line and "invalid partition" in line, line
    assert read_json(run / "report.json")["status"] == "failed"
    status = run_cli("status", run)
    assert status.returncode == 1 and "failed" in status.stdout
    assert not squeue_ids("hpcpop-refused-simulate")


@pytest.mark.slurm
def test_detached_driver_cancelled_then_rerun_resumes(tmp_path, slurm_cleanup):
    run = tmp_path / "run"
    job = sim_job(tmp_path, slurm_profile_data(), "cancelled", **SHARDS)
    out = run_cli("submit", job, "--run-dir", run, "--detach", check=True).stdout
    driver = out.split("SLURM job ")[1].split(";")[0].strip()
    wait_for(lambda: len(done_units(run)) >= 2, 240, "finished shards under the detached driver")
    subprocess.run(["scancel", driver], check=True, timeout=30)
    rep = wait_for(lambda: (r := read_json(run / "report.json")).get("status") == "interrupted" and r, 90,
                   "the driver to record the interruption")
    assert rep["stages"][0]["status"] == "interrupted"
    wait_for(lambda: not squeue_ids("hpcpop-cancelled-simulate"), 60, "the driver to cancel its worker jobs")
    before = done_units(run)
    run_cli("rerun", run, "--no-progress", timeout=300, check=True)
    after = done_units(run)
    assert len(after) == 16 and all(after[u]["finished_at"] == r["finished_at"] for u, r in before.items())
    assert yaml.safe_load((run / "manifest.resolved.yaml").read_text())["storage"] == str(tmp_path / "s")


def _evaluations_with_one_that_never_ends(profile: dict, tmp_path: Path) -> None:
    """Seven GA evaluations on a real cluster, one of which never ends: it is cancelled after the limit and
    gets the worst fitness, the others finish, and the worker it held is given back."""
    from hpc_popgen.demography.config import EvalTimeoutConfig
    from hpc_popgen.demography.engine import WORST
    from hpc_popgen.stages.demography import DaskEvaluations

    def fitness(space, x, data, ev):  # nested: pickled by value for the workers
        import time

        time.sleep(3600 if x[0] < 0 else 0.05)
        return {"loglik": -float(x[0]), "theta": 1.0, "error": None, "job": None}

    handle = start_cluster(profile_of(profile), None, name="timeout", log_directory=str(tmp_path / "logs"),
                           security_directory=tmp_path / "security")
    try:
        evals = DaskEvaluations(lambda: handle.client, "demography", None, None, 0,
                                EvalTimeoutConfig(multiple=5, floor_seconds=3), fn=fitness)
        t0 = time.time()
        for i in range(6):
            evals.submit(f"island-00-eval-00000-{i:03d}", None, [float(i)])
        evals.submit("island-01-eval-00000-000", None, [-1.0])
        got = dict(evals.completed())
        assert time.time() - t0 < 60
        assert len(got) == 7 and evals.n_timed_out == 1
        stuck = got.pop("island-01-eval-00000-000")
        assert stuck["loglik"] == WORST and "cancelled" in stuck["error"]
        assert all(r["error"] is None for r in got.values())
        evals.submit("island-01-eval-00001-000", None, [1.0])  # the worker is free again
        assert [t for t, _r in evals.completed()] == ["island-01-eval-00001-000"]
    finally:
        handle.close()


def test_ga_evaluation_that_never_ends_is_cancelled(tmp_path):
    _evaluations_with_one_that_never_ends({"kind": "local", "name": "local", "dashboard_address": "127.0.0.1:0",
                                           "cluster": {"n_workers": 1, "threads_per_worker": 1}}, tmp_path)


@pytest.mark.slurm
def test_ga_evaluation_that_never_ends_is_cancelled_on_slurm(tmp_path, slurm_cleanup):
    _evaluations_with_one_that_never_ends({**slurm_profile_data(), "name": "test-slurm"}, tmp_path)
