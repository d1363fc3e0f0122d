"""The ``demography`` stage: GADMA-style demographic inference from an AFS, islands over Dask.

The science is :class:`hpc_popgen.demography.search.Search`; this module maps its evaluations onto
Dask tasks keyed ``<stage>-<token>`` (``demography-island-KK-eval-GGGGG-III``,
``demography-local-sSI-JJ-eval-NNNNNN``), taken from ``distributed.as_completed`` over all islands'
futures so that a slow evaluation only holds back its own island. Island checkpoints go to
``<stage_dir>/checkpoint/`` and their units (``island-KK-gen-GGGGG``, ``local-sSI-JJ``) to the ledger;
``hpcpop rerun`` resumes every island from its last checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ..demography.afs import load_input, spectrum_file
from ..demography.config import DemographyConfig
from ..demography.engine import EvalConfig, evaluate, failed
from ..demography.model import ModelSpace
from ..demography.outputs import write_results
from ..demography.search import Hooks, Search
from ..manifest import Manifest, StageSpec
from .base import StageContext, StageResult, stage_config

CONFIG = DemographyConfig

log = logging.getLogger(__name__)


def check(spec: StageSpec, manifest: Manifest) -> None:
    """What the schema cannot express (input choice, structures, engine limits, parameter names)."""
    stage_config(spec, manifest)  # DemographyConfig checks itself; errors name file and key


class DaskEvaluations:
    """Evaluations as Dask tasks keyed ``<stage>-<token>``; the cluster starts with the first one."""

    def __init__(self, ctx: StageContext, data: Any, ev: EvalConfig, retries: int) -> None:
        self.ctx, self.data, self.ev, self.retries = ctx, data, ev, retries
        self._tokens: dict[str, str] = {}  # task key -> token
        self._done: Any = None  # distributed.as_completed over every submitted task

    def submit(self, token: str, space: ModelSpace, x: list[float]) -> None:
        """Submit ``evaluate(space, x)`` as one task (retried by Dask when its worker is lost)."""
        if self._done is None:
            from distributed import as_completed

            self.ctx.run.update_report(dashboard=self.ctx.cluster.dashboard)
            self._done = as_completed([])
        fut = self.ctx.client.submit(evaluate, space, x, self.data, self.ev, pure=False, retries=self.retries,
                                     key=f"{self.ctx.name}-{token}")
        self._tokens[fut.key] = token
        self._done.add(fut)

    def completed(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(token, result)`` as tasks finish; a task lost beyond its retries gives the worst fitness."""
        if self._done is None:
            return
        for fut in self._done:
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - lost beyond retries: worst fitness, logged
                log.warning("evaluation %s failed: %s", fut.key, exc)
                result = failed(str(exc))
            fut.release()
            yield self._tokens.pop(fut.key), result


def run(ctx: StageContext) -> StageResult:
    """Load the AFS, search every structure (islands, local search), write results and outputs."""
    cfg: DemographyConfig = ctx.config
    data = load_input(cfg, ctx.input_path)
    ev = EvalConfig.from_config(cfg, data.sample_sizes)
    hooks = Hooks(record=ctx.ledger.record, report=ctx.report, progress=ctx.progress)
    search = Search(cfg, ev, data, DaskEvaluations(ctx, data, ev, cfg.retries), ctx.stage_dir() / "checkpoint",
                    ctx.seed, hooks, label=ctx.name)
    search.run()
    out_dir = ctx.stage_dir()
    summary = write_results(out_dir, search.state, data, ev, spectrum_file(cfg, data, ctx.input_path, out_dir),
                            cfg.plots)
    metrics = search.metrics(summary)
    ctx.report(**metrics)
    n_units = len(ctx.ledger.done())
    return StageResult(units_total=n_units, units_done=n_units, metrics=metrics,
                       items=max(search.n_evals, 1), item_name="evaluations")


__all__ = ["CONFIG", "check", "run"]
