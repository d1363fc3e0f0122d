"""The ``demography`` stage: GADMA-style demographic inference from an AFS, islands over Dask.

The science is :class:`hpc_popgen.demography.search.Search`; this module maps its evaluations onto
Dask tasks keyed ``<stage>-<token>`` (``demography-island-KK-eval-GGGGG-III``,
``demography-local-sSI-JJ-eval-NNNNNN``), taken from ``distributed.as_completed`` over all islands'
futures so that a slow evaluation only holds back its own island. Island checkpoints go to
``<stage_dir>/checkpoint/`` and their units (``island-KK-gen-GGGGG``, ``local-sSI-JJ``) to the ledger;
``hpcpop rerun`` resumes every island from its last checkpoint. Then the best model of each structure gets
its Fisher-information intervals (:mod:`hpc_popgen.demography.uncertainty`), one task and unit
(``uncertainty-<structure>-NN``) per slice of the spectra its expected information needs; for a VCF the
same spectra and the block-bootstrap spectra (``bootstrap.npz``) give Godambe intervals and CLAIC
(:mod:`hpc_popgen.demography.godambe`).
"""

from __future__ import annotations

import io
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import atomic
from ..demography.afs import load_input_blocks, spectrum_file
from ..demography.config import DemographyConfig, EvalTimeoutConfig
from ..demography.engine import EvalConfig, evaluate, failed
from ..demography.godambe import MIN_BLOCKS, bootstrap_spectra, godambe_method, godambe_result, too_few_blocks_method
from ..demography.model import ModelSpace
from ..demography.outputs import write_results
from ..demography.search import Hooks, Search
from ..demography.uncertainty import FIM_METHOD, FimProblem, fim_result, spectra_at
from ..errors import InputDataError, ManifestError
from ..job import Job, JobStage
from ..paths import is_remote
from ..readers.spectra import check_populations
from ..readers.vcz import storage_cache
from .base import StageContext, StageResult, Unit, Watchdog, input_path, key_path

CONFIG = DemographyConfig

log = logging.getLogger(__name__)


def check(stage: JobStage, job: Job) -> None:
    """That a local AFS file exists and matches ``input.populations``, and an ancestral FASTA opens (the
    config checked itself when built: input choice, structures, engine limits, parameter names)."""
    spec, manifest = stage.spec, job.manifest
    cfg: DemographyConfig = stage.config
    afs = cfg.input.afs
    if afs and not is_remote(afs):
        try:
            check_populations(input_path(manifest, afs), list(cfg.input.populations or []))
        except InputDataError as exc:
            raise ManifestError(f"{key_path(spec, manifest, 'input.afs')}: {exc}") from None
    fasta = cfg.input.ancestral_fasta
    if fasta and not is_remote(fasta):
        from ..readers.fasta import check_fasta

        try:
            check_fasta(input_path(manifest, fasta), None)  # its chromosomes are the VCF's: checked when read
        except InputDataError as exc:
            raise ManifestError(f"{key_path(spec, manifest, 'input.ancestral_fasta')}: {exc}") from None


def _timed(fn: Callable[..., dict[str, Any]], *args: Any) -> tuple[dict[str, Any], float]:
    """Run one evaluation on a worker and measure it (the timeout follows the median of these)."""
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def _running(dask_scheduler: Any, prefix: str) -> dict[str, tuple[float, str]]:
    """On the scheduler: how long each of our tasks has been running, and on which worker."""
    return {str(ts.key): (float(secs), ws.address) for ws in dask_scheduler.workers.values()
            for ts, secs in ws.executing.items() if str(ts.key).startswith(prefix)}


