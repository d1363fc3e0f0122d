"""``hpcpop bench scan`` at tiny sizes: one JSON object, the issue's keys first, sane rates and memory.

Two short planted chromosomes (0.2 and 0.4 Mb, 99 diploids) through the real scan stage on two local
workers with an untrained model, a 50-sample 50 kb VCF for the readers, 200 ms images; no --power
(it trains a model). About 40 s on 2 cores. The --power part alone runs at its smallest: one planted and two
neutral chromosomes of 0.5 Mb, 10 diploids, a null of 3 chromosomes, a model trained one epoch on 80 images.
"""

from __future__ import annotations

import json

import numpy as np
from helpers import run_cli

from hpc_popgen.bench.scan import chromosome_calibration, chromosome_p, null_size_effect, p_calibration, power, wilson
from hpc_popgen.infer.calibrate import qvalues
from hpc_popgen.infer.scan import read_scan

KEYS = ["read_records_per_s", "region_query_s", "driver_mem_ratio_50_10", "planted_top1pct_fraction",
        "null_fdr_at_q05", "ms_images_per_s"]


def test_bench_scan_prints_one_json_object_with_the_target_keys_first(tmp_path):
    kept = tmp_path / "work"
    proc = run_cli("bench", "scan", "--lengths", "0.2,0.4", "--read-samples", "50", "--read-length", "0.05",
                   "--ms-images", "200", "--read-repeats", "2", "--keep", str(kept), "--step", "20000", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert list(out)[:len(KEYS)] == KEYS
    assert out["read_records_per_s"] > 0 and out["ms_images_per_s"] > 0
    assert 0 < out["region_query_s"] < 30
    assert 0.5 < out["driver_mem_ratio_50_10"] < 2
    assert out["planted_top1pct_fraction"] is None and out["null_fdr_at_q05"] is None and out["power"] is None
    assert out["model"] == "untrained" and out["cores"] == 2 and out["samples"] == 99
    assert out["lengths_mb"] == [0.2, 0.4] and list(out["scan"]) == ["0.2Mb", "0.4Mb"]
    for length, part in out["scan"].items():
        assert part["windows"] >= 3 and part["records"] >= part["sites"] > 50, (length, part)
        assert part["windows_per_s_per_core"] > 0 and part["wall_s"] > 0, (length, part)
        assert 10 < part["driver_peak_rss_mb"] < 4096 and part["driver_peak_rss_mb"] >= part["driver_start_rss_mb"]
        assert part["task_peak_rss_mb"] > 10 and part["vcz_convert_s"] > 0, (length, part)
    assert out["scan"]["0.4Mb"]["windows"] > out["scan"]["0.2Mb"]["windows"]
    read = out["reading"]
    assert read["samples_in_file"] == 50 and read["samples_read"] == 50 and read["records"] > 0
    assert read["read_records_per_s_vcz"] > 0 and read["read_records_per_s_cyvcf2"] == out["read_records_per_s"]
    assert read["read_records_per_s_bcf"] > 0 and read["bcf_mb"] > 0  # the same records as an indexed BCF
    assert read["sites_kept"] > 0 and read["passes"] == 2
    for lib, ceiling in read["iterate_ceiling"].items():  # htslib's parse alone, in each library's own loop
        assert ceiling["records_per_s"] > 0 and ceiling["htslib"].startswith("1."), (lib, ceiling)
    assert read["cyvcf2_share_of_ceiling"] > 0
    assert read["iterate_ceiling"]["cyvcf2"]["build"].startswith("cyvcf2 ")  # the rebuild's stamp, or the wheel
    assert out["region_query"]["sites"] > 0 and out["region_query"]["length_mb"] == 0.4
    assert out["ms"]["images"] == 200
    assert set(out["targets_met"]) >= {"read_records_per_s", "region_query_s", "driver_mem_ratio_50_10",
                                       "ms_images_per_s"}
    assert all(isinstance(v, bool) for v in out["targets_met"].values())
    assert out["kept"] == str(kept.resolve())  # --keep: the chromosomes and scans stay for later analyses
    assert len(list(kept.rglob("scan.tsv"))) == 3 and len(list(kept.rglob("*.vcf.gz"))) >= 3
    # --step: the longest chromosome again at a 20 kb step; its windows at the 40 kb step's starts are those windows
    fine, coarse = out["fine_step"], out["scan"]["0.4Mb"]
    assert out["fine_step_0.4mb_s"] == fine["wall_s"] > 0 and fine["step_bp"] == 20_000 and coarse["step_bp"] == 40_000
    assert fine["windows"] >= 2 * coarse["windows"] - 2 and fine["chunk_windows"] == 2 * coarse["chunk_windows"]
    [fine_tsv] = kept.rglob("run-scan-step20000/scan/scan.tsv")
    [coarse_tsv] = kept.rglob("len1/run-scan/scan/scan.tsv")
    a, b = read_scan(fine_tsv), read_scan(coarse_tsv)
    at = {int(v): i for i, v in enumerate(a["start"])}
    shared = [(at[int(v)], j) for j, v in enumerate(b["start"]) if int(v) in at]
    assert len(shared) == len(b["start"])
    for key in ("n_sites", "map", "mean", "bayes_factor"):
        assert [a[key][i] for i, _ in shared] == [b[key][j] for _, j in shared], key


def test_bench_scan_refuses_a_keep_folder_that_is_not_empty(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    proc = run_cli("bench", "scan", "--keep", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "--keep" in proc.stderr and "not empty" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_the_realised_fdr_comes_with_wilsons_interval_and_the_null_p_values_calibration():
    assert wilson(9, 100) == [0.0481, 0.1623]  # Wilson's 95% interval of 9 / 100
    lo, hi = wilson(0, 200)
    assert lo == 0 and 0.018 < hi < 0.019
    assert wilson(0, 0) is None
    p = (np.arange(10_000) + 1) / 10_000  # exactly uniform: each level's share is the level
    cal = p_calibration(p)
    assert cal == {"0.001": 0.001, "0.005": 0.005, "0.01": 0.01, "0.05": 0.05, "windows": 10_000}
    assert p_calibration(p / 2)["0.05"] == 0.1  # p-values too small (an anti-conservative null) show


def test_each_neutral_chromosome_is_placed_among_its_nulls_maxima():
    null_max = np.array([5.0, 1.0, 9.0, 3.0])
    assert chromosome_p(10.0, null_max) == 1 / 5  # above every null chromosome: the smallest value, 1/(K+1)
    assert chromosome_p(9.0, null_max) == 2 / 5  # a tie counts against the real chromosome
    assert chromosome_p(0.5, null_max) == 1.0
    k = 20  # exchangeable: the real maximum's place is uniform on 1/21 .. 21/21
    pc = (np.arange(21 * 50) % 21 + 1) / 21
    cal = chromosome_calibration(pc, k)
    assert cal["share"] == cal["expected"] and cal["mean"] == cal["mean_expected"] == round(22 / 42, 4)
    assert cal["expected"] == {"1/(K+1)": round(1 / 21, 4), "0.25": round(5 / 21, 4), "0.5": round(10 / 21, 4)}
    hot = chromosome_calibration(pc ** 2, k)  # real maxima too often high among the nulls
    assert hot["share"]["0.25"] > cal["share"]["0.25"] and hot["mean"] < cal["mean"]


def test_power_reports_bh_and_by_from_the_scans_own_p_values(tmp_path):
    pw = power(tmp_path, replicates=1, neutral=2, length_mb=0.5, diploids=10, cores=2, chunk_windows=25,
               null_chromosomes=3, n_per_class=40, epochs=1, seed=3)
    run = tmp_path / "run"
    neutral = [read_scan(run / f"neutral{r}" / "scan.tsv") for r in range(2)]
    assert pw["neutral_chromosomes"] == 2 and pw["neutral_windows"] == sum(len(t["p"]) for t in neutral)
    assert pw["null_fdr_at_q05"] == np.mean([np.any(t["q"] < 0.05) for t in neutral])
    assert pw["null_fdr_at_q05_by"] == np.mean([np.any(qvalues(t["p"], "by") < 0.05) for t in neutral])
    assert pw["null_fdr_at_q05_by"] <= pw["null_fdr_at_q05"]  # BY calls a subset of BH's
    (rep,) = pw["replicates"]
    assert rep["rank"] >= 1 and rep["q_by"] >= rep["q"] > 0
    assert pw["planted_q05_fraction"] == float(rep["q"] < 0.05)
    cal = pw["neutral_max_calibration"]
    assert cal["chromosomes"] == 2 and set(cal["share"]) == {"1/(K+1)", "0.25", "0.5"}
    assert cal["mean_expected"] == round(5 / 8, 4) and 0.25 <= cal["mean"] <= 1  # each p in 1/4 .. 4/4
    assert abs(cal["mean"] * 8 - round(cal["mean"] * 8)) < 1e-3  # the mean of two quarters
    assert pw["null_p_calibration"]["windows"] == pw["neutral_windows"]
    # the null-size re-analysis reproduces the scans' own q at their own null size, and borrows beyond it
    eff = null_size_effect(run, [rep["sweep_position"]], 2, (3, 6, 100))
    assert eff["pool"] == 9 and eff["own"] == 3 and set(eff["null_chromosomes"]) == {"3", "6"}
    at3, at6 = eff["null_chromosomes"]["3"], eff["null_chromosomes"]["6"]
    assert at3["null_fdr_at_q05"] == pw["null_fdr_at_q05"] and at3["null_fdr_at_q05_by"] == pw["null_fdr_at_q05_by"]
    assert at3["planted_q05_fraction"] == pw["planted_q05_fraction"]
    assert at3["planted_q05_fraction_by"] == pw["planted_q05_fraction_by"]
    assert at6["smallest_possible_q"] == round(1 / 6, 4)
