"""Probes of issue 25, point 6: ``hpcpop predict`` refuses what it cannot score in one line, exit 2.

Table-driven: each bad ``.npy`` image, ms file or VCF region gives exit 2 and one ``Error:`` line naming the
file (and the line, pixel or count at fault), no traceback and no posterior on stdout; each good one gives a
posterior per region. The model is a real (untrained, seeded) binary bundle for 16x16 images that records 16
haplotypes per training image, as a trained bundle records its store's ``n_haplotypes``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hpc_popgen.cli import main

N_HAPS, SIZE, N_SITES = 16, 16, 12


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A real binary bundle (random seeded weights) for 16x16 images of 16 haplotypes."""
    from hpc_popgen.images import ImageConfig
    from hpc_popgen.train.models import ModelConfig
    from hpc_popgen.train.saved import save_untrained_bundle

    mc = ModelConfig(preset="binary", filters=(4,), kernel_size=3, dense=(8,), l1=0.0, l2=0.0, dropout=0.0,
                     optimizer="adam", learning_rate=1e-3, paper=False)
    image = ImageConfig(polarisation="major_minor", maf=0.0, sort="rows", size=(SIZE, SIZE), resize="resize")
    return save_untrained_bundle(tmp_path_factory.mktemp("probe-model") / "model", image.to_dict(), mc, seed=3,
                                 n_haplotypes=N_HAPS)


def predict(model: Path, *args) -> tuple[int, str, str]:
    """``hpcpop predict MODEL ARGS`` in this process: exit code, stdout, stderr."""
    res = CliRunner().invoke(main, ["predict", str(model), *map(str, args), "--mc-samples", "0"])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # an unexpected exception is a failed probe, with its traceback
    return res.exit_code, res.stdout, res.stderr


