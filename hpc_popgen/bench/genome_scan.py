"""``hpcpop bench genome-scan``: the shipped job ``jobs/genome_scan.yaml`` as shipped, on its own data, and
whether its scan finds the sweep planted in that data. Prints ONE JSON object.

The job (VCF -> AFS -> GA -> simulate under the inferred history -> CNN -> scan with a neutral null) runs
in a temporary folder (or ``--keep``), on the local profile. The data is a held-out chromosome: nothing in
the job was tuned on it. Targets: the top window by Bayes factor lies within two window sizes of the planted
site (``top_near_sweep``) with q < 0.05 (``top_q``), the top candidate region holds the site, and no window
more than 400 kb from it is a candidate (``far_candidates`` = 0: a sweep of s = 0.02 at r = 1e-8 lowers
diversity some 300 kb either side). The CI test runs the same job at reduced sizes for its behaviour only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from ..paths import REPO_ROOT
from . import refuse_full_keep

JOB = REPO_ROOT / "jobs" / "genome_scan.yaml"
FAR_BP = 400_000


def scan_verdict(table: dict[str, np.ndarray], candidates: list[list[str]], position: int, window: int,
                 fdr: float = 0.05) -> dict:
    """Where the scan's top window and candidate regions lie against the planted ``position``."""
    bf = np.asarray(table["bayes_factor"])
    top = int(np.argmax(bf))  # the first of equal maxima
    start, end = float(table["start"][top]), float(table["end"][top])
    reach = 2 * window
    centre = (np.asarray(table["start"]) + np.asarray(table["end"])) / 2
    q = np.asarray(table["q"], dtype=float)
    far = np.abs(centre - position) > FAR_BP
    rows = candidates[1:] if candidates and candidates[0][:1] == ["chrom"] else candidates
    best = max(rows, key=lambda r: float(r[4])) if rows else None
    out = {"top_window": [int(start), int(end)], "top_distance_bp": int(max(0.0, start - position, position - end)),
           "top_near_sweep": bool(end >= position - reach and start <= position + reach),
           "top_q": round(float(q[top]), 4), "far_candidates": int(np.sum(q[far] < fdr)),
           "candidate_regions": len(rows),
           "top_region_holds_site": bool(best is not None and int(best[1]) <= position <= int(best[2])),
           "windows": len(bf)}
    out["target_met"] = bool(out["top_near_sweep"] and out["top_q"] < fdr and out["far_candidates"] == 0
                             and out["top_region_holds_site"])
    return out


def run_bench(job: Path, folder: Path) -> dict:
    """Copy ``job`` and its data into ``folder``, run it, and judge its scan against the data's truth."""
    from ..infer.scan import read_scan
    from ..manifest import load_manifest
    from ..pipeline import create_run, execute

    data = job.parent / "data" / "genome_scan"
    shutil.copytree(data, folder / "data" / "genome_scan")
    copied = Path(shutil.copy(job, folder / job.name))  # its storage and data paths: under folder
    truth = json.loads((data / "chrom.truth.json").read_text())
    t0 = time.perf_counter()
    report = execute(create_run(copied, run_dir=folder / "run"), progress=False)
    wall = time.perf_counter() - t0
    if report["status"] != "completed":
        raise click.ClickException(f"the job ended {report['status']}; see {folder / 'run' / 'hpcpop.log'}")
    run = folder / "run"
    window = int(load_manifest(copied).stage("scan").params["window"]["size"])
    cand = [ln.split("\t") for ln in (run / "scan" / "candidates.tsv").read_text().splitlines()]
    out = scan_verdict(read_scan(run / "scan" / "scan.tsv"), cand, int(truth["sweep_position"]), window)
    metrics = {s["name"]: s.get("metrics", {}) for s in report["stages"]}
    best = json.loads((run / "demography" / "results.json").read_text())["structures"][0]
    out.update({
        "wall_s": round(wall, 1),
        "stage_s": {s["name"]: s.get("seconds") for s in report["stages"]},
        "demography_loglik": best.get("loglik"),
        "simulate_engine": metrics["simulate"].get("engine", {}).get("name"),
        "best_val_binary_accuracy": metrics["train"].get("best_val_binary_accuracy"),
        "model_check": metrics["scan"].get("model_check", {}).get("verdict"),
        "planted": {"position": truth["sweep_position"], "S": truth["S"], "sweep_end": truth["sweep_end"]},
        "job": str(job)})
    return out


@click.command()
@click.option("--job", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=JOB,
              show_default=True, help="The genome-scan job (its data beside it in data/genome_scan/).")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run in this (empty) folder and keep it, instead of a temporary one.")
def command(job: Path, keep: Path | None) -> None:
    """The shipped genome-scan job end to end: is the planted sweep the scan's top window, with q < 0.05?"""
    if keep is not None:
        refuse_full_keep(keep)
        keep.mkdir(parents=True, exist_ok=True)
        out = run_bench(job, keep.resolve())
        out["kept"] = str(keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="hpcpop-bench-genome-scan-") as tmp:
            out = run_bench(job, Path(tmp))
    click.echo(json.dumps(out))
