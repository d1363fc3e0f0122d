"""Property-based probes (issue 25, point 8): the shipped manifests (``jobs/*.yaml``) and packaged profiles,
mutated by hypothesis (a key dropped or renamed, a value retyped, NaN, infinite, negative or huge), are
either valid or refused by ``hpcpop validate`` in one line naming the file and the key; never another
exception, never a traceback, and validate writes nothing.

Validation runs in this process (click's runner, as tests/test_probe_validate.py calls it). The examples are
bounded and derandomized (the same on every run, no example database): about 12 s of CPU in all.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, note, settings
from hypothesis import strategies as st

from hpc_popgen.cli import main
from hpc_popgen.manifest import format_path

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
PROFILES = sorted((ROOT / "hpc_popgen" / "cluster_profiles").glob("*.yaml"))
EXAMPLES = 25  # per property; one validate is about 25 ms of CPU
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True)

RETYPED = st.sampled_from(["text", "", 7, 0, 1.5, True, None, [1, 2], [], {"k": 1}, {}])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE = st.sampled_from([10 ** 30, 2 ** 63, 1e308, 10 ** 400])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder laid out as the repository is around ``jobs/``, so the manifests' relative inputs resolve
    (``data/...``, ``../hpc_popgen/data/...``): ``WORK/jobs/data`` and ``WORK/hpc_popgen`` are links."""
    work = tmp_path_factory.mktemp("mutated")
    (work / "jobs").mkdir()
    (work / "jobs" / "data").symlink_to(ROOT / "jobs" / "data")
    (work / "hpc_popgen").symlink_to(ROOT / "hpc_popgen")
    return work


