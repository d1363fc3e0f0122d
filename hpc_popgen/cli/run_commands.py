"""``hpcpop validate | submit | status | rerun | profiles``."""

from __future__ import annotations

import json
import sys

import click

from ..cluster.profiles import list_profiles
from ..cluster.slurm_jobs import squeue_states
from ..errors import RunDirError
from ..runlock import check_free, driver_state
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
    check_free(rd.path)  # a live driver refuses this one before anything (the lock itself is taken in execute)
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


EXIT_CODES = {"completed": 0, "failed": 1, "created": 3, "queued": 3, "running": 3, "interrupted": 4}


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report (counts from the ledger) as JSON.")
def status(run_dir: str, as_json: bool) -> None:
    """Show stage states, units done/total (from the ledger), failures and SLURM job ids of RUN_DIR.

    A run that report.json calls running but whose driver is gone (its pid dead on this host, or no
    heartbeat for minutes from another host) shows as "interrupted: driver gone".

    \b
    Exit status:
      0  completed
      1  failed
      2  not a run directory, or a bad option
      3  not finished: created, queued, or running with a live driver
      4  interrupted (a signal, or the driver gone): `hpcpop rerun RUN_DIR` resumes it
    """
    rd = RunDir.open(run_dir)
    rep, driver = _current(rd)
    jobs = rd.slurm_jobs()
    if as_json:
        click.echo(json.dumps({"report": rep, "driver": driver, "slurm_jobs": jobs}, indent=2))
        _exit_for(rep, rd)
        return
    click.echo(f"run {rep.get('run')}: {_status_text(rep)}  ({rd.path})")
    click.echo(f"{'stage':<20} {'kind':<11} {'status':<12} {'units':>13} {'failed':>7}")
    manifest = rd.manifest()
    by_name = {s["name"]: s for s in rep.get("stages", [])}
    for spec in manifest.stages:
        st = by_name.get(spec.name, {})
        total = st.get("units_total")
        units = f"{st.get('units_done', 0)}/{total if total is not None else '?'}"
        click.echo(f"{spec.name:<20} {spec.kind:<11} {st.get('status', 'pending'):<12} {units:>13} "
                   f"{st.get('failures', 0):>7}{_live(st)}")
    if jobs:
        states = squeue_states([j for ids in jobs.values() for j in ids])
        for role, ids in jobs.items():
            shown = ", ".join(f"{j}{' (' + states[j] + ')' if j in states else ''}" for j in ids)
            click.echo(f"SLURM {role}: {shown}")
    for line in summary_lines(rep, rd.path):
        click.echo(line)
    _exit_for(rep, rd)


def _current(rd: RunDir) -> tuple[dict, dict]:
    """The run as it stands: report.json with counts from the ledger, and its driver's state. A run the report
    calls running without a live driver is interrupted (``driver_gone`` says since when); a live driver
    whose report does not say running yet (a rerun starting, a failed run closing its clusters) is running."""
    rep = rd.report()
    if not rep:
        raise RunDirError(f"{rd.path}: no report.json; the run was never recorded (submit it again)")
    state, holder = driver_state(rd.path)
    if rep.get("status") == "running" and state != "live":
        rep = rd.report()  # the driver may have just finished: its final status is written before it lets go
    rep = rd.with_ledger_counts(rep)
    driver = {"state": state, **(holder.to_dict() if holder else {})}
    if rep.get("status") == "running" and state != "live":
        when = holder.to_dict()["heartbeat"] if holder else None
        rep["driver_gone"] = f"last heartbeat {when}, host {holder.host}, pid {holder.pid}" if holder else (
            "no driver record")
        rep["status"] = "interrupted"
        for st in rep.get("stages", []):
            if st.get("status") == "running":
                st["status"] = "interrupted"
    elif state == "live" and rep.get("status") not in ("running", "completed"):
        rep["driver_live"] = holder.describe() if holder else ""
        rep["status"] = "running"
    return rep, driver


def _status_text(report: dict) -> str:
    """``running``, ``interrupted: driver gone (last heartbeat …)``, ``completed`` ..."""
    text = str(report.get("status"))
    if report.get("driver_gone"):
        text += f": driver gone ({report['driver_gone']})"
    elif report.get("driver_live"):
        text += f" (driver: {report['driver_live']})"
    return text


def _live(stage: dict) -> str:
    """A training stage not completed: ``  epoch i/n, val_loss x`` (what its driver last saw), else ''."""
    p = stage.get("progress") or {}
    if stage.get("status") == "completed" or not p.get("epoch"):
        return ""
    text = f"  epoch {p['epoch']}/{p.get('epochs') or '?'}"
    return text + (f", val_loss {p['val_loss']:.4g}" if p.get("val_loss") is not None else "")


def _exit_for(report: dict, rd: RunDir) -> None:
    """Exit 0 only for a completed run (the table is printed first); see ``status``'s help for the codes.
    A failed or interrupted run also gets one line on stderr saying what to do."""
    status = report.get("status")
    code = EXIT_CODES.get(str(status), 4)
    if status == "failed":
        failed = [s["name"] for s in report.get("stages", []) if s.get("status") == "failed"]
        click.echo(f"run failed (stage {', '.join(failed) or '?'}); see hpcpop.log, then `hpcpop rerun`", err=True)
    elif code == 4:
        why = f"driver gone, {report['driver_gone']}" if report.get("driver_gone") else f"status {status}"
        click.echo(f"run interrupted ({why}); finished units are kept: `hpcpop rerun {rd.path}` resumes it",
                   err=True)
    if code:
        sys.exit(code)


@click.command()
def profiles() -> None:
    """List cluster profiles: packaged ones and those in ~/.config/hpcpop/profiles/."""
    for p in list_profiles():
        click.echo(f"{p.name:<12} {p.kind:<7} {p.origin:<9} {p.path}  {p.description}")
