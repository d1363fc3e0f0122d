"""The GADMA-style search of one stage: structures in turn, islands, local searches, checkpoints.

The search never evaluates a model itself: it ``submit``s points to an :class:`Evaluations` object
under a token (``island-KK-eval-GGGGG-III``, ``local-sSI-JJ-eval-NNNNNN``) and takes results from
``completed()`` in whatever order they finish, so a slow evaluation only holds back its own island.
The stage maps tokens onto Dask tasks; nothing here imports Dask.

The islands may evaluate at cheaper settings (``ga_dt_fac``, ``ga_projection``: :func:`ga_settings`);
their best individuals are then scored again at the stage's settings, each local search runs at the
islands' settings first (``local_search.ga_settings_first``), jumps on the whole data at the islands'
time step, then at the stage's settings, and only log-likelihoods at the stage's settings are reported
or compared with ``target_loglik``. While the islands work on cheaper settings, their best model so far
(and then a local search's best at the islands' settings) is scored at the stage's settings (the whole data)
every ``WHOLE_DATA_SECONDS`` (:class:`WholeDataCheck`), so the log, report.json (``whole_data``) and the bar
show a comparable log-likelihood from the first minute on.

After each generation an island (population, adaptive rates, RNG state) is written atomically to
``<checkpoint>/s<structure>/island-KK.json``, then ``island-KK-gen-GGGGG`` is recorded as done; each
finished local search is kept in ``s<structure>/local.json`` (unit ``local-sSI-JJ``) and each finished
structure in ``state.json``, so a rerun resumes where the last attempt stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import atomic
from ..errors import ParamError
from ..seeds import seed_sequence
from .config import DemographyConfig
from .engine import WORST, EvalConfig, evaluate
from .ga import Island, jumps, local_search
from .islands import Archipelago, Batch
from .model import ModelSpace

log = logging.getLogger(__name__)

FOLLOW_SEARCHES = 3  # most short searches more for the best jump of a round (see Search._follow)
LOCAL_LOG_SECONDS = 15.0  # a local search logs its evaluations and best LL at least this often while it runs
WHOLE_DATA_SECONDS = 45.0  # islands on cheaper settings: their best model is scored on the whole data this often

StructurePlan = list[tuple[tuple[int, ...], int | None]]  # (structure, period increased to reach it)


class Evaluations(Protocol):
    """Where the search sends points: results come back under the token they were submitted with."""

    def submit(self, token: str, space: ModelSpace, x: list[float], ev: EvalConfig, priority: int = 0) -> None:
        """Start evaluating ``x`` of ``space`` with the settings ``ev`` (the islands' may be coarser); a higher
        ``priority`` runs before queued work."""

    def completed(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(token, result)`` as evaluations finish, those submitted meanwhile included, until none is left."""


@dataclass(frozen=True)
class Hooks:
    """How the search tells its caller about progress: done units, live metrics, progress bars."""

    record: Callable[..., Any]  # record(unit, **fields): a unit is done (after its checkpoint)
    report: Callable[..., Any]  # report(**metrics): live metrics
    progress: Callable[..., Any]  # progress(total, desc=, unit=, initial=) -> a tqdm-like bar


def structure_plan(first: tuple[int, ...], final: tuple[int, ...]) -> StructurePlan:
    """Structures to search in order, each with the period increased to reach it (None for the first)."""
    out: StructurePlan = [(tuple(first), None)]
    cur = list(first)
    while tuple(cur) != tuple(final):
        period = next(i for i, (a, b) in enumerate(zip(cur, final, strict=True)) if a < b)
        cur[period] += 1
        out.append((tuple(cur), period))
    return out


def aic(n_params: int, loglik: float) -> float:
    """Akaike's information criterion, 2k - 2 ln L."""
    return 2 * n_params - 2 * loglik


def increased(prev_space: ModelSpace, top: list[dict[str, Any]], period: int) -> tuple[ModelSpace, list[list[float]]]:
    """Next structure's space and seeds: each of the ``top`` models with one interval of ``period`` split in two."""
    seeds: list[list[float]] = []
    space = None
    for cand in top:
        values = prev_space.full(cand["x"])
        for frac in (0.5, 0.25, 0.75):
            sp, new = prev_space.increase(period, values, frac)
            space = space or sp
            seeds.append([float(new[n]) for n in space.names])
    return space, seeds  # type: ignore[return-value]


def ranked(islands: list[Island]) -> list[tuple[tuple[float, ...], float]]:
    """Every individual of the islands: each island's best first (local searches start in different basins),
    then the others, best first."""
    pool = sorted({tuple(x): f for isl in islands for x, f in isl.population}.items(), key=lambda kv: (-kv[1], kv[0]))
    heads = sorted({tuple(i.best[0]): i.best[1] for i in islands if i.best}.items(), key=lambda kv: (-kv[1], kv[0]))
    return heads + [kv for kv in pool if kv not in heads]


def ga_progress(arch: Archipelago, max_evals: int) -> tuple[int, int]:
    """(evaluations done, evaluations in all) of a structure's islands, for its progress bar.

    A stopped island (stalled, target, cap) counts what it spent; a running one at least its cap and
    at least its open generation (the generation that crosses ``max_evals`` finishes whole), so the
    bar ends exactly full whenever the islands stop.
    """
    n = total = 0
    for isl in arch.islands:
        batch = None if isl.done else arch.open.get(isl.index)
        n += isl.n_evals + (sum(f is not None for f in batch.fitness) if batch else 0)
        total += isl.n_evals if isl.done else max(max_evals, isl.n_evals + (len(batch.xs) if batch else 0))
    return n, total


def ga_settings(cfg: DemographyConfig, ev: EvalConfig, sample_sizes: tuple[int, ...]) -> EvalConfig:
    """The islands' evaluation settings: ``ev`` with moments' time step ``ga_dt_fac`` and the data projected
    to ``ga_projection`` where given (``ev`` itself when neither changes anything).

    The genetic algorithm ranks models far from the optimum, where a coarse time step or a smaller spectrum
    changes the ranking much less than it cuts the cost (3-population moments: about 3 times each).
    """
    dt_fac = ev.dt_fac if ev.engine != "moments" or cfg.ga_dt_fac is None else float(cfg.ga_dt_fac)
    proj = cfg.ga_projection
    ns = tuple(int(n) for n in sample_sizes)
    if proj is not None:
        if len(proj) != len(ns) or any(p > n for p, n in zip(proj, ns, strict=False)):
            raise ParamError("ga_projection", f"{list(proj)}: one size per population, none above the data's "
                                              f"sample sizes {list(ns)}")
        proj = None if tuple(proj) == ns else tuple(proj)
    if dt_fac == ev.dt_fac and proj is None:
        return ev
    return dataclasses.replace(ev, dt_fac=dt_fac, projection=proj)


def read_json(path: Path) -> Any:
    """A checkpoint file's content, or None when it does not exist yet."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


class LocalProgress:
    """Counts a local search's evaluations (all its phases) and its best log-likelihood, and logs both at
    most every ``every_s`` seconds, so a long local search is never silent (its bar-less phase)."""

    def __init__(self, label: str, every_s: float | None = None) -> None:
        self.label = label
        self.every_s = LOCAL_LOG_SECONDS if every_s is None else every_s
        self.n = 0
        self.best = self.best_coarse = WORST
        self.last = time.monotonic()

    def seen(self, results: list[dict], coarse: bool) -> None:
        """``results`` came back; ``coarse``: at the islands' settings (not comparable with the reported LL)."""
        self.n += len(results)
        top = max((float(r["loglik"]) for r in results), default=WORST)
        if coarse:
            self.best_coarse = max(self.best_coarse, top)
        else:
            self.best = max(self.best, top)
        if time.monotonic() - self.last >= self.every_s:
            self.log()

    def log(self) -> None:
        """One line now: evaluations so far and the best log-likelihood (at the stage's settings if any)."""
        self.last = time.monotonic()
        if self.best > WORST:
            best = f"best LL {self.best:.3f}"
        elif self.best_coarse > WORST:
            best = f"best LL {self.best_coarse:.3f} at the islands' settings"
        else:
            best = "no valid model yet"
        log.info("%s: %d evaluations, %s", self.label, self.n, best)


class WholeDataCheck:
    """The best model so far of the search's cheaper settings (islands, a local search's first phase),
    scored at the stage's settings (the whole data): one evaluation in flight at a time, one due every
    ``WHOLE_DATA_SECONDS``. Its results are reported only (not cached, not counted as the search's
    evaluations), so the search's outputs do not depend on when they came."""

    PREFIX = "whole-"

    def __init__(self, t_start: float) -> None:
        self.t_start = t_start
        self.due = time.monotonic() + WHOLE_DATA_SECONDS
        self.pending: str | None = None
        self.sent: dict[str, Any] = {}  # the check in flight: its log label and the model's LL at the cheap settings
        self.offered: tuple[list[float], float] | None = None
        self.last_x: list[float] | None = None  # the model checked last
        self.n = 0
        self.best: float | None = None

    def new_structure(self) -> None:
        """Models of another structure come next (their vectors are another space's)."""
        self.offered = None

    def offer(self, x: list[float], loglik: float) -> None:
        """A model scored at the cheap settings; the best one offered is the next to check."""
        if loglik > WORST and (self.offered is None or loglik > self.offered[1]):
            self.offered = ([float(v) for v in x], float(loglik))

    def maybe_submit(self, evals: Evaluations, si: int, space: ModelSpace, ev: EvalConfig, label: str) -> None:
        """Submit the best model offered if a check is due and none is in flight."""
        if self.pending is not None or self.offered is None or time.monotonic() < self.due:
            return
        x, coarse = self.offered
        if x == self.last_x:  # no better model since the last check: its score stands
            self.due = time.monotonic() + WHOLE_DATA_SECONDS
            return
        self.last_x = x
        self.pending = f"{self.PREFIX}s{si}-{self.n:04d}"
        self.n += 1
        self.sent = {"label": label, "loglik_cheap": coarse}
        evals.submit(self.pending, space, x, ev, priority=1)  # ahead of the queued evaluations

    def scored(self, lls: list[float], hooks: Hooks) -> None:
        """The search's own evaluations at the stage's settings (rescoring, a local search's last phase):
        report the best so far when they raise it."""
        top = max((ll for ll in lls if ll > WORST), default=None)
        if top is not None and (self.best is None or top > self.best):
            self.best = round(top, 4)
            hooks.report(whole_data={"best_loglik": self.best, "last_loglik": self.best,
                                     "seconds": round(time.time() - self.t_start, 1), "checks": self.n})

    def finished(self, token: str, r: dict[str, Any], hooks: Hooks, bar: Any = None) -> bool:
        """Handle ``token`` if it is the check in flight (False otherwise): log, report, show it on the bar;
        the next is due ``WHOLE_DATA_SECONDS`` from now."""
        if token != self.pending:
            return False
        self.pending = None
        self.due = time.monotonic() + WHOLE_DATA_SECONDS
        ll = float(r["loglik"])
        seconds = round(time.time() - self.t_start, 1)
        if ll > WORST and (self.best is None or ll > self.best):
            self.best = round(ll, 4)
        log.info("%s: the best model so far scores LL %s on the whole data (%.3f at the cheaper settings), "
                 "%.0f s in", self.sent["label"], "not valid" if ll <= WORST else f"{ll:.3f}",
                 self.sent["loglik_cheap"], seconds)
        hooks.report(whole_data={"best_loglik": self.best, "last_loglik": None if ll <= WORST else round(ll, 4),
                                 "seconds": seconds, "checks": self.n})
        if self.best is not None and bar is not None:
            bar.set_postfix_str(f"whole-data LL {self.best:.2f}", refresh=False)
        return True


class Search:
    """Runs every structure of a demography config; ``state`` holds the finished ones (``state.json``)."""

    def __init__(self, cfg: DemographyConfig, ev: EvalConfig, data: Any, evals: Evaluations, checkpoint: Path,
                 seed: int, hooks: Hooks, label: str) -> None:
        self.cfg, self.ev, self.data, self.evals = cfg, ev, data, evals
        self.ev_ga = ga_settings(cfg, ev, tuple(data.sample_sizes))
        # the jumps' settings: the islands' time step on the whole data. A projection keeps the ranking of
        # models far apart but blurs what a jump must tell apart near an optimum (on bench ga3's spectrum
        # projected to 10 per population, linear and exponential growth of CHB score within 0.1 units; on
        # the whole data exponential is 9 units higher)
        self.ev_jump = ev if self.ev_ga.dt_fac == ev.dt_fac else dataclasses.replace(ev, dt_fac=self.ev_ga.dt_fac)
        self.ck = checkpoint
        self.seed = seed
        self.hooks = hooks
        self.label = label  # progress bars
        self.state_path = self.ck / "state.json"
        self.state: dict[str, Any] = read_json(self.state_path) or {"results": {}, "seconds_to_target": None,
                                                                      "elapsed_before": 0.0}
        self.state.setdefault("elapsed_before", 0.0)
        self.cache: dict[tuple, dict] = {}
        self.n_evals = self.n_cached = self.n_failed = 0
        self.jobs: dict[str, int] = {}
        self.t0 = time.time()
        self._seq = 0
        self.whole = WholeDataCheck(self.t0 - self.state["elapsed_before"])

    # -- structures ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Search the structures not in ``state`` yet; the time spent adds up over attempts."""
        try:
            self._structures()
        finally:
            self.state["elapsed_before"] = self.state["elapsed_before"] + time.time() - self.t0
            self._save_state()
        return self.state

    def _structures(self) -> None:
        """Each structure of the plan in turn, seeded by the previous one's best models, increased."""
        cfg = self.cfg
        plan = structure_plan(cfg.initial_structure, cfg.final_structure)
        space = cfg.space(plan[0][0])
        start_gen = 0
        initial = cfg.initial_points(space)
        for si, (structure, period) in enumerate(plan):
            key = str(si)
            if si > 0:
                prev = self.state["results"][str(si - 1)]
                space, initial = increased(ModelSpace.from_dict(prev["space"]), prev["top"], period)  # type: ignore[arg-type]
                start_gen = prev["generation"]
            if key in self.state["results"]:
                continue
            if self._target_reached() and cfg.stop_at_target:
                log.info("target log-likelihood reached; structure %s skipped", structure)
                break
            self.state["results"][key] = self._run_structure(si, space, initial, start_gen)
            self._save_state()

    def _target_reached(self) -> bool:
        """A finished structure reached ``target_loglik``."""
        t = self.cfg.target_loglik
        best = max((r["loglik"] for r in self.state["results"].values()), default=-math.inf)
        return t is not None and best >= t

    def _note_target(self, ll: float) -> None:
        """Record the time to target the first time a log-likelihood reaches it."""
        t = self.cfg.target_loglik
        if t is not None and ll >= t and self.state.get("seconds_to_target") is None:
            self.state["seconds_to_target"] = round(self.state["elapsed_before"] + time.time() - self.t0, 3)
            self._save_state()
            self.hooks.report(seconds_to_target=self.state["seconds_to_target"])

    def _save_state(self) -> None:
        """Write ``state.json`` atomically."""
        atomic.write_json(self.state_path, self.state)

    # -- one structure: islands, then local search ---------------------------------------------
    def _archipelago(self, si: int, space: ModelSpace, initial: list[list[float]], start_gen: int) -> Archipelago:
        """The islands of structure ``si``, from their checkpoints where a previous attempt left them."""
        cfg = self.cfg
        islands = []
        for k in range(cfg.islands):
            saved = read_json(self.ck / f"s{si}" / f"island-{k:02d}.json")
            if saved is not None:
                islands.append(Island.from_dict(saved, space, cfg.ga))
                continue
            # every island gets the seeds (the best first), rotated so that islands start apart
            rot = initial[k % len(initial):] + initial[: k % len(initial)] if initial else []
            isl = Island(space, cfg.ga, seed_sequence(self.seed, si, k), initial=rot, index=k)
            isl.generation = isl.start_generation = start_gen
            islands.append(isl)
        resumed = sum(1 for i in islands if i.generation > start_gen)
        if resumed:
            log.info("structure %s: resuming %d island(s) from checkpoints (generations %s)", space.structure,
                     resumed, [i.generation for i in islands])
        # islands at other settings than the reported ones: their log-likelihoods are not the target's
        target = cfg.target_loglik if self.ev_ga is self.ev else None
        return Archipelago(islands, cfg.migrate_every, cfg.deterministic, target)

    def _run_structure(self, si: int, space: ModelSpace, initial: list[list[float]], start_gen: int) -> dict[str, Any]:
        """Islands, then local searches from their best; the structure's result (LL, AIC, top models)."""
        arch = self._archipelago(si, space, initial, start_gen)
        self._islands(si, space, arch)
        pool = ranked(arch.islands)
        starts = pool[: self.cfg.local_search.starts]
        top = [{"x": list(x), "loglik": f, "source": "ga"} for x, f in starts]
        if self.ev_ga is not self.ev:  # islands at a coarser time step: the starts scored at dt_fac
            scored = self._evaluate_many(si, space, [list(x) for x, _f in starts], f"rescore-s{si}-eval")
            top = [dict(t, loglik=r["loglik"], theta=r["theta"]) for t, r in zip(top, scored, strict=True)]
        local = self._local(si, space, [list(x) for x, _f in starts])
        top = sorted(top + local, key=lambda r: -r["loglik"])
        best = top[0]
        self._note_target(best["loglik"])
        theta = best.get("theta")
        if theta is None:
            theta = evaluate(space, best["x"], self.data, self.ev)["theta"]
        ll = float(best["loglik"])
        return {"structure": list(space.structure), "space": space.to_dict(), "x": best["x"], "loglik": ll,
                "theta": theta, "n_params": space.n_continuous, "aic": aic(space.n_continuous, ll),
                "generation": max(i.generation for i in arch.islands),
                "best_loglik_per_island": arch.best_per_island(),
                "stop_reasons": [i.stop_reason for i in arch.islands],
                "top": [{"x": t["x"], "loglik": t["loglik"]} for t in top[:3]],
                "ga_best_loglik": max((f for _x, f in pool), default=None),
                "local_search": [{"loglik": r["loglik"], "evals": r.get("evals"),
                                  "evals_ga_settings": r.get("evals_ga_settings", 0)} for r in local]}

    def _islands(self, si: int, space: ModelSpace, arch: Archipelago) -> None:
        """Run the islands' generations until all are done, each island as soon as its own batch is."""
        n, total = ga_progress(arch, self.cfg.ga.max_evals)
        bar = self.hooks.progress(total, desc=f"{self.label} {space.structure}", unit="eval", initial=n)

        def sync_bar() -> None:
            bar.n, bar.total = ga_progress(arch, self.cfg.ga.max_evals)
            bar.refresh()

        pending: dict[str, tuple[Batch, int]] = {}
        ev = self.ev_ga
        cheap = ev is not self.ev
        self.whole.new_structure()

        def launch() -> None:
            # islands whose batch is fully cached complete at once, which may free others: loop
            progressed = True
            while progressed:
                progressed = False
                for batch in arch.ready():
                    for i, x in enumerate(batch.xs):
                        hit = self.cache.get((si, tuple(x), ev))
                        if hit is not None:
                            batch.fitness[i] = hit["loglik"]
                            self.n_cached += 1
                            continue
                        token = f"island-{batch.island:02d}-eval-{batch.generation:05d}-{i:03d}"
                        self.evals.submit(token, space, x, ev)
                        pending[token] = (batch, i)
                    if batch.complete:
                        self._finish(si, arch, batch)
                        progressed = True

        launch()
        sync_bar()
        for token, r in self.evals.completed():
            if self._whole_data(token, r, bar):
                continue
            batch, i = pending.pop(token)
            if arch.open.get(batch.island) is not batch:
                continue  # island stopped meanwhile (target reached)
            self._count(r)
            self.cache[(si, tuple(batch.xs[i]), ev)] = r
            batch.fitness[i] = r["loglik"]
            if ev is self.ev:
                self._note_target(r["loglik"])
            if batch.complete:
                self._finish(si, arch, batch)
                launch()
            if cheap and not arch.done:
                self.whole.offer(batch.xs[i], r["loglik"])
                self.whole.maybe_submit(self.evals, si, space, self.ev, f"{self.label} {space.structure} islands")
            sync_bar()
        bar.close()
        if not arch.done:
            raise RuntimeError(f"structure {space.structure}: islands stalled waiting for each other "
                               f"(generations {[i.generation for i in arch.islands]})")

    def _finish(self, si: int, arch: Archipelago, batch: Batch) -> None:
        """A generation is complete: tell the island, checkpoint it, then record the unit."""
        sdir = self.ck / f"s{si}"
        isl = arch.complete(batch)
        atomic.write_json(sdir / f"island-{isl.index:02d}.json", isl.to_dict())
        self.hooks.record(f"island-{isl.index:02d}-gen-{isl.generation:05d}", best_loglik=isl.best_loglik,
                          n_evals=isl.n_evals)
        # islands stopped by the target: checkpoint them too so a rerun does not restart them
        for other in arch.islands:
            if other is not isl and other.done and other.stop_reason == "target":
                atomic.write_json(sdir / f"island-{other.index:02d}.json", other.to_dict())
        per_island = [None if v <= WORST else round(v, 4) for v in arch.best_per_island()]
        if self.ev_ga is self.ev:  # the islands score the whole data themselves
            valid = [v for v in per_island if v is not None]
            self.hooks.report(whole_data={"best_loglik": max(valid) if valid else None, "checks": 0,
                                          "seconds": round(self.state["elapsed_before"] + time.time() - self.t0, 1)})
        self.hooks.report(best_loglik_per_island=per_island, structure=list(isl.space.structure),
                          generations=[i.generation for i in arch.islands], evaluations=self.n_evals,
                          cached_evaluations=self.n_cached, failed_evaluations=self.n_failed)
        log.info("island %d generation %d: best LL %.3f (strength %.2f, rate %.2f)", isl.index,
                 isl.generation, isl.best_loglik, isl.strength, isl.rate)

    # -- local search -----------------------------------------------------------------------------
    def _evaluate_many(self, si: int, space: ModelSpace, xs: list[list[float]], prefix: str,
                       ev: EvalConfig | None = None) -> list[dict]:
        """Evaluate points all at once with ``ev`` (None: the stage's settings; cached ones are not
        resubmitted); results in order."""
        ev = ev or self.ev
        out: list[dict | None] = []
        tokens: dict[str, int] = {}
        for i, x in enumerate(xs):
            x = [float(v) for v in x]
            hit = self.cache.get((si, tuple(x), ev))
            out.append(hit)
            if hit is None:
                self._seq += 1
                token = f"{prefix}-{self._seq:06d}"
                self.evals.submit(token, space, x, ev)
                tokens[token] = i
            else:
                self.n_cached += 1
        cheap = ev is not self.ev
        if cheap and tokens:
            self.whole.maybe_submit(self.evals, si, space, self.ev, f"{self.label} {space.structure} local search")
        results: dict[str, dict] = {}
        if tokens:
            for token, r in self.evals.completed():
                if self._whole_data(token, r):
                    continue
                results[token] = r
                if len(results) == len(tokens):
                    break
        for token, i in tokens.items():
            r = results[token]
            self._count(r)
            self.cache[(si, tuple(float(v) for v in xs[i]), ev)] = r
            out[i] = r
            if ev is self.ev:
                self._note_target(r["loglik"])
            else:
                self.whole.offer(xs[i], r["loglik"])
        if not cheap and tokens:
            self.whole.scored([float(results[t]["loglik"]) for t in tokens], self.hooks)
        return out  # type: ignore[return-value]

    def _whole_data(self, token: str, r: dict[str, Any], bar: Any = None) -> bool:
        """Whether ``token`` was a whole-data check (then handled: see :class:`WholeDataCheck`)."""
        if not self.whole.finished(token, r, self.hooks, bar):
            return False
        if r["loglik"] > WORST:
            self._note_target(float(r["loglik"]))
        return True

    def _local(self, si: int, space: ModelSpace, starts: list[list[float]]) -> list[dict]:
        """Local searches from ``starts``, one after the other, each spreading its evaluations.

        Each search: at the islands' settings first (``ga_settings_first``); then jumps (other dynamics,
        revived intervals: ``jump_rounds``) on the whole data at the islands' time step; then at the stage's
        settings from the best.
        Each finished search is checkpointed, so a rerun continues with the next start.
        """
        ls = self.cfg.local_search
        path = self.ck / f"s{si}" / "local.json"
        done = read_json(path) or []
        if ls.method == "none":
            return []
        stop = self._target_noted if self.cfg.stop_at_target else None
        cheap = ls.ga_settings_first and self.ev_ga is not self.ev
        for j in range(len(done), len(starts)):
            if stop is not None and stop():
                break
            prefix = f"local-s{si}-{j:02d}-eval"
            progress = LocalProgress(f"local search {j + 1}/{len(starts)} of structure {space.structure}")
            log.info("%s: %s from the islands' #%d model, up to %d evaluations a run", progress.label, ls.method,
                     j + 1, ls.max_evals)

            def search(x: list[float], ev: EvalConfig, p: str, max_evals: int = ls.max_evals,
                       progress: LocalProgress = progress) -> dict:
                def evaluate_many(xs: list[list[float]]) -> list[dict]:
                    results = self._evaluate_many(si, space, xs, p, ev)
                    progress.seen(results, coarse=ev is not self.ev)
                    return results

                return local_search(space, x, evaluate_many, method=ls.method, maxiter=ls.maxiter,
                                    max_evals=max_evals, should_stop=stop)

            first = search(starts[j], self.ev_ga if cheap else self.ev, f"{prefix}-ga" if cheap else prefix)
            # jumps on the whole data (the islands' time step where coarser): a projection blurs dynamics
            switched, jumped = self._jump(space, first, self.ev_jump if cheap else self.ev, search,
                                          f"{prefix}-jump", rescore=cheap)
            r = search(switched["x"], self.ev, prefix) if cheap or jumped else first
            r = dict(r, source="local", evals_ga_settings=first["evals"] if cheap else 0,
                     stop_ga_settings=first["stop"] if cheap else None, jumped=jumped)
            done.append(r)
            atomic.write_json(path, done)
            self.hooks.record(f"local-s{si}-{j:02d}", best_loglik=r["loglik"], evals=r["evals"])
            log.info("%s: done, LL %.3f (%d evaluations in all, %d in its last run: %s)%s", progress.label,
                     r["loglik"], progress.n, r["evals"], r["stop"], "; after a jump" if r["jumped"] else "")
        return done

    def _jump(self, space: ModelSpace, best: dict, ev: EvalConfig, search: Callable[..., dict], prefix: str,
              rescore: bool = False) -> tuple[dict, bool]:
        """``best`` or a better model a jump away (:func:`~hpc_popgen.demography.ga.jumps`: other dynamics,
        revived intervals): each jump gets a short local search (``jump_evals``) at ``ev``; the best replaces
        ``best`` while it improves, for at most ``jump_rounds`` rounds (each from the best so far: a revived
        interval can make other dynamics pay). ``rescore``: ``best`` was found at other settings than ``ev``,
        so it gets the same short search first (its log-likelihood is then comparable with the jumps').
        Returns the best and whether a jump led to it."""
        ls = self.cfg.local_search
        if ls.jump_rounds and rescore:
            best = search(best["x"], ev, f"{prefix}-base", ls.jump_evals)
        jumped = False
        for rnd in range(ls.jump_rounds):
            tried = [search(x, ev, f"{prefix}{rnd}-{k:02d}", ls.jump_evals) for k, x in enumerate(jumps(space, best["x"]))]
            if not tried:
                break
            cand = self._follow(max(tried, key=lambda r: r["loglik"]), best, ev, search, f"{prefix}{rnd}-more")
            if cand["loglik"] <= best["loglik"]:
                break
            log.info("a jump improved the local search: LL %.3f -> %.3f", best["loglik"], cand["loglik"])
            best, jumped = cand, True
        return best, jumped

    def _follow(self, cand: dict, best: dict, ev: EvalConfig, search: Callable[..., dict], prefix: str) -> dict:
        """The best jump, searched on while behind ``best`` but gaining faster than it lags: its short search
        started far from its optimum, ``best``'s near its own, so a short search alone favours ``best``.
        At most :data:`FOLLOW_SEARCHES` more short searches, each from the last one's end."""
        for k in range(FOLLOW_SEARCHES):
            gain, lag = cand["loglik"] - cand["start_loglik"], best["loglik"] - cand["loglik"]
            if lag < 0 or cand["stop"] != "max_evals" or gain <= lag:
                break
            log.info("following the best jump (LL %.3f, %.3f behind, gained %.3f)", cand["loglik"], lag, gain)
            cand = search(cand["x"], ev, f"{prefix}{k}", self.cfg.local_search.jump_evals)  # starts at cand's LL
        return cand

    def _target_noted(self) -> bool:
        """Some evaluation reached ``target_loglik`` (stops local searches under ``stop_at_target``)."""
        return self.state.get("seconds_to_target") is not None

    def _count(self, r: dict) -> None:
        """Count an evaluation of this attempt: failed or not, and the SLURM job it ran in."""
        self.n_evals += 1
        self.n_failed += bool(r["error"])
        if r.get("job"):
            self.jobs[r["job"]] = self.jobs.get(r["job"], 0) + 1

    # -- report ---------------------------------------------------------------------------------
    def metrics(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The stage's metrics from this attempt's counts and the results summary."""
        best = max((s["loglik"] for s in summary["structures"]), default=None)
        metrics = {"best_loglik": best, "best_by_aic": summary.get("best_by_aic"),
                   "best_by_loglik": summary.get("best_by_loglik"),
                   "seconds_to_target": summary["seconds_to_target"],
                   "evaluations_this_attempt": self.n_evals, "cached_evaluations": self.n_cached,
                   "failed_evaluations": self.n_failed,
                   "best_loglik_per_structure": {"-".join(map(str, s["structure"])): s["loglik"]
                                                 for s in summary["structures"]}}
        if self.jobs:
            metrics["evaluations_by_slurm_job"] = dict(sorted(self.jobs.items()))
        if summary.get("warning"):
            metrics["warning"] = summary["warning"]
        return metrics
