"""The ``demography`` stage: GADMA-style demographic inference from an AFS, islands over Dask.

Every likelihood evaluation is one Dask task (key ``<stage>-island-KK-eval-GGGGG-III``). Islands
submit their generations independently and are advanced from ``distributed.as_completed`` over all
islands' futures, so a slow evaluation only holds back its own island. After each generation the
island (population, adaptive rates, RNG state) is written atomically to
``<stage_dir>/checkpoint/s<structure>/island-KK.json`` and then ``island-KK-gen-GGGGG`` is recorded
in the ledger; ``hpcpop rerun`` resumes every island from its last checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from .. import atomic
from ..errors import InputDataError, ManifestError
from ..manifest import Manifest, StageSpec
from ..seeds import seed_sequence
from .base import StageContext, StageResult

WORST = -1e300  # fitness of a failed evaluation (as hpc_popgen.demography.engine.WORST)

log = logging.getLogger(__name__)


# --- validation --------------------------------------------------------------------------------

def check(spec: StageSpec, manifest: Manifest) -> None:
    """Checks the schema cannot express: input choice, structures, engine limits, parameter names."""
    from ..demography.model import ModelSpace

    p = spec.params
    where = f"{manifest.source}: stages[{spec.index}].demography"
    inp = p.get("input") or {}
    if bool(inp.get("afs")) == bool(inp.get("vcf")):
        raise ManifestError(f"{where}.input: give exactly one of afs or vcf")
    if inp.get("vcf"):
        for key in ("popmap", "populations", "projections"):
            if not inp.get(key):
                raise ManifestError(f"{where}.input.{key}: required with input.vcf")
        if len(inp["projections"]) != len(inp["populations"]):
            raise ManifestError(f"{where}.input.projections: one sample size per population "
                                f"({len(inp['populations'])} populations)")
    first, final = tuple(p["initial_structure"]), tuple(p["final_structure"])
    if len(first) != len(final) or any(a > b for a, b in zip(first, final, strict=False)):
        raise ManifestError(f"{where}.final_structure: {list(final)} must have the length of "
                            f"initial_structure {list(first)} and no smaller entry")
    if p["engine"] == "dadi" and len(first) > 3:
        raise ManifestError(f"{where}.engine: dadi handles at most 3 populations (structure {list(first)})")
    needs_phys = p["likelihood"] == "poisson" or p.get("max_split_years")
    if needs_phys and not (p.get("mu") and p.get("sequence_length")):
        raise ManifestError(f"{where}.mu: mu and sequence_length are required for the Poisson likelihood "
                            "and for max_split_years")
    try:
        _space(p, first)
    except KeyError as exc:
        names = ", ".join(q.name for q in ModelSpace(first, p["sym_migration"], p["migration"],
                                                     tuple(p["dynamics"]), poisson=p["likelihood"] == "poisson").params)
        raise ManifestError(f"{where}: unknown parameter {exc.args[0]!r} in fixed/bounds "
                            f"(parameters of structure {list(first)}: {names})") from None
    for i, guess in enumerate(p.get("initial_guesses") or []):
        missing = [n for n in _space(p, first).names if n not in guess]
        if missing:
            raise ManifestError(f"{where}.initial_guesses[{i}]: missing {', '.join(missing)}")


def _space(p: dict, structure: tuple[int, ...]) -> Any:
    from ..demography.model import ModelSpace

    bounds = {k: tuple(v) for k, v in (p.get("bounds") or {}).items()}
    return ModelSpace(structure, p["sym_migration"], p["migration"], tuple(p["dynamics"]), bounds,
                      dict(p.get("fixed") or {}), p["likelihood"] == "poisson")


def structure_plan(first: tuple[int, ...], final: tuple[int, ...]) -> list[tuple[tuple[int, ...], int | None]]:
    """Structures to search in order, each with the period increased to reach it (None for the first)."""
    out: list[tuple[tuple[int, ...], int | None]] = [(tuple(first), None)]
    cur = list(first)
    while tuple(cur) != tuple(final):
        period = next(i for i, (a, b) in enumerate(zip(cur, final, strict=True)) if a < b)
        cur[period] += 1
        out.append((tuple(cur), period))
    return out


# --- data --------------------------------------------------------------------------------------

def load_data(ctx: StageContext) -> Any:
    """The AFS from input.afs, or from input.vcf + popmap projected to input.projections."""
    from ..demography.afs import fs_from_vcf, load_fs

    inp = ctx.params["input"]
    if inp.get("afs"):
        fs = load_fs(ctx.input_path(inp["afs"]), inp.get("populations"))
    else:
        fs = fs_from_vcf(ctx.input_path(inp["vcf"]), ctx.input_path(inp["popmap"]), inp["populations"],
                         inp["projections"], polarized=inp.get("polarized", False))
    n_struct = len(ctx.params["initial_structure"])
    if fs.ndim != n_struct:
        raise InputDataError(f"{inp.get('afs') or inp.get('vcf')}: {fs.ndim}-population spectrum but "
                             f"initial_structure {ctx.params['initial_structure']} has {n_struct} entries")
    return fs


# --- the search driver ---------------------------------------------------------------------------

class Search:
    """Runs the structures of one stage: islands on Dask, local searches, checkpoints, outputs."""

    def __init__(self, ctx: StageContext, data: Any):
        from ..demography.engine import EvalConfig, default_pts
        from ..demography.ga import GAConfig

        self.ctx = ctx
        self.p = ctx.params
        self.data = data
        p = self.p
        ns = tuple(int(n) for n in data.sample_sizes)
        self.cfg = EvalConfig(engine=p["engine"], pts=tuple(p.get("pts") or default_pts(ns)),
                              likelihood=p["likelihood"], mu=p.get("mu"), length=p.get("sequence_length"),
                              generation_time=p["generation_time"], max_split_years=p.get("max_split_years"))
        self.ga = GAConfig.from_params({**p["ga"], "target_loglik": p.get("target_loglik")})
        self.ck = ctx.stage_dir() / "checkpoint"
        self.state_path = self.ck / "state.json"
        self.state: dict[str, Any] = _read_json(self.state_path) or {"results": {}, "seconds_to_target": None,
                                                                       "elapsed_before": 0.0}
        self.cache: dict[tuple, dict] = {}
        self.n_evals = 0
        self.n_cached = 0
        self.n_failed = 0
        self.t0 = time.time()
        self.units = 0
        self._seq = 0
        self.jobs: dict[str, int] = {}

    # -- structures ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from ..demography.model import ModelSpace

        plan = structure_plan(tuple(self.p["initial_structure"]), tuple(self.p["final_structure"]))
        space = _space(self.p, plan[0][0])
        start_gen = 0
        initial = self._initial_guesses(space)
        for si, (structure, period) in enumerate(plan):
            key = str(si)
            if si > 0:
                prev = self.state["results"][str(si - 1)]
                prev_space = ModelSpace.from_dict(prev["space"])
                space, initial = self._increased(prev_space, prev, period)  # type: ignore[arg-type]
                start_gen = prev["generation"]
            if key in self.state["results"]:
                continue
            if self._target_reached() and self.p["stop_at_target"]:
                log.info("target log-likelihood reached; structure %s skipped", structure)
                break
            res = self._run_structure(si, space, initial, start_gen)
            self.state["results"][key] = res
            self._save_state()
        return self.state

    def _initial_guesses(self, space: Any) -> list[list[float]]:
        return [list(space.vector(g)) for g in (self.p.get("initial_guesses") or [])]

    def _increased(self, prev_space: Any, prev: dict, period: int) -> tuple[Any, list[list[float]]]:
        """Next structure's space and seeds: the previous best models, one interval split in two."""
        seeds: list[list[float]] = []
        space = None
        for cand in prev["top"]:
            values = prev_space.full(cand["x"])
            for frac in (0.5, 0.25, 0.75):
                sp, new = prev_space.increase(period, values, frac)
                space = space or sp
                seeds.append([float(new[n]) for n in space.names])
        return space, seeds

    def _target_reached(self) -> bool:
        t = self.p.get("target_loglik")
        best = max((r["loglik"] for r in self.state["results"].values()), default=-math.inf)
        return t is not None and best >= t

    def _note_target(self, ll: float) -> None:
        t = self.p.get("target_loglik")
        if t is not None and ll >= t and self.state.get("seconds_to_target") is None:
            self.state["seconds_to_target"] = round(self.state["elapsed_before"] + time.time() - self.t0, 3)
            self._save_state()
            self.ctx.report(seconds_to_target=self.state["seconds_to_target"])

    def _save_state(self) -> None:
        atomic.write_json(self.state_path, self.state)

    # -- one structure: islands, then local search ---------------------------------------------
    def _run_structure(self, si: int, space: Any, initial: list[list[float]], start_gen: int) -> dict[str, Any]:
        from distributed import as_completed

        from ..demography.engine import evaluate
        from ..demography.ga import Island
        from ..demography.islands import Archipelago

        ctx, p = self.ctx, self.p
        k_isl = int(p["islands"])
        sdir = self.ck / f"s{si}"
        islands = []
        for k in range(k_isl):
            saved = _read_json(sdir / f"island-{k:02d}.json")
            if saved is not None:
                islands.append(Island.from_dict(saved, space, self.ga))
            else:
                # every island gets the seeds (the best first), rotated so that islands start apart
                rot = initial[k % len(initial):] + initial[: k % len(initial)] if initial else []
                isl = Island(space, self.ga, seed_sequence(ctx.seed, si, k), initial=rot, index=k)
                isl.generation = isl.start_generation = start_gen
                islands.append(isl)
        arch = Archipelago(islands, p["migrate_every"], p["deterministic"], self.ga.target_loglik)
        resumed = sum(1 for i in islands if i.generation > start_gen)
        if resumed:
            log.info("structure %s: resuming %d island(s) from checkpoints (generations %s)", space.structure,
                     resumed, [i.generation for i in islands])
        client = ctx.client
        self.ctx.run.update_report(dashboard=ctx.cluster.dashboard)
        total = k_isl * self.ga.max_evals
        bar = ctx.progress(total, desc=f"{ctx.name} {space.structure}", unit="eval",
                           initial=min(sum(i.n_evals for i in islands), total))
        meta: dict[str, tuple[Any, int]] = {}
        ac = as_completed([])

        def launch() -> None:
            # islands whose batch is fully cached complete at once, which may free others: loop
            progressed = True
            while progressed:
                progressed = False
                for batch in arch.ready():
                    for i, x in enumerate(batch.xs):
                        hit = self.cache.get((si, tuple(x)))
                        if hit is not None:
                            batch.fitness[i] = hit["loglik"]
                            self.n_cached += 1
                            continue
                        fut = client.submit(evaluate, space, x, self.data, self.cfg, pure=False,
                                            retries=int(p["retries"]),
                                            key=f"{ctx.name}-island-{batch.island:02d}-eval-"
                                                f"{batch.generation:05d}-{i:03d}")
                        meta[fut.key] = (batch, i)
                        ac.add(fut)
                    if batch.complete:
                        self._finish(arch, batch, sdir)
                        progressed = True

        launch()
        for fut in ac:
            batch, i = meta.pop(fut.key)
            try:
                r = fut.result()
            except Exception as exc:  # noqa: BLE001 - lost beyond retries: worst fitness, logged
                log.warning("evaluation %s failed: %s", fut.key, exc)
                r = {"loglik": WORST, "theta": None, "error": str(exc)}
            fut.release()
            if arch.open.get(batch.island) is not batch:
                continue  # island stopped meanwhile (target reached)
            self._count(r)
            self.cache[(si, tuple(batch.xs[i]))] = r
            batch.fitness[i] = r["loglik"]
            bar.update(1)
            self._note_target(r["loglik"])
            if batch.complete:
                self._finish(arch, batch, sdir)
                launch()
        bar.close()
        if not arch.done:
            raise RuntimeError(f"structure {space.structure}: islands stalled waiting for each other "
                               f"(generations {[i.generation for i in arch.islands]})")
        # local search from the best of each island first (different basins), then the next best overall
        pool = sorted({tuple(x): f for isl in arch.islands for x, f in isl.population}.items(),
                      key=lambda kv: (-kv[1], kv[0]))
        heads = sorted({tuple(i.best[0]): i.best[1] for i in arch.islands if i.best}.items(),
                       key=lambda kv: (-kv[1], kv[0]))
        pool = heads + [kv for kv in pool if kv not in heads]
        starts = [list(x) for x, _f in pool[: int(p["local_search"]["starts"])]]
        top = [{"x": list(x), "loglik": f, "source": "ga"} for x, f in pool[: int(p["local_search"]["starts"])]]
        local = self._local(si, space, starts)
        top = sorted(top + local, key=lambda r: -r["loglik"])
        best = top[0]
        self._note_target(best["loglik"])
        theta = best.get("theta")
        if theta is None:
            theta = evaluate(space, best["x"], self.data, self.cfg)["theta"]
        ll = float(best["loglik"])
        k_par = space.n_continuous
        return {"structure": list(space.structure), "space": space.to_dict(), "x": best["x"], "loglik": ll,
                "theta": theta, "n_params": k_par, "aic": 2 * k_par - 2 * ll,
                "generation": max(i.generation for i in arch.islands),
                "best_loglik_per_island": arch.best_per_island(),
                "stop_reasons": [i.stop_reason for i in arch.islands],
                "top": [{"x": t["x"], "loglik": t["loglik"]} for t in top[:3]],
                "ga_best_loglik": max((f for _x, f in pool), default=None),
                "local_search": [{"loglik": r["loglik"], "evals": r.get("evals")} for r in local]}

    def _finish(self, arch: Any, batch: Any, sdir: Path) -> None:
        """A generation is complete: tell the island, checkpoint it, then record the ledger unit."""
        isl = arch.complete(batch)
        atomic.write_json(sdir / f"island-{isl.index:02d}.json", isl.to_dict())
        unit = f"island-{isl.index:02d}-gen-{isl.generation:05d}"
        self.ctx.ledger.record(unit, best_loglik=isl.best_loglik, n_evals=isl.n_evals)
        self.units += 1
        # islands stopped by the target: checkpoint them too so a rerun does not restart them
        for other in arch.islands:
            if other is not isl and other.done and other.stop_reason == "target":
                atomic.write_json(sdir / f"island-{other.index:02d}.json", other.to_dict())
        per_island = [None if v <= -1e299 else round(v, 4) for v in arch.best_per_island()]
        self.ctx.report(best_loglik_per_island=per_island, structure=list(isl.space.structure),
                        generations=[i.generation for i in arch.islands], evaluations=self.n_evals,
                        cached_evaluations=self.n_cached, failed_evaluations=self.n_failed)
        log.info("island %d generation %d: best LL %.3f (strength %.2f, rate %.2f)", isl.index,
                 isl.generation, isl.best_loglik, isl.strength, isl.rate)

    def _evaluate_many(self, si: int, space: Any, xs: list[list[float]], prefix: str) -> list[dict]:
        """Evaluate individuals as Dask tasks (cached ones are not resubmitted), results in order."""
        from distributed import wait

        from ..demography.engine import evaluate

        out: list[dict | None] = []
        futs = {}
        for i, x in enumerate(xs):
            x = [float(v) for v in x]
            hit = self.cache.get((si, tuple(x)))
            out.append(hit)
            if hit is None:
                self._seq += 1
                futs[i] = self.ctx.client.submit(evaluate, space, x, self.data, self.cfg, pure=False,
                                                 retries=int(self.p["retries"]), key=f"{prefix}-{self._seq:06d}")
            else:
                self.n_cached += 1
        wait(list(futs.values()))
        for i, f in futs.items():
            try:
                r = f.result()
            except Exception as exc:  # noqa: BLE001 - lost beyond retries: worst fitness
                r = {"loglik": WORST, "theta": None, "error": str(exc)}
            self._count(r)
            self.cache[(si, tuple(float(v) for v in xs[i]))] = r
            out[i] = r
            self._note_target(r["loglik"])
        return out  # type: ignore[return-value]

    def _local(self, si: int, space: Any, starts: list[list[float]]) -> list[dict]:
        """Local searches from ``starts``, one after the other, each spreading its evaluations on Dask.

        Each finished search is checkpointed, so a rerun continues with the next start.
        """
        from ..demography.ga import local_search

        path = self.ck / f"s{si}" / "local.json"
        done = _read_json(path) or []
        ls = self.p["local_search"]
        if ls["method"] == "none":
            return []
        stop = (lambda: self._target_reached_now()) if self.p["stop_at_target"] else None
        for j in range(len(done), len(starts)):
            if stop is not None and stop():
                break
            prefix = f"{self.ctx.name}-local-s{si}-{j:02d}-eval"
            r = local_search(space, starts[j], lambda xs, p=prefix: self._evaluate_many(si, space, xs, p),
                             ls["method"], ls["maxiter"], should_stop=stop, max_evals=ls.get("max_evals"))
            r["source"] = "local"
            done.append(r)
            atomic.write_json(path, done)
            self.ctx.ledger.record(f"local-s{si}-{j:02d}", best_loglik=r["loglik"], evals=r["evals"])
            self.units += 1
            log.info("local search %d of structure %s: LL %.3f after %d evaluations", j, space.structure,
                     r["loglik"], r["evals"])
        return done

    def _count(self, r: dict) -> None:
        self.n_evals += 1
        self.n_failed += bool(r["error"])
        if r.get("job"):
            self.jobs[r["job"]] = self.jobs.get(r["job"], 0) + 1

    def _target_reached_now(self) -> bool:
        return self.state.get("seconds_to_target") is not None


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


