"""ms/msms/discoal files made elsewhere -> a simulate stage's image store: the same images as the images
module makes from the same haplotypes, S from file names or a table, bad input refused in one line."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import msprime
import numpy as np
import pytest
import yaml
from helpers import image_config, run_cli

from hpc_popgen.errors import HpcPopError, InputDataError, ManifestError
from hpc_popgen.images import image_and_sites
from hpc_popgen.pipeline import create_run, execute, prepare
from hpc_popgen.readers import read_ms
from hpc_popgen.readers.msformat import index_file, parse_ms
from hpc_popgen.seeds import derive_seed
from hpc_popgen.simulate.plan import split_of
from hpc_popgen.store import PER_IMAGE_ARRAYS, open_store, store_exists

N_HAPS = 16
# file name, replicates, command line (ms, msms and discoal styles), gzip
FILES = [("neutral_S0.ms", 5, f"ms {N_HAPS} 5 -t 8 -r 8 2000", False),
         ("sweep_S200.ms.gz", 4, f"msms -N 10000 -ms {N_HAPS} 4 -t 8 -SAA 400", True),
         ("sweep_S400.ms", 3, f"discoal {N_HAPS} 3 20000 -t 8 -ws 0 -a 400", False)]
BASE = {"n_haplotypes": N_HAPS, "sequence_length": 20_000, "shard_images": 4, "chunk_images": 2,
        "image": {"size": [16, 24], "sort": "rows"}}


def haplotypes(n_reps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(matrix (haps, sites) uint8, positions as fractions rounded as ms prints them) per msprime replicate."""
    out = []
    for ts in msprime.sim_ancestry(N_HAPS // 2, sequence_length=20_000, recombination_rate=1e-8, population_size=10_000,
                                   random_seed=seed, num_replicates=n_reps):
        mts = msprime.sim_mutations(ts, rate=1e-8, random_seed=seed, discrete_genome=False)
        positions = np.round(mts.tables.sites.position / mts.sequence_length, 6)
        out.append((mts.genotype_matrix().T.astype(np.uint8), positions))
    return out


def ms_text(header: str, reps: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """ms-format text: command line, seed line, then per replicate //, segsites, positions, 0/1 rows."""
    lines = [header, "12345 6789", ""]
    for m, pos in reps:
        lines += ["//", f"segsites: {m.shape[1]}"]
        if m.shape[1]:
            lines.append("positions: " + " ".join(f"{p:.6f}" for p in pos))
            lines += [(row + 48).tobytes().decode() for row in m]
        lines.append("")
    return "\n".join(lines) + "\n"


def write_ms(path: Path, header: str, reps, gz: bool = False) -> Path:
    data = ms_text(header, reps).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


@pytest.fixture(scope="module")
def msdata(tmp_path_factory):
    """Three ms files (one gzip) in a folder, and the haplotypes they were written from, in image order."""
    folder = tmp_path_factory.mktemp("ms")
    reps_all, paths = [], []
    for k, (name, n, header, gz) in enumerate(FILES):
        reps = haplotypes(n, seed=100 + k)
        paths.append(write_ms(folder / name, header, reps, gz))
        reps_all.extend(reps)
    return folder, paths, reps_all


def write_job(tmp: Path, name: str, params: dict, workers: int = 1) -> Path:
    prof = tmp / f"profile{workers}.yaml"
    prof.write_text(yaml.safe_dump({"kind": "local", "cluster": {"n_workers": workers, "threads_per_worker": 1},
                                    "dashboard_address": "127.0.0.1:0"}))
    job = {"name": name, "seed": 11, "profile": str(prof), "storage": str(tmp / "stores"),
           "stages": [{"name": "simulate", "resources": {"cores": workers}, "simulate": params}]}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def run_job(tmp: Path, name: str, params: dict, workers: int = 1) -> dict:
    rd = create_run(write_job(tmp, name, params, workers), run_dir=tmp / f"run-{name}")
    return execute(rd, progress=False)


def by_name(folder: Path) -> dict:
    return {**BASE, "source": {"ms": [str(folder / "*.ms"), str(folder / "*.ms.gz")],
                               "s": {"from_name": r"_S(?P<S>[0-9.]+)\.ms"}}}


def test_vectorised_parser_reads_back_the_haplotypes(msdata):
    """Every file (ms, msms, discoal command lines; plain and gzip) gives back what was written; the
    line-by-line reader of ``predict --ms`` agrees on the ms-style file."""
    _, paths, reps = msdata
    first = 0
    for path, (_name, n, _header, gz) in zip(paths, FILES, strict=True):
        text = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
        fast = parse_ms(text, N_HAPS, str(path))
        assert len(fast) == n
        for (m, p), (m0, p0) in zip(zip(fast.matrices, fast.positions, strict=True), reps[first:first + n],
                                    strict=True):
            assert np.array_equal(m, m0) and np.array_equal(p, p0)
        assert [text[o:o + 2] for o in fast.offsets] == [b"//"] * n
        first += n
    slow = read_ms(paths[0])
    fast = parse_ms(paths[0].read_bytes(), N_HAPS, str(paths[0]))
    assert all(np.array_equal(h.matrix, m) and np.array_equal(h.positions, p)
               for h, m, p in zip(slow, fast.matrices, fast.positions, strict=True))


def test_store_from_ms_files_with_s_from_names(tmp_path, msdata):
    folder, paths, reps = msdata
    report = run_job(tmp_path, "names", {**by_name(folder), "store": "ms.zarr"})
    assert report["stages"][0]["status"] == "completed"
    st = open_store(tmp_path / "stores" / "ms.zarr")
    # listed order: the *.ms pattern (sorted: neutral_S0, sweep_S400), then *.ms.gz (sweep_S200)
    order = [0, 1, 2, 3, 4, 9, 10, 11, 5, 6, 7, 8]
    s_want = [0.0] * 5 + [400.0] * 3 + [200.0] * 4
    assert st.n_images == 12 and st.n_shards == 3 and st.read("s").tolist() == s_want
    assert st.classes == [0.0, 200.0, 400.0] and st.read("class_index").tolist() == [0] * 5 + [2] * 3 + [1] * 4
    cfg = image_config(size=(16, 24), sort="rows")
    images = st.read("images")
    for k, i in enumerate(order):
        m, pos = reps[i]
        img, n_sites = image_and_sites(m, pos, cfg, centre=0.5)
        assert np.array_equal(images[k], img), k
        assert st.read("n_sites")[k] == n_sites and st.read("n_sites_raw")[k] == m.shape[1]
    assert images.any()
    seeds = st.read("seed")
    assert seeds.tolist() == [derive_seed(st.meta["seed"], i) for i in range(12)]
    assert st.read("split").tolist() == [split_of(int(s), st.meta["split"]) for s in seeds]
    assert np.isnan(st.read("end_freq")).all() and (st.read("attempts") == 1).all()
    files = st.meta["source"]["files"]
    assert [f["name"] for f in files] == ["neutral_S0.ms", "sweep_S400.ms", "sweep_S200.ms.gz"]
    assert [f["sha256"] for f in files] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in
                                            (paths[0], paths[2], paths[1])]
    assert [f["replicates"] for f in files] == [5, 3, 4] and files[2]["gzip"] is True
    assert st.meta["prior"]["counts"] == [5, 4, 3] and st.meta["source"]["sequence_length"] == 20_000


