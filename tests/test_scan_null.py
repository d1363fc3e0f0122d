"""Scan calibration: empirical p-values against neutral chromosomes, BH q-values, candidate regions.

The end-to-end test scans a msprime chromosome (tests/test_vcz.py's VCF: two populations, INFO/AA) with
a real (untrained, seeded) TF model bundle, and a null of neutral chromosomes simulated by msprime under
the same two-population demes history, sampling population A.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from helpers import run_cli, write_yaml
from test_vcz import CHROM, _random_model, make_vcf

from hpc_popgen.infer.calibrate import candidates_tsv, empirical_p, merge_windows, qvalues, simulate_null_chromosome
from hpc_popgen.infer.modelcheck import with_verdict_column
from hpc_popgen.infer.scan import read_part_bayes_factors, read_scan

TWO_DEMES = """time_units: generations
demes:
  - name: anc
    epochs: [{start_size: 10000, end_time: 2000}]
  - name: A
    ancestors: [anc]
    epochs: [{start_size: 10000}]
  - name: B
    ancestors: [anc]
    epochs: [{start_size: 5000}]
"""


def test_qvalues_by_hand_bh_and_by():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 -> p m / rank = 0.04, 0.06, 0.0533, 0.5 -> running min from the top
    assert np.allclose(qvalues(p), [0.04, 0.0533333333, 0.0533333333, 0.5])
    assert np.isnan(qvalues(np.array([0.2, np.nan]))[1]) and qvalues(np.array([0.2, np.nan]))[0] == 0.2
    assert qvalues(np.array([0.9, 0.95]))[0] == 0.95  # capped by the larger p's adjustment, never above 1
    # Benjamini–Yekutieli: BH's times c(m) = 1 + 1/2 + 1/3 + 1/4 for m = 4, capped at 1; NaN not counted in m
    by = qvalues(np.array([0.01, 0.04, np.nan, 0.03, 0.5]), "by")
    assert np.isnan(by[2])
    assert np.allclose(by[[0, 1, 3, 4]], np.minimum(np.array([0.04, 0.0533333333, 0.0533333333, 0.5]) * 25 / 12, 1))
    assert np.all(qvalues(p, "by") >= qvalues(p))


def test_empirical_p_counts_ties_and_adds_one():
    null = np.array([1.0, 2.0, 2.0, 3.0, np.nan])  # NaN left out: 4 null windows
    p = empirical_p(np.array([0.5, 2.0, 2.5, 10.0, np.nan]), null)
    assert np.allclose(p[:4], [5 / 5, 4 / 5, 2 / 5, 1 / 5]) and np.isnan(p[4])
    with pytest.raises(ValueError):
        empirical_p(np.array([1.0]), np.array([np.nan]))


def test_on_chromosomes_exchangeable_with_the_null_bh_calls_any_window_about_q_of_the_time():
    """The calibration's promise on a chromosome with no sweep: every call is false, and empirical p-values
    against pooled null windows + BH at q = 0.05 call a window on about 5% of chromosomes, with windows
    that overlap by half (correlated neighbours, heavy tails) as the scan's do."""
    rng = np.random.default_rng(7)

    def chromosome(m=249):
        half = rng.standard_t(3, size=m + 1)
        return half[:-1] + half[1:]  # window i shares half its sequence with window i + 1

    reps = 2000
    called = sum(bool(np.any(qvalues(empirical_p(chromosome(), np.concatenate([chromosome() for _ in range(20)])))
                             < 0.05)) for _ in range(reps))
    assert 0.035 < called / reps < 0.065, called / reps  # 2,000 chromosomes: 0.05 +- 0.015 is about 3 SD


