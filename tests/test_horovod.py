"""Horovod: two real Gloo ranks on CPU train from a real store and end with identical weights."""

from __future__ import annotations

import importlib.util
import json

import pytest
from helpers import slurm_profile_data, write_yaml
from test_train_helpers import make_store, write_manifest

from hpc_popgen.cluster.sbatch import train_script
from hpc_popgen.pipeline import create_run, execute

pytestmark = pytest.mark.horovod


def _has_horovod() -> bool:
    return importlib.util.find_spec("horovod") is not None


@pytest.mark.skipif(not _has_horovod(), reason="horovod is not installed (pip install .[horovod])")
def test_two_gloo_ranks_identical_weights_disjoint_shards(tmp_path, local_profile):
    make_store(tmp_path / "storage" / "h.zarr", n_per_class=160, size=32, shard_images=40)
    manifest = write_manifest(tmp_path, [{"name": "train", "resources": {"cores": 2},
                                          "train": {"store": "h.zarr", "epochs": 2, "batch_size": 16,
                                                    "early_stopping": {"patience": 0}}}],
                              name="hvd", seed=5, profile=local_profile)
    rd = create_run(manifest, run_dir=tmp_path / "run")
    report = execute(rd, progress=False)
    st = report["stages"][0]
    assert report["status"] == "completed" and st["metrics"]["ranks"] == 2
    assert st["metrics"]["identical_weights"] is True
    ranks = [json.loads((tmp_path / "run" / "train" / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["train_shards"] == [0, 2, 4, 6] and ranks[1]["train_shards"] == [1, 3, 5, 7]
    assert ranks[0]["images_trained"] == ranks[1]["images_trained"] > 0
    # rank 0 alone wrote checkpoints and the ledger; the log shows only rank 0's epoch lines
    assert sorted(rd.ledger("train").done()) == ["epoch-0001", "epoch-0002"]
    log = (tmp_path / "run" / "train" / "train.log").read_text()
    assert "rank 0 INFO hpc_popgen.train.loop: epoch 2/2" in log and "rank 1 INFO" not in log
    assert (tmp_path / "run" / "train" / "model" / "model.keras").exists()


def test_sbatch_script_for_gpu_nodes(tmp_path):
    text = train_script(job_file=tmp_path / "job.json", run_dir=tmp_path, name="fig3-train", nodes=2,
                        gpus_per_node=4, ranks=8, cores=8, memory="64G", walltime="12:00:00",
                        queue="gpu", account="proj1", launcher="horovodrun", extra=["--gres=gpu:4", "--qos=high"])
    lines = text.splitlines()
    for want in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:4",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --mem=64G", "#SBATCH --time=12:00:00",
                 "#SBATCH --partition=gpu", "#SBATCH --account=proj1", "#SBATCH --qos=high"):
        assert want in lines, want
    assert sum(ln.startswith("#SBATCH --gres") for ln in lines) == 1
    assert any("horovodrun --gloo -np 8 -H \"$HOSTS\"" in ln and "hpc_popgen.train.worker" in ln for ln in lines)
    assert "export TF_USE_LEGACY_KERAS=1" in lines
    srun = train_script(job_file="j.json", run_dir=tmp_path, name="x", nodes=1, gpus_per_node=2, ranks=2,
                        cores=8, memory=None, walltime=None, queue=None, account=None, launcher="srun")
    assert any(ln.startswith("srun --mpi=pmi2 ") for ln in srun.splitlines())
    assert "#SBATCH --partition" not in srun


def test_train_stage_renders_sbatch_from_slurm_gpu_profile(tmp_path):
    """The train stage turns the slurm-gpu profile and stage resources into the job script."""
    from hpc_popgen.pipeline import prepare
    from hpc_popgen.stages.base import StageContext
    from hpc_popgen.stages.train import render_sbatch, resolve_ranks

    make_store(tmp_path / "storage" / "h.zarr", n_per_class=8, shard_images=8)  # validate needs the store
    manifest = write_manifest(tmp_path, [{"name": "train", "train": {"store": "h.zarr"},
                                          "resources": {"nodes": 2, "gpus": 4, "cores": 16, "walltime": "02:00:00"}}],
                              name="gpu", seed=5, profile="slurm-gpu")
    job = prepare(manifest)
    rd = create_run(manifest, run_dir=tmp_path / "run")
    ctx = StageContext(rd, job, job.stages[0])
    ranks, launcher = resolve_ranks(ctx)
    assert (ranks, launcher) == (8, "srun_gloo")
    text = render_sbatch(ctx, tmp_path / "job.json", ranks, launcher)
    lines = text.splitlines()
    for want in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:4",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --time=02:00:00", "#SBATCH --partition=gpu"):
        assert want in lines, (want, text)
    # srun starts the ranks; the rendezvous address is the host's own (the profile names no interface)
    assert any(ln.endswith(f"-m hpc_popgen.cluster.horovod --srun {tmp_path / 'job.json'} ''") for ln in lines), text


@pytest.mark.slurm
@pytest.mark.skipif(not _has_horovod(), reason="horovod is not installed (pip install .[horovod])")
def test_two_ranks_as_a_slurm_job(tmp_path, slurm_cleanup):
    """On a SLURM profile the train stage submits its rendered sbatch script and waits for it."""
    prof = slurm_profile_data(memory="6GB", cores=2)
    prof["horovod"] = {"launcher": "horovodrun", "ranks": 2}
    profile = write_yaml(tmp_path / "profiles" / "slurm-hvd.yaml", prof)
    make_store(tmp_path / "storage" / "s.zarr", n_per_class=80, size=32, shard_images=40)
    manifest = write_manifest(tmp_path, [{"name": "train", "train": {
        "store": "s.zarr", "epochs": 1, "batch_size": 16, "tensorboard": False}}], name="hvd-slurm", seed=5,
        profile=profile)
    rd = create_run(manifest, run_dir=tmp_path / "run")
    report = execute(rd, progress=False)
    st = report["stages"][0]
    assert report["status"] == "completed" and st["metrics"]["ranks"] == 2 and st["metrics"]["identical_weights"]
    script = (tmp_path / "run" / "train" / "train.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "hpc_popgen.cluster.horovod" in script
    jobs = json.loads((tmp_path / "run" / "slurm_jobs.json").read_text())
    assert jobs["train:train"] and list((tmp_path / "run" / "train").glob("train-*.log"))
