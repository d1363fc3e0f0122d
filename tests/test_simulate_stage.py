"""The simulate stage end to end on a real LocalCluster: validation, 1 vs 2 workers bit-identical,
rerun fills only missing shards, a killed worker's shards are redone, refusals are counted."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from hpc_popgen.errors import ManifestError, StoreError
from hpc_popgen.ledger import Ledger
from hpc_popgen.pipeline import create_run, execute, prepare
from hpc_popgen.store import PER_IMAGE_ARRAYS, open_store

# the platform's behaviour on msprime's paper-compatible sweeps (fast, with msprime's own refusals);
# the forward engine's stores are tested in test_forward_stage.py
BASE = {"demography": "marth3", "n_haplotypes": 32, "sequence_length": 20_000, "classes": [0, 200, 400],
        "n_per_class": 8, "shard_images": 8, "chunk_images": 4, "engine": "msprime",
        "sweep": {"standing": "paper"}, "image": {"size": [32, 32], "sort": "rows"}}


def write_job(tmp: Path, name: str, params: dict, workers: int = 1, seed: int = 7) -> Path:
    prof = tmp / f"profile{workers}.yaml"
    prof.write_text(yaml.safe_dump({"kind": "local", "cluster": {"n_workers": workers, "threads_per_worker": 1},
                                    "dashboard_address": "127.0.0.1:0"}))
    job = {"name": name, "seed": seed, "profile": str(prof), "storage": str(tmp / "stores"),
           "stages": [{"name": "simulate", "resources": {"cores": workers}, "simulate": params}]}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run_job(tmp: Path, name: str, params: dict, workers: int = 1) -> tuple[Path, dict]:
    rd = create_run(write_job(tmp, name, params, workers), run_dir=tmp / f"run-{name}")
    return rd.path, execute(rd, progress=False)


def arrays(url) -> dict[str, np.ndarray]:
    st = open_store(url)
    return {s.name: st.read(s.name) for s in PER_IMAGE_ARRAYS}


def assert_same_store(a, b):
    xa, xb = arrays(a), arrays(b)
    for name in xa:
        assert np.array_equal(xa[name], xb[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The store made by one worker: every other run must reproduce it bit for bit."""
    tmp = tmp_path_factory.mktemp("ref")
    run_dir, report = run_job(tmp, "ref", {**BASE, "store": "ref.zarr"}, workers=1)
    return tmp / "stores" / "ref.zarr", run_dir, report


def test_schema_and_check_errors_name_the_key(tmp_path):
    with pytest.raises(ManifestError, match=r"stages\[0\]\.simulate\.n_per_class: -5 is less than the minimum of 1"):
        prepare(write_job(tmp_path, "a", {**BASE, "store": "x.zarr", "n_per_class": -5}))
    with pytest.raises(ManifestError, match=r"stages\[0\]\.simulate\.classes: give either classes"):
        prepare(write_job(tmp_path, "b", {**BASE, "store": "x.zarr", "prior": {"max": 400, "n": 10}}))
    with pytest.raises(ManifestError, match=r"unknown key 'colour'"):
        prepare(write_job(tmp_path, "c", {**BASE, "store": "x.zarr", "image": {"colour": 1}}))


@pytest.mark.parametrize("change, where", [
    ({"classes": None, "n_per_class": None, "prior": {"min": 400, "max": 400, "n": 10}},
     r"prior\.min: 400 must be below prior\.max \(400\)"),
    ({"split": {"validation": 0.6, "test": 0.6}}, r"split: validation \+ test must be at most 1"),
    ({"shard_images": 8, "chunk_images": 3}, r"chunk_images: 3 must divide shard_images \(8\)"),
    ({"demography": {"demes": "none.yaml"}}, r"demography\.demes: .*none\.yaml: demes file not found"),
])
def test_config_errors_name_the_manifest_key(tmp_path, change, where):
    """Science configs name their own key; the stage layer puts the manifest file and stage before it."""
    params = {k: v for k, v in {**BASE, "store": "x.zarr", **change}.items() if v is not None}
    job = write_job(tmp_path, "bad", params)
    with pytest.raises(ManifestError, match=rf"^{job}: stages\[0\]\.simulate\.{where}"):
        prepare(job)


def test_event_inside_sweep_window_fails_before_any_work(tmp_path):
    """msprime cannot simulate a size change during a sweep: asked for explicitly, it is refused at
    validation; ``engine: auto`` takes the forward engine there instead."""
    msprime = {"engine": "msprime"}
    paper = {"standing": "paper"}
    job = write_job(tmp_path, "late", {**BASE, **msprime, "store": "late.zarr", "sweep": {"onset": 3200, **paper}})
    with pytest.raises(ManifestError, match=r"stages\[0\]\.simulate\.demography: size change to 2000 at 3000 "
                                            r"generations lies inside the sweep window"):
        create_run(job, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "stores").exists()
    # years: 80,000 years / 25 = 3,200 generations: the same refusal; 12,500 years = 500 generations: fine
    years = {"onset": 80_000, "onset_unit": "years", "generation_time": 25, **paper}
    with pytest.raises(ManifestError, match=r"at 3000 generations lies inside the sweep window \(1750.14, 3200\]"):
        prepare(write_job(tmp_path, "y", {**BASE, **msprime, "store": "y.zarr", "sweep": years}))
    prepare(write_job(tmp_path, "ok", {**BASE, **msprime, "store": "ok.zarr",
                                             "sweep": {**years, "onset": 12_500}}))
    prepare(write_job(tmp_path, "auto", {**BASE, "engine": "auto", "store": "auto.zarr",
                                               "sweep": {"onset": 3200}}))


