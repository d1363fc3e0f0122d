"""Run directories, the ledger, seeds, profiles and the rendered cluster/sbatch settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import profile_of, resources, slurm_profile_data, write_yaml

from hpc_popgen import atomic
from hpc_popgen.cluster.clusters import cluster_kwargs
from hpc_popgen.cluster.profiles import list_profiles, resolve_profile
from hpc_popgen.errors import ProfileError
from hpc_popgen.ledger import Ledger
from hpc_popgen.seeds import derive_seed


def test_ledger_records_and_failures(tmp_path):
    led = Ledger(tmp_path / "ledger" / "sim")
    assert led.pending(["shard-00000", "shard-00001"]) == ["shard-00000", "shard-00001"]
    led.record_failure("shard-00001", "boom")
    led.record_failure("shard-00001", "boom again")
    assert led.failures()["shard-00001"]["attempts"] == 2
    led.record("shard-00000", images=8)
    led.record("shard-00001", images=8)
    assert led.pending(["shard-00000", "shard-00001", "shard-00002"]) == ["shard-00002"]
    assert led.done()["shard-00000"]["images"] == 8
    assert led.failures() == {}, "a unit that finished is no longer counted as failed"
    with pytest.raises(ValueError):
        led.record("../escape")
    led.forget(["shard-00001"])
    assert led.pending(["shard-00000", "shard-00001"]) == ["shard-00001"]
    assert [p.name for p in led.root.iterdir()] == ["records.jsonl"], "one file per stage, whatever the units"


def test_ledger_line_cut_by_a_kill_is_skipped_and_the_next_starts_afresh(tmp_path):
    led = Ledger(tmp_path / "ledger" / "sim")
    led.record("shard-00000")
    with open(led.path, "ab") as fh:  # what a kill in the middle of a write leaves
        fh.write(b'{"event": "done", "unit": "shard-0000')
    assert set(led.done()) == {"shard-00000"}
    led.record("shard-00002")
    assert set(Ledger(led.root).done()) == {"shard-00000", "shard-00002"}
    assert led.path.read_bytes().count(b"\n") == 3 and led.path.read_bytes().endswith(b"\n")


def test_ledger_reads_runs_made_with_one_file_per_unit(tmp_path):
    root = tmp_path / "ledger" / "sim"
    atomic.write_json(root / "done" / "shard-00000.json", {"unit": "shard-00000", "images": 4})
    led = Ledger(root)
    led.record("shard-00001")
    assert sorted(led.done()) == ["shard-00000", "shard-00001"] and led.done()["shard-00000"]["images"] == 4


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "r.json"
    atomic.write_json(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic.write_json(target, {"a": Boom()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "temp files are removed"


def test_derived_seeds_are_stable_and_distinct():
    a = [derive_seed(42, i) for i in range(1000)]
    assert a == [derive_seed(42, i) for i in range(1000)]
    assert len(set(a)) == 1000
    assert all(1 <= s <= 2**32 - 1 for s in a)
    assert derive_seed(42, 0) != derive_seed(43, 0)
    assert derive_seed(42, 5) == 1206282610, "seed derivation must never change between versions"


def test_packaged_profiles_are_listed_and_valid():
    names = {p.name: p for p in list_profiles()}
    assert {"local", "slurm", "slurm-gpu"} <= set(names)
    assert names["local"].kind == "local" and names["slurm"].kind == "slurm"


def test_user_profiles_shadow_packaged(tmp_path, monkeypatch):
    import hpc_popgen.cluster.profiles as prof

    user = tmp_path / "user"
    write_yaml(user / "slurm.yaml", {"kind": "slurm", "description": "mine", "cluster": {"queue": "long"}})
    monkeypatch.setattr(prof, "USER_PROFILE_DIR", user)
    p = resolve_profile("slurm")
    assert p.cluster["queue"] == "long" and p.source == str(user / "slurm.yaml")


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ProfileError, match=r"unknown cluster profile 'slurmm' \(known: .*local.*slurm"):
        resolve_profile("slurmm")


def test_bad_profile_key_is_named(tmp_path):
    p = write_yaml(tmp_path / "p.yaml", {"kind": "slurm", "adapt": {"maximum_job": 3}})
    with pytest.raises(ProfileError, match=r"adapt\.maximum_job: unknown key"):
        resolve_profile(str(p))


def test_slurm_kwargs_drop_nulls_and_apply_stage_resources():
    prof = resolve_profile("slurm")
    kw = cluster_kwargs(prof, resources(cores=4, memory="8GB", walltime="02:00:00", gpus=2))
    assert "queue" not in kw and "account" not in kw, "nulls fall back to dask-jobqueue's own config"
    assert kw["cores"] == 4 and kw["memory"] == "8GB" and kw["walltime"] == "02:00:00"
    assert "--gres=gpu:2" in kw["job_extra_directives"]


def test_local_kwargs_cap_workers_by_cores():
    prof = resolve_profile("local")
    kw = cluster_kwargs(prof, resources(cores=1))
    assert kw["n_workers"] == 1 and kw["threads_per_worker"] == 1
    assert kw["dashboard_address"].startswith("127.0.0.1")


def test_slurm_job_script_has_our_directives():
    from dask_jobqueue import SLURMCluster

    data = slurm_profile_data()
    data["cluster"]["job_extra_directives"] = ["--qos=normal"]
    kw = cluster_kwargs(profile_of(data), resources(cores=2, memory="3GB", walltime="00:30:00"))
    kw.pop("scheduler_options", None)
    with SLURMCluster(**kw, scheduler_options={"host": "127.0.0.1", "dashboard_address": None}) as cl:
        script = cl.job_script()
    assert "#SBATCH -p debug" in script
    assert "#SBATCH --cpus-per-task=2" in script
    assert "#SBATCH -t 00:30:00" in script
    assert "#SBATCH --qos=normal" in script


def test_driver_script_runs_rerun(tmp_path):
    from hpc_popgen.pipeline import driver_script
    from hpc_popgen.runs import RunDir

    class FakeRun(RunDir):
        def manifest(self):
            from hpc_popgen.manifest import Manifest

            return Manifest(name="job1", seed=1, profile="slurm", storage=".", stages=())

    rd = FakeRun(tmp_path)
    text = driver_script(rd, profile_of({"kind": "slurm", "cluster": {"queue": "debug"},
                                            "driver": {"cores": 1, "memory": "2GB", "walltime": "01:00:00"}}))
    assert "#SBATCH --job-name=hpcpop-driver-job1" in text
    assert "#SBATCH --mem=2G" in text and "#SBATCH --partition=debug" in text
    assert f"hpc_popgen.cli rerun --no-progress {tmp_path}" in text
    assert os.path.basename(text.splitlines()[0]) in ("bash", "env bash")
    assert Path(tmp_path).exists()


@pytest.mark.parametrize("mem,want", [("2GB", "2G"), ("2GiB", "2G"), ("2000MB", "2000M"), ("0.5GB", "512M"),
                                      ("1.5GB", "1536M"), ("0.001GB", "1049K"), ("512", "512M")])
def test_slurm_mem_rounds_up_to_a_whole_unit(mem, want):
    from hpc_popgen.cluster.sbatch import slurm_mem

    assert slurm_mem(mem) == want


@pytest.mark.parametrize("mem", ["0GB", "lots"])
def test_slurm_mem_refuses_zero_and_nonsense(mem):
    from hpc_popgen.cluster.sbatch import slurm_mem

    with pytest.raises(ProfileError, match=f"memory '{mem}'"):
        slurm_mem(mem)


def test_workers_retire_before_walltime_staggered():
    prof = resolve_profile("slurm")
    kw = cluster_kwargs(prof, resources(walltime="01:00:00"))
    assert kw["worker_extra_args"] == ["--lifetime", "3300s", "--lifetime-stagger", "150s", "--no-dashboard"]
    short = cluster_kwargs(profile_of({"kind": "slurm", "cluster": {"walltime": "00:02:00"}}), None)
    assert short["worker_extra_args"][:4] == ["--lifetime", "60s", "--lifetime-stagger", "30s"], "at least half the walltime"
    off = cluster_kwargs(profile_of({"kind": "slurm", "worker_lifetime": None, "cluster": {"walltime": "1:00:00"}}), None)
    assert off["worker_extra_args"] == ["--no-dashboard"]


def test_slurm_workers_serve_no_dashboard_unless_the_profile_asks():
    """A worker's own dashboard is an unauthenticated page server on every compute node: off, unless asked."""
    prof = profile_of({"kind": "slurm", "worker_lifetime": None, "cluster": {"worker_extra_args": ["--dashboard"]}})
    assert cluster_kwargs(prof, None)["worker_extra_args"] == ["--dashboard"]
    local = cluster_kwargs(profile_of({"kind": "local"}), None)
    assert "worker_extra_args" not in local and local.get("worker_dashboard_address") is None  # Dask's: none


