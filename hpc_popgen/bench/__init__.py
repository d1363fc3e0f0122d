"""``hpcpop bench NAME``: benchmarks that print one JSON object (speed and memory targets live here).

Each benchmark is a module of this package exposing a click command named ``command``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import LazyGroup

BENCHES = {
    "simulate": "bench.simulate:command",
    "loader": "bench.loader:command",
    "ga": "bench.ga:command",
    "ga3": "bench.ga3:command",
    "ga4": "bench.ga4:command",
    "engines": "bench.engines:command",
    "ms": "bench.ms:command",
    "scale": "bench.scale:command",
    "train": "bench.train:command",
    "scan": "bench.scan:command",
    "modelcheck": "bench.modelcheck:command",
    "calibration": "bench.calibration:command",
    "uncertainty": "bench.uncertainty:command",
    "forward": "bench.forward:command",
    "genome-scan": "bench.genome_scan:command",
}


def refuse_full_keep(keep: Path) -> None:
    """``--keep`` names a folder for a benchmark's files: a new or empty one, never one holding other files."""
    if keep.is_dir() and any(keep.iterdir()):
        raise click.BadParameter(f"{keep}: not empty; give a new or empty folder", param_hint="--keep")


@click.group(cls=LazyGroup, lazy=BENCHES)
def bench() -> None:
    """Benchmarks; each prints one JSON object on stdout."""


__all__ = ["bench"]
