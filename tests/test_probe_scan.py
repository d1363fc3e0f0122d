"""Probe: a scan of a VCF with one unphased genotype deep in the file (issue 25: it recorded one chunk done
and failed the other). The stage must fail with one line naming the file, record and sample; a rerun with the
fixed VCF must scan every window of the fixed file (no chunk of the old file reused)."""

from __future__ import annotations

import gzip
import shutil

import pysam
from helpers import run_cli
from test_scan_null import _manifest
from test_vcz import CHROM, _random_model, make_vcf

from hpc_popgen.infer.scan import read_scan
from hpc_popgen.pipeline import create_run, execute


def _unphase_late_record(src, dst) -> str:
    """Copy the bgzipped VCF ``src`` to ``dst`` (indexed) with the first genotype of a record 90% through the
    file made unphased, and the haplotypes of the first record swapped (so the first chunk's windows differ
    from the fixed file's too); returns the unphased record's CHROM:POS."""
    lines = gzip.open(src, "rt").read().splitlines()
    body = [i for i, ln in enumerate(lines) if not ln.startswith("#")]
    for j in body[:20]:
        f = lines[j].split("\t")
        f[9:] = [g[::-1] for g in f[9:]]  # 0|1 <-> 1|0
        lines[j] = "\t".join(f)
    i = body[int(len(body) * 0.9)]
    f = lines[i].split("\t")
    f[9] = f[9].replace("|", "/")
    lines[i] = "\t".join(f)
    plain = dst.with_suffix("")
    plain.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", csi=True, force=True)
    return f"{f[0]}:{f[1]}"


def test_an_unphased_record_fails_the_scan_in_one_line_and_a_fixed_vcf_rescans_everything(tmp_path):
    (tmp_path / "src").mkdir()
    good = make_vcf(tmp_path / "src" / "sim.vcf")
    where = _unphase_late_record(good, tmp_path / "chrom.vcf.gz")
    _random_model(tmp_path / "model")
    job = _manifest(tmp_path, 1, None)
    proc = run_cli("submit", job, "--run-dir", tmp_path / "run", "--no-progress", timeout=300)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "chrom.vcf.gz" in errors[0] and f"record {where}" in errors[0] and "unphased" in errors[0], errors[0]
    assert not (tmp_path / "run" / "scan" / "scan.tsv").exists()  # no table of half the windows

    shutil.copy(good, tmp_path / "chrom.vcf.gz")  # the fixed file
    shutil.copy(f"{good}.csi", tmp_path / "chrom.vcf.gz.csi")
    again = run_cli("rerun", tmp_path / "run", "--no-progress", timeout=300)
    fresh = execute(create_run(job, run_dir=tmp_path / "fresh"), progress=False)  # the reference: in-process
    assert fresh["status"] == "completed", fresh
    if again.returncode == 0:  # a rerun either refuses the changed input or scans it all afresh
        assert (tmp_path / "run" / "scan" / "scan.tsv").read_text() == (tmp_path / "fresh" / "scan" / "scan.tsv").read_text()
    else:
        lines = [ln for ln in again.stderr.splitlines() if ln.startswith("Error")]
        assert len(lines) == 1 and "chrom.vcf.gz" in lines[0], again.stderr[-3000:]
    assert len(read_scan(tmp_path / "fresh" / "scan" / "scan.tsv")["start"]) > 5
    assert CHROM in (tmp_path / "fresh" / "scan" / "scan.tsv").read_text()