def test_dashboard_binds_to_loopback_unless_the_profile_says_otherwise():
    kw = cluster_kwargs(resolve_profile("slurm"), None)
    assert kw["scheduler_options"]["dashboard_address"].startswith("127.0.0.1:")
    kw = cluster_kwargs(profile_of({"kind": "slurm", "dashboard_address": ":8787"}), None)
    assert kw["scheduler_options"]["dashboard_address"] == ":8787"


@pytest.mark.parametrize("kind,key,needle", [
    ("slurm", "quue", r"cluster\.quue: unknown key for SLURMCluster \(did you mean 'queue'\?\)"),
    ("local", "n_worker", r"cluster\.n_worker: unknown key for LocalCluster \(did you mean 'n_workers'\?\)"),
])
def test_unknown_cluster_key_is_named_before_anything_runs(tmp_path, kind, key, needle):
    p = write_yaml(tmp_path / "p.yaml", {"kind": kind, "cluster": {key: 1}})
    with pytest.raises(ProfileError, match=needle):
        resolve_profile(str(p))
    from helpers import run_cli
    from test_platform_runs import sim_stage

    job = write_yaml(tmp_path / "job.yaml", {"name": "k", "seed": 1, "profile": str(p), "storage": "s",
                                             "stages": [sim_stage()]})

    proc = run_cli("submit", job, "--run-dir", tmp_path / "run")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "unknown key" in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "s").exists(), "nothing partial is written"


