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
from ..paths import is_remote
from ..train.progress import PROGRESS_FILE
from ..train.saved import META_FILE
from .base import (
    RUN_PREFIX,
    ProgressWatch,
    StageContext,
    StageResult,
    check_store_reference,
    check_url,
    key_path,
    resolve_location,
)

log = logging.getLogger(__name__)
CONFIG = EvaluateConfig
UNIT = "evaluate"


def _train_stage_before(manifest: Manifest, index: int) -> StageSpec | None:
    trains = [s for s in manifest.stages if s.kind == "train" and s.index < index]
    return trains[-1] if trains else None


def check(stage: JobStage, job: Job) -> None:
    """The model names a train stage that runs earlier, or a model directory that exists (null: the last
    train stage before this one); the store (evaluate's) exists or an earlier simulate stage writes it,
    and its images have the model's size where both are known.

    Also the scan stage's check: its config's ``model`` means the same (a scan has no ``store``).
    """
    spec, manifest = stage.spec, job.manifest
    where = key_path(spec, manifest, "model")
    value = stage.config.model
    stages = {s.name: s for s in job.stages}
    train: JobStage | None = None
    model_shape: tuple[int, int] | None = None
    if value is None:
        before = _train_stage_before(manifest, spec.index)
        if before is None:
            raise ManifestError(f"{where}: no train stage before this stage; name a model directory")
        train = stages[before.name]
    elif value in stages:
        train = stages[value]
        if train.kind != "train":
            raise ManifestError(f"{where}: stage {value!r} is a {train.kind} stage, not a train stage")
        if train.index > spec.index:
            raise ManifestError(f"{where}: train stage {value!r} runs after this stage")
    else:
        model_shape = _model_shape(manifest, value, where, list(stages))
    if train is not None:
        model_shape = check_store_reference(train, job, train.config.store,
                                            may_appear=train.config.stream.enabled)
    store = getattr(stage.config, "store", None)
    shape = check_store_reference(stage, job, store)
    if shape is not None and model_shape is not None and tuple(shape) != tuple(model_shape):
        model = f"the model of stage {train.name!r}" if train is not None else f"the model {value}"
        raise ManifestError(f"{key_path(spec, manifest, 'store')}: {store!r} holds {shape[0]}x{shape[1]} images; "
                            f"{model} takes {model_shape[0]}x{model_shape[1]} images")


def _model_shape(manifest: Manifest, value: str, where: str, stage_names: list[str]) -> tuple[int, int] | None:
    """The image shape of the model directory ``value`` names (None where it cannot be read before the run)."""
    loc = resolve_location(manifest, value, None)
    if is_remote(loc):
        check_url(loc, where)
        return None
    if loc.startswith(RUN_PREFIX):
        return None  # made by this run
    path = Path(loc)
    if path.name == META_FILE or path.suffix == ".keras":
        path = path.parent
    if not path.exists():
        named = "" if "/" in value else f"no stage named {value!r} (stages: {', '.join(stage_names)}) and "
        raise ManifestError(f"{where}: {named}no model directory at {loc}")
    meta = path / META_FILE
    try:
        return tuple(json.loads(meta.read_text())["image_shape"])
    except FileNotFoundError:
        raise ManifestError(f"{where}: {path}: not a trained model (no {META_FILE}; point to "
                            "RUN_DIR/<train stage>/model)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{where}: {meta}: not a readable model description ({exc})") from None


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
