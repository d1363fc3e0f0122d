"""The ``evaluate`` stage: a trained model on a store's test split -> metrics, confusion matrix PNG/JSON.

One unit (``evaluate``): its ledger record is written after metrics.json, so a rerun reuses it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import atomic
from ..errors import ManifestError
from ..manifest import Manifest, StageSpec
from .base import StageContext, StageResult

log = logging.getLogger(__name__)
UNIT = "evaluate"


def _train_stage_before(manifest: Manifest, index: int) -> StageSpec | None:
    trains = [s for s in manifest.stages if s.kind == "train" and s.index < index]
    return trains[-1] if trains else None


def check(spec: StageSpec, manifest: Manifest) -> None:
    """The model must name a train stage that runs earlier, or be a path; null needs an earlier train stage."""
    where = f"{manifest.source}: stages[{spec.index}].{spec.kind}.model"
    value = spec.params.get("model")
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
    """The model directory this stage uses (a train stage's RUN_DIR/<stage>/model, or a path)."""
    value = ctx.params.get("model")
    names = {s.name: s for s in ctx.manifest.stages}
    if value is None:
        spec = _train_stage_before(ctx.manifest, ctx.spec.index)
        if spec is None:
            raise ManifestError(f"stages[{ctx.spec.index}].{ctx.spec.kind}.model: no train stage to take it from")
        return ctx.run_dir / spec.name / "model"
    if value in names and names[value].kind == "train":
        return ctx.run_dir / value / "model"
    return Path(ctx.path(value))


def run(ctx: StageContext) -> StageResult:
    """Evaluate (or, on a rerun, report the finished evaluation)."""
    out = ctx.stage_dir()
    metrics_file = out / "metrics.json"
    if ctx.ledger.is_done(UNIT) and metrics_file.exists():
        return StageResult(1, 1, metrics=json.loads(metrics_file.read_text()))
    from ..infer.evaluate import evaluate
    from ..store import open_store
    from ..train.saved import load_bundle

    p = ctx.params
    model = load_bundle(model_dir(ctx))
    url = ctx.path(p["store"]) if p.get("store") else model.info.get("store")
    store = open_store(url)
    metrics = evaluate(model, store, out, split=p.get("split", "test"), level=float(p.get("hpdi_level", 0.95)),
                       batch_size=int(p.get("batch_size", 256)), title=p.get("title", ""))
    metrics["model"] = model.path
    atomic.write_json(out / "metrics.json", metrics)
    ctx.ledger.record(UNIT, n_images=metrics["n_images"])
    log.info("stage %s: %s", ctx.name, {k: v for k, v in metrics.items() if isinstance(v, float)})
    return StageResult(1, 1, metrics=metrics, items=metrics["n_images"], item_name="images")