def validate(path: Path) -> tuple[int, list[str], BaseException | None]:
    """``hpcpop validate PATH`` in this process: exit code, the non-empty lines printed, an unexpected exception."""
    res = CliRunner().invoke(main, ["validate", str(path)])
    exc = res.exception if res.exception is not None and not isinstance(res.exception, SystemExit) else None
    return res.exit_code, [ln for ln in res.output.splitlines() if ln.strip()], exc


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a YAML tree (mapping keys and list indices), parents before children."""
    out: list[tuple] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(key_paths(value, (*prefix, key)))
    return out


def mutate(data: Any, path: tuple, op: str, value: Any = None) -> Any:
    """Apply one mutation at ``path`` in place: drop, rename (a typo: one letter added), or set ``value``."""
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    leaf = path[-1]
    if op == "drop":
        del parent[leaf]
    elif op == "rename" and isinstance(parent, dict):
        parent[f"{leaf}x"] = parent.pop(leaf)
    elif op == "negative":
        old = parent[leaf]
        number = isinstance(old, (int, float)) and not isinstance(old, bool)
        parent[leaf] = -abs(old) - 1 if number else -1
    else:
        parent[leaf] = value
    return data


def mutation(values: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """(manifest file, key path, value) drawn together: any shipped manifest, any key in it."""
    @st.composite
    def draw(d: st.DrawFn) -> tuple[Path, tuple, Any]:
        job = d(st.sampled_from(JOBS))
        path = d(st.sampled_from(key_paths(yaml.safe_load(job.read_text()))))
        return job, path, d(values) if values is not None else None

    return draw()


def check_outcome(path: Path, key: tuple, code: int, lines: list[str], exc: BaseException | None) -> None:
    """Valid (exit 0), or one ``Error: FILE: ...`` line naming the mutated key, a key above it, or its name."""
    assert exc is None, f"{type(exc).__name__}: {exc}"
    if code == 0:
        return
    assert code == 2 and len(lines) == 1, (code, lines)
    line = lines[0]
    assert line.startswith(f"Error: {path}: ") and "Traceback" not in line, line
    names = {format_path(list(key[:i])) for i in range(1, len(key) + 1)} | {str(key[-1])}
    assert any(n in line for n in names), f"{line!r} names none of {sorted(names)}"


def run_mutation(workdir: Path, job: Path, key: tuple, op: str, value: Any = None) -> None:
    data = mutate(yaml.safe_load(job.read_text()), key, op, value)
    path = workdir / "jobs" / job.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    note(f"{job.name}: {op} {format_path(list(key))} -> {value!r}")
    before = sorted(p.name for p in (workdir / "jobs").iterdir())
    check_outcome(path, key, *validate(path))
    assert sorted(p.name for p in (workdir / "jobs").iterdir()) == before, "validate wrote nothing"


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_every_shipped_manifest_is_valid_where_the_properties_mutate_it(workdir, job):
    path = workdir / "jobs" / job.name
    path.write_text(job.read_text())
    code, lines, exc = validate(path)
    assert exc is None and code == 0 and lines[-1].startswith(f"{path}: valid;"), (code, lines, exc)


@BOUNDED
@given(m=mutation())
def test_a_dropped_key(workdir, m):
    run_mutation(workdir, m[0], m[1], "drop")


@BOUNDED
@given(m=mutation())
def test_a_renamed_key(workdir, m):
    run_mutation(workdir, m[0], m[1], "rename")


@BOUNDED
@given(m=mutation(RETYPED))
def test_a_retyped_value(workdir, m):
    run_mutation(workdir, *m[:2], "set", m[2])


@BOUNDED
@given(m=mutation(NON_FINITE))
def test_a_nan_or_infinite_value(workdir, m):
    run_mutation(workdir, *m[:2], "set", m[2])


@BOUNDED
@given(m=mutation())
def test_a_negative_value(workdir, m):
    run_mutation(workdir, m[0], m[1], "negative")


@BOUNDED
@given(m=mutation(HUGE))
def test_a_huge_value(workdir, m):
    run_mutation(workdir, *m[:2], "set", m[2])


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True)
@given(job=st.sampled_from(JOBS), cut=st.floats(0.05, 0.95))
def test_a_truncated_manifest(workdir, job, cut):
    """A manifest cut short anywhere (a partial copy, a full disk): valid, or one line naming the file."""
    text = job.read_text()
    path = workdir / "jobs" / job.name
    path.write_text(text[:int(len(text) * cut)])
    code, lines, exc = validate(path)
    assert exc is None, f"{type(exc).__name__}: {exc}"
    assert code == 0 or (code == 2 and len(lines) == 1 and lines[0].startswith(f"Error: {path}: ")), (code, lines)


@settings(max_examples=2 * EXAMPLES, deadline=None, database=None, derandomize=True)
@given(d=st.data())
def test_a_mutated_packaged_profile_named_by_a_manifest(workdir, d):
    """The packaged profiles, mutated the same ways, named by a valid manifest: valid, or one line naming the
    profile file and the key."""
    source = d.draw(st.sampled_from(PROFILES))
    data = yaml.safe_load(source.read_text())
    key = d.draw(st.sampled_from(key_paths(data)))
    op = d.draw(st.sampled_from(["drop", "rename", "set", "negative"]))
    value = d.draw(st.one_of(RETYPED, NON_FINITE, HUGE)) if op == "set" else None
    note(f"{source.name}: {op} {format_path(list(key))} -> {value!r}")
    profile = workdir / f"{source.stem}.yaml"
    profile.write_text(yaml.safe_dump(mutate(data, key, op, value), sort_keys=False))
    job = workdir / "jobs" / "gadma_yri_ceu.yaml"
    job.write_text((ROOT / "jobs" / "gadma_yri_ceu.yaml").read_text().replace("profile: local", f"profile: {profile}"))
    code, lines, exc = validate(job)
    assert exc is None, f"{type(exc).__name__}: {exc}"
    if code:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and str(profile) in lines[0], lines
        names = {format_path(list(key[:i])) for i in range(1, len(key) + 1)} | {str(key[-1])}
        assert any(n in lines[0] for n in names), f"{lines[0]!r} names none of {sorted(names)}"
