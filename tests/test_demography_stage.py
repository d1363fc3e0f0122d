"""The demography stage end to end: islands on a real Dask LocalCluster, outputs, kill + rerun, SLURM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import write_yaml

from hpc_popgen.errors import ManifestError
from hpc_popgen.ledger import Ledger
from hpc_popgen.pipeline import create_run, execute, prepare
from hpc_popgen.runs import RunDir

DATA = Path(__file__).parent / "data" / "demography"
LOCAL_PROFILE = {"kind": "local", "cluster": {"n_workers": 2, "threads_per_worker": 1},
                 "dashboard_address": "127.0.0.1:0"}


def _params(**over) -> dict:
    """Small demography parameters (1 population, structure (1) -> (2), 2 islands), ``over`` changed."""
    p = {"input": {"afs": "two_epoch_1pop.fs"}, "initial_structure": [1], "final_structure": [2],
         "mu": 1e-8, "sequence_length": 1e6, "generation_time": 25, "islands": 2, "migrate_every": 2,
         "deterministic": True,
         "ga": {"size": 6, "init_factor": 2, "stall_generations": 3, "max_evals": 60},
         "local_search": {"method": "BFGS", "starts": 1, "maxiter": 10, "jump_evals": 20}}
    p.update(over)
    return p


def _manifest(tmp_path: Path, profile: dict, name: str = "demo", **over) -> Path:
    """A one-stage demography job (with its AFS and profile) in ``tmp_path``; ``over`` changes its parameters."""
    write_yaml(tmp_path / "profile.yaml", profile)
    (tmp_path / "two_epoch_1pop.fs").write_bytes((DATA / "two_epoch_1pop.fs").read_bytes())
    return write_yaml(tmp_path / "job.yaml", {"name": name, "seed": 42, "profile": "profile.yaml", "storage": "runs",
                                              "stages": [{"name": "demography", "demography": _params(**over)}]})


def _results(run: Path) -> dict:
    """The stage's results.json."""
    return json.loads((run / "demography" / "results.json").read_text())


@pytest.mark.parametrize(("over", "match"), [
    ({"input": {"afs": "a.fs", "vcf": "b.vcf"}},
     r"job\.yaml: stages\[0\]\.demography\.input: give exactly one of afs or vcf"),
    ({"fixed": {"nu7_1": 1.0}}, "unknown parameter 'nu7_1'"),
    ({"final_structure": [1, 2]}, "final_structure"),
    ({"input": {"vcf": "b.vcf", "populations": ["A"], "projections": [4]}},
     r"stages\[0\]\.demography\.input\.popmap: required with input\.vcf"),
    ({"bounds": {"t9": [0.1, 1.0]}}, r"stages\[0\]\.demography\.bounds: unknown parameter 't9'"),
    ({"likelihood": "poisson", "mu": None}, r"stages\[0\]\.demography\.mu: mu and sequence_length are required"),
    ({"initial_guesses": [{"t1": 0.1}]}, r"stages\[0\]\.demography\.initial_guesses\[0\]: missing nu1_1"),
])
def test_manifest_checks_name_the_key(tmp_path, over, match):
    path = _manifest(tmp_path, LOCAL_PROFILE, **over)
    with pytest.raises(ManifestError, match=match) as err:
        prepare(path)
    assert "\n" not in str(err.value)


