"""Manifest validation: schema errors name the key path, unknown keys fail, YAML never runs code."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO, run_cli, write_yaml

from hpc_popgen.errors import ManifestError
from hpc_popgen.manifest import format_path, load_manifest, parse_manifest


def minimal(**over):
    data = {"name": "t", "seed": 7, "stages": [{"simulate": {"store": "x.zarr", "classes": [0, 200], "n_per_class": 4}}]}
    data.update(over)
    return data


def test_format_path_reads_like_python():
    assert format_path(["stages", 0, "simulate", "n_per_class"]) == "stages[0].simulate.n_per_class"
    assert format_path([]) == "(top level)"


def test_defaults_are_resolved_and_recorded():
    m = parse_manifest(minimal(), source="m.yaml")
    assert m.profile == "local"
    assert m.storage == "runs"
    assert m.stages[0].name == "simulate"
    assert m.to_dict()["profile"] == "local"


def test_misspelt_top_level_key_is_named(tmp_path):
    path = write_yaml(tmp_path / "m.yaml", {**minimal(), "seeed": 3})
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    msg = str(err.value)
    assert "seeed" in msg and str(path) in msg and "\n" not in msg


SIM = {"simulate": {"store": "x.zarr", "classes": [0, 200], "n_per_class": 4}}


@pytest.mark.parametrize("stages, error", [
    ([{**SIM, "resources": {"coers": 2}}], r"stages\[0\]\.resources\.coers: unknown key 'coers'"),
    ([{**SIM, "resources": {"cores": -5}}], r"stages\[0\]\.resources\.cores: -5 is less than the minimum of 1"),
    ([{"name": "x"}], r"stages\[0\]: a stage needs exactly one kind key"),
    ([{**SIM, "demography": {}}], r"stages\[0\]: a stage needs exactly one kind key .*found: simulate, demography"),
    ([{"name": "a", **SIM}, {"name": "a", **SIM}], r"stages\[1\]\.name: 'a' is used"),
], ids=["unknown-resource", "bad-value", "no-kind", "two-kinds", "duplicate-name"])
def test_stage_errors_name_the_key_path(stages, error):
    with pytest.raises(ManifestError, match=rf"^m\.yaml: {error}"):
        parse_manifest(minimal(stages=stages), source="m.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    evil.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nseed: 1\nstages: []\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(evil)
    assert not marker.exists()


def test_broken_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nseed: [1,\n")
    with pytest.raises(ManifestError, match=r"bad.yaml: not valid YAML \(line \d+"):
        load_manifest(p)


def test_cli_validate_prints_one_line_error(tmp_path):
    path = write_yaml(tmp_path / "m.yaml", {**minimal(), "stages": [{"simulate": {"store": "x.zarr", "classes": [0, 200], "n_per_class": 4}, "resorces": {}}]})
    proc = run_cli("validate", path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "stages[0].resorces" in lines[0] and "unknown key" in lines[0]


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_job_in_repo_is_valid(job):
    from hpc_popgen.pipeline import prepare

    m = prepare(job).manifest  # the schemas and every stage's checks
    assert m.name and m.stages
    yaml.safe_dump(m.to_dict())  # the resolved form is plain data


def test_jobs_are_shipped():
    assert len(list((REPO / "jobs").glob("*.yaml"))) >= 5


def test_exponent_floats_are_numbers_not_strings(tmp_path):
    from hpc_popgen.manifest import read_yaml

    p = tmp_path / "f.yaml"
    p.write_text("a: 4.04e6\nb: 1e-8\nc: -2E+3\nd: 1.5e-8\ne: e5\nf: 12\n")
    got = read_yaml(p)
    assert got == {"a": 4.04e6, "b": 1e-8, "c": -2000.0, "d": 1.5e-8, "e": "e5", "f": 12}
    assert isinstance(got["b"], float) and isinstance(got["f"], int)


def test_defaults_are_filled_inside_the_matching_oneof_branch():
    from hpc_popgen.manifest import fill_defaults, load_schema

    schema = load_schema("stages/simulate.schema.json")
    ref = fill_defaults({"store": "x", "demography": {"from_stage": "d", "population": "CEU"}}, schema)
    assert ref["demography"] == {"from_stage": "d", "population": "CEU", "structure": "best"}
    ens = fill_defaults({"store": "x", "demography": {"ensemble": {"demes": ["a.yaml"]}, "population": "B"}}, schema)
    assert ens["demography"]["ensemble"] == {"demes": ["a.yaml"], "top": 3, "weights": "equal"}
    assert fill_defaults({"store": "x"}, schema)["demography"] == "constant"  # a plain default, not a branch