# --- outputs ------------------------------------------------------------------------------------

def write_outputs(ctx: StageContext, search: Search) -> dict[str, Any]:
    """results.json, and per structure demes YAML, moments/dadi code and plots; returns the summary."""
    import demes

    from ..demography import outputs
    from ..demography.engine import default_pts, expected_fs, physical
    from ..demography.model import ModelSpace

    out_dir = ctx.stage_dir()
    data_path = _data_file(ctx, search)
    summary: dict[str, Any] = {"structures": []}
    pop_ids = list(search.data.pop_ids)
    for _si, res in sorted(search.state["results"].items(), key=lambda kv: int(kv[0])):
        space = ModelSpace.from_dict(res["space"])
        values = space.full(res["x"])
        theta = res["theta"]
        phys = physical(space, values, theta, search.cfg)
        nanc = phys.get("Nanc")
        name = "structure-" + "-".join(map(str, space.structure))
        sdir = out_dir / name
        sdir.mkdir(exist_ok=True)
        entry = {"structure": list(space.structure), "loglik": res["loglik"], "aic": res["aic"],
                 "n_params": res["n_params"], "theta": theta, "Nanc": nanc,
                 "params": {k: (int(round(v)) if k.startswith("g") else v) for k, v in values.items()},
                 "physical": phys, "best_loglik_per_island": res["best_loglik_per_island"],
                 "ga_best_loglik": res.get("ga_best_loglik"), "local_search": res.get("local_search"),
                 "dir": name}
        graph = outputs.demes_graph(space, values, nanc or 1e4, pop_ids, search.cfg.generation_time if nanc else None)
        demes.dump(graph, sdir / "model.demes.yaml")
        demes.load(sdir / "model.demes.yaml")  # validated by the demes library on the way back
        (sdir / "model_moments.py").write_text(outputs.moments_code(space, values, data_path, search.cfg))
        if space.n_pops <= 3:
            pts = search.cfg.pts or default_pts(search.data.sample_sizes)
            (sdir / "model_dadi.py").write_text(outputs.dadi_code(space, values, data_path, search.cfg, pts))
        if ctx.params["plots"]:
            try:
                outputs.plot_model(graph, sdir / "model.png")
                model = expected_fs(space, values, search.data, search.cfg)
                outputs.plot_afs(model, search.data, sdir / "afs_comparison.png",
                                 theta if search.cfg.likelihood == "poisson" else None)
            except Exception as exc:  # noqa: BLE001 - a plot must never lose the results
                log.warning("plots for %s failed: %s", name, exc)
        summary["structures"].append(entry)
    if summary["structures"]:
        by_ll = max(summary["structures"], key=lambda e: e["loglik"])
        by_aic = min(summary["structures"], key=lambda e: e["aic"])
        summary["best_by_loglik"] = by_ll["structure"]
        summary["best_by_aic"] = by_aic["structure"]
        if by_ll is not by_aic:
            summary["warning"] = (f"best log-likelihood model {by_ll['structure']} differs from best AIC model "
                                  f"{by_aic['structure']}")
            log.warning(summary["warning"])
    summary["seconds_to_target"] = search.state.get("seconds_to_target")
    summary["data"] = data_path
    summary["engine"] = search.cfg.to_dict()
    atomic.write_json(out_dir / "results.json", summary)
    return summary


