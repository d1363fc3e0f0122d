"""End to end through `hpcpop`: run directories, report.json, the dashboard, SIGINT + rerun, status."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml
from helpers import HPCPOP, run_cli, write_yaml

from hpc_popgen.ledger import Ledger


def sim_stage(n_per_class: int = 8, shard_images: int = 4, n_haplotypes: int = 16,
              sequence_length: int = 10_000, name: str = "simulate", engine: str = "msprime") -> dict:
    """A small but real simulate stage (images, Zarr store): msprime and the paper's sweep from standing
    variation (msms -SI; ~25 ms an image here), or the forward engine's true history (``engine="fwdpy11"``,
    ~0.3-0.6 s an image: for tests that need shards slow enough to interrupt on the real SLURM)."""
    return {"name": name, "simulate": {
        "store": "@run/images.zarr", "demography": "constant", "n_haplotypes": n_haplotypes,
        "sequence_length": sequence_length, "classes": [0, 200], "n_per_class": n_per_class,
        "image": {"size": [16, 16]}, "shard_images": shard_images, "engine": engine,
        "sweep": {"standing": "paper" if engine == "msprime" else "true_history"}}}


def manifest(tmp_path: Path, profile: Path, **stage) -> Path:
    return write_yaml(tmp_path / "job.yaml", {"name": "plat", "seed": 11, "profile": str(profile),
                                             "storage": str(tmp_path / "store"), "stages": [sim_stage(**stage)]})


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start_long_run(tmp_path: Path, profile: Path, run: Path) -> subprocess.Popen:
    """`hpcpop submit` in the background on 60 shards of 8 images (msprime: ~0.2 s a shard, some 6 s on two
    idle workers): long enough to watch and interrupt."""
    job = manifest(tmp_path, profile, n_per_class=240, shard_images=8, n_haplotypes=32, sequence_length=20_000)
    return subprocess.Popen([*HPCPOP, "submit", str(job), "--run-dir", str(run), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def done_units(run: Path, stage: str = "simulate") -> dict[str, dict]:
    return Ledger(run / "ledger" / stage).done()


def test_submit_records_run_directory_and_report(tmp_path, local_profile):
    job = manifest(tmp_path, local_profile)
    run = tmp_path / "run"
    proc = run_cli("submit", job, "--run-dir", run, "--no-progress", check=True)
    out = proc.stdout + proc.stderr
    assert "Dask dashboard: http://127.0.0.1:" in out

    resolved = yaml.safe_load((run / "manifest.resolved.yaml").read_text())
    assert resolved["stages"][0]["simulate"]["mutation_rate"] > 0, "defaults are filled in"
    assert (run / "manifest.yaml").read_text() == job.read_text()
    assert yaml.safe_load((run / "profile.resolved.yaml").read_text())["kind"] == "local"
    prov = read_json(run / "provenance.json")
    assert prov["versions"]["msprime"] == "1.4.4" and prov["versions"]["zarr"].startswith("3.")
    assert prov["seeds"]["manifest"] == 11 and isinstance(prov["seeds"]["stages"]["simulate"], int)
    assert prov["host"] and prov["started_at"]
    assert prov["git_commit"] is None or len(prov["git_commit"]) >= 40

    rep = read_json(run / "report.json")
    assert rep["status"] == "completed"
    assert rep["dashboard"].startswith("http://127.0.0.1:")
    st = rep["stages"][0]
    assert (st["status"], st["units_done"], st["units_total"], st["failures"]) == ("completed", 4, 4, 0)
    assert st["seconds"] > 0 and st["throughput"]["images_per_s"] > 0
    assert len(done_units(run)) == 4

    status = run_cli("status", run, check=True).stdout
    assert "completed" in status and "4/4" in status


def test_dashboard_and_readable_task_keys_during_a_run(tmp_path, local_profile):
    """Fetch the dashboard over loopback while tasks run; task keys name stage, unit and shard."""
    from distributed import Client

    run = tmp_path / "run"
    proc = start_long_run(tmp_path, local_profile, run)
    try:
        rep = wait_for(lambda: (r := read_json(run / "report.json")).get("scheduler") and r, 120,
                       "the cluster to start", proc)
        page = requests.get(rep["dashboard"], timeout=30)
        assert page.status_code == 200 and "Dask" in page.text
        assert rep["scheduler"].startswith("tcp://127.0.0.1:")
        with Client(rep["scheduler"], timeout=30) as c:
            keys = wait_for(lambda: c.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks]),
                            60, "tasks on the scheduler", proc)
        assert any(k.startswith("simulate-shard-000") for k in keys), keys[:5]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)


def interrupt_mid_stage(tmp_path: Path, profile: Path, sig: int, code: int) -> Path:
    """Start a long run, send ``sig`` after three shards; the run exits with ``code``, recorded as interrupted."""
    run = tmp_path / "run"
    proc = start_long_run(tmp_path, profile, run)
    wait_for(lambda: len(done_units(run)) >= 3, 180, "three finished shards", proc)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "hpcpop rerun" in err
    rep = read_json(run / "report.json")
    assert rep["status"] == "interrupted" and rep["stages"][0]["status"] == "interrupted"
    assert rep["stages"][0]["units_done"] == len(done_units(run)), "report.json counts what the ledger holds"
    return run


def test_sigterm_is_an_interruption(tmp_path, local_profile):
    """kill, a pre-emption, or scancel of a detached driver: as Ctrl-C (the rerun below is the same path)."""
    interrupt_mid_stage(tmp_path, local_profile, signal.SIGTERM, 143)


def test_sigint_mid_stage_then_rerun_redoes_only_unfinished_units(tmp_path, local_profile):
    run = interrupt_mid_stage(tmp_path, local_profile, signal.SIGINT, 130)
    before = done_units(run)
    assert 3 <= len(before) < 60, "interrupted mid-stage"
    status = run_cli("status", run)
    assert status.returncode == 4 and "interrupted" in status.stdout and f"{len(before)}/60" in status.stdout

    run_cli("rerun", run, "--no-progress", check=True)
    after = done_units(run)
    assert len(after) == 60
    for unit, rec in before.items():
        assert after[unit]["finished_at"] == rec["finished_at"], f"{unit} was redone"
    rep = read_json(run / "report.json")
    assert rep["status"] == "completed" and rep["stages"][0]["units_done"] == 60

    from hpc_popgen.store import open_store

    store = open_store(run / "images.zarr")
    seeds = store.read("seed")
    assert len(set(seeds.tolist())) == 480, "every image present once"
    assert len(store.written_shards()) == store.n_shards


def test_rerun_of_unknown_dir_is_one_line_error(tmp_path):
    proc = run_cli("rerun", tmp_path / "nope")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such run directory" in proc.stderr


def test_submit_refuses_an_existing_run_dir(tmp_path, local_profile):
    job = manifest(tmp_path, local_profile, n_per_class=2, shard_images=2)
    run = tmp_path / "run"
    run_cli("submit", job, "--run-dir", run, "--no-progress", check=True)
    again = run_cli("submit", job, "--run-dir", run, "--no-progress")
    assert again.returncode == 2 and "already holds a run" in again.stderr


@pytest.mark.parametrize("bad,needle", [
    ({"n_per_class": -5}, "stages[0].simulate.n_per_class: -5 is less than the minimum of 1"),
    ({"n_per_clas": 5}, "stages[0].simulate.n_per_clas: unknown key 'n_per_clas'"),
])
def test_bad_stage_value_fails_before_anything_is_written(tmp_path, local_profile, bad, needle):
    data = yaml.safe_load(manifest(tmp_path, local_profile).read_text())
    data["stages"][0]["simulate"].update(bad)
    job = write_yaml(tmp_path / "bad.yaml", data)
    proc = run_cli("submit", job, "--run-dir", tmp_path / "run")
    assert proc.returncode == 2
    assert needle in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "run").exists(), "nothing partial is written"


def test_rerun_from_another_folder_finds_the_same_store(tmp_path, local_profile):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    stage = sim_stage(n_per_class=2, shard_images=2)
    stage["simulate"]["store"] = "images.zarr"  # relative to storage, itself relative to the manifest
    write_yaml(project / "job.yaml", {"name": "moved", "seed": 3, "profile": str(local_profile), "storage": "store",
                                      "stages": [stage]})
    run_cli("submit", "job.yaml", "--run-dir", "run", "--no-progress", cwd=project, check=True)
    run = project / "run"
    resolved = yaml.safe_load((run / "manifest.resolved.yaml").read_text())
    assert resolved["storage"] == str(project / "store")
    assert read_json(run / "provenance.json")["source_manifest"] == str(project / "job.yaml")

    shutil.rmtree(run / "ledger" / "simulate")  # the rerun has work to do
    run_cli("rerun", run, "--no-progress", cwd=elsewhere, check=True)
    st = read_json(run / "report.json")["stages"][0]
    assert st["metrics"]["store"] == str(project / "store" / "images.zarr") and st["units_done"] == 2
    assert list(elsewhere.iterdir()) == [], "nothing is made in the folder the rerun was started from"


def test_a_ledger_record_whose_output_is_gone_is_redone(tmp_path, local_profile, caplog):
    from hpc_popgen.cluster.clusters import start_cluster
    from hpc_popgen.pipeline import create_run, recorded_job
    from hpc_popgen.stages.base import StageContext, Unit

    rd = create_run(manifest(tmp_path, local_profile), run_dir=tmp_path / "run")
    job = recorded_job(rd)
    handles = []

    def factory(stage):
        handles.append(start_cluster(job.profile, None, name="redo"))
        return handles[0]

    ctx = StageContext(rd, job, job.stages[0], cluster_factory=factory, show_progress=False)
    out = tmp_path / "out"
    out.mkdir()

    def write(path: str) -> str:  # nested: pickled by value for the workers
        from pathlib import Path

        Path(path).write_text("done")
        return path

    units = [Unit(id=f"part-{i}", args=(str(out / f"part-{i}"),)) for i in range(3)]
    (out / "part-0").write_text("done")
    ctx.ledger.record("part-0")
    ctx.ledger.record("part-1")  # recorded, but its output is missing (another store, a wiped folder)
    kept = ctx.ledger.done()["part-0"]["finished_at"]
    logger = logging.getLogger("hpc_popgen")  # the CLI stops it propagating; caplog listens here directly
    logger.addHandler(caplog.handler)
    try:
        result = ctx.run_units(units, write, still_done=lambda u: Path(u.args[0]).exists())
    finally:
        logger.removeHandler(caplog.handler)
        for h in handles:
            h.close()
    assert (result.units_done, result.units_total, result.failures) == (3, 3, 0)
    assert all((out / f"part-{i}").exists() for i in range(3))
    assert ctx.ledger.done()["part-0"]["finished_at"] == kept, "a unit whose output is there is not redone"
    assert "1 unit(s) have a completion record but their output is missing (part-1)" in caplog.text


def test_units_go_out_in_waves_of_max_tasks_in_flight(tmp_path, local_profile):
    """With max_tasks_in_flight 2, the scheduler never holds more than 2 of the stage's 9 tasks, and every
    unit is still done once."""
    from hpc_popgen.cluster.clusters import start_cluster
    from hpc_popgen.pipeline import create_run, recorded_job
    from hpc_popgen.stages.base import StageContext, Unit

    rd = create_run(manifest(tmp_path, local_profile), run_dir=tmp_path / "run")
    job = recorded_job(rd)
    job = dataclasses.replace(job, profile=dataclasses.replace(job.profile, max_tasks_in_flight=2))
    handles = []

    def factory(stage):
        handles.append(start_cluster(job.profile, None, name="waves"))
        return handles[0]

    ctx = StageContext(rd, job, job.stages[0], cluster_factory=factory, show_progress=False)

    def seen(i: int) -> int:  # nested: pickled by value; how many of the stage's tasks the scheduler knows now
        from distributed import get_worker

        return get_worker().client.run_on_scheduler(
            lambda dask_scheduler: sum(k.startswith("simulate-") for k in map(str, dask_scheduler.tasks)))

    counts = []
    try:
        result = ctx.run_units([Unit(id=f"u-{i}", args=(i,)) for i in range(9)], seen,
                               on_done=lambda u, r: counts.append(r) or None)
    finally:
        for h in handles:
            h.close()
    assert (result.units_done, result.failures) == (9, 0) and sorted(Ledger(rd.path / "ledger" / "simulate").done()) == [
        f"u-{i}" for i in range(9)]
    assert len(counts) == 9 and max(counts) <= 2, counts