def test_store_contents_match_the_contract(reference):
    url, run_dir, report = reference
    st = open_store(url)
    assert (st.n_images, st.n_shards, st.image_shape) == (24, 3, (32, 32))
    assert st.written_shards().tolist() == [0, 1, 2]
    x = arrays(url)
    assert x["s"].tolist() == [0, 200, 400] * 8 and x["class_index"].tolist() == [0, 1, 2] * 8
    assert set(np.unique(x["images"])) <= {0, 1} and x["images"].any()
    assert (x["attempts"] >= 1).all() and set(np.unique(x["split"])) <= {0, 1, 2}
    assert (x["onset"] == 600).all() and (x["end_freq"][x["s"] == 0] == 0).all()
    assert (x["end_freq"][x["s"] == 200] == pytest.approx(0.803, abs=0.005))
    # one msprime batch per shard (8 images) and class: replicate_index 0..1 or 0..2 within it
    batched = x["batch_seed"] > 0
    assert batched[x["attempts"] == 1].all() and len(set(x["batch_seed"][batched].tolist())) >= 7
    assert x["batch_index"].max() == 2 and (x["batch_index"][x["batch_seed"] == 0] == 0).all()
    meta = st.meta
    assert meta["classes"] == [0, 200, 400] and meta["stage_params"]["n_per_class"] == 8
    assert meta["versions"]["msprime"] and meta["demography"]["name"] == "marth3"
    stage = report["stages"][0]
    assert stage["status"] == "completed" and stage["metrics"]["attempts_total"] == int(x["attempts"].sum())
    assert stage["metrics"]["bytes_per_image"] < 1024
    assert sorted(Ledger(run_dir / "ledger" / "simulate").done()) == [f"shard-{i:05d}" for i in range(3)]


def test_each_in_process_run_logs_to_its_own_file_only(tmp_path, reference):
    """execute() detaches its run's log file when it returns: a later run in the same process (a notebook,
    these tests) does not write its lines into an earlier run's hpcpop.log."""
    import logging

    first_log = reference[1] / "hpcpop.log"
    before = first_log.read_text()
    run_dir, _ = run_job(tmp_path, "later", {**BASE, "store": "later.zarr", "n_per_class": 2, "shard_images": 2,
                                             "chunk_images": 2})
    assert first_log.read_text() == before
    assert "later.zarr" in (run_dir / "hpcpop.log").read_text()
    assert not [h for h in logging.getLogger("hpc_popgen").handlers if getattr(h, "_hpcpop_run", None)]


def test_two_workers_give_the_same_store(tmp_path, reference):
    run_job(tmp_path, "two", {**BASE, "store": "two.zarr"}, workers=2)
    assert_same_store(reference[0], tmp_path / "stores" / "two.zarr")