def _data_file(ctx: StageContext, search: Search) -> str:
    """The .fs file the generated code reads: the input AFS, or the spectrum built from the VCF."""
    inp = ctx.params["input"]
    if inp.get("afs"):
        return str(Path(ctx.input_path(inp["afs"])).resolve())
    path = ctx.stage_dir() / "data.fs"
    search.data.to_file(str(path))
    return str(path.resolve())


def run(ctx: StageContext) -> StageResult:
    """Load the AFS, run every structure (islands, local search), write results and outputs."""
    data = load_data(ctx)
    search = Search(ctx, data)
    search.state["elapsed_before"] = search.state.get("elapsed_before", 0.0)
    try:
        search.run()
    finally:
        search.state["elapsed_before"] = search.state["elapsed_before"] + time.time() - search.t0
        search._save_state()
    summary = write_outputs(ctx, search)
    best = max((s["loglik"] for s in summary["structures"]), default=None)
    n_units = len(ctx.ledger.done())
    metrics = {"best_loglik": best, "best_by_aic": summary.get("best_by_aic"),
               "best_by_loglik": summary.get("best_by_loglik"), "seconds_to_target": summary["seconds_to_target"],
               "evaluations_this_attempt": search.n_evals, "cached_evaluations": search.n_cached,
               "failed_evaluations": search.n_failed,
               "best_loglik_per_structure": {"-".join(map(str, s["structure"])): s["loglik"]
                                             for s in summary["structures"]}}
    if search.jobs:
        metrics["evaluations_by_slurm_job"] = dict(sorted(search.jobs.items()))
    if summary.get("warning"):
        metrics["warning"] = summary["warning"]
    ctx.report(**metrics)
    return StageResult(units_total=n_units, units_done=n_units, metrics=metrics,
                       items=max(search.n_evals, 1), item_name="evaluations")


__all__ = ["run", "check", "structure_plan"]
