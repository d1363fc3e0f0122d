"""A quiet first run: the console holds our lines and the closing summary only; libraries' warnings and
Dask's shut-down lines go to the run's log file; a cluster no later stage needs is closed, so the next
one gets its port."""

from __future__ import annotations

import logging
import socket

from helpers import run_cli, write_yaml
from test_platform_runs import read_json, sim_stage

NOISE = ("Warning", "warnings.warn", "still alive", "already in use")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_run_prints_no_library_noise_and_ends_with_what_it_found(tmp_path):
    """Two simulate stages with other resources (memory) need two LocalClusters on the same fixed dashboard
    port: the first is closed before the second starts, so the second gets the port (before: "Port N is
    already in use" and the first cluster's nanny lines at exit). stderr is a pipe here, so no bars."""
    port = free_port()
    profile = write_yaml(tmp_path / "profiles" / "fixed-port.yaml", {
        "kind": "local", "cluster": {"n_workers": 2, "threads_per_worker": 1},
        "dashboard_address": f"127.0.0.1:{port}"})
    stages = [{**sim_stage(n_per_class=4, name=name), "resources": {"cores": 1, "memory": memory}}
              for name, memory in (("a", "1GB"), ("b", "2GB"))]
    stages[1]["simulate"] = {**stages[1]["simulate"], "store": "@run/b.zarr"}
    job = write_yaml(tmp_path / "two.yaml", {"name": "quiet", "seed": 5, "profile": str(profile),
                                            "storage": str(tmp_path / "s"), "stages": stages})
    run = tmp_path / "run"
    proc = run_cli("submit", job, "--run-dir", run, check=True)

    console = proc.stdout + proc.stderr
    noisy = [line for line in console.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, console[-3000:]
    log = (run / "hpcpop.log").read_text()
    assert log.count(f"Dask dashboard: http://127.0.0.1:{port}/status") == 2, "both clusters on the profile's port"
    assert "already in use" not in log

    rep = read_json(run / "report.json")
    assert rep["status"] == "completed" and rep["dashboard"] == f"http://127.0.0.1:{port}/status"
    tail = proc.stdout.splitlines()[-5:]
    assert tail[0] == f"run completed: {run}/report.json"
    assert tail[1].split()[:2] == ["a", f"{rep['stages'][0]['seconds']:.0f}"]
    assert f"8 images in {run}/images.zarr" in tail[1] and f"8 images in {run}/b.zarr" in tail[2]
    assert tail[3].startswith(f"run directory: {run}")
    assert tail[4] == f"Dask dashboard: none (the run's clusters are closed); its report: {run}/report.json"
    status = run_cli("status", run, check=True).stdout.splitlines()
    assert status[-4:] == tail[1:], "hpcpop status ends with the same summary"


def test_local_search_logs_its_evaluations_and_best_loglik(tmp_path, caplog, monkeypatch):
    """The local search, which has no bar, logs its start, its evaluations and best log-likelihood so far
    (here after every batch), and its end with the evaluations it spent in all."""
    from test_demography import _search

    from hpc_popgen.demography import search as search_mod

    monkeypatch.setattr(search_mod, "LOCAL_LOG_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="hpc_popgen.demography.search")
    _search(tmp_path / "ls", [], final_structure=[1]).run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("local search 1/1 of structure (1,)")]
    assert lines[0].endswith("BFGS from the islands' #1 model, up to 20 evaluations a run"), lines
    counts = [int(m.split(": ")[1].split()[0]) for m in lines[1:-1]]
    assert counts and counts == sorted(counts) and all("best LL -" in m for m in lines[1:-1]), lines
    assert f"({counts[-1]} evaluations in all" in lines[-1] and ": done, LL -" in lines[-1], lines


def test_the_summary_names_the_criterion_the_intervals_and_the_model_check(tmp_path):
    """The last lines of a run name what ``best`` chose and by which criterion, the intervals' method, and the
    scan's model-check verdict (read from report.json, as ``hpcpop status`` does)."""
    from hpc_popgen.cli.summary import summary_lines

    demo = {"name": "demography", "kind": "demography", "status": "completed", "seconds": 12.0, "metrics": {
        "best": {"structure": [1], "criterion": "CLAIC", "dir": "structure-1"}, "best_by_aic": [2],
        "best_loglik_per_structure": {"1": -101.5, "2": -100.0},
        "uncertainty_method": "Godambe (100 block bootstraps of 100000 bp)", "intervals_95": {"1": {"t1": [0.1, 0.3]}}}}
    scan = {"name": "scan", "kind": "scan", "status": "completed", "seconds": 3.0, "metrics": {
        "n_windows": 74, "chrom": "chr1", "candidates": "c.tsv", "model_check": {"verdict": "does_not_fit"}}}
    lines = summary_lines({"status": "completed", "stages": [demo, scan]}, tmp_path)
    assert "model structure 1 (best by CLAIC), log-likelihood -101.50; 95% intervals: Godambe;" in lines[0]
    assert "74 windows scanned (chr1); model check: the history does not fit; results: c.tsv" in lines[1]
    demo["metrics"] = {"best_by_aic": [2], "best_loglik": -7.0}  # a report written before `best` existed
    assert "model structure 2 (best by AIC), log-likelihood -7.00; demes YAML" in summary_lines(
        {"status": "completed", "stages": [demo]}, tmp_path)[0]
