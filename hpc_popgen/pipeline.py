"""Resolve, submit, run and rerun jobs: the driver loop over a manifest's stages.

``prepare`` resolves manifest + profile into a frozen :class:`~hpc_popgen.job.Job` (typed stage
configs, resources, seeds, profile) and runs each stage's checks on it, before anything runs;
``create_run`` records it in a new run directory; ``execute`` runs every stage from the recorded
manifest (the same code path for a first run, ``hpcpop rerun`` and a detached SLURM driver job),
writing report.json after every stage. Units already in the ledger are never redone.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cluster.clusters import ClusterHandle, cluster_kwargs, start_cluster
from .cluster.forkserver import fork_local_workers, preload_for
from .cluster.profiles import Profile, profile_from_data, resolve_profile
from .cluster.sbatch import sbatch_header
from .cluster.slurm_jobs import submit
from .errors import HpcPopError, ManifestError, ProfileError, StageFailed
from .job import Job, JobStage, Resources, stage_seed
from .manifest import Manifest, load_manifest
from .paths import is_remote, local_path
from .runlock import RunLock
from .runs import RunDir, default_run_dir, now_iso
from .stages import get_stage
from .stages.base import StageContext, StageResult, check_url, stage_config

log = logging.getLogger(__name__)
ONE_PROCESS_KINDS = ("train", "evaluate")  # stages whose task wants a worker job's whole memory and GPUs


def prepare(manifest_path: str | Path, *, profile: str | None = None) -> Job:
    """Read and validate the manifest and its profile (``profile`` overrides the manifest's) and resolve
    them into a frozen Job, each stage's checks included: everything ``hpcpop validate`` can know."""
    manifest = absolute_paths(load_manifest(manifest_path))
    check_storage(manifest)
    prof = resolve_profile(profile or manifest.profile, base_dir=manifest.base_dir)
    if profile:
        manifest = replace(manifest, profile=profile)
    return resolve(manifest, prof)


def worker_modules(job: Job) -> list[str]:
    """What the job's local workers import before they fork: its stage kinds' modules, dadi where a
    demography stage computes spectra with it."""
    dadi = any(s.kind == "demography" and getattr(s.config, "engine", None) == "dadi" for s in job.stages)
    return preload_for([s.kind for s in job.stages], ["dadi"] if dadi else [])


def resolve(manifest: Manifest, profile: Profile) -> Job:
    """Each stage's typed config, resources and seed, built once; then each stage kind's checks on them."""
    stages = []
    for spec in manifest.stages:
        config = stage_config(spec, manifest)
        stages.append(JobStage(spec=spec, config=config, resources=Resources.from_dict(spec.resources),
                               seed=stage_seed(manifest, spec, config)))
    job = Job(manifest=manifest, profile=profile, stages=tuple(stages))
    for stage in job.stages:
        check = getattr(get_stage(stage.kind), "check", None)
        if check is not None:
            check(stage, job)
    return job


def check_storage(manifest: Manifest) -> None:
    """``storage`` is a folder this user can write (or can create), or a URL whose fsspec protocol is installed."""
    where = f"{manifest.source}: storage"
    if is_remote(manifest.storage):
        check_url(manifest.storage, where)
        return
    root = Path(manifest.storage)
    existing = root
    for existing in (root, *root.parents):  # the nearest folder that exists: where storage will be made
        try:
            existing.stat()
            break
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise ManifestError(f"{where}: {root}: cannot look at {existing}: {exc.strerror}") from None
    if not existing.is_dir():
        what = "is not a folder" if existing == root else f"cannot be made: {existing} is not a folder"
        raise ManifestError(f"{where}: {root} {what}")
    if not os.access(existing, os.W_OK | os.X_OK) or not _can_write_in(existing):
        what = "is" if existing == root else f"cannot be made: {existing} is"
        raise ManifestError(f"{where}: {root} {what} not writable by this user")


def _can_write_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (also for root, which os.access never refuses, and on a
    read-only mount): a temporary file, removed at once."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".hpcpop-write-test-"):
            return True
    except OSError:
        return False


def create_run(manifest_path: str | Path, *, profile: str | None = None,
               run_dir: str | Path | None = None) -> RunDir:
    """Prepare the job and record it in a new run directory (nothing runs yet)."""
    job = prepare(manifest_path, profile=profile)
    raw = Path(manifest_path).read_text(encoding="utf-8")
    path = Path(run_dir) if run_dir else default_run_dir(job.manifest)
    seeds = {s.name: s.seed for s in job.stages}
    rd = RunDir.create(path, job.manifest, job.profile.to_dict(), raw, seeds)
    if job.profile.kind == "local":  # the workers' server imports while the driver records and starts the run
        fork_local_workers(worker_modules(job))
    return rd


def recorded_profile(rd: RunDir) -> Profile:
    """The profile a run directory recorded (schema defaults filled: older runs may lack newer keys)."""
    data = rd.profile()
    return profile_from_data(data, name=str(data.get("name", "recorded")),
                             source=str(data.get("source", rd.path / "profile.resolved.yaml")))


def recorded_job(rd: RunDir) -> Job:
    """The job a run directory recorded (its resolved manifest and profile), resolved again."""
    return resolve(rd.manifest(), recorded_profile(rd))


def absolute_paths(manifest: Manifest) -> Manifest:
    """The manifest with its source file and a local ``storage`` as absolute paths, as the run records them,
    so that ``hpcpop rerun`` from any folder (or a driver job) finds the same stores and inputs."""
    storage = manifest.storage
    if not is_remote(storage):
        root = Path(local_path(storage)).expanduser()
        storage = str((root if root.is_absolute() else Path(manifest.base_dir) / root).resolve())
    return replace(manifest, storage=storage, source=str(Path(manifest.source).resolve()))


class Terminated(KeyboardInterrupt):
    """SIGTERM (``scancel`` of a driver job, a pre-emption, ``kill``): handled as Ctrl-C, so the run and the
    stage are recorded as interrupted, finished units stay recorded and ``hpcpop rerun`` carries on."""

    exit_code = 143  # 128 + SIGTERM, as a shell reports it


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def execute(rd: RunDir, *, progress: bool = True) -> dict:
    """Run (or resume) every stage of a run directory, holding its driver lock; returns the final report.

    A live driver on the run (submit, rerun or a detached one) refuses this one with one line, before
    anything is written; a gone one's lock is taken over (see runlock.py)."""
    with RunLock(rd.path):
        handler = _attach_log_file(rd)
        try:
            return _execute(rd, progress=progress)
        finally:  # a run called in-process (tests, notebooks) must not log the next run's lines into this one's
            if handler is not None:
                logging.getLogger("hpc_popgen").removeHandler(handler)
                handler.close()


def _execute(rd: RunDir, *, progress: bool) -> dict:
    """The driver loop of ``execute``, under the run's lock."""
    job = recorded_job(rd)
    manifest, profile = job.manifest, job.profile
    clusters: dict[str, ClusterHandle] = {}
    if profile.kind == "local":
        fork_local_workers(worker_modules(job))

    def cluster_key(stage: JobStage) -> str:
        """Stages with the same key share one cluster."""
        one_process = stage.kind in ONE_PROCESS_KINDS
        return repr(sorted(cluster_kwargs(profile, stage.resources, one_process=one_process).items()))

    def factory(stage: JobStage) -> ClusterHandle:
        key = cluster_key(stage)
        if key not in clusters:
            handle = start_cluster(profile, stage.resources, name=f"{manifest.name}-{stage.name}",
                                   log_directory=str(rd.path / "slurm-logs"), security_directory=rd.path / "security",
                                   one_process=stage.kind in ONE_PROCESS_KINDS)
            clusters[key] = handle
            log.info("Dask dashboard: %s", handle.dashboard)
        handle = clusters[key]  # the report names the live cluster's, also when a stage reuses one
        rd.update_report(dashboard=handle.dashboard, scheduler=handle.client.scheduler.address)
        return handle

    rd.update_report(status="running", started_at=rd.report().get("started_at") or now_iso())
    status = "failed"
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        for i, stage in enumerate(job.stages):
            ctx = StageContext(rd, job, stage, cluster_factory=factory, show_progress=progress)
            _run_stage(ctx)
            if i + 1 < len(job.stages):  # a cluster no later stage reuses closes now: its port is free again
                later = {cluster_key(s) for s in job.stages[i + 1:]}
                for key in [k for k in clusters if k not in later]:
                    _close_cluster(rd, clusters.pop(key))
        status = "completed"
    except KeyboardInterrupt as exc:
        status = "interrupted"
        log.warning("run interrupted (%s); finished units are kept", exc or "Ctrl-C")
        raise
    finally:
        if in_main:  # SLURM may signal again before its SIGKILL: let the cleanup finish
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        rd.finish(status)  # first: closing clusters takes seconds; counts from the ledger, whatever the signal
        for handle in clusters.values():
            _close_cluster(rd, handle)
        if clusters:  # again: a unit a worker recorded (a training epoch) while its cluster closed counts too
            rd.finish(status)
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return rd.report()


def _close_cluster(rd: RunDir, handle: ClusterHandle) -> None:
    """Close a cluster, its SLURM worker jobs recorded first; a failure to close is logged, not raised."""
    try:
        if handle.kind == "slurm":
            rd.add_slurm_jobs("workers", handle.poll_job_ids())
        handle.close()
    except Exception as exc:  # noqa: BLE001 - closing must not hide the real outcome
        log.warning("closing cluster: %s", exc)


def _run_stage(ctx: StageContext) -> StageResult:
    module = get_stage(ctx.spec.kind)
    rd = ctx.run
    t0 = time.time()
    rd.update_stage(ctx.name, status="running", started_at=now_iso())
    log.info("stage %s (%s) starting", ctx.name, ctx.spec.kind)
    try:
        result: StageResult = module.run(ctx)
    except KeyboardInterrupt:
        rd.update_stage(ctx.name, status="interrupted", seconds=round(time.time() - t0, 3))
        raise
    except Exception as exc:
        rd.update_stage(ctx.name, status="failed", error=str(exc)[-2000:],
                        seconds=round(time.time() - t0, 3),
                        failures=len(ctx.ledger.failures()))
        raise
    finally:
        ctx.note_jobs()
    seconds = time.time() - t0
    ok = result.failures == 0 and result.units_done == result.units_total
    throughput = {}
    if result.items and seconds > 0:
        throughput = {f"{result.item_name}_per_s": round(result.items / seconds, 3)}
    rd.update_stage(ctx.name, status="completed" if ok else "failed", units_done=result.units_done,
                    units_total=result.units_total, failures=result.failures,
                    seconds=round(seconds, 3), finished_at=now_iso(), throughput=throughput,
                    metrics=result.metrics)
    if not ok:
        first = f" (first: {result.error})" if result.error else ""
        raise StageFailed(f"stage {ctx.name}: {result.units_done}/{result.units_total} units done, "
                          f"{result.failures} failed{first}; errors in {rd.path}/ledger/{ctx.name}/records.jsonl (`hpcpop status`); run "
                          f"`hpcpop rerun {rd.path}`")
    log.info("stage %s done: %d/%d units in %.1f s", ctx.name, result.units_done, result.units_total, seconds)
    return result


def _attach_log_file(rd: RunDir) -> logging.Handler | None:
    """The run's log file as a handler of our loggers (None when one is attached already)."""
    root = logging.getLogger("hpc_popgen")
    for h in root.handlers:
        if getattr(h, "_hpcpop_run", None) == str(rd.path):
            return None
    fh = logging.FileHandler(rd.log_path())
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh._hpcpop_run = str(rd.path)  # type: ignore[attr-defined]
    root.addHandler(fh)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return fh


# --- detached driver on SLURM -----------------------------------------------------------------

def driver_script(rd: RunDir, profile: Profile) -> str:
    """The sbatch script whose job runs the driver (``hpcpop rerun RUN_DIR``) on a compute node."""
    drv = profile.driver
    lines = sbatch_header(job_name=f"hpcpop-driver-{rd.manifest().name}", output=f"{rd.path}/driver-%j.log",
                          cpus_per_task=drv.cores, memory=drv.memory, walltime=drv.walltime,
                          partition=profile.queue, account=profile.account,
                          extra=list(drv.job_extra_directives))
    lines += ["set -euo pipefail",
              f"cd {shlex.quote(str(rd.path))}",
              f"exec {shlex.quote(sys.executable)} -m hpc_popgen.cli rerun --no-progress {shlex.quote(str(rd.path))}",
              ""]
    return "\n".join(lines)


def detach(rd: RunDir) -> str:
    """Submit the driver as an sbatch job; returns its job id (recorded in slurm_jobs.json)."""
    profile = recorded_profile(rd)  # the stages' checks run in the driver job, not here
    if profile.kind != "slurm":
        raise ProfileError(f"--detach needs a SLURM profile; profile {profile.name!r} is {profile.kind!r}")
    script = rd.path / "driver.sbatch"
    script.write_text(driver_script(rd, profile))
    try:
        job_id = submit(script)
    except HpcPopError as exc:  # sbatch missing or refusing: one line, in sbatch's words
        raise ProfileError(f"--detach: {exc}; run on a SLURM login node") from None
    rd.add_slurm_jobs("driver", [job_id])
    rd.update_report(status="queued", driver_job=job_id)
    return job_id