def refused(code: int, out: str, err: str) -> str:
    """The one ``Error:`` line of a refused predict: exit 2, no traceback, nothing on stdout."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), (code, err)
    assert "Traceback" not in err and not out.strip(), (out, err)
    return lines[0]


# --- .npy images ------------------------------------------------------------------------------------------

def _img(value=0, dtype=np.float64, shape=(SIZE, SIZE), at=None) -> np.ndarray:
    """Zeros of ``shape`` with ``value`` at ``at`` (a pixel index) or everywhere (at None)."""
    x = np.zeros(shape, dtype=dtype)
    if at is None:
        x[...] = value
    else:
        x[at] = value
    return x


NAN, INF = float("nan"), float("inf")
# (case id, array, what the line says after "Error: FILE: ")
NPY_BAD = [
    ("all_nan", _img(NAN), "image values must be 0/1; image 0 row 0 column 0 is nan (256 such pixel(s))"),
    ("one_nan", _img(NAN, at=(3, 5)), "image 0 row 3 column 5 is nan (1 such pixel(s))"),
    ("nan_in_second_image", _img(NAN, shape=(2, SIZE, SIZE), at=(1, 0, 2)), "image 1 row 0 column 2 is nan"),
    ("nan_float32", _img(NAN, np.float32, at=(0, 0)), "row 0 column 0 is nan"),
    ("half", _img(0.5), "image 0 row 0 column 0 is 0.5 (256 such pixel(s))"),
    ("one_half_pixel", _img(0.5, at=(15, 15)), "image 0 row 15 column 15 is 0.5 (1 such pixel(s))"),
    ("near_one", _img(0.999999, at=(2, 2)), "row 2 column 2 is 0.999999"),
    ("two", _img(2, np.uint8, at=(1, 1)), "row 1 column 1 is 2"),
    ("minus_one", _img(-1, np.int64, at=(0, 4)), "row 0 column 4 is -1"),
    ("inf", _img(INF, at=(7, 7)), "row 7 column 7 is inf"),
    ("minus_inf", _img(-INF, at=(7, 8)), "row 7 column 8 is -inf"),
    ("counts_255", _img(255, np.uint8), "row 0 column 0 is 255"),
    ("text", np.full((SIZE, SIZE), "1"), "image values must be 0/1 numbers, not text (<U1)"),
    ("bytes", np.full((SIZE, SIZE), b"1"), "image values must be 0/1 numbers, not text (|S1)"),
    ("complex", _img(0, np.complex128), "image values must be 0/1 numbers, not complex128"),
    ("datetime", np.zeros((SIZE, SIZE), dtype="datetime64[s]"), "image values must be 0/1 numbers, not datetime64[s]"),
    ("wrong_size", _img(0, shape=(8, 8)), "images of shape [8, 8] do not match the model's [16, 16]"),
    ("wrong_width", _img(0, shape=(3, SIZE, 32)), "images of shape [16, 32] do not match the model's [16, 16]"),
    ("one_dimension", _img(0, shape=(SIZE,)), "images of shape [16] do not match the model's [16, 16]"),
    ("three_channels", _img(0, shape=(1, SIZE, SIZE, 3)), "images of shape [16, 16, 3] do not match"),
    ("scalar", np.array(1.0), "images of shape [] do not match"),
    ("empty_stack", _img(0, np.uint8, shape=(0, SIZE, SIZE)), "holds no images (shape [0, 16, 16])"),
]


@pytest.mark.parametrize("array,says", [c[1:] for c in NPY_BAD], ids=[c[0] for c in NPY_BAD])
def test_a_bad_npy_image_is_one_line(model, tmp_path, array, says):
    path = tmp_path / "x.npy"
    np.save(path, array)
    line = refused(*predict(model, "--image", path))
    assert line.startswith(f"Error: {path}: ") and says in line, line


NPY_UNREADABLE = [
    ("object_array", lambda p: np.save(p, np.array([None, 1], dtype=object), allow_pickle=True),
     "not a readable .npy array: Object arrays cannot be loaded when allow_pickle=False"),
    ("text_file", lambda p: p.write_text("0 1 0\n1 0 1\n"), "not a readable .npy array"),
    ("truncated", lambda p: (np.save(p, _img(0)), p.write_bytes(p.read_bytes()[:200])), "not a readable .npy array"),
    ("empty_file", lambda p: p.write_bytes(b""), "not a readable .npy array"),
    ("missing", lambda p: None, "not a readable .npy array"),
    ("npz_archive", lambda p: p.write_bytes(_npz_bytes()), "not a readable .npy array"),
]


def _npz_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, a=_img(0))
    return buf.getvalue()


@pytest.mark.parametrize("make,says", [c[1:] for c in NPY_UNREADABLE], ids=[c[0] for c in NPY_UNREADABLE])
def test_an_unreadable_npy_is_one_line(model, tmp_path, make, says):
    path = tmp_path / "x.npy"
    make(path)
    line = refused(*predict(model, "--image", path))
    assert line.startswith(f"Error: {path}: ") and says in line, line


@pytest.mark.parametrize("array,n", [
    (_img(1, bool), 1), (_img(1, np.uint8, at=(0, 0)), 1), (_img(1.0, np.float32, shape=(3, SIZE, SIZE)), 3),
    (_img(1, np.int64, shape=(2, SIZE, SIZE, 1), at=(1, 2, 3, 0)), 2), (_img(-0.0), 1),
], ids=["bool", "uint8", "float32_stack", "int64_channel", "negative_zero"])
def test_good_npy_images_are_scored(model, tmp_path, array, n):
    np.save(tmp_path / "x.npy", array)
    code, out, err = predict(model, "--image", tmp_path / "x.npy")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == n and all(0 <= r["posterior"][1] <= 1 for r in results)


# --- ms files ---------------------------------------------------------------------------------------------

def ms_text(header: str | None = f"ms {N_HAPS} 2 -t 5", reps: int = 2, n_haps: int = N_HAPS, sites: int = N_SITES,
            positions: str | None = None, segsites: str | None = None, row: str | None = None) -> str:
    """An ms file: the command line, a seed line, then ``reps`` replicates; one piece may be replaced
    (the first replicate's positions, segsites or first haplotype row)."""
    rng = np.random.default_rng(5)
    out = [header, "1 2 3", ""] if header is not None else []
    for r in range(reps):
        pos = " ".join(f"{v:.5f}" for v in np.sort(rng.random(sites)))
        rows = ["".join(map(str, (rng.random(sites) < 0.3).astype(int))) for _ in range(n_haps)]
        if r == 0:
            pos = positions if positions is not None else pos
            rows[0] = row if row is not None else rows[0]
        out += ["//", f"segsites: {segsites if (segsites is not None and r == 0) else sites}", f"positions: {pos}",
                *rows, ""]
    return "\n".join(out) + "\n"


SORTED = [f"{(k + 1) / 20:.5f}" for k in range(N_SITES)]


def _pos(**at) -> str:
    """The sorted positions with some replaced: ``_pos(i3='nan')`` puts nan at index 3."""
    p = list(SORTED)
    for k, v in at.items():
        p[int(k[1:])] = v
    return " ".join(p)


# (case id, file text, the line's location after "Error: FILE", what it says); line 6 is the first positions line
MS_BAD = [
    ("header_promises_more", ms_text(f"ms {N_HAPS} 3 -t 5"), ": ", "command line asks for 3 replicates, the file holds 2"),
    ("msms_header_promises_more", ms_text(f"msms -N 10000 -ms {N_HAPS} 5 -t 5"), ": ", "asks for 5 replicates"),
    ("discoal_header_promises_more", ms_text(f"discoal {N_HAPS} 9 80000 -t 5"), ": ", "asks for 9 replicates"),
    ("positions_all_nan", ms_text(positions=" ".join(["nan"] * N_SITES)), ":6: ", "positions must be finite numbers (found nan)"),
    ("positions_nan_inside", ms_text(positions=_pos(i4="nan")), ":6: ", "finite numbers (found nan)"),
    ("positions_inf_last", ms_text(positions=_pos(i11="inf")), ":6: ", "finite numbers (found inf)"),
    ("positions_minus_inf_first", ms_text(positions=_pos(i0="-inf")), ":6: ", "finite numbers (found -inf)"),
    ("positions_overflow", ms_text(positions=_pos(i11="1e400")), ":6: ", "finite numbers (found inf)"),
    ("positions_unsorted", ms_text(positions=_pos(i0="0.90000")), ":6: ", "positions must be increasing fractions"),
    ("positions_swapped", ms_text(positions=_pos(i5="0.25000", i6="0.20000")), ":6: ", "must be increasing"),
    ("positions_above_one", ms_text(positions=_pos(i11="1.50000")), ":6: ", "increasing fractions of the region in [0, 1]"),
    ("positions_negative", ms_text(positions=_pos(i0="-0.10000")), ":6: ", "in [0, 1]"),
    ("positions_not_numbers", ms_text(positions=_pos(i2="x")), ":6: ", "positions are not numbers"),
    ("positions_too_few", ms_text(positions=" ".join(SORTED[:-1])), ":6: ", "11 positions but segsites: 12"),
    ("positions_too_many", ms_text(positions=" ".join([*SORTED, "0.99000"])), ":6: ", "13 positions but segsites: 12"),
    ("segsites_text", ms_text(segsites="many"), ":5: ", "bad 'segsites:' line"),
    ("segsites_negative", ms_text(segsites="-3"), ":5: ", "negative 'segsites:' -3"),
    ("row_too_short", ms_text(row="0" * (N_SITES - 1)), ":7: ", "haplotype has 11 sites, 'segsites:' says 12"),
    ("row_not_binary", ms_text(row="0" * (N_SITES - 1) + "2"), ":7: ", "haplotype characters other than 0/1"),
    ("too_few_haplotypes", ms_text(f"ms {N_HAPS + 4} 2 -t 5"), ":4: ", "16 haplotypes, expected 20 (n_haplotypes)"),
    ("too_many_haplotypes", ms_text(f"ms {N_HAPS - 4} 2 -t 5"), ":19: ", "more than 12 haplotypes (n_haplotypes)"),
    ("no_replicates", f"ms {N_HAPS} 2 -t 5\n1 2 3\n", ": ", "no replicates found (no '//' line)"),
    ("empty_file", "", ": ", "no replicates found"),
    ("a_vcf_not_ms", "##fileformat=VCFv4.2\n#CHROM\tPOS\n", ": ", "no replicates found"),
    ("no_positions_line", ms_text().replace("positions: ", "positionz: ", 1), ":4: ", "without a 'positions:' line"),
    ("no_segsites_line", ms_text().replace("segsites: ", "segsitez: ", 1), ":4: ", "expected a 'segsites:' line"),
    ("haplotype_count_not_trained", ms_text(f"ms {N_HAPS * 2} 2 -t 5", n_haps=N_HAPS * 2), ":4: ",
     "32 haplotypes; the model was trained on 16 (n_haplotypes of its training store"),
    ("haplotype_count_no_header", ms_text(None, n_haps=N_HAPS - 6), ":1: ", "10 haplotypes; the model was trained on 16"),
]


@pytest.mark.parametrize("text,where,says", [c[1:] for c in MS_BAD], ids=[c[0] for c in MS_BAD])
def test_a_bad_ms_file_is_one_line(model, tmp_path, text, where, says):
    path = tmp_path / "x.ms"
    path.write_text(text)
    line = refused(*predict(model, "--ms", path))
    assert line.startswith(f"Error: {path}{where}") and says in line, line


@pytest.mark.parametrize("make,says", [
    ("truncated_gzip", "cannot read"), ("missing", "file not found"), ("binary", "no replicates found"),
], ids=["truncated_gzip", "missing", "binary"])
def test_an_unreadable_ms_file_is_one_line(model, tmp_path, make, says):
    path = tmp_path / "x.ms"
    if make == "truncated_gzip":
        path.write_bytes(gzip.compress(ms_text().encode())[:60])
    elif make == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    line = refused(*predict(model, "--ms", path))
    assert line.startswith(f"Error: {path}: ") and says in line, line


@pytest.mark.parametrize("text,n", [
    (ms_text(), 2), (ms_text(f"ms {N_HAPS} 1 -t 5"), 2),  # more replicates than asked: concatenated runs
    (ms_text(None), 2), (ms_text(positions=_pos(i5="0.25000", i6="0.25000")), 2),  # equal positions (rounding)
    (ms_text(segsites="0", positions="", row=""), 2),
], ids=["ms", "concatenated", "no_header", "equal_positions", "no_sites"])
def test_good_ms_files_are_scored_per_replicate(model, tmp_path, text, n):
    path = tmp_path / "x.ms"
    path.write_text(text)
    code, out, err = predict(model, "--ms", path)
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["region"] for r in results] == [f"{path} replicate {i + 1}" for i in range(n)]


# --- VCF regions ------------------------------------------------------------------------------------------

def test_a_vcf_region_of_another_haplotype_count_is_one_line(model, tmp_path):
    """10 diploid samples are 20 haplotypes; the model was trained on 16: refused. 8 samples are scored."""
    rng = np.random.default_rng(2)
    header = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(f"s{i}" for i in range(10))
    rows = [f"chr1\t{1000 + 10 * j}\t.\tA\tC\t.\tPASS\t.\tGT\t"
            + "\t".join(f"{int(rng.random() < 0.3)}|{int(rng.random() < 0.3)}" for _ in range(10)) for j in range(30)]
    vcf = tmp_path / "r.vcf"
    vcf.write_text("\n".join(["##fileformat=VCFv4.2", header, *rows]) + "\n")
    line = refused(*predict(model, "--vcf", vcf, "--region", "chr1:1000-1400"))
    assert line.startswith(f"Error: {vcf}: 20 haplotypes; the model was trained on 16"), line
    code, out, err = predict(model, "--vcf", vcf, "--region", "chr1:1000-1400",
                             "--samples", ",".join(f"s{i}" for i in range(8)))
    assert code == 0, err
    assert json.loads(out)["results"][0]["region"] == f"{vcf}:chr1:1000-1400"
