"""``hpcpop validate | submit | status | rerun | profiles``."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from ..cluster.profiles import list_profiles
from ..runs import RunDir
from .summary import summary_lines


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
def validate(manifest: str) -> None:
    """Check MANIFEST against its schema (and each stage's checks) without running anything."""
    from ..pipeline import prepare

    m = prepare(manifest).manifest
    kinds = ", ".join(f"{s.name} ({s.kind})" for s in m.stages)
    click.echo(f"{manifest}: valid; {len(m.stages)} stage(s): {kinds}; profile {m.profile}")


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--profile", "profile", help="Cluster profile name or YAML path (overrides the manifest's).")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory (default: <storage>/<name>-<time>).")
@click.option("--detach", is_flag=True, help="On a SLURM profile: run the driver itself as an sbatch job and return.")
@click.option("--no-progress", is_flag=True, help="No progress bars (logs still go to RUN_DIR/hpcpop.log).")
def submit(manifest: str, profile: str | None, run_dir: str | None, detach: bool, no_progress: bool) -> None:
    """Run the job MANIFEST: create a run directory, start the cluster, run every stage."""
    from ..pipeline import create_run
    from ..pipeline import detach as do_detach

    rd = create_run(manifest, profile=profile, run_dir=run_dir)
    click.echo(f"run directory: {rd.path}")
    if detach:
        job = do_detach(rd)
        click.echo(f"driver submitted as SLURM job {job}; follow with `hpcpop status {rd.path}`")
        return
    _run(rd, no_progress)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--detach", is_flag=True, help="On a SLURM profile: run the driver as an sbatch job.")
@click.option("--no-progress", is_flag=True)
def rerun(run_dir: str, detach: bool, no_progress: bool) -> None:
    """Resume RUN_DIR from its recorded manifest, redoing only unfinished units."""
    from ..pipeline import detach as do_detach

    rd = RunDir.open(run_dir)
    if detach:
        job = do_detach(rd)
        click.echo(f"driver submitted as SLURM job {job}")
        return
    _run(rd, no_progress)


def _run(rd: RunDir, no_progress: bool) -> None:
    """Run the stages, libraries' lines in the run's log file (on the console with -v only); then what the
    run found, from report.json."""
    from ..pipeline import execute
    from . import logs_through_bars, run_log

    with logs_through_bars(), run_log(rd.log_path()):
        report = execute(rd, progress=not no_progress)
    click.echo(f"run {report.get('status')}: {rd.path}/report.json")
    for line in summary_lines(report, rd.path):
        click.echo(line)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def status(run_dir: str, as_json: bool) -> None:
    """Show stage states, units done/total, failures and SLURM job ids of RUN_DIR."""
    rd = RunDir.open(run_dir)
    rep = rd.report()
    jobs = rd.slurm_jobs()
    if as_json:
        click.echo(json.dumps({"report": rep, "slurm_jobs": jobs}, indent=2))
        _exit_for(rep)
        return
    click.echo(f"run {rep.get('run')}: {rep.get('status')}  ({rd.path})")
    click.echo(f"{'stage':<20} {'kind':<11} {'status':<12} {'units':>13} {'failed':>7}")
    manifest = rd.manifest()
    by_name = {s["name"]: s for s in rep.get("stages", [])}
    for spec in manifest.stages:
        st = by_name.get(spec.name, {})
        done = len(rd.ledger(spec.name).done())
        failed = len(rd.ledger(spec.name).failures())
        total = st.get("units_total")
        units = f"{done}/{total if total is not None else '?'}"
        click.echo(f"{spec.name:<20} {spec.kind:<11} {st.get('status', 'pending'):<12} {units:>13} {failed:>7}"
                   f"{_live(st)}")
    if jobs:
        states = _squeue_states([j for ids in jobs.values() for j in ids])
        for role, ids in jobs.items():
            shown = ", ".join(f"{j}{' (' + states[j] + ')' if j in states else ''}" for j in ids)
            click.echo(f"SLURM {role}: {shown}")
    for line in summary_lines(rep, rd.path):
        click.echo(line)
    _exit_for(rep)


def _live(stage: dict) -> str:
    """A training stage not completed: ``  epoch i/n, val_loss x`` (what its driver last saw), else ''."""
    p = stage.get("progress") or {}
    if stage.get("status") == "completed" or not p.get("epoch"):
        return ""
    text = f"  epoch {p['epoch']}/{p.get('epochs') or '?'}"
    return text + (f", val_loss {p['val_loss']:.4g}" if p.get("val_loss") is not None else "")


def _exit_for(report: dict) -> None:
    """Exit 1 for a failed run, so scripts and CI can test ``hpcpop status`` (the table is printed first)."""
    if report.get("status") == "failed":
        failed = [s["name"] for s in report.get("stages", []) if s.get("status") == "failed"]
        click.echo(f"run failed (stage {', '.join(failed) or '?'}); see hpcpop.log, then `hpcpop rerun`", err=True)
        sys.exit(1)


def _squeue_states(job_ids: list[str]) -> dict[str, str]:
    """Current SLURM states of jobs still known to squeue (finished jobs drop out)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


@click.command()
def profiles() -> None:
    """List cluster profiles: packaged ones and those in ~/.config/hpcpop/profiles/."""
    for p in list_profiles():
        click.echo(f"{p.name:<12} {p.kind:<7} {p.origin:<9} {p.path}  {p.description}")