class DaskEvaluations:
    """Evaluations as Dask tasks keyed ``<name>-<token>``; the cluster starts with the first one.

    An evaluation running longer than ``timeout.limit(median)`` is cancelled, its worker restarted (a
    stuck integration holds its thread) and its token given the worst fitness, so no island waits on it.
    """

    def __init__(self, client: Callable[[], Any], name: str, data: Any, ev: EvalConfig, retries: int,
                 timeout: EvalTimeoutConfig, *, on_start: Callable[[], Any] | None = None,
                 fn: Callable[..., dict[str, Any]] = evaluate, watchdog: Watchdog | None = None) -> None:
        self._client, self.name, self.data, self.ev, self.retries = client, name, data, ev, retries
        self.timeout, self.on_start, self.fn = timeout, on_start, fn
        self.watchdog = watchdog  # fails the stage when no evaluation finishes and none runs (stall_timeout_s)
        self._tokens: dict[str, str] = {}  # task key -> token
        self._futures: dict[str, Any] = {}  # task key -> future, while pending
        self._submitted: dict[str, float] = {}  # task key -> submit time
        self._done: Any = None  # distributed.as_completed over every submitted task
        self._seconds: list[float] = []  # durations of finished evaluations
        self._last_check = 0.0
        self.n_timed_out = 0

    def submit(self, token: str, space: ModelSpace, x: list[float], ev: EvalConfig | None = None,
               priority: int = 0) -> None:
        """Submit ``evaluate(space, x)`` with settings ``ev`` (None: this stage's) as one task (retried by Dask
        when its worker is lost)."""
        if self._done is None:
            from distributed import as_completed

            if self.on_start is not None:
                self.on_start()
            self._done = as_completed([])
        fut = self._client().submit(_timed, self.fn, space, x, self.data, ev or self.ev, pure=False, retries=self.retries,
                                    key=f"{self.name}-{token}", priority=priority)
        self._tokens[fut.key] = token
        self._futures[fut.key] = fut
        self._submitted[fut.key] = time.monotonic()
        self._done.add(fut)
        if self.watchdog is not None:
            self.watchdog.touch()  # new work: the stall clock starts again

    def limit(self) -> float:
        """Seconds an evaluation may run now (see ``eval_timeout`` in the stage schema)."""
        return self.timeout.limit(statistics.median(self._seconds) if self._seconds else None)

    def completed(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(token, result)`` as tasks finish; a task lost beyond its retries, or running past the time
        limit, gives the worst fitness."""
        if self._done is None:
            return
        while True:
            batch = self._done.next_batch(block=False)
            for fut in batch:
                yield from self._finished(fut)
            if not batch:
                if self._done.is_empty():
                    return
                yield from self._overdue()
                if self.watchdog is not None:
                    self.watchdog.check()
                with self._done.thread_condition:
                    self._done.thread_condition.wait(timeout=0.1)

    def _finished(self, fut: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        token = self._tokens.pop(fut.key, None)
        self._futures.pop(fut.key, None)
        self._submitted.pop(fut.key, None)
        if token is None:  # cancelled for running too long: already given the worst fitness
            return
        if self.watchdog is not None:
            self.watchdog.progressed()
        try:
            result, seconds = fut.result()
            self._seconds.append(seconds)
        except Exception as exc:  # noqa: BLE001 - lost beyond retries: worst fitness, logged
            log.warning("evaluation %s failed: %s", fut.key, exc)
            result = failed(str(exc))
        fut.release()
        yield token, result

    def _overdue(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Cancel evaluations running past the limit (asking the scheduler only when one could be)."""
        now = time.monotonic()
        limit = self.limit()
        if now - self._last_check < 1.0 or not any(now - t > limit for t in self._submitted.values()):
            return
        self._last_check = now
        client = self._client()
        running = client.run_on_scheduler(_running, prefix=f"{self.name}-")
        stuck = {key: worker for key, (secs, worker) in running.items() if secs > limit and key in self._tokens}
        for key in stuck:
            fut = self._futures.pop(key)
            token = self._tokens.pop(key)
            self._submitted.pop(key, None)
            fut.cancel()
            self.n_timed_out += 1
            log.warning("evaluation %s cancelled after %.0f s (limit: %g x median, at least %g s); worst fitness",
                        key, limit, self.timeout.multiple, self.timeout.floor_seconds)
            yield token, failed(f"cancelled: ran longer than {limit:.0f} s (eval_timeout)")
        if stuck:  # the stuck computation still holds its worker's thread
            try:
                client.restart_workers(sorted(set(stuck.values())), raise_for_error=False)
            except Exception as exc:  # noqa: BLE001 - e.g. workers without a nanny: they keep the thread
                log.warning("could not restart worker(s) %s: %s", sorted(set(stuck.values())), exc)


FIM_NO_BOOTSTRAP = "FIM (no bootstrap spectra: uncertainty: fim)"  # VCF input with uncertainty: fim
FIM_SPECTRA_PER_TASK = 4  # model spectra one uncertainty task computes (k free parameters need 2k + 1)


def _bootstraps(ctx: StageContext, cfg: DemographyConfig, blocks: Any) -> tuple[Any, str]:
    """The bootstrap spectra of a VCF's blocks (seeded by the stage seed) and the uncertainty method's name;
    blocks, their places and the bootstraps are saved as ``<stage>/bootstrap.npz``. Too few blocks with data:
    no bootstraps (None) and the FIM route, named so."""
    n_blocks, bp = len(blocks.spectra), cfg.bootstrap.block_bp
    boots = bootstrap_spectra(blocks.spectra, cfg.bootstrap.n, ctx.seed) if n_blocks >= MIN_BLOCKS else None
    buf = io.BytesIO()
    np.savez(buf, blocks=blocks.spectra, contigs=np.array(blocks.contigs, dtype=str), starts=blocks.starts,
             sites=blocks.sites, block_bp=bp, bootstraps=boots if boots is not None else np.zeros((0,)),
             seed=ctx.seed)
    atomic.write_bytes(ctx.stage_dir() / "bootstrap.npz", buf.getvalue())
    if boots is None:
        log.warning("only %d blocks of %d bp with data: Fisher-information intervals instead of Godambe", n_blocks, bp)
        return None, too_few_blocks_method(n_blocks, bp)
    return boots, godambe_method(cfg.bootstrap.n, bp)


def _uncertainty(ctx: StageContext, state: dict[str, Any], data: Any, ev: EvalConfig,
                 method: str, boots: Any = None) -> dict[str, dict[str, Any]]:
    """The Fisher-information (or, with bootstrap spectra ``boots``, Godambe) intervals of each structure's best
    model: the spectra at the fit and a step either way in each parameter, as Dask tasks over the stage's
    workers (units ``uncertainty-<structure>-NN``, each kept in ``checkpoint/<unit>.npz`` so that a rerun
    reuses it), assembled here; structure key (``1-1``) -> the result of
    :func:`~hpc_popgen.demography.uncertainty.fim_result` or :func:`~hpc_popgen.demography.godambe.godambe_result`."""
    ck = ctx.stage_dir() / "checkpoint"
    units, problems = [], {}
    for res in state["results"].values():
        key = "-".join(map(str, res["structure"]))
        pts = FimProblem(res["space"], res["x"], res["theta"], ev).points()
        parts = [pts[i: i + FIM_SPECTRA_PER_TASK] for i in range(0, len(pts), FIM_SPECTRA_PER_TASK)]
        ids = [f"uncertainty-{key}-{j:02d}" for j in range(len(parts))]
        problems[key] = (res, ids)
        units += [Unit(id=i, args=(res["space"], res["x"], res["theta"], data, ev, part), weight=len(part))
                  for i, part in zip(ids, parts, strict=True)]

    def path(unit_id: str) -> Any:
        return ck / f"{unit_id}.npz"

    def keep(u: Unit, spectra: Any) -> dict[str, Any]:
        buf = io.BytesIO()
        np.savez(buf, points=np.array(u.args[-1], dtype=float), spectra=spectra)
        atomic.write_bytes(path(u.id), buf.getvalue())  # durable before the unit's record
        return {"spectra": len(spectra)}

    t0 = time.perf_counter()
    if units:
        done = ctx.run_units(units, spectra_at, item_name="spectra (FIM)", on_done=keep,
                             still_done=lambda u: path(u.id).exists())
        if done.failures:
            log.warning("uncertainty: %s", done.error)
    out = {}
    for key, (res, ids) in problems.items():
        if not all(path(i).exists() for i in ids):
            log.warning("structure %s: no intervals (a part of its Fisher information failed)", key)
            continue
        spectra = {}
        for i in ids:
            with np.load(path(i)) as z:
                spectra.update({tuple(float(v) for v in q): fs for q, fs in zip(z["points"], z["spectra"], strict=True)})
        out[key] = (fim_result(res["space"], res["x"], res["theta"], ev, spectra, data, method) if boots is None
                    else godambe_result(res["space"], res["x"], res["theta"], ev, spectra, data, boots, res["loglik"],
                                        method))
        out[key]["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def result_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """What report.json says of the chosen model and the intervals: ``best`` (structure, criterion), per
    structure each free parameter's 95% interval and the sizes or times fitted at a bound."""
    out: dict[str, Any] = {"best": summary.get("best"), "comparison": summary.get("comparison")}
    intervals, bounds, methods = {}, {}, set()
    for s in summary["structures"]:
        key = "-".join(map(str, s["structure"]))
        if s.get("at_bound"):
            bounds[key] = s["at_bound"]
        u = s.get("uncertainty")
        if not u:
            continue
        methods.add(u["method"])
        intervals[key] = {n: [p["lower"], p["upper"]] for n, p in u["params"].items()}
        intervals[key].update({f"physical:{n}": [p["lower"], p["upper"]] for n, p in u["physical"].items()})
    if intervals:
        out["uncertainty_method"] = ", ".join(sorted(methods))
        out["intervals_95"] = intervals
    claic = {"-".join(map(str, s["structure"])): s["claic"] for s in summary["structures"] if s.get("claic") is not None}
    if claic:
        out["claic"] = claic
    if bounds:
        out["at_bound"] = bounds
    return out


def run(ctx: StageContext) -> StageResult:
    """Load the AFS, search every structure (islands, local search), write results and outputs."""
    cfg: DemographyConfig = ctx.config
    godambe = cfg.uncertainty in ("auto", "godambe") and bool(cfg.input.vcf)
    data, blocks = load_input_blocks(cfg, ctx.input_path, cache_dir=storage_cache(ctx.path("vcz")),
                                     block_bp=cfg.bootstrap.block_bp if godambe else None)
    boots, method = _bootstraps(ctx, cfg, blocks) if blocks is not None else \
        (None, FIM_METHOD if cfg.input.afs else FIM_NO_BOOTSTRAP)
    ev = EvalConfig.from_config(cfg, data.sample_sizes)

    def report(**metrics: Any) -> None:
        ctx.note_jobs()  # live, as run_units does: adaptive worker jobs may be gone by the stage's end
        ctx.report(**metrics)

    hooks = Hooks(record=ctx.ledger.record, report=report, progress=ctx.progress)
    evals = DaskEvaluations(lambda: ctx.client, ctx.name, data, ev, cfg.retries, cfg.eval_timeout,
                            on_start=lambda: ctx.run.update_report(dashboard=ctx.cluster.dashboard),
                            watchdog=Watchdog(ctx, ctx.profile.stall_timeout_s))
    search = Search(cfg, ev, data, evals, ctx.stage_dir() / "checkpoint", ctx.seed, hooks, label=ctx.name)
    search.run()
    out_dir = ctx.stage_dir()
    uncertainty = _uncertainty(ctx, search.state, data, ev, method, boots) if cfg.uncertainty != "none" else None
    summary = write_results(out_dir, search.state, data, ev, spectrum_file(cfg, data, ctx.input_path, out_dir),
                            cfg.plots, uncertainty=uncertainty)
    metrics = {**search.metrics(summary), **result_metrics(summary), "timed_out_evaluations": evals.n_timed_out}
    ctx.report(**metrics)
    n_units = len(ctx.ledger.done())
    return StageResult(units_total=n_units, units_done=n_units, metrics=metrics,
                       items=max(search.n_evals, 1), item_name="evaluations")


__all__ = ["CONFIG", "check", "run"]