def test_overlapping_and_adjacent_significant_windows_merge_into_regions():
    chrom = np.array(["c1"] * 6 + ["c2"])
    start = np.array([1, 21, 41, 81, 101, 200, 1])
    end = np.array([40, 60, 80, 120, 140, 239, 40])
    bf = np.array([5.0, 50.0, 7.0, 3.0, 9.0, 99.0, 4.0])
    mean = np.array([0.1, 0.9, 0.5, 0.2, 0.3, 0.99, 0.4])
    q = np.array([0.01, 0.02, 0.5, 0.04, 0.03, 0.2, 0.001])
    regions = merge_windows(chrom, start, end, bf, mean, q, fdr=0.05)
    # windows 0-1 overlap; 3 (81-120) touches nothing significant before it (window 2 is not), 3-4 overlap;
    # window 5 is not significant; c2 is its own region
    assert [(r.chrom, r.start, r.end, r.windows) for r in regions] == [("c1", 1, 60, 2), ("c1", 81, 140, 2),
                                                                      ("c2", 1, 40, 1)]
    assert (regions[0].best_bayes_factor, regions[0].max_mean, regions[0].min_q) == (50.0, 0.9, 0.01)
    adjacent = merge_windows(np.array(["c1", "c1"]), np.array([1, 41]), np.array([40, 80]), np.ones(2), np.ones(2),
                             np.array([0.01, 0.01]), fdr=0.05)
    assert [(r.start, r.end, r.windows) for r in adjacent] == [(1, 80, 2)]
    assert merge_windows(chrom, start, end, bf, mean, np.full(7, np.nan), fdr=0.05) == []


def test_null_chromosome_is_seeded_biallelic_and_sampled_in_the_named_population(tmp_path):
    import demes

    graph = demes.loads(TWO_DEMES).asdict()
    a1, pos1 = simulate_null_chromosome(graph, "B", 5, 100_000, mutation_rate=1e-7, recombination_rate=1e-8, seed=4)
    a2, pos2 = simulate_null_chromosome(graph, "B", 5, 100_000, mutation_rate=1e-7, recombination_rate=1e-8, seed=4)
    b, _ = simulate_null_chromosome(graph, "B", 5, 100_000, mutation_rate=1e-7, recombination_rate=1e-8, seed=5)
    assert np.array_equal(a1, a2) and np.array_equal(pos1, pos2) and not np.array_equal(a1, b[:, :a1.shape[1]])
    assert a1.shape[0] == 10 and a1.shape[1] == len(pos1) > 50 and set(np.unique(a1)) <= {0, 1}
    assert np.all(np.diff(pos1) > 0) and pos1[0] >= 1 and pos1[-1] <= 100_000
    assert np.all(a1.any(axis=0)) and not np.any(a1.all(axis=0))  # polymorphic in the sample


def _manifest(tmp_path, workers: int, null: dict | None, run_seed: int = 5, fdr_method: str | None = None) -> object:
    prof = write_yaml(tmp_path / f"prof{workers}.yaml", {
        "kind": "local", "cluster": {"n_workers": workers, "threads_per_worker": 1},
        "dashboard_address": "127.0.0.1:0", "horovod": {"launcher": "none", "ranks": 1}})
    scan = {"model": str(tmp_path / "model"), "vcf": "chrom.vcf.gz", "chrom": CHROM,
            "samples": [f"tsk_{i}" for i in range(6)],
            "window": {"unit": "bp", "size": 40_000, "step": 20_000, "min_sites": 10}, "chunk_windows": 8}
    if null is not None:
        scan["null"] = null
        scan["fdr"] = 0.5  # loose: an untrained model on a neutral chromosome still gives some candidates to merge
        if fdr_method:
            scan["fdr_method"] = fdr_method
    return write_yaml(tmp_path / f"scan{workers}{fdr_method or ''}.yaml", {
        "name": "nullscan", "seed": run_seed, "profile": str(prof), "storage": str(tmp_path / "storage"),
        "stages": [{"name": "scan", "scan": scan}]})


