"""Real SLURM: workers as sbatch jobs, and the driver itself as an sbatch job with --detach."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import run_cli, slurm_profile_data, write_yaml
from test_platform_runs import done_units, read_json, sim_stage, wait_for
from test_train_helpers import make_store, write_manifest

pytestmark = pytest.mark.slurm

JOBCOMP = Path("/var/tmp/hpcpop-slurm/jobcomp.log")


def slurm_records() -> dict[str, dict]:
    """SLURM's own completion records (jobcomp/filetxt), by job id."""
    out = {}
    if JOBCOMP.exists():
        for line in JOBCOMP.read_text().splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "JobId" in fields:
                out[fields["JobId"]] = fields
    return out


def test_submit_runs_units_in_slurm_worker_jobs(tmp_path, slurm_profile, slurm_cleanup):
    job = write_yaml(tmp_path / "job.yaml", {"name": "slurmsim", "seed": 5, "profile": str(slurm_profile),
                                             "storage": str(tmp_path / "s"), "stages": [sim_stage()]})
    run = tmp_path / "run"
    proc = run_cli("submit", job, "--run-dir", run, "--no-progress", timeout=600, check=True)
    assert "Dask dashboard: http://127.0.0.1:" in proc.stderr

    units = done_units(run)
    assert len(units) == 4
    job_ids = {rec.get("slurm_job_id") for rec in units.values()}
    assert None not in job_ids, "every unit ran inside a SLURM job"
    recorded = set(read_json(run / "slurm_jobs.json").get("workers:simulate", []))
    assert job_ids <= recorded

    # SLURM's own records: the worker jobs, under our job name, in SLURM's completion log.
    for jid in job_ids:
        wait_for(lambda jid=jid: jid in slurm_records(), 60, f"job {jid} in SLURM's completion log")
        assert slurm_records()[jid]["Name"] == "hpcpop-slurmsim-simulate"
    logs = list((run / "slurm-logs").glob("*.out")) + list((run / "slurm-logs").glob("*.err"))
    assert logs, "worker job logs are kept in the run directory"
    text = "".join(p.read_text() for p in logs)
    assert re.search(r"Start worker|Starting worker|Worker at", text), text[-2000:]

    from hpc_popgen.store import open_store

    store = open_store(str(run / "images.zarr"))  # checked against storage_schemas/image_store.schema.json
    assert store.written_shards().tolist() == [0, 1, 2, 3] and store.n_images == 16

    status = run_cli("status", run, check=True).stdout
    assert "SLURM workers" in status and next(iter(job_ids)) in status
    assert read_json(run / "report.json")["status"] == "completed"


def test_detach_runs_driver_as_sbatch_job(tmp_path, slurm_profile, slurm_cleanup):
    job = write_yaml(tmp_path / "job.yaml", {"name": "detached", "seed": 6, "profile": str(slurm_profile),
                                             "storage": str(tmp_path / "s"), "stages": [sim_stage()]})
    run = tmp_path / "run"
    proc = run_cli("submit", job, "--run-dir", run, "--detach", timeout=120, check=True)
    m = re.search(r"driver submitted as SLURM job (\d+)", proc.stdout)
    assert m, proc.stdout
    driver = m.group(1)
    assert read_json(run / "slurm_jobs.json")["driver"] == [driver]
    assert "#SBATCH --job-name=hpcpop-driver-detached" in (run / "driver.sbatch").read_text()

    rep = wait_for(lambda: (r := read_json(run / "report.json")).get("status") in ("completed", "failed") and r,
                   480, "the detached driver to finish")
    assert rep["status"] == "completed", (run / f"driver-{driver}.log").read_text()[-3000:]
    assert (run / f"driver-{driver}.log").exists(), "the driver ran as SLURM job (its output file)"
    units = done_units(run)
    assert len(units) == 4 and all(r.get("slurm_job_id") not in (None, driver) for r in units.values())
    wait_for(lambda: driver in slurm_records(), 60, "the driver job in SLURM's completion log")
    rec = slurm_records()[driver]
    assert rec["JobState"] == "COMPLETED" and rec["Name"] == "hpcpop-driver-detached"


def test_one_rank_training_runs_in_a_slurm_worker_job_not_the_drivers(tmp_path, slurm_cleanup):
    """The driver (detached: itself a SLURM job) only plans and waits: the 1-rank training and the
    evaluation run as Dask tasks in a worker job, whose id their ledger records carry."""
    prof = slurm_profile_data()
    prof["horovod"] = {"launcher": "horovodrun", "ranks": 1}
    profile = write_yaml(tmp_path / "profiles" / "slurm-one.yaml", prof)
    make_store(tmp_path / "storage" / "t.zarr", n_per_class=60, size=32, shard_images=40)
    resources = {"cores": 1, "memory": "3GB"}
    job = write_manifest(tmp_path, [
        {"name": "train", "resources": resources,
         "train": {"store": "t.zarr", "epochs": 2, "batch_size": 16, "tensorboard": False}},
        {"name": "evaluate", "resources": resources, "evaluate": {}}], name="slurmtrain", profile=profile)
    run = tmp_path / "run"
    proc = run_cli("submit", job, "--run-dir", run, "--detach", timeout=120, check=True)
    driver = re.search(r"driver submitted as SLURM job (\d+)", proc.stdout).group(1)
    rep = wait_for(lambda: (r := read_json(run / "report.json")).get("status") in ("completed", "failed") and r,
                   480, "the detached driver to finish")
    assert rep["status"] == "completed", (run / f"driver-{driver}.log").read_text()[-3000:]
    epochs = done_units(run, "train")
    assert sorted(epochs) == ["epoch-0001", "epoch-0002"]
    workers = set(read_json(run / "slurm_jobs.json").get("workers:train", []))
    trained_in = {r.get("slurm_job_id") for r in epochs.values()}
    assert len(trained_in) == 1 and trained_in <= workers and driver not in trained_in, (trained_in, workers, driver)
    assert rep["stages"][0]["metrics"]["slurm_job_id"] in trained_in
    assert done_units(run, "evaluate")["evaluate"]["slurm_job_id"] not in (None, driver)
    assert "epoch 2/2" in (run / "hpcpop.log").read_text()
