"""The shipped workflow jobs/genome_scan.yaml, end to end on the local profile through the real CLI.

scripts/planted_sweep_vcf.py remakes the job's data (a 3 Mb msprime chromosome with one planted sweep)
into tmp_path; it must equal the committed files, so the shipped data is what the script makes. The
job, copied next to that data with smaller budgets (GA evaluations, images, epochs, null chromosomes),
then runs VCF -> AFS -> demography -> simulate under the inferred history -> train -> scan with a neutral
null and must write every output. Whether the job as shipped finds the planted sweep is an accuracy
figure: ``hpcpop bench genome-scan`` (docs/bench/genome_scan.json), not a test.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import REPO, run_cli, write_yaml

from hpc_popgen.bench.genome_scan import scan_verdict
from hpc_popgen.infer.scan import COLUMNS, read_scan
from hpc_popgen.manifest import load_manifest

JOB = REPO / "jobs" / "genome_scan.yaml"
DATA = REPO / "jobs" / "data" / "genome_scan"
ISSUE_COLUMNS = ["chrom", "start", "end", "n_sites", "map", "mean", "hpdi_low", "hpdi_high", "bayes_factor",
                 "log10_bayes_factor", "p_neutral", "p", "q"]


def test_job_reads_its_null_key_and_data():
    manifest = load_manifest(JOB)
    scan = manifest.stage("scan").params
    assert scan["null"]["chromosomes"] >= 40 and scan["null"]["demography"] is None  # the plain YAML `null:` key
    sim = manifest.stage("simulate").params
    assert sim["demography"] == {"from_stage": "demography", "structure": "best", "population": "POP"}
    truth = json.loads((DATA / "chrom.truth.json").read_text())
    assert truth["population"] == "POP" and truth["S"] == sim["classes"][1]
    assert (DATA / "chrom.vcf.gz.csi").is_file()


# the shipped job's stages with budgets for behaviour, not accuracy: ~1 minute instead of ~2.5 under load
SMALLER = {"demography": {"ga": {"size": 8, "stall_generations": 2, "max_evals": 60},
                          "local_search": {"method": "BFGS", "starts": 1, "maxiter": 10}},
           "simulate": {"n_per_class": 100}, "train": {"epochs": 2}, "scan": {None: {"chromosomes": 10}}}  # the YAML key `null:`


def test_planted_sweep_script_remakes_the_data_and_the_smaller_job_writes_every_output(tmp_path):
    data = tmp_path / "job" / "data" / "genome_scan"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "planted_sweep_vcf.py"), str(data)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    truth = json.loads(proc.stdout)
    assert truth == json.loads((DATA / "chrom.truth.json").read_text())
    with gzip.open(data / "chrom.vcf.gz", "rt") as made, gzip.open(DATA / "chrom.vcf.gz", "rt") as shipped:
        assert made.read() == shipped.read()
    assert (data / "chrom.popmap").read_text() == (DATA / "chrom.popmap").read_text()
    assert (data / "chrom.vcf.gz.csi").stat().st_size > 0

    shipped = yaml.safe_load(JOB.read_text())  # storage `runs` and data paths: under tmp_path
    for stage in shipped["stages"]:
        stage[stage["name"]].update(SMALLER[stage["name"]])
    job = write_yaml(tmp_path / "job" / "genome_scan.yaml", shipped)
    params = load_manifest(job).stage("scan").params
    run = tmp_path / "run"
    proc = run_cli("submit", job, "--run-dir", run, "--no-progress", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "completed"
    metrics = {s["name"]: s["metrics"] for s in report["stages"]}
    assert metrics["simulate"]["engine"]["name"] == "msprime"  # the inferred size change is older than the sweeps
    assert metrics["simulate"]["history"] == "stage:demography/structure-1"
    assert metrics["train"]["epochs_run"] == 2
    # the inferred history's 95% intervals: Godambe from the VCF's 100 kb block bootstraps, CLAIC beside AIC
    [entry] = json.loads((run / "demography" / "results.json").read_text())["structures"]
    u = entry["uncertainty"]
    assert u["method"].startswith("Godambe (100 block bootstraps of 100000 bp") and u["error"] is None, u["method"]
    assert entry["claic"] is not None and u["params"] and all(
        iv["lower"] <= iv["value"] <= iv["upper"] for iv in u["params"].values()), u["params"]

    out = run / "scan"
    header = (out / "scan.tsv").read_text().splitlines()[0].split("\t")
    assert header == COLUMNS == ISSUE_COLUMNS
    table = read_scan(out / "scan.tsv")
    n = len(table["start"])
    assert n == metrics["scan"]["n_windows"] >= 60
    assert np.all((table["q"] >= 0) & (table["q"] <= 1)) and np.all((table["p"] > 0) & (table["p"] <= 1))
    cand = [ln.split("\t") for ln in (out / "candidates.tsv").read_text().splitlines()]
    assert cand[0] == ["chrom", "start", "end", "windows", "best_bayes_factor", "max_mean", "min_q", "model_check"]
    assert {r[7] for r in cand[1:]} <= {metrics["scan"]["model_check"]["verdict"]}
    cal = metrics["scan"]["calibration"]
    assert cal["null_chromosomes"] == 10 and cal["candidate_regions"] == len(cand) - 1
    assert (out / "scan.png").stat().st_size > 5000
    verdict = scan_verdict(table, cand, truth["sweep_position"], params["window"]["size"])  # the bench's judge
    assert verdict["windows"] == n and isinstance(verdict["target_met"], bool)


def test_the_benchs_verdict_finds_a_planted_top_window_and_counts_far_candidates():
    starts = np.arange(0, 3_000_000 - 40_000, 40_000, dtype=float)
    table = {"start": starts, "end": starts + 80_000, "bayes_factor": np.ones(len(starts)),
             "q": np.ones(len(starts))}
    pos = 1_500_001
    i = int(np.searchsorted(starts, pos)) - 1  # a window holding the site
    table["bayes_factor"][i], table["q"][i] = 50.0, 0.01
    region = [["chrom", "start", "end", "windows", "best_bayes_factor", "max_mean", "min_q", "model_check"],
              ["chr1", str(int(starts[i])), str(int(starts[i] + 80_000)), "1", "50", "300", "0.01", "ok"]]
    v = scan_verdict(table, region, pos, 80_000)
    assert v["top_near_sweep"] and v["top_distance_bp"] == 0 and v["far_candidates"] == 0 and v["target_met"]
    table["q"][0] = 0.001  # a window 1.5 Mb away is a candidate: the target is missed
    assert scan_verdict(table, region, pos, 80_000)["far_candidates"] == 1
    table["bayes_factor"][0] = 100.0  # and the top window is far from the site
    far = scan_verdict(table, region, pos, 80_000)
    assert not far["top_near_sweep"] and far["top_distance_bp"] > 1_000_000 and not far["target_met"]


def test_bench_genome_scan_refuses_a_keep_folder_that_is_not_empty(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    proc = run_cli("bench", "genome-scan", "--keep", tmp_path, timeout=120)
    assert proc.returncode == 2 and "--keep" in proc.stderr and "not empty" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


@pytest.mark.parametrize("args", [["--change-time", "1000"], ["--sweep-end", "4000"]])
def test_planted_sweep_script_rejects_a_sweep_across_the_size_change_in_one_line(tmp_path, args):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "planted_sweep_vcf.py"), str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    msg = proc.stderr.strip()
    assert "must end before the size change" in msg and len(msg.splitlines()) == 1, msg
    assert not list(tmp_path.iterdir())