def test_scan_with_a_neutral_null_writes_p_q_candidates_and_plot(tmp_path):
    from hpc_popgen.pipeline import create_run, execute

    (tmp_path / "src").mkdir()
    vcf = make_vcf(tmp_path / "src" / "sim.vcf")
    shutil.copy(vcf, tmp_path / "chrom.vcf.gz")
    shutil.copy(f"{vcf}.csi", tmp_path / "chrom.vcf.gz.csi")
    _random_model(tmp_path / "model")
    (tmp_path / "two.demes.yaml").write_text(TWO_DEMES)
    null = {"demography": {"demes": "two.demes.yaml", "population": "A"}, "chromosomes": 3,
            "mutation_rate": 1e-7, "recombination_rate": 1e-8}
    report = execute(create_run(_manifest(tmp_path, 2, null), run_dir=tmp_path / "run2"), progress=False)
    assert report["status"] == "completed", report
    st = report["stages"][0]
    m = st["metrics"]
    out = tmp_path / "run2" / "scan"
    table = read_scan(out / "scan.tsv")
    n = len(table["start"])
    assert n == m["n_windows"] >= 15
    assert st["units_total"] == st["units_done"] == -(-n // 8) + 3  # real chunks + one unit per null chromosome
    cal = m["calibration"]
    assert cal["null_chromosomes"] == 3 and cal["null_windows"] >= 3 * 15
    p, q = table["p"], table["q"]
    assert not np.any(np.isnan(p)) and np.all((p > 0) & (p <= 1)) and np.all(q >= p - 1e-12)
    assert np.min(p) >= 1 / (1 + cal["null_windows"]) - 1e-9
    # p by hand from the null parts: the fraction of null windows with BF >= the window's (+1 correction)
    null_bf = np.concatenate([read_part_bayes_factors(f) for f in sorted((out / "parts").glob("null-*.tsv"))])
    assert len(null_bf) == cal["null_windows"]
    i = int(np.argmax(table["bayes_factor"]))
    assert p[i] == pytest.approx((1 + np.sum(null_bf >= table["bayes_factor"][i])) / (1 + len(null_bf)), rel=1e-5)
    assert np.allclose(q, qvalues(p), rtol=1e-5)
    cand = (out / "candidates.tsv").read_text().splitlines()
    assert cand[0].split("\t") == ["chrom", "start", "end", "windows", "best_bayes_factor", "max_mean", "min_q",
                                    "model_check"]  # the model check's verdict (tests/test_modelcheck.py)
    regions = merge_windows(table["chrom"], table["start"], table["end"], table["bayes_factor"], table["mean"], q, 0.5)
    assert len(cand) - 1 == len(regions) == cal["candidate_regions"] >= 1
    assert (out / "candidates.tsv").read_text() == with_verdict_column(candidates_tsv(regions),
                                                                       m["model_check"]["verdict"])
    assert sum(r.windows for r in regions) == cal["significant_windows"] == int(np.sum(q < 0.5))
    assert cal["expected_false_windows"] == pytest.approx(0.5 * cal["significant_windows"])
    assert (out / "scan.png").stat().st_size > 5000
    # the model check (hpc_popgen.infer.modelcheck) compares the real windows with the null's
    check = json.loads((out / "model_check.json").read_text())
    assert m["model_check"]["verdict"] == check["verdict"] in ("fits", "does_not_fit")
    assert check["real_windows"] == m["n_windows"] and check["null_chromosomes"] == 3
    assert check["null_windows"] == cal["null_windows"]
    assert check["threshold"] == 2.75 and (check["max_score"] > 2.75) == (check["verdict"] == "does_not_fit")
    assert (out / "model_check.png").stat().st_size > 5000
    assert all(row.split("\t")[-1] == check["verdict"] for row in cand[1:])

    # one worker: the same null seeds, so the same p and q, bit for bit
    report1 = execute(create_run(_manifest(tmp_path, 1, null), run_dir=tmp_path / "run1"), progress=False)
    assert report1["status"] == "completed"
    assert (tmp_path / "run1" / "scan" / "scan.tsv").read_text() == (out / "scan.tsv").read_text()
    assert (tmp_path / "run1" / "scan" / "candidates.tsv").read_text() == (out / "candidates.tsv").read_text()
    assert cal["fdr_method"] == "bh"

    # Benjamini–Yekutieli: the same p, q-values BY's, no more calls than BH's
    report_by = execute(create_run(_manifest(tmp_path, 2, null, fdr_method="by"), run_dir=tmp_path / "runby"),
                        progress=False)
    assert report_by["status"] == "completed"
    by = read_scan(tmp_path / "runby" / "scan" / "scan.tsv")
    assert np.array_equal(by["p"], p) and np.allclose(by["q"], qvalues(p, "by"), rtol=1e-5)
    assert np.all(by["q"] >= q) and np.any(by["q"] > q)
    cal_by = report_by["stages"][0]["metrics"]["calibration"]
    assert cal_by["fdr_method"] == "by" and cal_by["significant_windows"] == int(np.sum(by["q"] < 0.5))


def test_validate_rejects_a_bad_null_key_in_one_line(tmp_path):
    (tmp_path / "chrom.vcf.gz").write_bytes(b"")
    man = _manifest(tmp_path, 1, {"chromosomes": 3, "demograpy": "constant"})
    proc = run_cli("validate", man)
    assert proc.returncode != 0
    msg = (proc.stderr or proc.stdout).strip()
    assert "demograpy" in msg and "null" in msg and len(msg.splitlines()) == 1, msg
    man = _manifest(tmp_path, 1, {"chromosomes": 3, "demography": "constant"})  # no simulate stage: no rates
    proc = run_cli("validate", man)
    assert proc.returncode != 0
    msg = (proc.stderr or proc.stdout).strip()
    assert "scan.null.mutation_rate" in msg and len(msg.splitlines()) == 1, msg
    data = yaml.safe_load(man.read_text())
    data["stages"][0]["scan"]["null"] = {"chromosomes": 3, "demography": {"demes": "nowhere.yaml"},
                                         "mutation_rate": 1e-8, "recombination_rate": 1e-8}
    man.write_text(yaml.safe_dump(data))
    proc = run_cli("validate", man)
    msg = (proc.stderr or proc.stdout).strip()
    assert proc.returncode != 0 and "scan.null.demography" in msg and "nowhere.yaml" in msg, msg


def test_null_takes_history_and_rates_from_the_simulate_stage(tmp_path):
    (tmp_path / "chrom.vcf.gz").write_bytes(b"")
    (tmp_path / "two.demes.yaml").write_text(TWO_DEMES)
    man = _manifest(tmp_path, 1, {"chromosomes": 2})
    data = yaml.safe_load(man.read_text())
    scan = data["stages"][0]["scan"]
    scan.pop("model")
    sim = {"store": "s.zarr", "demography": "marth3", "classes": [0, 100], "n_per_class": 4}
    data["stages"] = [{"name": "simulate", "simulate": sim}, {"name": "train", "train": {"store": "s.zarr"}},
                      {"name": "scan", "scan": scan}]
    man.write_text(yaml.safe_dump(data))
    proc = run_cli("validate", man)
    assert proc.returncode == 0, proc.stderr
    from hpc_popgen.infer.config import NullConfig
    from hpc_popgen.manifest import load_manifest
    from hpc_popgen.stages.scan import null_settings

    manifest = load_manifest(man)
    spec = manifest.stages[2]
    got = null_settings(NullConfig(demography=None, chromosomes=2, mutation_rate=None, recombination_rate=3e-9,
                                   reference_ne=None), spec, manifest)
    filled = manifest.stages[0].params
    assert got == {"demography": "marth3", "mutation_rate": filled["mutation_rate"], "recombination_rate": 3e-9,
                   "reference_ne": filled["reference_ne"]}
    sim.update(demography={"ensemble": {"demes": ["two.demes.yaml"]}, "population": "A"}, engine="fwdpy11")
    man.write_text(yaml.safe_dump(data))
    proc = run_cli("validate", man)
    msg = (proc.stderr or proc.stdout).strip()
    assert proc.returncode != 0 and "stages[2].scan.null.demography: the simulate stage draws" in msg, msg
