"""The README stays a guide: short, its links and figures' files real, its commands the CLI's, its test
command the one CI runs (issue 28)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading (lower case, punctuation dropped, spaces to hyphens)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, skipping fenced code (where # starts a comment)."""
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 300


def test_relative_links_resolve():
    broken = []
    for doc in [README, *DOCS]:
        for target in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            full = (doc.parent / path).resolve() if path else doc
            if not full.exists() or (anchor and full.suffix == ".md" and anchor not in _anchors(full)):
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, broken


def test_measured_figures_link_their_json():
    """Every figure in the README's Measured section cites a result file that exists and parses."""
    text = README.read_text()
    section = text.split("## Measured", 1)[1].split("\n## ", 1)[0]
    bullets = [b for b in section.split("\n- ")[1:]]
    assert bullets
    for bullet in bullets:
        cited = re.findall(r"\(docs/bench/([\w.-]+\.json)\)", bullet)
        assert cited, bullet
        for name in cited:
            json.loads((REPO / "docs" / "bench" / name).read_text())


def test_command_table_is_the_cli():
    from hpc_popgen.bench import BENCHES
    from hpc_popgen.cli import COMMANDS

    text = README.read_text()
    table = [line for line in text.splitlines() if line.startswith("| `hpcpop ")]
    named = {line.split("`")[1].split()[1] for line in table}
    assert named == set(COMMANDS)
    bench_row = next(line for line in table if line.startswith("| `hpcpop bench "))
    assert set(bench_row.split("`")[1].split()[2].split("\\|")) == set(BENCHES)


def test_readme_jobs_exist():
    jobs = set(re.findall(r"jobs/[\w.-]+\.yaml", README.read_text())) - {"jobs/x.yaml"}  # x: the error example
    assert jobs
    for job in jobs:
        assert (REPO / job).is_file(), job


def test_ci_runs_the_readme_test_command():
    text = README.read_text()
    assert "make run " in text and "make test " in text
    assert "make test" in (REPO / ".ci" / "run").read_text().splitlines()
    targets = re.findall(r"^(\w+):", (REPO / "Makefile").read_text(), re.M)
    assert {"run", "test"} <= set(targets)
