"""Genome scan: a model trained on simulated sweeps finds a sweep simulated in the middle of a chromosome."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import sim_config

from hpc_popgen.errors import InputDataError
from hpc_popgen.infer.scan import plan_windows, read_scan
from hpc_popgen.pipeline import create_run, execute
from hpc_popgen.simulate.demographies import load_demography
from hpc_popgen.simulate.replicate import simulate_replicate

NE = 10_000
# A de novo hard sweep (start frequency 1e-4), complete about 20 generations ago: with S = 1000
# (s = 0.1) and r = 5e-8 its footprint is a few hundred kb, centred on the selected site.
RECOMB = 5e-8
S_SWEEP = 1000.0
ONSET = 400
START_FREQ = 1e-4
CHROM_LENGTH = 1_600_000
SWEEP_AT = CHROM_LENGTH // 2


def test_plan_windows_sites_and_bp():
    pos = np.arange(1, 101) * 10  # 10, 20, ..., 1000
    w = plan_windows(pos, size=20, step=10, unit="sites", min_sites=5)
    assert [(x.lo, x.hi) for x in w][:3] == [(0, 20), (10, 30), (20, 40)] and w[-1].hi == 100
    assert (w[0].start, w[0].end) == (10, 200)
    b = plan_windows(pos, size=100, step=50, unit="bp", min_sites=5)
    assert (b[0].start, b[0].end, b[0].n_sites) == (10, 109, 10)
    assert b[1].start == 60 and b[-1].end >= 1000
    assert plan_windows(pos, size=100, step=50, unit="bp", min_sites=11) == []
    with pytest.raises(InputDataError):
        plan_windows(pos, size=0, step=1, unit="sites", min_sites=10)


def write_vcf(path, matrix: np.ndarray, positions: np.ndarray, chrom: str = "chr7") -> None:
    """Phased diploid VCF from a (haplotypes, sites) matrix: haplotypes 2i and 2i+1 form sample i."""
    pos = np.floor(positions).astype(np.int64) + 1
    keep = np.concatenate([[True], np.diff(pos) > 0])  # one record per bp
    n = matrix.shape[0] // 2
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID={chrom},length={CHROM_LENGTH}>",
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(f"ind{i}" for i in range(n))]
    for j in np.flatnonzero(keep):
        col = matrix[:, j]
        gts = "\t".join(f"{col[2 * i]}|{col[2 * i + 1]}" for i in range(n))
        lines.append(f"{chrom}\t{pos[j]}\t.\tA\tT\t.\tPASS\t.\tGT\t{gts}")
    path.write_text("\n".join(lines) + "\n")


def test_scan_puts_the_highest_bayes_factor_at_the_sweep(tmp_path):
    cfg = sim_config(load_demography("constant", NE), n_haplotypes=32, sequence_length=CHROM_LENGTH,
                    recombination_rate=RECOMB, reference_ne=NE, onset=ONSET,
                    start_frequency=START_FREQ)
    rep = simulate_replicate(cfg, S_SWEEP, seed=2024)
    write_vcf(tmp_path / "chrom.vcf", rep.matrix, rep.positions)
    prof = tmp_path / "prof.yaml"
    prof.write_text(yaml.safe_dump({"kind": "local", "cluster": {"n_workers": 2, "threads_per_worker": 1},
                                    "dashboard_address": "127.0.0.1:0",
                                    "horovod": {"launcher": "horovodrun", "ranks": 1}}))
    man = tmp_path / "scan.yaml"
    man.write_text(yaml.safe_dump({
        "name": "scan", "seed": 77, "profile": str(prof), "storage": str(tmp_path / "storage"),
        "stages": [
            {"name": "simulate", "resources": {"cores": 2},
             "simulate": {"store": "sweeps.zarr", "demography": "constant", "n_haplotypes": 32,
                          "recombination_rate": RECOMB, "classes": [0, S_SWEEP], "n_per_class": 200,
                          "engine": "msprime",  # as the chromosome above: msprime's sweep from 1e-4
                          "sweep": {"onset": ONSET, "start_frequency": START_FREQ, "standing": "paper"},
                          "image": {"size": [32, 128]}, "shard_images": 48}},
            {"name": "train", "train": {"store": "sweeps.zarr", "epochs": 6, "batch_size": 32,
                                        "tensorboard": False}},
            {"name": "evaluate", "evaluate": {}},
            {"name": "scan", "resources": {"cores": 2},
             "scan": {"vcf": "chrom.vcf", "window": {"unit": "bp", "size": 80000, "step": 40000},
                      "chunk_windows": 10}},
        ]}))
    report = execute(create_run(man, run_dir=tmp_path / "run"), progress=False)
    assert report["status"] == "completed"
    assert report["stages"][2]["metrics"]["test_accuracy"] >= 0.85, report["stages"][2]["metrics"]
    m = report["stages"][3]["metrics"]
    table = read_scan(tmp_path / "run" / "scan" / "scan.tsv")
    n = len(table["start"])
    assert m["n_windows"] == n >= 35 and report["stages"][3]["units_done"] == 4
    best = int(np.argmax(table["log10_bayes_factor"]))
    assert table["start"][best] - 40_000 <= SWEEP_AT <= table["end"][best] + 40_000, (table["start"][best], m)
    far = np.abs((table["start"] + table["end"]) / 2 - SWEEP_AT) > 400_000
    assert np.median(table["log10_bayes_factor"][far]) < table["log10_bayes_factor"][best] - 2
    assert (tmp_path / "run" / "scan" / "scan.png").stat().st_size > 2000
    assert list(table) == ["chrom", "start", "end", "n_sites", "map", "mean", "hpdi_low", "hpdi_high",
                           "bayes_factor", "log10_bayes_factor", "p_neutral", "p", "q"]
    assert np.all(np.isnan(table["p"])) and np.all(np.isnan(table["q"]))  # no null: uncalibrated
    assert set(table["chrom"]) == {"chr7"}