def test_rerun_fills_only_missing_shards_and_refuses_other_params(tmp_path, reference):
    run_dir, _ = run_job(tmp_path, "re", {**BASE, "store": "re.zarr"})
    url = tmp_path / "stores" / "re.zarr"
    # lose shard 1: its ledger record, its records (which mark it written) and its images
    Ledger(run_dir / "ledger" / "simulate").forget(["shard-00001"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the store's codecs are all of the Zarr v3 spec: zarr warns nothing
        g = zarr.open_group(str(url), mode="r+")
        g["records"][8:16] = 0
        g["images"][8:16] = 0
    shard0 = url / "images" / "c" / "0" / "0" / "0"
    mtime0 = shard0.stat().st_mtime_ns
    from hpc_popgen.runs import RunDir

    execute(RunDir.open(run_dir), progress=False)
    assert shard0.stat().st_mtime_ns == mtime0  # untouched
    assert open_store(url).written_shards().tolist() == [0, 1, 2]
    assert_same_store(reference[0], url)
    # same store path, different parameters: refused, store untouched
    rd = create_run(write_job(tmp_path, "other", {**BASE, "store": "re.zarr", "n_per_class": 9}),
                 run_dir=tmp_path / "run-other")
    with pytest.raises(StoreError, match=r"re.zarr: an image store made with different parameters .*n_images"):
        execute(rd, progress=False)
    assert open_store(url).n_images == 24


def test_a_lost_store_is_remade_on_rerun(tmp_path, reference, caplog):
    """Ledger records whose shards the store no longer flags as written are redone, and this is logged."""
    import shutil

    from hpc_popgen.runs import RunDir

    run_dir, _ = run_job(tmp_path, "lost", {**BASE, "store": "lost.zarr"})
    url = tmp_path / "stores" / "lost.zarr"
    shutil.rmtree(url)
    with caplog.at_level("WARNING"):
        report = execute(RunDir.open(run_dir), progress=False)
    assert open_store(url).written_shards().tolist() == [0, 1, 2]
    assert_same_store(reference[0], url)
    assert report["stages"][0]["status"] == "completed"
    assert any("shard-0000" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_killed_worker_shards_are_redone(tmp_path, reference):
    params = {**BASE, "store": "kill.zarr", "sequence_length": 20_000}
    rd = create_run(write_job(tmp_path, "kill", params, workers=2), run_dir=tmp_path / "run-kill")
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("report", execute(rd, progress=False)), daemon=True)
    thread.start()
    from distributed import Client

    killed = None
    deadline = time.time() + 60
    sched = None
    while not sched and time.time() < deadline and thread.is_alive():
        time.sleep(0.02)
        sched = json.loads((rd.path / "report.json").read_text()).get("scheduler")
    client = Client(sched, timeout=3) if sched else None
    try:
        while client is not None and killed is None and time.time() < deadline and thread.is_alive():
            busy = {w: ts for w, ts in client.processing().items() if ts}
            if busy:
                worker = next(iter(busy))
                pid = client.run(os.getpid, workers=[worker])[worker]
                os.kill(pid, signal.SIGKILL)  # a real worker process dies with shards assigned to it
                killed = (worker, busy[worker])
            time.sleep(0.005)
        thread.join(120)
    finally:
        if client is not None:
            client.close()
    assert killed is not None, "no worker was caught mid-task"
    assert out["report"]["status"] == "completed"
    url = tmp_path / "stores" / "kill.zarr"
    assert open_store(url).written_shards().tolist() == [0, 1, 2]
    assert_same_store(reference[0], url)  # nothing missing, nothing duplicated, same bits


def test_refusals_are_retried_and_counted(tmp_path):
    # a size change just before the onset: outside the deterministic window (check passes), but
    # msprime's random sweep durations often reach it and it refuses; those replicates are retried
    demes = tmp_path / "edge_model.yaml"
    demes.write_text("time_units: generations\ndemes:\n  - name: A\n    epochs:\n"
                     "      - {start_size: 5000, end_time: 620}\n      - {start_size: 10000}\n")
    params = {**BASE, "store": "edge.zarr", "demography": {"demes": str(demes)}, "classes": [200],
              "n_per_class": 16, "n_haplotypes": 16, "sequence_length": 10_000}
    _, report = run_job(tmp_path, "edge", params)
    attempts = open_store(tmp_path / "stores" / "edge.zarr").read("attempts")
    metrics = report["stages"][0]["metrics"]
    assert (attempts > 1).any() and metrics["attempts_total"] == int(attempts.sum()) > 16
    assert metrics["images_retried"] == int((attempts > 1).sum())


def test_show_redraws_a_stored_replicate(tmp_path, reference):
    from click.testing import CliRunner

    from hpc_popgen.cli import main

    png = tmp_path / "fig2.png"
    res = CliRunner().invoke(main, ["show", str(reference[0]), "--png", str(png), "--index", "5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["panels"] == ["stored", "none", "rows", "columns", "both"]
    assert out["remade_equals_stored"] is True and out["s"] == 400  # index 5: class 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(main, ["show", str(reference[0]), "--png", str(png), "--index", "99"])
    assert bad.exit_code == 2 and "index 99 out of range" in bad.output


def test_uniform_prior_store(tmp_path):
    params = {**BASE, "store": "prior.zarr", "prior": {"min": 50, "max": 400, "n": 8}}
    del params["classes"], params["n_per_class"]
    _, report = run_job(tmp_path, "prior", params)
    st = open_store(tmp_path / "stores" / "prior.zarr")
    s = st.read("s")
    assert st.classes is None and st.meta["prior"] == {"kind": "uniform", "min": 50.0, "max": 400.0, "n": 8,
                                                        "n_bins": 11}
    assert ((s >= 50) & (s < 400)).all() and len(set(s.tolist())) == 8
    assert (st.read("class_index") == -1).all() and report["stages"][0]["status"] == "completed"
    assert (st.read("batch_seed") == 0).all()  # S drawn per replicate: each simulated alone


def test_prior_on_a_grid_store_is_batched_and_redrawn(tmp_path):
    from click.testing import CliRunner

    from hpc_popgen.cli import main

    params = {**BASE, "store": "grid.zarr", "prior": {"min": 0, "max": 400, "n": 16, "grid": 5}}
    del params["classes"], params["n_per_class"]
    _, report = run_job(tmp_path, "grid", params)
    url = tmp_path / "stores" / "grid.zarr"
    st = open_store(url)
    s = st.read("s")
    assert st.meta["prior"]["grid"] == 5 and set(s.tolist()) <= {0, 100, 200, 300, 400} and len(set(s.tolist())) > 2
    assert (st.read("batch_seed")[st.read("attempts") == 1] > 0).all()
    res = CliRunner().invoke(main, ["show", str(url), "--png", str(tmp_path / "g.png"), "--index", "9"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["remade_equals_stored"] is True