def test_two_workers_and_a_table_of_s(tmp_path, msdata):
    """Two workers give the same bits as one; a table gives S, and continuous S has no classes."""
    folder, paths, _ = msdata
    run_job(tmp_path, "one", {**by_name(folder), "store": "one.zarr"}, workers=1)
    run_job(tmp_path, "two", {**by_name(folder), "store": "two.zarr"}, workers=2)
    one, two = open_store(tmp_path / "stores" / "one.zarr"), open_store(tmp_path / "stores" / "two.zarr")
    for spec in PER_IMAGE_ARRAYS:
        assert np.array_equal(one.read(spec.name), two.read(spec.name), equal_nan=spec.dtype == "float64"), spec.name
    table = tmp_path / "s.tsv"
    table.write_text("# S per file\nfile\tS\tnote\nsweep_S200.ms.gz\t250.5\tx\nneutral_S0.ms\t0\ty\n"
                     "unused.ms\t3\tz\n")
    params = {**BASE, "store": "table.zarr", "source": {"ms": [str(paths[1]), str(paths[0])],
                                                         "s": {"table": str(table)}, "s_kind": "continuous"}}
    run_job(tmp_path, "table", params)
    st = open_store(tmp_path / "stores" / "table.zarr")
    assert st.read("s").tolist() == [250.5] * 4 + [0.0] * 5
    assert st.classes is None and (st.read("class_index") == -1).all()
    assert st.meta["prior"] == {"kind": "none", "source": "ms", "min": 0.0, "max": 250.5}
    assert np.array_equal(st.read("images")[4:], one.read("images")[:5])  # neutral_S0.ms: same images anywhere


def one_line(text: str) -> str:
    assert "\n" not in text.strip(), text
    return text


