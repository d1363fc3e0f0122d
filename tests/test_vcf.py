"""VCF/BCF regions through htslib (cyvcf2): files written by tskit and pysam, bgzipped and indexed by htslib."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import msprime
import numpy as np
import pysam
import pytest

from hpc_popgen.errors import InputDataError
from hpc_popgen.readers import read_vcf
from hpc_popgen.readers.vcf import cache_root, vcf_chromosomes


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Unindexed inputs are indexed into this test's own cache folder."""
    monkeypatch.setenv("HPCPOP_CACHE_DIR", str(tmp_path / "cache"))
    return cache_root()


def bgzip_index(plain: Path, csi: bool = False) -> Path:
    """htslib's bgzip + tabix (through pysam) of a plain VCF; returns the .vcf.gz path."""
    gz = Path(f"{plain}.gz")
    pysam.tabix_compress(str(plain), str(gz), force=True)
    pysam.tabix_index(str(gz), preset="vcf", csi=csi, force=True)
    return gz


def simulated(tmp_path: Path, seed: int = 3):
    """A msprime tree sequence of 6 diploids over 60 kb (a few multi-allelic sites) and its VCF by tskit."""
    ts = msprime.sim_ancestry(6, sequence_length=60_000, recombination_rate=1e-8, population_size=10_000,
                              random_seed=seed)
    ts = msprime.sim_mutations(ts, rate=1e-7, random_seed=seed)
    plain = tmp_path / "sim.vcf"
    with open(plain, "w") as fh:
        ts.write_vcf(fh, contig_id="chr3", position_transform=lambda p: np.asarray(p, dtype=np.int64) + 1)
    return ts, plain


def write_records(path: Path, records: list[tuple], samples=("A", "B", "C"), aa_header: bool = True,
                  mode: str = "wz") -> Path:
    """A VCF (``wz``) or BCF (``wb``) written by pysam: records are (chrom, pos, alleles, AA or None,
    [(allele, ..., phased) per sample])."""
    header = pysam.VariantHeader()
    for chrom in ("chr1", "chr2"):
        header.contigs.add(chrom, length=100_000)
    if aa_header:
        header.add_meta("INFO", items=[("ID", "AA"), ("Number", 1), ("Type", "String"),
                                       ("Description", "Ancestral allele")])
    header.add_meta("FORMAT", items=[("ID", "GT"), ("Number", 1), ("Type", "String"), ("Description", "Genotype")])
    for s in samples:
        header.add_sample(s)
    with pysam.VariantFile(str(path), mode, header=header) as vf:
        for chrom, pos, alleles, aa, gts in records:
            rec = vf.new_record(contig=chrom, start=pos - 1, alleles=alleles, info={"AA": aa} if aa else {})
            for s, gt in zip(samples, gts, strict=True):
                rec.samples[s]["GT"] = tuple(gt[:-1])
                rec.samples[s].phased = gt[-1]
            vf.write(rec)
    return path


P = True  # phased
GOOD = [(0, 1, P), (1, 1, P), (0, 0, P)]


