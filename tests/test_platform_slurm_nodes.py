"""Real SLURM with two nodes: simulate workers as sbatch jobs on two distinct SLURM nodes.

scripts/slurm-up.sh starts two slurmd daemons on this host (`slurmd -N NAME`, Slurm's multiple-slurmd
mode, each on its own loopback port): node HOST alone in the default partition `debug`, and HOST and
HOST-2 in the partition `multi`. Inside a job, SLURMD_NODENAME names the node the job runs on; the
hostname is the same on both (one machine), so the nodes are told apart by SLURM's own records.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest
from helpers import REPO, run_cli, slurm_profile_data, write_yaml
from test_platform_runs import done_units, read_json, sim_stage, wait_for
from test_platform_slurm import slurm_records

pytestmark = pytest.mark.slurm

PARTITION = "multi"


def partition_nodes(partition: str) -> list[str]:
    """The node names of a partition that SLURM can run jobs on (idle, mixed, allocated or completing)."""
    out = subprocess.run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N %T"], capture_output=True, text=True,
                         timeout=20)
    return sorted({line.split()[0] for line in out.stdout.splitlines() if line.split()[1:]
                   and line.split()[1].rstrip("*~#!%$@^-") in ("idle", "mixed", "allocated", "completing")})


@pytest.fixture(scope="module")
def two_nodes(slurm):
    """The partition `multi` with two usable nodes (slurm-up.sh restarts SLURM with them if it runs one)."""
    if not partition_nodes(PARTITION):
        subprocess.run(["bash", str(REPO / "scripts" / "slurm-up.sh")], check=False, timeout=600,
                       env={**os.environ, "HPCPOP_SLURM_NODES": "2"})
    try:
        return wait_for(lambda: len(n := partition_nodes(PARTITION)) >= 2 and n, 60,
                        f"two usable nodes in partition {PARTITION}")
    except AssertionError:
        out = subprocess.run(["sinfo", "-N"], capture_output=True, text=True, timeout=20).stdout
        pytest.fail(f"partition {PARTITION} lacks two usable nodes; scripts/slurm-up.sh must start them:\n{out}")


def test_simulate_workers_run_on_two_slurm_nodes(tmp_path, two_nodes, slurm_cleanup):
    # Two worker jobs at once, each owning a whole node (--exclusive): SLURM must place them on two nodes.
    prof = slurm_profile_data(queue=PARTITION, job_extra_directives=["--exclusive"])
    prof["adapt"] = {"minimum_jobs": 2, "maximum_jobs": 2}
    profile = write_yaml(tmp_path / "profiles" / "slurm-two.yaml", prof)
    # 12 shards of 4 images, slow enough (64 haplotypes, 60 kb) that both workers get some.
    stage = sim_stage(n_per_class=24, shard_images=4, n_haplotypes=64, sequence_length=60_000)
    job = write_yaml(tmp_path / "job.yaml", {"name": "twonodes", "seed": 7, "profile": str(profile),
                                             "storage": str(tmp_path / "s"), "stages": [stage]})
    run = tmp_path / "run"
    run_cli("submit", job, "--run-dir", run, "--no-progress", timeout=600, check=True)
    assert read_json(run / "report.json")["status"] == "completed"

    units = done_units(run)
    assert len(units) == 12
    unit_jobs = {rec.get("slurm_job_id") for rec in units.values()}
    assert None not in unit_jobs, "every unit ran inside a SLURM job"
    workers = set(read_json(run / "slurm_jobs.json").get("workers:simulate", []))
    assert unit_jobs <= workers

    # SLURM's own completion records say where each worker job ran.
    for jid in workers:
        wait_for(lambda jid=jid: jid in slurm_records(), 60, f"job {jid} in SLURM's completion log")
    recs = slurm_records()
    for jid in workers:
        assert recs[jid]["Partition"] == PARTITION and recs[jid]["NodeCnt"] == "1", recs[jid]
        assert recs[jid]["Name"] == "hpcpop-twonodes-simulate"
    node_of = {jid: recs[jid]["NodeList"] for jid in workers}
    assert set(node_of.values()) == set(two_nodes), node_of
    # ... and the units were computed in jobs on both nodes.
    assert {node_of[jid] for jid in unit_jobs} == set(two_nodes), (node_of, unit_jobs)

    from hpc_popgen.store import open_store

    store = open_store(str(run / "images.zarr"))
    assert store.written_shards().tolist() == list(range(12)) and store.n_images == 48


@pytest.mark.skipif(importlib.util.find_spec("horovod") is None, reason="horovod is not installed")
def test_two_node_horovod_training_one_rank_per_node(tmp_path, two_nodes, slurm_cleanup):
    """launcher srun_gloo: the batch step serves Horovod's rendezvous on the profile's interface (lo here)
    and srun starts one Gloo rank on each node; the ranks end with identical weights."""
    from test_train_helpers import make_store, write_manifest

    from hpc_popgen.pipeline import create_run, execute

    prof = slurm_profile_data(queue=PARTITION, memory="3GB", cores=1)
    prof["horovod"] = {"launcher": "srun_gloo", "ranks": 2}
    profile = write_yaml(tmp_path / "profiles" / "slurm-hvd2.yaml", prof)
    make_store(tmp_path / "storage" / "s.zarr", n_per_class=80, size=32, shard_images=40)
    manifest = write_manifest(tmp_path, [{"name": "train", "resources": {"nodes": 2}, "train": {
        "store": "s.zarr", "epochs": 1, "batch_size": 16, "tensorboard": False}}], name="hvd-nodes", seed=5,
        profile=profile)
    report = execute(create_run(manifest, run_dir=tmp_path / "run"), progress=False)
    st = report["stages"][0]
    assert report["status"] == "completed", report
    assert st["metrics"]["ranks"] == 2 and st["metrics"]["identical_weights"]
    script = (tmp_path / "run" / "train" / "train.sbatch").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script and " --srun " in script
    (jid,) = read_json(tmp_path / "run" / "slurm_jobs.json")["train:train"]
    wait_for(lambda: jid in slurm_records(), 60, f"job {jid} in SLURM's completion log")
    rec = slurm_records()[jid]
    assert rec["NodeCnt"] == "2" and rec["Partition"] == PARTITION, rec
    log = "".join(p.read_text() for p in (tmp_path / "run" / "train").glob("train-*.log"))
    assert "rendezvous on 127.0.0.1:" in log and "for 2 ranks on" in log, log[-2000:]


def test_every_node_offers_this_hosts_cpus_whatever_omp_num_threads_says(slurm):
    """slurm-up.sh counts the CPUs this process may use, not OMP_NUM_THREADS (GNU nproc obeys it; Dask's
    nanny sets it to 1 in its process): a 1-CPU node leaves a 2-rank Horovod job pending for ever. Run
    again with OMP_NUM_THREADS=1, it must find the cluster as it is and leave it running."""
    cpus = len(os.sched_getaffinity(0))
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %c"], capture_output=True, text=True, timeout=20).stdout
    assert {int(line.split()[1]) for line in out.splitlines()} == {cpus}, out
    again = subprocess.run(["bash", str(REPO / "scripts" / "slurm-up.sh")], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
