"""The shipped workflow jobs/genome_scan.yaml, end to end on the local profile through the real CLI.

scripts/planted_sweep_vcf.py remakes the job's data (a 3 Mb msprime chromosome with one planted sweep)
into tmp_path; it must equal the committed files, so the shipped data is what the script makes. The
job, copied next to that data, then runs VCF -> AFS -> demography -> simulate under the inferred
history -> train -> scan with a neutral null, and must rank the planted sweep first with q < 0.05.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, run_cli

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


def test_planted_sweep_script_remakes_the_data_and_the_job_finds_the_sweep(tmp_path):
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

    job = shutil.copy(JOB, tmp_path / "job" / "genome_scan.yaml")  # storage `runs` and data paths: under tmp_path
    params = load_manifest(job).stage("scan").params
    run = tmp_path / "run"
    proc = run_cli("submit", job, "--run-dir", run, "--no-progress", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "completed"
    metrics = {s["name"]: s["metrics"] for s in report["stages"]}
    assert metrics["simulate"]["engine"]["name"] == "msprime"  # the inferred size change is older than the sweeps
    assert metrics["simulate"]["history"] == "stage:demography/structure-1"
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
    bf, q = table["bayes_factor"], table["q"]
    order = np.argsort(-bf, kind="stable")
    top = order[0]
    pos = truth["sweep_position"]
    # A sweep of s = 0.02 at r = 1e-8 lowers diversity some s / (r ln(2Ns)) ~ 300 kb either side, and the
    # BF peak lands anywhere in it (data seeds 1-5: 0 to 100 kb from the site): the top window must lie
    # within two window sizes of the planted site (10 of the 74 windows, so a random one would be 1 time in 7).
    reach = 2 * params["window"]["size"]
    near = (table["end"] >= pos - reach) & (table["start"] <= pos + reach)
    assert near[top], f"top window {table['start'][top]:.0f}-{table['end'][top]:.0f}, sweep at {pos}"
    assert q[top] < 0.05, q[top]
    far = np.abs((table["start"] + table["end"]) / 2 - pos) > 400_000
    assert np.all(q[far] >= 0.05), "a window far from the planted sweep is a candidate"
    cand = [ln.split("\t") for ln in (out / "candidates.tsv").read_text().splitlines()]
    assert cand[0] == ["chrom", "start", "end", "windows", "best_bayes_factor", "max_mean", "min_q", "model_check"]
    assert {r[7] for r in cand[1:]} == {metrics["scan"]["model_check"]["verdict"]}
    best = max(cand[1:], key=lambda r: float(r[4]))  # the top candidate region holds the planted site
    assert int(best[1]) <= pos <= int(best[2]) and float(best[6]) < 0.05, (best, pos)
    cal = metrics["scan"]["calibration"]
    assert cal["null_chromosomes"] == params["null"]["chromosomes"] and cal["candidate_regions"] == len(cand) - 1 >= 1
    assert (out / "scan.png").stat().st_size > 5000


@pytest.mark.parametrize("args", [["--change-time", "1000"], ["--sweep-end", "4000"]])
def test_planted_sweep_script_rejects_a_sweep_across_the_size_change_in_one_line(tmp_path, args):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "planted_sweep_vcf.py"), str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    msg = proc.stderr.strip()
    assert "must end before the size change" in msg and len(msg.splitlines()) == 1, msg
    assert not list(tmp_path.iterdir())