def test_region_and_samples_match_the_tree_sequence(tmp_path):
    ts, plain = simulated(tmp_path)
    gz = bgzip_index(plain)
    names = ["tsk_5", "tsk_0", "tsk_3"]
    hv = read_vcf(gz, region="chr3:20,001-40,000", samples=names)
    nodes = [n for name in names for n in ts.individual(int(name[4:])).nodes]
    cols, pos, multi = [], [], 0
    for var in ts.variants():
        p = int(var.site.position) + 1
        if not 20_001 <= p <= 40_000:
            continue
        if len(var.alleles) > 2:
            multi += 1
            continue
        cols.append(var.genotypes[nodes])
        pos.append(p - 20_001)
    assert multi >= 1 and hv.counts["multiallelic"] == multi and hv.counts["kept"] == len(pos) > 20
    assert hv.names == ["tsk_5_0", "tsk_5_1", "tsk_0_0", "tsk_0_1", "tsk_3_0", "tsk_3_1"]
    assert np.array_equal(hv.matrix, np.array(cols).T) and hv.positions.tolist() == pos
    assert hv.length == 20_000 and hv.centre() == 10_000
    # the same through a CSI index, and a BCF written from it by htslib
    csi = bgzip_index(shutil.copy(plain, tmp_path / "csi.vcf"), csi=True)
    bcf = tmp_path / "sim.bcf"
    with pysam.VariantFile(str(gz)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    pysam.tabix_index(str(bcf), preset="vcf", force=True)
    for other in (csi, bcf):
        assert np.array_equal(read_vcf(other, region="chr3:20001-40000", samples=names).matrix, hv.matrix)
    # the file's only chromosome as a region: read in file order, the same as the whole file
    whole = read_vcf(gz, region="chr3", samples=names)
    assert np.array_equal(whole.matrix, read_vcf(gz, samples=names).matrix) and whole.n_sites > hv.n_sites


def test_a_region_query_reads_only_that_region_and_those_samples(tmp_path):
    bad_outside = [("chr1", 5000, ("A", "T"), None, [(0, 1, False), (0, 0, P), (1, 1, P)])]
    bad_sample = [("chr1", 300, ("C", "T"), None, [(0, 1, P), (None, 1, P), (1, 0, P)])]
    vcf = write_records(tmp_path / "r.vcf.gz", [("chr1", 100, ("A", "G"), None, GOOD),
                                                ("chr1", 200, ("G", "T"), None, GOOD)] + bad_sample + bad_outside)
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    hv = read_vcf(vcf, region="chr1:1-1000", samples=["C", "A"])  # B's missing call and chr1:5000 are never read
    assert hv.matrix.tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert hv.positions.tolist() == [99, 199, 299]
    with pytest.raises(InputDataError, match=r"r.vcf.gz: record chr1:300: missing genotype '\.\|1' for sample B$"):
        read_vcf(vcf, region="chr1:1-1000")
    with pytest.raises(InputDataError, match=r"r.vcf.gz: record chr1:5000: unphased genotype '0/1' for sample A;"):
        read_vcf(vcf, samples=["A"])
    two = write_records(tmp_path / "two.vcf.gz", [("chr1", 100, ("A", "G"), None, GOOD),
                                                  ("chr2", 50, ("A", "T"), None, [(0, 1, False)] + GOOD[1:])])
    pysam.tabix_index(str(two), preset="vcf", force=True)  # a chromosome of two is read through the index
    assert read_vcf(two, region="chr1", samples=["A"]).matrix.tolist() == [[0], [1]]


def test_derived_polarisation_from_info_aa(tmp_path):
    records = [("chr1", 100, ("A", "G"), "A", GOOD),                # AA = REF: as written
               ("chr1", 200, ("C", "T"), "t|||", GOOD),             # AA = ALT (1000 Genomes style): flipped
               ("chr1", 300, ("G", "A"), None, GOOD),               # no AA: dropped
               ("chr1", 400, ("G", "A"), "C", GOOD),                # AA neither REF nor ALT: dropped
               ("chr1", 500, ("G", "A", "C"), "G", GOOD)]           # multi-allelic: dropped
    vcf = write_records(tmp_path / "aa.vcf.gz", records)
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    hv = read_vcf(vcf, region="chr1:1-1000", samples=["A"], derived=True)
    assert hv.matrix.tolist() == [[0, 1], [1, 0]] and hv.positions.tolist() == [99, 199]
    assert hv.counts == {"records": 5, "multiallelic": 1, "no_ancestral": 2, "kept": 2}
    assert read_vcf(vcf, region="chr1:1-1000", samples=["A"]).matrix.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    no_aa = write_records(tmp_path / "noaa.vcf.gz", [("chr1", 100, ("A", "G"), None, GOOD)], aa_header=False)
    with pytest.raises(InputDataError, match=r"noaa.vcf.gz: no INFO/AA .* in the header"):
        read_vcf(no_aa, derived=True)


def test_accessibility_mask_drops_sites_and_refuses_a_mostly_masked_region(tmp_path):
    vcf = write_records(tmp_path / "m.vcf.gz", [("chr1", p, ("A", "G"), None, GOOD) for p in (100, 200, 300, 400)])
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    bed = tmp_path / "mask.bed"
    bed.write_text("track name=acc\nchr1\t0\t150\nchr1\t120\t250\nchr1\t399\t600\nchr2\t0\t100\n")
    hv = read_vcf(vcf, region="chr1:1-500", mask=bed)  # accessible: [0, 250) and [399, 600) -> 351 of 500 bp
    assert hv.positions.tolist() == [99, 199, 399] and hv.counts["inaccessible"] == 1
    assert hv.counts["accessible_bp"] == 351
    with pytest.raises(InputDataError, match=r"m.vcf.gz: region chr1:1-1000 is 45% accessible in mask .*mask.bed, "
                                             r"below min_accessible 50%"):
        read_vcf(vcf, region="chr1:1-1000", mask=bed)
    assert read_vcf(vcf, region="chr1:1-1000", mask=bed, min_accessible=0.4).n_sites == 3
    other = tmp_path / "chr2.bed"
    other.write_text("chr2\t0\t1000\n")
    with pytest.raises(InputDataError, match=r"chr2.bed: the mask has no intervals on chromosome chr1 \(it covers chr2\)"):
        read_vcf(vcf, region="chr1:1-500", mask=other)


def test_unindexed_files_are_indexed_once_into_the_cache(tmp_path, cache):
    user = tmp_path / "user"
    user.mkdir()
    _, plain = simulated(user, seed=1)
    with open(plain, "rb") as src, gzip.open(user / "plain_gzip.vcf.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    bgzf = user / "noindex.vcf.gz"
    pysam.tabix_compress(str(plain), str(bgzf))
    bcf = user / "noindex.bcf"
    with pysam.VariantFile(str(plain)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    want = read_vcf(bgzip_index(shutil.copy(plain, tmp_path / "ref.vcf")), region="chr3:1000-30000")
    users = sorted(os.listdir(user))
    for f in (plain, user / "plain_gzip.vcf.gz", bgzf, bcf):
        hv = read_vcf(f, region="chr3:1000-30000")
        assert np.array_equal(hv.matrix, want.matrix) and hv.source == str(f)
    entries = sorted(cache.iterdir())
    assert len(entries) == 8 and sum(p.name.endswith(".csi") for p in entries) == 4
    stamps = [p.stat().st_mtime_ns for p in entries]
    assert vcf_chromosomes(plain) == ["chr3"] and read_vcf(bcf, region="chr3:1000-30000").n_sites == want.n_sites
    assert [p.stat().st_mtime_ns for p in sorted(cache.iterdir())] == stamps  # reused, not rebuilt
    assert sorted(os.listdir(user)) == users  # the user's folder is left as it was
    unsorted = user / "unsorted.vcf"
    lines = plain.read_text().splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    unsorted.write_text("\n".join([ln for ln in lines if ln.startswith("#")] + body[::-1]) + "\n")
    with pytest.raises(InputDataError, match=r"unsorted.vcf: cannot index it; its records must be sorted by chromosome and position"):
        read_vcf(unsorted, region="chr3:1-100")
    assert sorted(cache.iterdir()) == entries  # nothing partial left


def test_bad_input_is_one_line_naming_file_record_or_key(tmp_path):
    vcf = write_records(tmp_path / "b.vcf.gz", [("chr1", 100, ("A", "G"), None, GOOD),
                                                ("chr1", 200, ("A", "G"), None, [(0, 1, P), (0, 1, P), (1, 1, False)])])
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    with pytest.raises(InputDataError, match=r"b.vcf.gz: chromosome 'chr9' is not in the file \(it has records on chr1\)"):
        read_vcf(vcf, region="chr9:1-1000")
    with pytest.raises(InputDataError, match=r"b.vcf.gz: chromosome 'chr2' is not in the file"):  # in the header only
        read_vcf(vcf, region="chr2")
    with pytest.raises(InputDataError, match=r"b.vcf.gz: sample\(s\) not in the VCF: Z, Y$"):
        read_vcf(vcf, region="chr1:1-1000", samples=["A", "Z", "Y"])
    with pytest.raises(InputDataError, match=r"b.vcf.gz: record chr1:200: unphased genotype '1/1' for sample C"):
        read_vcf(vcf, region="chr1:1-1000")
    with pytest.raises(InputDataError, match=r"b.vcf.gz: no usable biallelic records in chr1:300-1000"):
        read_vcf(vcf, region="chr1:300-1000")
    with pytest.raises(InputDataError, match=r"nope.vcf.gz: file not found"):
        read_vcf(tmp_path / "nope.vcf.gz", region="chr1:1-10")
    (tmp_path / "text.txt").write_text("not a vcf\n")
    with pytest.raises(InputDataError, match=r"text.txt: not a readable VCF or BCF"):
        read_vcf(tmp_path / "text.txt", region="chr1:1-10")
    hap = write_records(tmp_path / "hap.vcf.gz", [("chr1", 100, ("A", "G"), None, [(0, P)] * 3)])
    with pytest.raises(InputDataError, match=r"hap.vcf.gz: record chr1:100: genotype of sample A is not diploid"):
        read_vcf(hap)


def test_genotypes_packed_in_several_blocks_match_one_block(tmp_path, monkeypatch):
    """The reader checks and packs genotypes block by block (4,096 records); at 7 records a block, the
    simulated file spans full blocks and a partial last one: the same matrix, and a bad genotype in a
    later block is still named by its own record."""
    import hpc_popgen.readers.vcf as vcf_module

    _, plain = simulated(tmp_path)
    gz = bgzip_index(plain)
    one = read_vcf(gz, region="chr3")
    monkeypatch.setattr(vcf_module, "_BLOCK", 7)
    many = read_vcf(gz, region="chr3")
    assert many.n_sites > 3 * 7 and many.n_sites % 7 != 0
    assert np.array_equal(many.matrix, one.matrix) and many.positions.tolist() == one.positions.tolist()
    records = [("chr1", 100 + i, ("A", "G"), None, GOOD) for i in range(20)]
    records[16] = ("chr1", 116, ("A", "G"), None, [(0, 1, P), (1, 0, False), (0, 0, P)])  # in the 3rd block
    bad = write_records(tmp_path / "b.vcf.gz", records)
    pysam.tabix_index(str(bad), preset="vcf", force=True)
    with pytest.raises(InputDataError, match=r"record chr1:116: unphased genotype '1/0' for sample B"):
        read_vcf(bad, region="chr1")
