"""Bad input a new user gives: one line naming the file, key or value, exit 2, nothing partial written."""

from __future__ import annotations

import pytest
from helpers import YRI_CEU, run_cli, write_yaml


def one_error_line(proc) -> str:
    """The single ``Error:`` line of a refused command (exit 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def demography_job(tmp_path, **inp):
    return write_yaml(tmp_path / "job.yaml", {"name": "d", "seed": 1, "storage": "runs", "stages": [
        {"demography": {"input": inp, "initial_structure": [1, 1], "final_structure": [1, 1]}}]})


def spectrum_lines() -> list[str]:
    return YRI_CEU.read_text().splitlines()


@pytest.mark.parametrize("header,cut,needle", [
    ("21 21", 400, "data line has 400 values but the header's dimensions 21 x 21 need 441"),  # truncated
    ("22 21", None, "data line has 441 values but the header's dimensions 22 x 21 need 462"),  # header too large
])
def test_fs_whose_values_do_not_fill_its_header_is_refused(tmp_path, header, cut, needle):
    head, data, *rest = spectrum_lines()
    values = data.split()[:cut] if cut else data.split()
    (tmp_path / "x.fs").write_text("\n".join([header, " ".join(values), *rest]) + "\n")
    job = demography_job(tmp_path, afs="x.fs")
    for command in (["validate", job], ["submit", job, "--run-dir", tmp_path / "run"]):
        line = one_error_line(run_cli(*command))
        assert "stages[0].demography.input.afs" in line and "x.fs" in line and needle in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("inp,needle", [
    ({"afs": "missing.fs"}, "missing.fs: AFS file not found"),
    ({"afs": "yri_ceu.fs", "populations": ["YRI", "CEU", "CHB"]},
     "3 population names ['YRI', 'CEU', 'CHB'] given for a 2-population spectrum"),
])
def test_validate_checks_the_afs_file_against_populations(tmp_path, inp, needle):
    (tmp_path / "yri_ceu.fs").write_text(YRI_CEU.read_text())
    line = one_error_line(run_cli("validate", demography_job(tmp_path, **inp)))
    assert "stages[0].demography.input.afs" in line and needle in line, line


def test_afs_whose_own_names_differ_from_populations_is_refused(tmp_path):
    head, *rest = spectrum_lines()
    (tmp_path / "named.fs").write_text("\n".join([f'{head.strip()} unfolded "YRI" "CEU"', *rest]) + "\n")
    ok = run_cli("validate", demography_job(tmp_path, afs="named.fs", populations=["YRI", "CEU"]))
    assert ok.returncode == 0, ok.stderr
    line = one_error_line(run_cli("validate", demography_job(tmp_path, afs="named.fs", populations=["CEU", "YRI"])))
    assert "names its populations ['YRI', 'CEU'], not ['CEU', 'YRI']" in line


def test_manifest_that_is_not_utf8(tmp_path):
    job = tmp_path / "latin1.yaml"
    job.write_bytes("name: caf\u00e9\nseed: 1\nstages: []\n".encode("latin-1"))
    line = one_error_line(run_cli("validate", job))
    assert f"{job}: manifest is not UTF-8 text (byte 0xe9 at offset 9)" in line


def test_zarr_array_that_is_not_ours(tmp_path):
    import zarr

    zarr.create_array(str(tmp_path / "arr.zarr"), shape=(4,), dtype="i4")
    zarr.open_group(str(tmp_path / "grp.zarr"), mode="w").attrs["other"] = 1
    line = one_error_line(run_cli("show", tmp_path / "arr.zarr", "--png", tmp_path / "x.png"))
    assert "arr.zarr: a Zarr array, not an hpc_popgen image store" in line
    line = one_error_line(run_cli("show", tmp_path / "grp.zarr", "--png", tmp_path / "x.png"))
    assert "grp.zarr: a Zarr group but not an hpc_popgen image store" in line


def test_unwritable_png_path_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    for png, needle in ((tmp_path / "file" / "x.png", "is not a folder"), (tmp_path / "no" / "x.png", "does not exist"),
                        (tmp_path, "is a directory")):
        line = one_error_line(run_cli("show", tmp_path / "nostore.zarr", "--png", png))
        assert "--png" in line and str(png) in line and needle in line, line


def test_status_exits_nonzero_for_a_failed_run(tmp_path, local_profile):
    from test_platform_runs import manifest

    run = tmp_path / "run"
    run_cli("submit", manifest(tmp_path, local_profile, n_per_class=2, shard_images=2), "--run-dir", run,
            "--no-progress", check=True)
    assert run_cli("status", run).returncode == 0
    import json

    rep = json.loads((run / "report.json").read_text())
    rep["status"], rep["stages"][0]["status"] = "failed", "failed"
    (run / "report.json").write_text(json.dumps(rep))
    proc = run_cli("status", run)
    assert proc.returncode == 1 and "run failed (stage simulate)" in proc.stderr
    assert run_cli("status", run, "--json").returncode == 1