def test_known_cluster_keys_of_worker_and_job_classes_pass(tmp_path):
    write_yaml(tmp_path / "l.yaml", {"kind": "local", "cluster": {"memory_limit": "1GB", "local_directory": "/tmp"}})
    write_yaml(tmp_path / "s.yaml", {"kind": "slurm", "cluster": {"job_mem": "1GB", "worker_extra_args": [],
                                                                  "job_script_prologue": []}})
    assert resolve_profile(str(tmp_path / "l.yaml")).kind == "local"
    assert resolve_profile(str(tmp_path / "s.yaml")).kind == "slurm"


@pytest.mark.parametrize("text,seconds", [("30", 1800), ("30:10", 1810), ("01:00:00", 3600), ("1-12", 129600),
                                          ("1-12:30", 131400), ("1-00:00:10", 86410)])
def test_walltime_in_every_slurm_format(text, seconds):
    from hpc_popgen.cluster.clusters import walltime_seconds

    assert walltime_seconds(text) == seconds


def test_training_stages_get_one_worker_process_per_slurm_job():
    prof = profile_of({"kind": "slurm", "cluster": {"queue": "debug", "cores": 4, "memory": "8GB", "processes": 4}})
    assert cluster_kwargs(prof, resources())["processes"] == 4
    assert cluster_kwargs(prof, resources(), one_process=True)["processes"] == 1