@pytest.mark.parametrize("change, where", [
    ({"ms": ["nothing.ms"]}, r"source\.ms\[0\]: .*nothing\.ms: file not found"),
    ({"ms": ["*.msx"]}, r"source\.ms\[0\]: '\*\.msx' matches no file"),
    ({"s": {"from_name": "S([0-9]+)"}}, r"source\.s\.from_name: 'S\(\[0-9\]\+\)' has no named group S"),
    ({"s": {"from_name": r"_T(?P<S>\d+)"}}, r"source\.s\.from_name: neutral_S0\.ms: no match"),
    ({"s": {"from_name": "(?P<S>[a-z]+)"}}, r"source\.s\.from_name: neutral_S0\.ms: S 'neutral' is not a number"),
    ({"s": {"table": "missing.tsv"}}, r"source\.s\.table: .*missing\.tsv: file not found"),
    ({"s": {"table": "short.tsv"}}, r"source\.s\.table: .*short\.tsv has no row for sweep_S200\.ms\.gz"),
    ({"s": {"table": "bad.tsv"}}, r"source\.s\.table: .*bad\.tsv:3: S 'strong' is not a number"),
    ({"s": {"table": "nohead.tsv"}}, r"source\.s\.table: .*nohead\.tsv:1: the header must name the columns"),
])
def test_bad_source_is_one_line_at_validation(tmp_path, msdata, change, where):
    folder, _, _ = msdata
    (folder / "short.tsv").write_text("file\tS\nneutral_S0.ms\t0\nsweep_S400.ms\t400\n")
    (folder / "bad.tsv").write_text("file\tS\nneutral_S0.ms\t0\nsweep_S200.ms.gz\tstrong\n")
    (folder / "nohead.tsv").write_text("neutral_S0.ms\t0\n")
    source = {"ms": ["*.ms", "*.ms.gz"], "s": {"from_name": r"_S(?P<S>[0-9.]+)\.ms"}, **change}
    job = write_job(folder, "bad", {**BASE, "store": "x.zarr", "source": source})
    with pytest.raises(ManifestError, match=rf"^{job}: stages\[0\]\.simulate\.{where}") as err:
        prepare(job)
    one_line(str(err.value))


def test_validate_checks_headers_and_keys_in_one_line(tmp_path, msdata):
    folder, _, _ = msdata
    job = write_job(tmp_path, "nsam", {**by_name(folder), "store": "x.zarr", "n_haplotypes": 20})
    proc = run_cli("validate", job)
    assert proc.returncode == 2 and proc.stdout == ""
    assert one_line(proc.stderr).startswith(f"Error: {job}: stages[0].simulate.n_haplotypes: 20, but ")
    assert f"{folder / 'neutral_S0.ms'}:1 (its command line) says 16 haplotypes" in proc.stderr
    both = write_job(tmp_path, "both", {**by_name(folder), "store": "x.zarr", "classes": [0], "n_per_class": 1})
    with pytest.raises(ManifestError, match=r"simulate\.source: ms files bring their own S"):
        prepare(both)
    ok = run_cli("validate", write_job(tmp_path, "ok", {**by_name(folder), "store": "x.zarr"}))
    assert ok.returncode == 0 and "valid" in ok.stdout


def broken(tmp: Path, reps, what: str) -> Path:
    """An ms file with one defect (made from good text, never by hand)."""
    text = ms_text(f"ms {N_HAPS} 2", reps[:2]).splitlines()
    first_row = text.index("//") + 3  # //, segsites, positions, then rows
    if what == "char":
        text[first_row] = text[first_row][:-1] + "x"
    elif what == "short_row":
        text[first_row + 1] = text[first_row + 1][:-1]
    elif what == "few_rows":
        del text[first_row + 5]
    elif what == "positions":
        text[first_row - 1] = text[first_row - 1].rsplit(" ", 1)[0]
    elif what == "truncated":
        text[0] = f"ms {N_HAPS} 3"
    elif what == "segsites":
        text[first_row - 2] = "segsites: many"
    path = tmp / f"{what}.ms"
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.mark.parametrize("what, message", [
    ("char", r"char\.ms:7: haplotype characters other than 0/1"),
    ("short_row", r"short_row\.ms:8: haplotype has \d+ sites, 'segsites:' says \d+"),
    ("few_rows", r"few_rows\.ms:4: 15 haplotypes, expected 16 \(n_haplotypes\)"),
    ("positions", r"positions\.ms:6: \d+ positions but segsites: \d+"),
    ("truncated", r"truncated\.ms: the command line asks for 3 replicates, the file holds 2 \(truncated\?\)"),
    ("segsites", r"segsites\.ms:5: bad 'segsites:' line 'segsites: many'"),
])
def test_bad_ms_content_names_file_and_line(tmp_path, msdata, what, message):
    path = broken(tmp_path, msdata[2], what)
    with pytest.raises(InputDataError, match=rf"^{tmp_path}/{message}") as err:
        index_file(path, N_HAPS)
    one_line(str(err.value))


def test_a_bad_file_stops_the_stage_before_any_store_exists(tmp_path, msdata):
    folder, paths, reps = msdata
    bad = broken(tmp_path, reps, "char")
    params = {**BASE, "store": "bad.zarr", "source": {"ms": [str(paths[0]), str(bad)],
                                                       "s": {"table": str(tmp_path / "s.tsv")}}}
    (tmp_path / "s.tsv").write_text("file\tS\nneutral_S0.ms\t0\nchar.ms\t200\n")
    with pytest.raises(HpcPopError, match=rf"^{bad}:7: haplotype characters other than 0/1$"):
        run_job(tmp_path, "bad", params)
    assert not store_exists(str(tmp_path / "stores" / "bad.zarr"))
