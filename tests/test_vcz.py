"""VCF Zarr (bio2zarr) for scans and spectra: cached once, read per window, same data as cyvcf2 and moments.

The VCFs are simulated with msprime and written by tskit's VCF writer; a script step then gives the
records INFO/AA (the simulated ancestral state) and, at random sites, a reference carrying the derived
allele (REF/ALT and genotypes swapped), unknown AA and a failed FILTER, and pysam bgzips and indexes it.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import warnings
from pathlib import Path

import msprime
import numpy as np
import pysam
import pytest
import yaml

from hpc_popgen.errors import InputDataError
from hpc_popgen.readers import read_vcf
from hpc_popgen.readers import vcz as vz
from hpc_popgen.readers.spectra import fs_from_vcf

CHROM = "chr7"
N_A, N_B = 6, 6  # diploid samples per population


def _demography() -> msprime.Demography:
    d = msprime.Demography()
    d.add_population(name="A", initial_size=10_000)
    d.add_population(name="B", initial_size=5_000)
    d.add_population(name="anc", initial_size=10_000)
    d.add_population_split(time=2_000, derived=["A", "B"], ancestral="anc")
    return d


def make_vcf(path: Path, *, length: int = 400_000, seed: int = 1, with_aa: bool = True) -> Path:
    """A bgzipped, CSI-indexed VCF of 12 diploid samples (tsk_0..5 in A, tsk_6..11 in B) from msprime."""
    ts = msprime.sim_ancestry({"A": N_A, "B": N_B}, demography=_demography(), sequence_length=length,
                             recombination_rate=1e-8, random_seed=seed)
    ts = msprime.sim_mutations(ts, rate=1e-7, random_seed=seed + 1)  # high enough for some multi-allelic sites
    buf = io.StringIO()
    ts.write_vcf(buf, contig_id=CHROM)
    rng = np.random.default_rng(seed)
    swap = str.maketrans("01", "10")
    out = []
    for line in buf.getvalue().splitlines():
        if line.startswith("#"):
            out.append(line)
            if line.startswith("##contig") and with_aa:
                out += ['##INFO=<ID=AA,Number=1,Type=String,Description="Ancestral allele">',
                        '##FILTER=<ID=LowQual,Description="Low quality">']
            continue
        f = line.split("\t")
        aa, u = f[3], rng.random()
        if with_aa:
            if "," not in f[4] and u < 0.4:  # the reference genome carries the derived allele here
                f[3], f[4] = f[4], f[3]
                f[9:] = [g.translate(swap) for g in f[9:]]
            f[7] = f"AA={'.' if u > 0.95 else aa}"
            if 0.9 < u <= 0.95:
                f[6] = "LowQual"
        out.append("\t".join(f))
    path.write_text("\n".join(out) + "\n")
    pysam.tabix_index(str(path), preset="vcf", csi=True, force=True)  # -> path.gz and path.gz.csi
    return Path(f"{path}.gz")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("vcz")
    vcf = make_vcf(tmp / "sim.vcf")
    plain = tmp / "plain" / "sim.vcf"  # the same records uncompressed, for moments' own reader
    plain.parent.mkdir()
    with gzip.open(vcf, "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    popmap = tmp / "pops.txt"
    popmap.write_text("".join(f"tsk_{i}\t{'A' if i < N_A else 'B'}\n" for i in range(N_A + N_B)))
    return {"tmp": tmp, "vcf": vcf, "plain": plain, "popmap": popmap, "cache": tmp / "cache"}


def test_converted_once_then_reused_and_rebuilt_when_the_vcf_changes(data, tmp_path):
    vcf = tmp_path / "x.vcf.gz"
    shutil.copy(data["vcf"], vcf)
    shutil.copy(f"{data['vcf']}.csi", f"{vcf}.csi")
    first = vz.ensure_vcz(vcf, tmp_path / "cache")
    marker = first / ".zattrs"
    before = marker.stat()
    again = vz.ensure_vcz(vcf, tmp_path / "cache")
    assert again == first and marker.stat().st_ino == before.st_ino and marker.stat().st_mtime_ns == before.st_mtime_ns
    assert f"bio2zarr{vz.bio2zarr_version()}" in first.name
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]
    root = vz.open_vcz(first)
    assert root.metadata.zarr_format == vz.ZARR_FORMAT == 2
    assert root.attrs[vz.MARK]["size"] == vcf.stat().st_size
    os.utime(vcf, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # an edited VCF: a new conversion
    assert vz.ensure_vcz(vcf, tmp_path / "cache") != first


@pytest.mark.parametrize("derived", [False, True])
def test_chromosome_through_vcz_equals_cyvcf2(data, derived):
    samples = ["tsk_9", "tsk_0", "tsk_4"]  # not in file order
    z = vz.read_region(data["vcf"], (CHROM, 1, 2**62), samples, derived=derived, cache_dir=data["cache"])
    c = read_vcf(data["vcf"], CHROM, samples, derived=derived)
    assert z.matrix.shape == c.matrix.shape and z.matrix.shape[0] == 6
    assert np.array_equal(z.matrix, c.matrix) and np.array_equal(z.positions, c.positions)
    assert z.counts["multiallelic"] == c.counts["multiallelic"] > 0
    assert z.counts.get("no_ancestral", 0) == c.counts.get("no_ancestral", 0)
    assert (z.counts["no_ancestral"] > 0) if derived else "no_ancestral" not in z.counts
    sub = vz.read_region(data["vcf"], (CHROM, 100_000, 180_000), samples, derived=derived, cache_dir=data["cache"])
    cut = (z.positions >= 100_000) & (z.positions <= 180_000)
    assert np.array_equal(sub.matrix, z.matrix[:, cut]) and sub.n_sites == int(cut.sum()) > 100


@pytest.mark.parametrize(("polarized", "projections"), [(False, [10, 8]), (True, [12, 6])])
def test_afs_equals_moments_own_reader(data, polarized, projections):
    import moments

    fs = fs_from_vcf(data["vcf"], data["popmap"], ["A", "B"], projections, polarized=polarized,
                     cache_dir=data["cache"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        dd = moments.Misc.make_data_dict_vcf(str(data["plain"]), str(data["popmap"]))
        ref = moments.Spectrum.from_data_dict(dd, pop_ids=["A", "B"], projections=projections, polarized=polarized)
    assert fs.folded == ref.folded == (not polarized)
    assert fs.sample_sizes.tolist() == projections and fs.pop_ids == ["A", "B"]
    assert np.array_equal(fs.mask, ref.mask)
    assert np.allclose(fs.data, ref.data, rtol=1e-9, atol=1e-12) and fs.S() > 1000
    _, counts = vz.spectrum(data["vcf"], {f"tsk_{i}": "A" for i in range(N_A)}, ["A"], [8],
                            polarized=polarized, cache_dir=data["cache"])
    assert counts["multiallelic"] > 0 and counts["filtered"] > 0
    assert (counts["no_ancestral"] > 0) if polarized else "no_ancestral" not in counts


def test_bad_input_is_one_line_naming_file_and_key(data, tmp_path):
    vcf, cache = data["vcf"], data["cache"]
    z = vz.ensure_vcz(vcf, cache)
    with pytest.raises(InputDataError, match=r"sim.vcf.gz: sample\(s\) not in the VCF: nobody"):
        vz.plan_sites(z, None, ["tsk_0", "nobody"], derived=False, source=vcf)
    pm = tmp_path / "pm.txt"
    pm.write_text("tsk_0 A\ntsk_1 A\nghost A\n")
    with pytest.raises(InputDataError, match=r"sim.vcf.gz: sample\(s\) of popmap .*pm.txt not in the VCF: ghost"):
        fs_from_vcf(vcf, pm, ["A"], [4], cache_dir=cache)
    with pytest.raises(InputDataError, match=r"sim.vcf.gz: chromosome 'chr9' is not in the file \(it has records on chr7\)"):
        vz.plan_sites(z, ("chr9", 1, 10), None, derived=False, source=vcf)
    old = tmp_path / "old.vcz"
    shutil.copytree(z, old)
    import zarr

    zarr.open_group(str(old), mode="r+").attrs["source"] = "bio2zarr-0.1.6"
    with pytest.raises(InputDataError, match=r"old.vcz: written by bio2zarr-0.1.6 .* bio2zarr 0.2.x") as err:
        vz.ensure_vcz(old)
    assert "\n" not in str(err.value)
    no_aa = make_vcf(tmp_path / "noaa.vcf", length=100_000, seed=5, with_aa=False)
    with pytest.raises(InputDataError, match=r"noaa.vcf.gz: no INFO/AA .* polarisation"):
        vz.read_region(no_aa, None, None, derived=True, cache_dir=tmp_path / "c2")
    with pytest.raises(InputDataError, match=r"noaa.vcf.gz: no INFO/AA .*input.polarized: false"):
        fs_from_vcf(no_aa, data["popmap"], ["A"], [4], polarized=True, cache_dir=tmp_path / "c2")


def test_a_killed_conversion_is_never_reused(data, tmp_path):
    import subprocess
    import sys
    import time

    vcf = tmp_path / "k.vcf.gz"
    shutil.copy(data["vcf"], vcf)
    shutil.copy(f"{data['vcf']}.csi", f"{vcf}.csi")
    cache = tmp_path / "cache"
    code = f"from hpc_popgen.readers import vcz; vcz.ensure_vcz({str(vcf)!r}, {str(cache)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not (cache.is_dir() and any(p.name.startswith(".tmp-") for p in cache.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    target = vz.cached_path(vcf, cache)
    assert not target.exists()  # the half-written conversion stays under its temporary name
    done = vz.ensure_vcz(vcf, cache)
    assert done == target and vz.open_vcz(done)["call_genotype"].shape[0] > 1000


def _random_model(path: Path) -> Path:
    """A real (untrained, seeded) binary model bundle with derived-allele 32x32 images."""
    from hpc_popgen.images import ImageConfig
    from hpc_popgen.train.models import ModelConfig
    from hpc_popgen.train.saved import save_untrained_bundle

    mc = ModelConfig(preset="binary", filters=(4,), kernel_size=3, dense=(8,), l1=0.0, l2=0.0, dropout=0.0,
                     optimizer="adam", learning_rate=1e-3, paper=False)
    image = ImageConfig(polarisation="derived", maf=0.0, sort="rows", size=(32, 32), resize="resize")
    return save_untrained_bundle(path, image.to_dict(), mc, seed=3)


def test_scan_stage_reads_vcz_windows_equal_to_cyvcf2_and_reuses_the_zarr(data, tmp_path):
    from hpc_popgen.infer.scan import plan_windows, read_scan, scan_chunk
    from hpc_popgen.pipeline import create_run, execute

    model = _random_model(tmp_path / "model")
    shutil.copy(data["vcf"], tmp_path / "chrom.vcf.gz")
    shutil.copy(f"{data['vcf']}.csi", tmp_path / "chrom.vcf.gz.csi")
    prof = tmp_path / "prof.yaml"
    prof.write_text(yaml.safe_dump({"kind": "local", "cluster": {"n_workers": 1, "threads_per_worker": 1},
                                    "dashboard_address": "127.0.0.1:0",
                                    "horovod": {"launcher": "none", "ranks": 1}}))
    man = tmp_path / "scan.yaml"
    window = {"unit": "bp", "size": 40_000, "step": 20_000, "min_sites": 10}
    man.write_text(yaml.safe_dump({
        "name": "vczscan", "seed": 5, "profile": str(prof), "storage": str(tmp_path / "storage"),
        "stages": [{"name": "scan", "scan": {"model": str(model), "vcf": "chrom.vcf.gz", "chrom": CHROM,
                                             "window": window, "chunk_windows": 6}}]}))
    report = execute(create_run(man, run_dir=tmp_path / "run1"), progress=False)
    assert report["status"] == "completed", report
    m = report["stages"][0]["metrics"]
    store = Path(m["vcz"])
    assert store.parent == tmp_path / "storage" / "vcz" and m["sites"]["no_ancestral"] > 0
    table = read_scan(tmp_path / "run1" / "scan" / "scan.tsv")
    assert len(table["start"]) == m["n_windows"] >= 15 and report["stages"][0]["units_done"] >= 3

    # the cyvcf2 path on the same windows, in this process
    haps = read_vcf(tmp_path / "chrom.vcf.gz", CHROM, derived=True)
    pos = haps.positions.astype(np.int64)
    wins = plan_windows(pos, **window)
    out = tmp_path / "direct.tsv"
    rel = [(w.lo, w.hi, w.start, w.end) for w in wins]
    scan_chunk(str(model), haps.matrix, pos, rel, CHROM, str(out), level=0.95, mc_samples=0, seed=0)
    direct = [ln.split("\t") for ln in out.read_text().splitlines()]
    staged = [ln.split("\t") for ln in (tmp_path / "run1" / "scan" / "scan.tsv").read_text().splitlines()[1:]]
    assert [r[:4] for r in staged] == [r[:4] for r in direct]  # chrom, start, end, n_sites
    assert np.allclose(np.array([r[4:] for r in staged], dtype=float), np.array([r[4:] for r in direct], dtype=float),
                       rtol=1e-5, equal_nan=True)

    before = (store / ".zattrs").stat()
    report2 = execute(create_run(man, run_dir=tmp_path / "run2"), progress=False)
    assert report2["status"] == "completed"
    assert report2["stages"][0]["metrics"]["vcz"] == str(store)
    after = (store / ".zattrs").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # reused, not rebuilt
    assert (tmp_path / "run2" / "scan" / "scan.tsv").read_text() == (tmp_path / "run1" / "scan" / "scan.tsv").read_text()
