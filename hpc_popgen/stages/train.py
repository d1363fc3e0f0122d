"""The ``train`` stage: labels from the store, then training as one Dask task or as Horovod ranks.

Units are epochs (``epoch-0003``), recorded by rank 0 after each epoch's checkpoint is durable, so
``hpcpop rerun`` continues a killed training from its last checkpoint. The driver only plans, waits
and records; how the training runs depends on the ranks and the profile: one rank (or Horovod
missing) is one Dask task (``<stage>-epochs``) on the stage's cluster, i.e. a LocalCluster worker
process or a SLURM worker job with the stage's resources (GPUs as ``--gres``); more ranks are Gloo
ranks on this machine (``kind: local``) or an sbatch job over nodes x GPUs (``kind: slurm``, rendered to
RUN_DIR/<stage>/train.sbatch). Wherever it runs, rank 0 writes RUN_DIR/<stage>/progress.json, which
the driver turns into epoch and batch bars and into report.json (``hpcpop status``: epoch i/n).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import HpcPopError, ManifestError, ParamError, StoreError
from ..job import Job, JobStage
from ..store import ImageStore, open_store
from ..train.config import StreamConfig, TrainConfig
from ..train.progress import PROGRESS_FILE
from .base import (
    ProgressWatch,
    StageContext,
    StageResult,
    check_store_reference,
    key_path,
    located,
    store_writers,
    worker_location,
)

log = logging.getLogger(__name__)
CONFIG = TrainConfig


def check(stage: JobStage, job: Job) -> None:
    """The store exists or an earlier simulate stage writes it, and the network fits its images."""
    from ..train.models import check_input_size, resolve_model

    cfg: TrainConfig = stage.config
    shape = check_store_reference(stage, job, cfg.store, may_appear=cfg.stream.enabled)
    _check_labels_fit_classes(stage, job)
    with located(stage.spec, job.manifest, "model"):
        mcfg = resolve_model(cfg.model)
    if shape is None:
        return
    try:
        check_input_size(mcfg, shape)
    except ParamError as exc:  # the preset's own filters: name the preset the user chose
        key = "model.filters" if cfg.model.filters else "model.preset"
        what = f"preset {cfg.model.preset!r}: " if not cfg.model.filters else ""
        raise ManifestError(f"{key_path(stage.spec, job.manifest, key)}: {what}{exc.reason}") from None


def _check_labels_fit_classes(stage: JobStage, job: Job) -> None:
    """Classes of S on a store an earlier simulate stage writes with classes that share S: refused before
    the store is simulated (the train stage would refuse it when it starts)."""
    from ..train.labels import shared_s

    cfg: TrainConfig = stage.config
    if cfg.labels.mode != "classes" or cfg.labels.n_classes is not None:
        return
    earlier = [s for s in store_writers(job, cfg.store) if s.index < stage.index]
    specs = earlier[-1].config.class_specs() if earlier else ()
    why = shared_s([c.name for c in specs], [c.S for c in specs]) if specs else None
    if why:
        raise ManifestError(f"{key_path(stage.spec, job.manifest, 'labels.mode')}: {why} "
                            f"(stage {earlier[-1].name!r} writes {cfg.store!r})")


def resolve_ranks(ctx: StageContext) -> tuple[int, str]:
    """(ranks, launcher): stage ``ranks`` > nodes x gpus > profile horovod.ranks; launcher from the profile."""
    launcher = ctx.profile.horovod.launcher
    res = ctx.resources
    if ctx.config.ranks:
        ranks = ctx.config.ranks
    elif res.gpus:
        ranks = (res.nodes if res.nodes is not None else 1) * res.gpus
    else:
        ranks = ctx.profile.horovod.ranks
    if launcher == "none":
        ranks = 1
    return ranks, launcher


def horovod_available() -> bool:
    """Whether horovod.tensorflow can be imported (built with TensorFlow)."""
    import importlib.util

    return importlib.util.find_spec("horovod") is not None and importlib.util.find_spec("horovod.tensorflow") is not None


def run(ctx: StageContext) -> StageResult:
    """Train (or resume, or find finished) the model of this stage."""
    from .. import atomic
    from ..train.config import TrainJob
    from ..train.labels import labels_for_store
    from ..train.models import check_input_size, resolve_model

    cfg: TrainConfig = ctx.config
    out = ctx.stage_dir()
    result_file = out / "result.json"
    if result_file.exists() and (out / "model" / "hpcpop_model.json").exists():
        log.info("stage %s: training already finished (%s)", ctx.name, result_file)
        return _result(ctx, json.loads(result_file.read_text()))

    url = ctx.path(cfg.store)
    stream = cfg.stream.enabled
    store = _wait_for_store(url, cfg.stream) if stream else open_store(url)
    with located(ctx.spec, ctx.manifest, "labels"):
        labels = labels_for_store(cfg.labels, store, stream=stream)
    with located(ctx.spec, ctx.manifest, "model"):
        mcfg = resolve_model(cfg.model)
        check_input_size(mcfg, store.image_shape)
    ranks, launcher = resolve_ranks(ctx)
    multi = ranks > 1
    if multi and not horovod_available():
        log.warning("stage %s: %d ranks requested but horovod is not installed; training as one process",
                    ctx.name, ranks)
        multi, ranks = False, 1
    cores = ctx.resources.cores if ctx.resources.cores is not None else (os.cpu_count() or 1)
    job = TrainJob(store=url, out_dir=str(out), model=mcfg, labels=labels, config=cfg, seed=int(ctx.seed),
                   ledger_dir=str(ctx.ledger.root), threads=max(1, cores // ranks), use_horovod=multi)
    job_file = out / "train_job.json"
    atomic.write_text(job_file, job.to_json())
    ctx.run.update_stage(ctx.name, units_total=cfg.epochs, ranks=ranks)
    (out / PROGRESS_FILE).unlink(missing_ok=True)  # an earlier attempt's state is not this one's
    watch = _watch(ctx, cfg.epochs)
    if not multi:
        result, where = ctx.run_task(train_on_worker, job.to_json(), key=f"{ctx.name}-epochs", watch=watch)
        ctx.report(**where)
    elif ctx.profile.kind == "slurm":
        result = _run_slurm(ctx, job_file, ranks, launcher, watch)
    else:
        from ..cluster.horovod import run_local_gloo

        log_path = out / "train.log"
        try:
            code = run_local_gloo(job_file, ranks, log_path, threads=job.threads, on_poll=watch.poll)
        finally:
            watch.close()
        if code != 0:
            raise HpcPopError(f"stage {ctx.name}: a Horovod rank exited with status {code}; last lines of "
                              f"{log_path}:\n{_tail(log_path)}\nresume with `hpcpop rerun {ctx.run_dir}`")
        result = json.loads(result_file.read_text())
    return _result(ctx, result)


def train_on_worker(job_json: str) -> dict:
    """The Dask task of a one-rank training: run (or resume) it here, on a worker; epoch records say where."""
    from ..train.config import TrainJob
    from ..train.loop import run_training

    return run_training(TrainJob.from_json(job_json), where=worker_location())


def _watch(ctx: StageContext, epochs: int) -> ProgressWatch:
    """Epoch and batch bars from rank 0's progress file; each finished epoch is logged (from its ledger
    record) and the epoch goes into report.json (``progress``: epoch i/n and the last validation loss,
    for ``hpcpop status``)."""
    from ..train.checkpoint import unit_id

    seen: dict = {"key": None, "logged": len(ctx.ledger.done())}

    def on_change(data: dict) -> None:
        key = (data.get("epochs_done"), data.get("epoch"))
        if key == seen["key"]:
            return
        seen["key"] = key
        done = ctx.ledger.done()
        for e in range(seen["logged"] + 1, int(data.get("epochs_done") or 0) + 1):
            rec = done.get(unit_id(e), {})
            log.info("stage %s: epoch %d/%d: loss %s, val_loss %s", ctx.name, e, epochs, _fmt(rec.get("loss")),
                     _fmt(rec.get("val_loss")))
            seen["logged"] = e
        ctx.run.update_stage(ctx.name, units_done=len(done), progress={
            "epoch": data.get("epoch"), "epochs": data.get("epochs") or epochs,
            "epochs_done": data.get("epochs_done"), "val_loss": data.get("last_val_loss")})

    return ProgressWatch(ctx, ctx.stage_dir() / PROGRESS_FILE, desc=ctx.name, epochs=epochs, on_change=on_change)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _wait_for_store(url: str, stream: StreamConfig) -> ImageStore:
    """Stream mode: the simulate job may not have created the store yet; wait for it (bounded)."""
    from ..store import store_exists

    t0 = time.monotonic()
    while not store_exists(url):
        if time.monotonic() - t0 > stream.timeout_s:
            raise StoreError(f"{url}: no image store appeared within {stream.timeout_s:.0f} s (stream mode)")
        time.sleep(stream.poll_s)
    while True:  # the simulate stage writes the attrs last; until then open_store refuses the group
        try:
            return open_store(url)
        except StoreError:
            if time.monotonic() - t0 > stream.timeout_s:
                raise
            time.sleep(stream.poll_s)


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def render_sbatch(ctx: StageContext, job_file: Path, ranks: int, launcher: str) -> str:
    """The sbatch script of this stage's Horovod job (nodes x GPUs ranks, one per GPU)."""
    from ..cluster.sbatch import train_script

    prof, res = ctx.profile, ctx.resources

    def pick(stage_value: Any, cluster_key: str, fallback: Any = None) -> Any:
        """The stage's resource if it sets one, else the profile's cluster setting, else ``fallback``."""
        if stage_value is not None:
            return stage_value
        value = prof.cluster_value(cluster_key)
        return fallback if value is None else value

    nodes = pick(res.nodes, "nodes", 1)
    gpus = res.gpus if res.gpus is not None else (prof.gpus_per_node or 0)
    cores = pick(res.cores, "cores", 1)
    return train_script(job_file=job_file, run_dir=ctx.stage_dir(), name=f"{ctx.manifest.name}-{ctx.name}",
                        nodes=nodes, gpus_per_node=gpus, ranks=ranks, cores=cores,
                        memory=pick(res.memory, "memory"), walltime=pick(res.walltime, "walltime"),
                        queue=prof.cluster_value("queue"), account=prof.cluster_value("account"),
                        launcher=launcher, interface=prof.cluster_value("interface"),
                        extra=list(prof.cluster_value("job_extra_directives") or ()))