def submit_killed_at(job: Path, run: Path, stage: str, unit: str) -> None:
    """``hpcpop submit job`` in its own process group, SIGKILLed as soon as ``unit`` of ``stage`` is done."""
    proc = subprocess.Popen([sys.executable, "-m", "hpc_popgen.cli", "submit", str(job), "--run-dir", str(run),
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _kill_when(proc, lambda: Ledger(run / "ledger" / stage).is_done(unit))


def _kill_when(proc: subprocess.Popen, marker: Callable[[], bool], timeout: float = 240) -> None:
    """SIGKILL the run's process group as soon as ``marker()`` is true."""
    t0 = time.time()
    while not marker():
        assert proc.poll() is None, "run finished before it could be killed"
        assert time.time() - t0 < timeout, "checkpoint never appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def test_stage_outputs_kill_rerun_equals_uninterrupted(tmp_path):
    # uninterrupted reference run
    ref_manifest = _manifest(tmp_path / "ref", LOCAL_PROFILE, uncertainty="none")  # intervals: test_demography_uncertainty
    rd = create_run(ref_manifest, run_dir=tmp_path / "ref" / "run")
    report = execute(rd, progress=False)
    assert report["status"] == "completed"
    ref = _results(rd.path)
    assert [s["structure"] for s in ref["structures"]] == [[1], [2]]
    best = max(ref["structures"], key=lambda s: s["loglik"])
    assert best["loglik"] > -100 and best["Nanc"] > 0
    assert best["physical"]["t1_years"] > 0
    assert set(ref) >= {"best_by_aic", "best_by_loglik"}
    stage = report["stages"][0]
    assert len(stage["metrics"]["best_loglik_per_island"]) == 2
    assert stage["metrics"]["timed_out_evaluations"] == 0, "the report counts evaluations cut by eval_timeout"
    # outputs: demes YAML valid, plots, code that reproduces the LL
    import demes

    for s in ref["structures"]:
        d = rd.path / "demography" / s["dir"]
        g = demes.load(d / "model.demes.yaml")
        assert [x.name for x in g.demes] == ["A"]
        assert (d / "model.png").stat().st_size > 1000 and (d / "afs_comparison.png").stat().st_size > 1000
        if s["structure"] != [2]:  # the scripts of the two-epoch model, written as every structure's are
            continue
        for code in ("model_moments.py", "model_dadi.py"):
            out = subprocess.run([sys.executable, str(d / code)], capture_output=True, text=True, timeout=120, check=True)
            ll = float(out.stdout.split("log-likelihood:")[1].split()[0])
            if code == "model_moments.py":
                assert abs(ll - s["loglik"]) < 1e-6
            else:
                assert abs(ll - s["loglik"]) < 1.0  # dadi vs moments: close, not equal

    # the same job, killed after island 01 checkpointed generation 3, then rerun
    job = _manifest(tmp_path / "kill", LOCAL_PROFILE, uncertainty="none")
    run = tmp_path / "kill" / "run"
    submit_killed_at(job, run, "demography", "island-01-gen-00003")
    assert not (run / "demography" / "results.json").exists()
    before = set(RunDir.open(run).ledger("demography").done())
    ck = {k: json.loads((run / "demography" / "checkpoint" / "s0" / f"island-{k:02d}.json").read_text())["generation"]
          for k in range(2)}
    assert ck[1] >= 3
    report = execute(RunDir.open(run), progress=False)
    assert report["status"] == "completed"
    after = set(RunDir.open(run).ledger("demography").done())
    assert before <= after
    log = (run / "hpcpop.log").read_text()
    assert "resuming 2 island(s)" in log or "resuming 1 island(s)" in log
    got = _results(run)
    assert [(s["structure"], s["loglik"], s["params"]) for s in got["structures"]] == \
        [(s["structure"], s["loglik"], s["params"]) for s in ref["structures"]]
    assert report["stages"][0]["metrics"]["evaluations_this_attempt"] < stage["metrics"]["evaluations_this_attempt"]


@pytest.mark.slurm
def test_islands_run_on_slurm_workers(tmp_path, slurm, slurm_cleanup):
    profile = {"kind": "slurm",
               "cluster": {"cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:10:00", "queue": "debug",
                           "interface": "lo"},
               "dashboard_address": "127.0.0.1:0", "adapt": {"minimum_jobs": 1, "maximum_jobs": 2}}
    job = _manifest(tmp_path, profile, name="demo-slurm", final_structure=[1], deterministic=False,
                    ga={"size": 6, "stall_generations": 3, "max_evals": 30}, plots=False)
    rd = create_run(job, run_dir=tmp_path / "run")
    report = execute(rd, progress=False)
    assert report["status"] == "completed"
    metrics = report["stages"][0]["metrics"]
    by_job = metrics["evaluations_by_slurm_job"]
    assert by_job and sum(by_job.values()) >= 12
    jobs = sorted(by_job)
    recorded = set(rd.slurm_jobs().get("workers:demography", []))  # noted by the stage, while it ran
    assert set(jobs) <= recorded
    acct = subprocess.run(["sacct", "-n", "-X", "-j", ",".join(jobs), "-o", "JobID,JobName,State"],
                          capture_output=True, text=True, timeout=30)
    squeue = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, timeout=30)
    print("evaluations by SLURM job:", by_job, "\nsacct:\n", acct.stdout, acct.stderr, "\nsqueue:\n", squeue.stdout)
    assert all(j.isdigit() for j in jobs)
    seen = acct.stdout + squeue.stdout
    assert any(j in seen for j in jobs) or acct.returncode != 0
    leftover = [line.split()[0] for line in squeue.stdout.splitlines() if "hpcpop" in line]
    if leftover:
        subprocess.run(["scancel", *leftover], check=False, timeout=30)
