"""The ``evaluate`` stage: a trained model on a store's test split -> metrics, confusion matrix PNG/JSON.

One unit (``evaluate``), run as one Dask task (``<stage>-predict``) on the stage's cluster, not in
the driver; its ledger record (with where it ran) is written after metrics.json, so a rerun reuses it.
The task writes RUN_DIR/<stage>/progress.json, the driver's batch bar.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import atomic
from ..errors import ManifestError
from ..infer.evaluate import EvaluateConfig
from ..job import Job, JobStage
from ..manifest import Manifest, StageSpec
from ..train.progress import PROGRESS_FILE
from .base import ProgressWatch, StageContext, StageResult, key_path

log = logging.getLogger(__name__)
CONFIG = EvaluateConfig
UNIT = "evaluate"


def _train_stage_before(manifest: Manifest, index: int) -> StageSpec | None:
    trains = [s for s in manifest.stages if s.kind == "train" and s.index < index]
    return trains[-1] if trains else None


def check(stage: JobStage, job: Job) -> None:
    """The model must name a train stage that runs earlier, or be a path; null needs an earlier train stage.

    Also the scan stage's check: its config's ``model`` means the same.
    """
    spec, manifest = stage.spec, job.manifest
    where = key_path(spec, manifest, "model")
    value = stage.config.model
    names = {s.name: s for s in manifest.stages}
    if value is None:
        if _train_stage_before(manifest, spec.index) is None:
            raise ManifestError(f"{where}: no train stage before this stage; name a model directory")
    elif value in names:
        target = names[value]
        if target.kind != "train":
            raise ManifestError(f"{where}: stage {value!r} is a {target.kind} stage, not a train stage")
        if target.index > spec.index:
            raise ManifestError(f"{where}: train stage {value!r} runs after this stage")


def model_dir(ctx: StageContext) -> Path:
    """The model directory this stage (or a scan stage) uses: a train stage's RUN_DIR/<stage>/model, or a path."""
    value = ctx.config.model
    names = {s.name: s for s in ctx.manifest.stages}
    if value is None:
        spec = _train_stage_before(ctx.manifest, ctx.spec.index)
        if spec is None:
            raise ManifestError(f"{key_path(ctx.spec, ctx.manifest, 'model')}: no train stage to take it from")
        return ctx.run_dir / spec.name / "model"
    if value in names and names[value].kind == "train":
        return ctx.run_dir / value / "model"
    return Path(ctx.path(value))


def run(ctx: StageContext) -> StageResult:
    """Evaluate as a task on a worker (or, on a rerun, report the finished evaluation)."""
    out = ctx.stage_dir()
    metrics_file = out / "metrics.json"
    if ctx.ledger.is_done(UNIT) and metrics_file.exists():
        return StageResult(1, 1, metrics=json.loads(metrics_file.read_text()))
    cfg: EvaluateConfig = ctx.config
    ctx.run.update_stage(ctx.name, units_total=1)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    watch = ProgressWatch(ctx, out / PROGRESS_FILE, desc=ctx.name)
    metrics, where = ctx.run_task(evaluate_on_worker, str(model_dir(ctx)), ctx.path(cfg.store) if cfg.store else None,
                                  str(out), split=cfg.split, level=cfg.hpdi_level, batch_size=cfg.batch_size,
                                  title=cfg.title, key=f"{ctx.name}-predict", watch=watch)
    ctx.ledger.record(UNIT, n_images=metrics["n_images"], **where)
    log.info("stage %s: %s", ctx.name, {k: v for k, v in metrics.items() if isinstance(v, float)})
    return StageResult(1, 1, metrics=metrics, items=metrics["n_images"], item_name="images")


def evaluate_on_worker(model: str, store: str | None, out_dir: str, *, split: str, level: float, batch_size: int,
                       title: str) -> dict:
    """The Dask task: load the model, evaluate it on ``store`` (None: its training store), write metrics.json."""
    from ..infer.evaluate import evaluate
    from ..store import open_store
    from ..train.progress import ProgressFile
    from ..train.saved import load_bundle

    bundle = load_bundle(model)
    st = open_store(store or bundle.info.get("store"))
    out = Path(out_dir)
    metrics = evaluate(bundle, st, out, split=split, level=level, batch_size=batch_size, title=title,
                       progress=ProgressFile(out / PROGRESS_FILE))
    metrics["model"] = bundle.path
    atomic.write_json(out / "metrics.json", metrics)
    return metrics