def _run_slurm(ctx: StageContext, job_file: Path, ranks: int, launcher: str, watch: ProgressWatch) -> dict:
    """Submit the rendered sbatch script, follow its job (polling ``watch``), read rank 0's result."""
    from ..cluster.slurm_jobs import submit, wait_for_job

    script = ctx.stage_dir() / "train.sbatch"
    script.write_text(render_sbatch(ctx, job_file, ranks, launcher))
    if shutil.which("sbatch") is None:
        raise HpcPopError(f"stage {ctx.name}: `sbatch` not found; {script} is ready to submit by hand")
    result_file = ctx.stage_dir() / "result.json"
    try:
        job_id = submit(script)
        ctx.run.add_slurm_jobs(f"train:{ctx.name}", [job_id])
        end = wait_for_job(job_id, result_file, watch.poll)
    finally:
        watch.close()
    if not end.ok:
        raise HpcPopError(f"stage {ctx.name}: SLURM training job {job_id} ended {end.state}"
                          f"{'' if end.exit_code is None else f' (exit code {end.exit_code})'}; "
                          f"see {ctx.stage_dir()}/train-*.log")
    if not result_file.exists():
        raise StoreError(f"stage {ctx.name}: the training job ended without {result_file}")
    return json.loads(result_file.read_text())


