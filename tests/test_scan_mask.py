"""Masks and ancestral FASTAs in scans: masked sites leave the windows, sparse windows are skipped and
counted (null chromosomes alike), a FASTA polarises as INFO/AA does, and bad files are one line each.

The VCF is tests/test_vcz.py's msprime chromosome (INFO/AA, 40% of sites with REF derived); the FASTA
is written from its own INFO/AA (lower case at random, ``N`` where AA is unknown), so both sources agree.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest
from helpers import run_cli, write_yaml
from test_bad_input import one_error_line
from test_scan_null import TWO_DEMES
from test_vcz import CHROM, _random_model, make_vcf

from hpc_popgen.errors import InputDataError
from hpc_popgen.infer.scan import accessible_windows, plan_windows, read_scan
from hpc_popgen.readers import vcz as vz
from hpc_popgen.readers.mask import accessible_shares, read_mask

LENGTH = 400_000
# accessible: all but a 15 kb gap (windows over it lose sites but stay) and a 70 kb gap (windows inside skipped)
MASK = [(0, 150_000), (165_000, 260_000), (330_000, LENGTH)]
WINDOW = {"unit": "bp", "size": 40_000, "step": 20_000, "min_sites": 10}


def write_bed(path: Path, intervals: list[tuple[int, int]], chrom: str = CHROM) -> Path:
    path.write_text("".join(f"{chrom}\t{a}\t{b}\n" for a, b in intervals))
    return path


def write_ancestral_fasta(vcf: Path, path: Path, name: str = CHROM, bgzip: bool = False) -> Path:
    """A FASTA of ``vcf``'s chromosome: INFO/AA at each record (lower case at random, N when AA is
    ``.``), random bases elsewhere; bgzipped through pysam when asked."""
    rng = np.random.default_rng(11)
    seq = rng.choice(list("ACGT"), LENGTH)
    with gzip.open(vcf, "rt") as fh:
        for line in fh:
            if line.startswith("#"):
                continue
            f = line.split("\t")
            aa = f[7].split("AA=", 1)[1].split(";")[0]
            seq[int(f[1]) - 1] = "N" if aa == "." else (aa.lower() if rng.random() < 0.3 else aa)
    text = f">{name} ancestral\n" + "".join("".join(seq[i:i + 60]) + "\n" for i in range(0, LENGTH, 60))
    if bgzip:
        with pysam.BGZFile(str(path), "wb") as out:
            out.write(text.encode())
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("mask")
    vcf = make_vcf(tmp / "sim.vcf", length=LENGTH)
    return {"tmp": tmp, "vcf": vcf, "vcz": vz.ensure_vcz(vcf, tmp / "cache"), "bed": write_bed(tmp / "acc.bed", MASK),
            "fasta": write_ancestral_fasta(vcf, tmp / "anc.fa")}


def test_masked_sites_leave_the_windows_and_sparse_windows_are_skipped(data):
    full = vz.plan_sites(data["vcz"], (CHROM, 1, 2**62), None, derived=False, source=data["vcf"])
    masked = vz.plan_sites(data["vcz"], (CHROM, 1, 2**62), None, derived=False, source=data["vcf"], mask=data["bed"])
    inside = np.zeros(len(full.positions), dtype=bool)
    for a, b in MASK:
        inside |= (full.positions - 1 >= a) & (full.positions - 1 < b)
    assert np.array_equal(masked.positions, full.positions[inside]) and (~inside).sum() > 50
    assert masked.counts["inaccessible"] == int((~inside).sum()) and "inaccessible" not in full.counts
    assert masked.counts["kept"] == full.counts["kept"] - masked.counts["inaccessible"]

    planned = plan_windows(masked.positions, **WINDOW)
    kept, skipped = accessible_windows(planned, masked.accessible, 0.5)
    shares = accessible_shares(masked.accessible, np.array([w.start for w in planned]), np.array([w.end for w in planned]))
    assert skipped == int(np.sum(shares < 0.5)) >= 2 and len(kept) == len(planned) - skipped
    assert all(not (260_000 <= w.start and w.end <= 330_000) for w in kept)  # none inside the 70 kb gap
    assert accessible_windows(planned, None, 0.5) == (planned, 0)
    # a window over the 15 kb gap: the same bp, fewer sites than unmasked, exactly those inside the mask
    w = next(x for x in kept if x.start < 150_000 and x.end > 165_000)
    span = (full.positions >= w.start) & (full.positions <= w.end)
    assert w.n_sites == int((span & inside).sum()) < int(span.sum())
    with pytest.raises(InputDataError, match=r"other.bed: the mask has no intervals on chromosome chr7 \(it covers chr9\)"):
        vz.plan_sites(data["vcz"], None, None, derived=False, source=data["vcf"],
                      mask=write_bed(data["tmp"] / "other.bed", MASK, "chr9"))


def test_fasta_polarisation_equals_info_aa(data, tmp_path):
    aa = vz.plan_sites(data["vcz"], None, None, derived=True, source=data["vcf"])
    # the Ensembl ancestor header names the chromosome in its third field; bgzipped, indexed by pysam on first use
    ensembl = write_ancestral_fasta(data["vcf"], tmp_path / "anc.fa.gz", bgzip=True,
                                    name=f"ANCESTOR_for_chromosome:GRCh37:{CHROM.removeprefix('chr')}:1:{LENGTH}:1")
    for fasta in (data["fasta"], ensembl):
        fa = vz.plan_sites(data["vcz"], None, None, derived=True, source=data["vcf"], ancestral_fasta=fasta)
        assert np.array_equal(fa.index, aa.index) and np.array_equal(fa.flip, aa.flip) and fa.counts == aa.counts
    assert aa.counts["no_ancestral"] > 0 and aa.flip.sum() > 100
    # a FASTA of complements: only A/T and C/G sites keep an ancestral allele (the other one), so they flip
    comp = tmp_path / "comp.fa"
    head, body = data["fasta"].read_text().split("\n", 1)
    comp.write_text(head + "\n" + body.translate(str.maketrans("ACGTacgt", "TGCAtgca")))
    wrong = vz.plan_sites(data["vcz"], None, None, derived=True, source=data["vcf"], ancestral_fasta=comp)
    alleles = np.asarray(vz.open_vcz(data["vcz"])["variant_allele"][:]).astype(object).astype(str)[aa.index]
    pair = np.array(["".join(sorted(a[:2])) in ("AT", "CG") for a in alleles])
    assert np.array_equal(wrong.index, aa.index[pair]) and np.array_equal(wrong.flip, ~aa.flip[pair])
    assert wrong.counts["no_ancestral"] == aa.counts["no_ancestral"] + int((~pair).sum()) > 0


def test_scan_stage_masks_real_and_null_windows_and_polarises_from_the_fasta(data, tmp_path):
    from hpc_popgen.pipeline import create_run, execute

    shutil.copy(data["vcf"], tmp_path / "chrom.vcf.gz")
    shutil.copy(f"{data['vcf']}.csi", tmp_path / "chrom.vcf.gz.csi")
    shutil.copy(data["bed"], tmp_path / "acc.bed")
    shutil.copy(data["fasta"], tmp_path / "anc.fa")
    (tmp_path / "two.demes.yaml").write_text(TWO_DEMES)
    model = str(_random_model(tmp_path / "model"))
    base = {"model": model, "vcf": "chrom.vcf.gz", "chrom": CHROM, "samples": [f"tsk_{i}" for i in range(6)],
            "window": WINDOW, "chunk_windows": 8}
    null = {"demography": {"demes": "two.demes.yaml", "population": "A"}, "chromosomes": 2,
            "mutation_rate": 1e-7, "recombination_rate": 1e-8}
    prof = write_yaml(tmp_path / "prof.yaml", {"kind": "local", "cluster": {"n_workers": 1, "threads_per_worker": 1},
                                               "dashboard_address": "127.0.0.1:0",
                                               "horovod": {"launcher": "none", "ranks": 1}})
    man = write_yaml(tmp_path / "scan.yaml", {
        "name": "maskscan", "seed": 3, "profile": str(prof), "storage": str(tmp_path / "storage"),
        "stages": [{"name": "aa", "scan": base},
                   {"name": "fasta", "scan": {**base, "ancestral_fasta": "anc.fa"}},
                   {"name": "masked", "scan": {**base, "mask": "acc.bed", "null": null, "fdr": 0.5}}]})
    report = execute(create_run(man, run_dir=tmp_path / "run"), progress=False)
    assert report["status"] == "completed", report
    run = tmp_path / "run"
    assert (run / "fasta" / "scan.tsv").read_text() == (run / "aa" / "scan.tsv").read_text()
    assert report["stages"][1]["metrics"]["sites"] == report["stages"][0]["metrics"]["sites"]

    m = report["stages"][2]["metrics"]
    plain, masked = read_scan(run / "aa" / "scan.tsv"), read_scan(run / "masked" / "scan.tsv")
    ivs = read_mask(tmp_path / "acc.bed")[CHROM]
    assert m["sites"]["inaccessible"] > 50 and m["min_accessible"] == 0.5
    assert m["windows_skipped"]["inaccessible"] >= 2 and m["n_windows"] == len(masked["start"])
    assert np.all(accessible_shares(ivs, masked["start"], masked["end"]) >= 0.5)
    assert "windows_skipped" not in report["stages"][0]["metrics"]
    # a window over the 15 kb gap is scanned with fewer sites than without the mask
    over = (masked["start"] < 150_000) & (masked["end"] > 165_000)
    assert over.any()
    for s, n in zip(masked["start"][over], masked["n_sites"][over], strict=True):
        assert n < plain["n_sites"][plain["start"] == s][0]
    # the null chromosomes: masked with the same coordinates, so no null window is mostly inaccessible
    rows = [ln.split("\t") for f in sorted((run / "masked" / "parts").glob("null-*.tsv"))
            for ln in f.read_text().splitlines()]
    starts, ends = np.array([int(r[1]) for r in rows]), np.array([int(r[2]) for r in rows])
    assert len(rows) == m["calibration"]["null_windows"] >= 20
    assert np.all(accessible_shares(ivs, starts, ends) >= 0.5)
    assert not np.any((starts >= 260_000) & (ends <= 330_000))


@pytest.mark.parametrize("key,value,needle", [
    ("mask", "chr9.bed", "chr9.bed: the mask has no intervals on chromosome chr7 (it covers chr9)"),
    ("mask", "nowhere.bed", "nowhere.bed: mask file not found"),
    ("ancestral_fasta", "chr9.fa", "chr9.fa: the ancestral FASTA has no sequence for chromosome chr7 (it has chr9)"),
    ("ancestral_fasta", "nowhere.fa", "nowhere.fa: ancestral FASTA not found"),
])
def test_bad_mask_or_fasta_is_one_line_at_validate_and_nothing_is_written(tmp_path, key, value, needle):
    (tmp_path / "chrom.vcf.gz").write_bytes(b"")
    write_bed(tmp_path / "chr9.bed", MASK, "chr9")
    (tmp_path / "chr9.fa").write_text(">chr9\nACGT\n")
    job = write_yaml(tmp_path / "job.yaml", {"name": "bad", "seed": 1, "storage": "runs", "stages": [
        {"name": "scan", "scan": {"model": str(tmp_path / "model"), "vcf": "chrom.vcf.gz", "chrom": f"{CHROM}:1-400000",
                                  key: value}}]})
    line = one_error_line(run_cli("validate", job))
    assert "stages[0].scan." + key in line and needle in line, line
    line = one_error_line(run_cli("submit", job, "--run-dir", tmp_path / "run"))
    assert needle in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_demography_afs_polarised_by_the_fasta_equals_info_aa(data):
    from hpc_popgen.readers.spectra import fs_from_vcf

    popmap = data["tmp"] / "pops.txt"
    popmap.write_text("".join(f"tsk_{i}\t{'A' if i < 6 else 'B'}\n" for i in range(12)))
    kw = {"polarized": True, "cache_dir": data["tmp"] / "cache"}
    aa = fs_from_vcf(data["vcf"], popmap, ["A", "B"], [12, 8], **kw)
    fa = fs_from_vcf(data["vcf"], popmap, ["A", "B"], [12, 8], ancestral_fasta=data["fasta"], **kw)
    assert not fa.folded and np.array_equal(fa.mask, aa.mask) and np.allclose(fa.data, aa.data, rtol=1e-12)
    assert fa.S() > 1000
    _, counts = vz.spectrum(data["vcf"], {f"tsk_{i}": "A" for i in range(6)}, ["A"], [8], polarized=True,
                            cache_dir=data["tmp"] / "cache", ancestral_fasta=data["fasta"])
    assert counts["no_ancestral"] > 0


@pytest.mark.parametrize("inp,needle", [
    ({"ancestral_fasta": "nowhere.fa"}, "nowhere.fa: ancestral FASTA not found"),
    ({"ancestral_fasta": "anc.fa", "polarized": False}, "give it with input.vcf and polarized: true"),
])
def test_demography_ancestral_fasta_is_checked_at_validate(tmp_path, inp, needle):
    (tmp_path / "anc.fa").write_text(f">{CHROM}\nACGT\n")
    job = write_yaml(tmp_path / "job.yaml", {"name": "d", "seed": 1, "storage": "runs", "stages": [
        {"demography": {"input": {"vcf": "x.vcf.gz", "popmap": "pops.txt", "populations": ["A"], "projections": [4],
                                  "polarized": True, **inp},
                        "initial_structure": [1], "final_structure": [1]}}]})
    line = one_error_line(run_cli("validate", job))
    assert "stages[0].demography.input.ancestral_fasta" in line and needle in line, line


def test_mask_of_another_chromosome_is_refused_at_run_when_chrom_is_not_given(data, tmp_path):
    shutil.copy(data["vcf"], tmp_path / "chrom.vcf.gz")
    shutil.copy(f"{data['vcf']}.csi", tmp_path / "chrom.vcf.gz.csi")
    write_bed(tmp_path / "chr9.bed", MASK, "chr9")
    model = str(_random_model(tmp_path / "model"))
    job = write_yaml(tmp_path / "job.yaml", {"name": "m", "seed": 1, "storage": "runs", "stages": [
        {"name": "scan", "scan": {"model": model, "vcf": "chrom.vcf.gz", "mask": "chr9.bed"}}]})
    assert run_cli("validate", job).returncode == 0  # the scanned chromosome is known only from the VCF
    line = one_error_line(run_cli("submit", job, "--run-dir", tmp_path / "run", "--no-progress"))
    assert "chr9.bed: the mask has no intervals on chromosome chr7 (it covers chr9)" in line, line
    assert not (tmp_path / "run" / "scan").exists()
