"""The ``train`` stage: labels from the store, then training in-process or as Horovod ranks.

Units are epochs (``epoch-0003``), recorded by rank 0 after each epoch's checkpoint is durable, so
``hpcpop rerun`` continues a killed training from its last checkpoint. How ranks start depends on the
profile: one process in the driver (ranks = 1 or Horovod missing), Gloo ranks on this machine
(``kind: local``), or an sbatch job over nodes x GPUs (``kind: slurm``, rendered to
RUN_DIR/<stage>/train.sbatch).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import HpcPopError, ManifestError, StoreError
from ..manifest import Manifest, StageSpec
from ..store import open_store
from .base import StageContext, StageResult

log = logging.getLogger(__name__)


def check(spec: StageSpec, manifest: Manifest) -> None:
    """Checks a schema cannot do: model preset vs label mode, label range order."""
    from ..train.models import resolve_model

    p = spec.params
    where = f"{manifest.source}: stages[{spec.index}].train"
    labels = p.get("labels", {})
    mode = labels.get("mode", "binary")
    preset = p.get("model", {}).get("preset", "binary")
    if preset.startswith("binary") and mode != "binary":
        raise ManifestError(f"{where}.model.preset: {preset!r} has a sigmoid output for binary labels; "
                            f"labels.mode is {mode!r} (use preset multiclass or continuous)")
    if not preset.startswith("binary") and mode == "binary":
        raise ManifestError(f"{where}.labels.mode: 'binary' needs model.preset binary (got {preset!r})")
    rng_ = labels.get("range")
    if rng_ and rng_[0] >= rng_[1]:
        raise ManifestError(f"{where}.labels.range: low must be below high (got {rng_})")
    resolve_model(p.get("model", {}), source=f"{where}.model")


def s_range(store) -> tuple[float, float]:
    """The S range of a store: its classes, its uniform prior, or (last resort) its written S values."""
    if store.classes:
        return float(min(store.classes)), float(max(store.classes))
    prior = store.meta.get("prior") or {}
    if prior.get("kind") == "uniform" and "max" in prior:
        return float(prior.get("min", 0.0)), float(prior["max"])
    s = store.read("s")
    return float(s.min()), float(s.max())


def prior_weights(spec, store, stream: bool) -> np.ndarray:
    """Training class weights: counted from the train split, or from the prior when streaming."""
    from ..train.labels import with_prior

    if not stream:
        s = store.read("s")
        split = store.read("split")
        return np.asarray(with_prior(spec, s[split == 0]).prior)
    centres = spec.centres
    prior = store.meta.get("prior") or {}
    if prior.get("kind") == "uniform":
        lo, hi = float(prior.get("min", 0.0)), float(prior["max"])
        edges = np.concatenate([[-np.inf], (centres[1:] + centres[:-1]) / 2, [np.inf]])
        w = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
        return w / w.sum()
    counts = np.bincount(spec.class_of(np.asarray(store.classes, dtype=float)), minlength=len(centres))
    return counts / counts.sum()


def resolve_ranks(ctx: StageContext) -> tuple[int, str]:
    """(ranks, launcher): stage ``ranks`` > nodes x gpus > profile horovod.ranks; launcher from the profile."""
    hv = ctx.profile.get("horovod") or {}
    launcher = hv.get("launcher", "horovodrun")
    res = ctx.resources
    if ctx.params.get("ranks"):
        ranks = int(ctx.params["ranks"])
    elif res.get("gpus"):
        ranks = int(res.get("nodes") or 1) * int(res["gpus"])
    else:
        ranks = int(hv.get("ranks", 1))
    if launcher == "none":
        ranks = 1
    return ranks, launcher


def horovod_available() -> bool:
    """Whether horovod.tensorflow can be imported (built with TensorFlow)."""
    import importlib.util

    return importlib.util.find_spec("horovod") is not None and importlib.util.find_spec("horovod.tensorflow") is not None


def run(ctx: StageContext) -> StageResult:
    """Train (or resume, or find finished) the model of this stage."""
    from ..train.labels import resolve_labels
    from ..train.loop import TrainJob
    from ..train.models import resolve_model

    p = ctx.params
    src = f"stages[{ctx.spec.index}].train"
    out = ctx.stage_dir()
    result_file = out / "result.json"
    if result_file.exists() and (out / "model" / "hpcpop_model.json").exists():
        log.info("stage %s: training already finished (%s)", ctx.name, result_file)
        return _result(ctx, json.loads(result_file.read_text()))

    url = ctx.path(p["store"])
    stream = bool(p.get("stream", {}).get("enabled"))
    store = _wait_for_store(url, p.get("stream", {})) if stream else open_store(url)
    lo, hi = s_range(store)
    label_params = dict(p.get("labels", {}))
    prior = store.meta.get("prior") or {}
    if (label_params.get("mode") in ("classes",) and label_params.get("n_classes") is None
            and not store.classes and prior.get("n_bins")):
        label_params["n_classes"] = int(prior["n_bins"])
    labels = resolve_labels(label_params, store.classes, lo, hi, source=f"{src}.labels")
    if labels.mode != "continuous":
        import dataclasses

        labels = dataclasses.replace(labels, prior=tuple(float(x) for x in prior_weights(labels, store, stream)))
    mcfg = resolve_model(p.get("model", {}), source=f"{src}.model")
    ranks, launcher = resolve_ranks(ctx)
    multi = ranks > 1
    if multi and not horovod_available():
        log.warning("stage %s: %d ranks requested but horovod is not installed; training as one process",
                    ctx.name, ranks)
        multi, ranks = False, 1
    cores = int(ctx.resources.get("cores") or os.cpu_count() or 1)
    es = p.get("early_stopping", {})
    job = TrainJob(store=url, out_dir=str(out), model=mcfg.to_dict(), labels=labels.to_dict(),
                   epochs=int(p.get("epochs", 10)), batch_size=int(p.get("batch_size", 64)),
                   shuffle_buffer=int(p.get("shuffle_buffer", 4096)),
                   flip_sites=bool(p.get("flip_sites", False)), patience=int(es.get("patience", 3)),
                   min_delta=float(es.get("min_delta", 0.0)), restore_best=bool(es.get("restore_best", True)),
                   seed=int(ctx.seed), ledger_dir=str(ctx.ledger.root), tensorboard=bool(p.get("tensorboard", True)),
                   threads=max(1, cores // ranks), use_horovod=multi, stream=dict(p.get("stream", {})),
                   reduce_lr=dict(p["reduce_lr"]) if p.get("reduce_lr") is not None else None)
    job_file = out / "train_job.json"
    from .. import atomic

    atomic.write_text(job_file, job.to_json())
    ctx.run.update_stage(ctx.name, units_total=job.epochs, ranks=ranks)
    if not multi:
        from ..train.loop import run_training

        result = run_training(job)
    elif ctx.profile.get("kind") == "slurm":
        result = _run_slurm(ctx, job_file, ranks, launcher)
    else:
        from ..cluster.horovod import run_local_gloo

        log_path = out / "train.log"
        code = run_local_gloo(job_file, ranks, log_path, threads=job.threads)
        if code != 0:
            raise HpcPopError(f"stage {ctx.name}: a Horovod rank exited with status {code}; last lines of "
                              f"{log_path}:\n{_tail(log_path)}\nresume with `hpcpop rerun {ctx.run_dir}`")
        result = json.loads(result_file.read_text())
    return _result(ctx, result)


def _wait_for_store(url: str, stream: dict) -> object:
    """Stream mode: the simulate job may not have created the store yet; wait for it (bounded)."""
    import time

    from ..store import store_exists

    poll, timeout = float(stream.get("poll_s", 2.0)), float(stream.get("timeout_s", 3600.0))
    t0 = time.monotonic()
    while not store_exists(url):
        if time.monotonic() - t0 > timeout:
            raise StoreError(f"{url}: no image store appeared within {timeout:.0f} s (stream mode)")
        time.sleep(poll)
    while True:  # the simulate stage writes the attrs last; until then open_store refuses the group
        try:
            return open_store(url)
        except StoreError:
            if time.monotonic() - t0 > timeout:
                raise
            time.sleep(poll)


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def render_sbatch(ctx: StageContext, job_file: Path, ranks: int, launcher: str) -> str:
    """The sbatch script of this stage's Horovod job (nodes x GPUs ranks, one per GPU)."""
    from ..cluster.horovod import sbatch_script

    prof = ctx.profile
    cl = prof.get("cluster") or {}
    res = ctx.resources
    nodes = int(res.get("nodes") or 1)
    gpus = int(res.get("gpus") or prof.get("gpus_per_node") or 0)
    cores = int(res.get("cores") or cl.get("cores") or 1)
    per_node = max(1, ranks // nodes)
    memory = res.get("memory") or cl.get("memory")
    return sbatch_script(job_file=job_file, run_dir=ctx.stage_dir(), name=f"{ctx.manifest.name}-{ctx.name}",
                         nodes=nodes, gpus_per_node=gpus, ranks=ranks, cores_per_rank=max(1, cores // per_node),
                         memory=memory or None,
                         walltime=res.get("walltime") or cl.get("walltime"), queue=cl.get("queue"),
                         account=cl.get("account"), launcher=launcher,
                         extra=list(cl.get("job_extra_directives") or []))


def _run_slurm(ctx: StageContext, job_file: Path, ranks: int, launcher: str) -> dict:
    """Submit the rendered sbatch script, wait for it (``sbatch --wait``), read rank 0's result."""
    script = ctx.stage_dir() / "train.sbatch"
    script.write_text(render_sbatch(ctx, job_file, ranks, launcher))
    if shutil.which("sbatch") is None:
        raise HpcPopError(f"stage {ctx.name}: `sbatch` not found; {script} is ready to submit by hand")
    proc = subprocess.Popen(["sbatch", "--parsable", "--wait", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline().strip() if proc.stdout else ""
    if first:
        ctx.run.add_slurm_jobs(f"train:{ctx.name}", [first.split(";")[0]])
    _out, err = proc.communicate()
    if proc.returncode != 0:
        raise HpcPopError(f"stage {ctx.name}: SLURM training job {first or '?'} failed ({proc.returncode}): "
                          f"{err.strip()[-1000:]}; see {ctx.stage_dir()}/train-*.log")
    result_file = ctx.stage_dir() / "result.json"
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