def _result(ctx: StageContext, result: dict) -> StageResult:
    """StageResult from rank 0's result: units are epochs; metrics are the last and best epochs."""
    hist = result.get("history") or []
    last = hist[-1] if hist else {}
    best = hist[result["best_epoch"] - 1] if result.get("best_epoch") and len(hist) >= result["best_epoch"] else last
    metrics = {"epochs_run": result.get("epochs_run"), "stopped_early": result.get("stopped_early"),
               "best_epoch": result.get("best_epoch"), "resumed_from_epoch": result.get("resumed_from_epoch"),
               "ranks": result.get("ranks"), "identical_weights": result.get("identical_weights"),
               "train_images_per_s": result.get("train_images_per_s"),
               "model": str(ctx.stage_dir() / "model")}
    for key in ("loss", "val_loss", "binary_accuracy", "categorical_accuracy", "val_binary_accuracy",
                "val_categorical_accuracy", "mae", "val_mae"):
        if key in best:
            metrics[f"best_{key}"] = round(float(best[key]), 5)
    done = len(set(ctx.ledger.done()))
    total = int(result.get("epochs_run") or 0)
    return StageResult(units_total=total, units_done=min(done, total), metrics=metrics,
                       items=result.get("images_trained_this_attempt") or None, item_name="images")
