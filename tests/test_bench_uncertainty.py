"""``hpcpop bench uncertainty`` at a tiny size (real moments fits of two 4 x 4 spectra in 2 processes: about 12 s
on 2 idle cores, 20 s on busy ones) and the coverage arithmetic on hand-made intervals."""

from __future__ import annotations

import json

from helpers import run_cli

from hpc_popgen.bench.uncertainty import TRUTH, coverage, covered

KEYS = ["coverage_95", "targets", "targets_met", "per_parameter"]


def test_bench_uncertainty_prints_one_json_object_with_coverage(tmp_path):
    proc = run_cli("bench", "uncertainty", "--datasets", "2", "--ns", "4,4", "--information", "expected",
                   "--seed", "7", "--workers", "2", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert list(out)[:len(KEYS)] == KEYS
    assert out["targets"] == {"coverage_95": [0.9, 0.98]}
    assert set(out["per_parameter"]) == {*TRUTH, "theta"}
    assert out["datasets"] == 2 and out["seed"] == 7 and out["sample_sizes"] == [4, 4]
    assert out["intervals"] == 10 and out["missing_intervals"] == 0
    assert out["coverage_95"] in {k / 10 for k in range(11)}
    assert out["convergence"]["newton_step_se_max"] < 0.05  # each fit is its data set's MLE
    for row in out["fits"]:
        assert row["segregating_sites"] > 100
        for name, p in row["expected"].items():
            assert p["lower"] < p["value"] < p["upper"], (name, p)
    # the two data sets differ (their own generators)
    assert out["fits"][0]["segregating_sites"] != out["fits"][1]["segregating_sites"]


def test_coverage_counts_intervals_that_contain_the_truth():
    truth = {"a": 1.0, "b": 2.0}
    rows = [
        {"a": {"lower": 0.5, "upper": 1.5}, "b": {"lower": 2.1, "upper": 3.0}},  # a in, b out (above)
        {"a": {"lower": 1.0, "upper": 1.2}, "b": {"lower": 1.0, "upper": 2.0}},  # both in: the ends count
        {"a": {"lower": 1.1, "upper": 1.2}, "b": {"lower": None, "upper": None}},  # a out (below), b missing
        {"a": {"lower": 0.0, "upper": 9.0}},  # b absent: missing
    ]
    flags = [covered(r, truth) for r in rows]
    assert flags[0] == {"a": True, "b": False} and flags[1] == {"a": True, "b": True}
    assert flags[2] == {"a": False, "b": None} and flags[3] == {"a": True, "b": None}
    c = coverage(flags)
    assert c["per_parameter"] == {"a": 0.75, "b": 0.25}
    assert c["covered"] == 4 and c["intervals"] == 8 and c["missing"] == 2
    assert c["pooled"] == 0.5


def test_bench_uncertainty_refuses_bad_sample_sizes_in_one_line():
    proc = run_cli("bench", "uncertainty", "--ns", "10", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--ns" in proc.stderr and "Traceback" not in proc.stderr
