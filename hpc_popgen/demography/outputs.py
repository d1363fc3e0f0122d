"""Results of a demographic inference: demes YAML, standalone moments/dadi code, plots, summary.md.

The generated Python files depend only on numpy and moments (or dadi) and print the log-likelihood
of the fitted model on the data file, so a result can be checked without hpc_popgen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from .engine import EvalConfig, default_pts, expected_fs, physical
from .model import DYNAMICS, ModelSpace, size_functions
from .uncertainty import at_bounds

log = logging.getLogger(__name__)


def _loglik_lines(module: str, cfg: EvalConfig) -> list[str]:
    """The end of a generated script: the log-likelihood (and optimal theta) with ``module``'s Inference."""
    if cfg.likelihood == "poisson":
        lines = [f"    ll = {module}.Inference.ll(model * THETA0 * PARAMS['Nanc'], data)"]
    else:
        lines = [f"    ll = {module}.Inference.ll_multinom(model, data)",
                 f"    print('theta:', {module}.Inference.optimal_sfs_scaling(model, data))"]
    return lines + ["    print('log-likelihood:', ll)", ""]


def _fmt(v: float) -> str:
    """A float as exact Python source."""
    return repr(float(v))


def _start_exprs(space: ModelSpace) -> dict[int, list[str]]:
    """Start size of every population in every interval, as code expressions."""
    out: dict[int, list[str]] = {}
    current = ["1.0"]
    for iv in space.intervals:
        if len(iv.split) == 2:  # free sizes: the daughters' own parameters
            current = current[:-1] + list(iv.split)
        elif iv.split:
            s = iv.split[0]
            parent = current[-1]
            current = current[:-1] + [f"{s} * {parent}", f"(1 - {s}) * {parent}"]
        out[iv.index] = list(current)
        current = list(iv.nu)
    return out


def _size_expr(dyn: int, n0: str, n1: str, t: str) -> str:
    """Code for the size at time t of an interval from n0 to n1 with dynamics ``dyn``."""
    if dyn == 0:
        return n1
    if dyn == 1:
        return f"{n0} + ({n1} - ({n0})) * t / {t}"
    return f"({n0}) * ({n1} / ({n0})) ** (t / {t})"


def _header(space: ModelSpace, values: dict[str, float], engine: str, data_path: str, theta_line: str) -> list[str]:
    """A generated script's docstring, imports, data path and fitted parameters."""
    names = [p.name for p in space.params if p.kind != "dyn"]
    lines = [f'"""{engine} model for structure {tuple(space.structure)}, written by hpc_popgen (demography stage).',
             "",
             "Dynamics: " + ", ".join(f"{p.name}={DYNAMICS[int(round(values[p.name]))]}"
                                       for p in space.params if p.kind == "dyn") + ".",
             '"""', "", "import numpy as np", f"import {engine}", "",
             f"DATA = {data_path!r}", "PARAMS = {"]
    lines += [f"    {n!r}: {_fmt(values[n])}," for n in names]
    lines += ["}", f"NAMES = {names!r}", theta_line, ""]
    return lines


def _dyn(values: dict[str, float], name: str) -> int:
    """The dynamics code of ``name`` (sudden when the space has none)."""
    return int(round(values.get(name, 0.0)))


def moments_code(space: ModelSpace, values: dict[str, float], data_path: str, cfg: EvalConfig) -> str:
    """A standalone moments script that rebuilds the model and prints its log-likelihood."""
    theta_line = (f"THETA0 = 4 * {cfg.mu!r} * {cfg.length!r}  # theta = THETA0 * Nanc (Poisson likelihood)"
                  if cfg.likelihood == "poisson" else "")
    lines = _header(space, values, "moments", data_path, theta_line)
    lines += ["", "def model_func(params, ns):",
              '    """Expected spectrum (theta = 1) for haploid sample sizes ns."""',
              "    (" + ", ".join(n for n in [p.name for p in space.params if p.kind != "dyn"]) + ",) = params",
              "    fs = moments.Spectrum(moments.LinearSystem_1D.steady_state_1D(sum(ns)))"]
    starts = _start_exprs(space)
    k = 1
    for iv in space.intervals:
        if iv.split_before:
            k += 1
            lines.append(f"    fs = fs.split({k - 2}, ns[{k - 2}], sum(ns[{k - 1}:]))")
        dyns = [_dyn(values, g) for g in iv.dyn]
        exprs = [_size_expr(d, a, b, iv.t) for d, a, b in zip(dyns, starts[iv.index], iv.nu, strict=True)]
        if all(d == 0 for d in dyns):
            nu = "[" + ", ".join(exprs) + "]"
        else:
            lines.append(f"    nu_func = lambda t: [{', '.join(exprs)}]")
            nu = "nu_func"
        mig = ""
        if iv.mig:
            lines.append(f"    m = np.zeros(({iv.n_pops}, {iv.n_pops}))")
            for a, b, name in iv.mig:
                lines.append(f"    m[{a}, {b}] = {name}")
            mig = ", m=m"
        lines.append(f"    fs.integrate({nu}, {iv.t}{mig}, dt_fac={cfg.dt_fac!r})")
    lines += ["    return fs", "", "", 'if __name__ == "__main__":',
              "    data = moments.Spectrum.from_file(DATA)",
              "    model = model_func([PARAMS[n] for n in NAMES], data.sample_sizes)",
              "    if data.folded:", "        model = model.fold()"]
    return "\n".join(lines + _loglik_lines("moments", cfg))


def dadi_code(space: ModelSpace, values: dict[str, float], data_path: str, cfg: EvalConfig,
              pts: tuple[int, ...]) -> str:
    """A standalone dadi script (extrapolated over ``pts``) that prints the model's log-likelihood."""
    theta_line = (f"THETA0 = 4 * {cfg.mu!r} * {cfg.length!r}  # theta = THETA0 * Nanc (Poisson likelihood)"
                  if cfg.likelihood == "poisson" else "")
    lines = _header(space, values, "dadi", data_path, theta_line)
    lines += [f"PTS = {list(pts)!r}", "", "", "def model_func(params, ns, pts):",
              '    """Expected spectrum (theta = 1) on one grid of pts points."""',
              "    (" + ", ".join(n for n in [p.name for p in space.params if p.kind != "dyn"]) + ",) = params",
              "    xx = dadi.Numerics.default_grid(pts)", "    phi = dadi.PhiManip.phi_1D(xx)"]
    starts = _start_exprs(space)
    for iv in space.intervals:
        if iv.split_before:
            lines.append("    phi = dadi.PhiManip.phi_1D_to_2D(xx, phi)" if iv.n_pops == 2
                         else "    phi = dadi.PhiManip.phi_2D_to_3D_split_2(xx, phi)")
        dyns = [_dyn(values, g) for g in iv.dyn]
        nus = []
        for d, a, b in zip(dyns, starts[iv.index], iv.nu, strict=True):
            e = _size_expr(d, a, b, iv.t)
            nus.append(e if d == 0 else f"lambda t: {e}")
        migs = "".join(f", m{a + 1}{b + 1}={name}" for a, b, name in iv.mig)
        if iv.n_pops == 1:
            lines.append(f"    phi = dadi.Integration.one_pop(phi, xx, {iv.t}, nu={nus[0]})")
        else:
            kw = ", ".join(f"nu{i + 1}={n}" for i, n in enumerate(nus))
            fn = "two_pops" if iv.n_pops == 2 else "three_pops"
            lines.append(f"    phi = dadi.Integration.{fn}(phi, xx, {iv.t}, {kw}{migs})")
    lines += ["    return dadi.Spectrum.from_phi(phi, ns, (xx,) * len(ns))", "", "",
              'if __name__ == "__main__":',
              "    data = dadi.Spectrum.from_file(DATA)",
              "    func_ex = dadi.Numerics.make_extrap_log_func(model_func)",
              "    model = func_ex([PARAMS[n] for n in NAMES], data.sample_sizes, PTS)",
              "    if data.folded:", "        model = model.fold()"]
    return "\n".join(lines + _loglik_lines("dadi", cfg))


def demes_graph(space: ModelSpace, values: dict[str, float], nanc: float, pop_ids: list[str],
                generation_time: float | None) -> Any:
    """The fitted model as a validated demes Graph (sizes in individuals, times in years or generations)."""
    import demes

    gt = generation_time or 1.0
    units = "years" if generation_time else "generations"
    b = demes.Builder(description=f"hpc_popgen GADMA-style model, structure {tuple(space.structure)}",
                      time_units=units, generation_time=gt if generation_time else None)
    ivs = size_functions(space, values)
    # end time (before present, in generations) of every interval
    ends, acc = {}, 0.0
    for iv, *_ in reversed(ivs):
        ends[iv.index] = acc
        acc += values[iv.t] * 2 * nanc
    total = acc
    epochs: dict[int, list[dict]] = {p: [] for p in range(space.n_pops)}
    starts_at: dict[int, float] = {}
    epochs[0].append({"start_size": nanc, "end_time": total * gt})
    for iv, n0, n1, dyn in ivs:
        if iv.split_before:
            starts_at[iv.n_pops - 1] = (ends[iv.index] + values[iv.t] * 2 * nanc) * gt
        for p in range(iv.n_pops):
            a, z = n0[p] * nanc, n1[p] * nanc
            if dyn[p] == 0 or np.isclose(a, z):
                ep = {"start_size": z, "end_size": z}
            else:
                ep = {"start_size": a, "end_size": z,
                      "size_function": "linear" if dyn[p] == 1 else "exponential"}
            ep["end_time"] = ends[iv.index] * gt
            epochs[p].append(ep)
    for p in range(space.n_pops):
        kw: dict[str, Any] = {}
        if p > 0:
            kw = {"ancestors": [pop_ids[p - 1]], "start_time": starts_at[p]}
        b.add_deme(pop_ids[p], epochs=epochs[p], **kw)
    for iv, *_ in ivs:
        t_start = (ends[iv.index] + values[iv.t] * 2 * nanc) * gt
        for a, bb, name in iv.mig:
            rate = values[name] / (2 * nanc)
            if rate > 0:
                b.add_migration(source=pop_ids[bb], dest=pop_ids[a], rate=rate, start_time=t_start,
                                end_time=ends[iv.index] * gt)
    return b.resolve()


def plot_model(graph: Any, path: Path) -> None:
    """A demesdraw drawing of the model."""
    import matplotlib

    matplotlib.use("Agg")
    import demesdraw
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    demesdraw.tubes(graph, ax=ax, log_time=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_afs(model: Any, data: Any, path: Path, poisson_theta: float | None = None) -> None:
    """Data vs model spectrum with residuals (moments' comparison plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import moments

    plt.close("all")
    fig = plt.figure(figsize=(10, 7))
    nd = data.ndim
    pm = moments.Plotting
    if poisson_theta is not None:
        fns = {1: pm.plot_1d_comp_Poisson, 2: pm.plot_2d_comp_Poisson, 3: pm.plot_3d_comp_Poisson}
        model = model * poisson_theta
    else:
        fns = {1: pm.plot_1d_comp_multinom, 2: pm.plot_2d_comp_multinom, 3: pm.plot_3d_comp_multinom}
    if nd in fns:
        fns[nd](model, data, fig_num=fig.number, show=False)
    else:
        ax = fig.add_subplot(111)
        ax.text(0.5, 0.5, f"no comparison plot for {nd} populations", ha="center")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close("all")


CLAIC_NOTE = "CLAIC needs bootstrap spectra: VCF input"


def choose_best(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The structure ``best`` means: the lowest CLAIC where every structure has one (bootstrap spectra),
    else the lowest AIC; never the highest likelihood, which for nested structures is always the largest."""
    if entries and all(e.get("claic") is not None for e in entries):
        pick, criterion = min(entries, key=lambda e: e["claic"]), "CLAIC"
    else:
        pick, criterion = min(entries, key=lambda e: e["aic"]), "AIC"
    return {"structure": pick["structure"], "criterion": criterion, "dir": pick["dir"]}


def write_results(out_dir: Path, state: dict[str, Any], data: Any, cfg: EvalConfig, data_path: str,
                  plots: bool, uncertainty: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``results.json``, ``summary.md``, and per structure of ``state`` the demes YAML, moments/dadi code and
    plots; ``uncertainty``: structure key (``1-1``) -> its intervals (:mod:`.uncertainty`).

    Returns the summary written to results.json: ``best`` names the structure an information criterion
    prefers (and which); it warns when the best-LL and best-AIC models differ.
    """
    uncertainty = uncertainty or {}
    summary: dict[str, Any] = {"structures": []}
    for _si, res in sorted(state["results"].items(), key=lambda kv: int(kv[0])):
        entry = _write_structure(out_dir, res, data, cfg, data_path, plots)
        key = "-".join(map(str, entry["structure"]))
        if key in uncertainty:
            entry["uncertainty"] = uncertainty[key]
            if uncertainty[key].get("claic") is not None:  # Godambe: CLAIC beside AIC, and `best` by it
                entry["claic"] = uncertainty[key]["claic"]
        summary["structures"].append(entry)
    if summary["structures"]:
        by_ll = max(summary["structures"], key=lambda e: e["loglik"])
        by_aic = min(summary["structures"], key=lambda e: e["aic"])
        summary["best_by_loglik"] = by_ll["structure"]
        summary["best_by_aic"] = by_aic["structure"]
        summary["best"] = choose_best(summary["structures"])
        summary["comparison"] = (summary["best"]["criterion"] if summary["best"]["criterion"] == "CLAIC"
                                 else f"AIC ({CLAIC_NOTE})")
        if by_ll is not by_aic:
            summary["warning"] = (f"best log-likelihood model {by_ll['structure']} differs from best AIC model "
                                  f"{by_aic['structure']}; `best` is {summary['best']['structure']} "
                                  f"(by {summary['best']['criterion']})")
            log.warning(summary["warning"])
    summary["seconds_to_target"] = state.get("seconds_to_target")
    summary["data"] = data_path
    summary["engine"] = cfg.to_dict()
    atomic.write_json(out_dir / "results.json", summary)
    atomic.write_text(out_dir / "summary.md", summary_markdown(summary))
    return summary


def _num(v: Any) -> str:
    """A number for the summary table (4 significant digits; ``-`` for none)."""
    return "-" if v is None else f"{float(v):.4g}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The results as Markdown: the structures compared, ``best``, and each model's parameters with standard
    errors and 95% intervals (genetic and physical units), sizes or times at a bound flagged beside them."""
    lines = ["# Demographic inference", ""]
    best = summary.get("best")
    if best:
        lines += [f"`best` = structure {'-'.join(map(str, best['structure']))} (lowest {best['criterion']}).",
                  f"Structures compared by {summary.get('comparison')}.", ""]
    if summary.get("warning"):
        lines += [f"Note: {summary['warning']}.", ""]
    if any(e.get("claic") is not None for e in summary["structures"]):
        lines += ["| structure | parameters | log-likelihood | AIC | CLAIC |", "|---|---|---|---|---|"]
        lines += [f"| {'-'.join(map(str, e['structure']))} | {e['n_params']} | {e['loglik']:.2f} | {e['aic']:.2f} | "
                  f"{_num(e.get('claic'))} |" for e in summary["structures"]]
    else:
        lines += ["| structure | parameters | log-likelihood | AIC |", "|---|---|---|---|"]
        lines += [f"| {'-'.join(map(str, e['structure']))} | {e['n_params']} | {e['loglik']:.2f} | {e['aic']:.2f} |"
                  for e in summary["structures"]]
    for e in summary["structures"]:
        key = "-".join(map(str, e["structure"]))
        u = e.get("uncertainty") or {}
        bound = e.get("at_bound") or {}
        lines += ["", f"## Structure {key}", "", f"Intervals: {u.get('method', 'none computed')}"
                  + (f"; {u['error']}" if u.get("error") else "") + ".", ""]
        lines += ["| parameter | estimate | SE | 95% interval | |", "|---|---|---|---|---|"]
        genetic = u.get("params") or {n: {"value": v} for n, v in e["params"].items() if not n.startswith("g")}
        for name, p in genetic.items():
            flag = f"**at {bound[name]}**" if name in bound else ""
            lines.append(f"| {name} | {_num(p['value'])} | {_num(p.get('se'))} | "
                         f"[{_num(p.get('lower'))}, {_num(p.get('upper'))}] | {flag} |")
        if u.get("physical"):
            lines += ["", f"Physical units ({u.get('physical_note')}; sizes in individuals, times in years and "
                          "generations, migration per generation):", "",
                      "| quantity | estimate | SE | 95% interval | |", "|---|---|---|---|---|"]
            for name, p in u["physical"].items():
                base = name.rsplit("_", 1)[0] if name.endswith(("_years", "_generations")) else name
                flag = f"**at {bound[base]}**" if base in bound else ""
                lines.append(f"| {name} | {_num(p['value'])} | {_num(p['se'])} | "
                             f"[{_num(p['lower'])}, {_num(p['upper'])}] | {flag} |")
        elif bound:
            lines += ["", "At a bound: " + ", ".join(f"{n} ({b})" for n, b in bound.items())]
    return "\n".join(lines) + "\n"


def _write_structure(out_dir: Path, res: dict[str, Any], data: Any, cfg: EvalConfig, data_path: str,
                     plots: bool) -> dict[str, Any]:
    """One structure's folder (demes YAML, code, plots) and its entry in results.json."""
    import demes

    space = ModelSpace.from_dict(res["space"])
    values = space.full(res["x"])
    theta = res["theta"]
    phys = physical(space, values, theta, cfg)
    nanc = phys.get("Nanc")
    name = "structure-" + "-".join(map(str, space.structure))
    sdir = out_dir / name
    sdir.mkdir(exist_ok=True)
    entry = {"structure": list(space.structure), "loglik": res["loglik"], "aic": res["aic"],
             "n_params": res["n_params"], "theta": theta, "Nanc": nanc,
             "params": {k: (int(round(v)) if k.startswith("g") else v) for k, v in values.items()},
             "physical": phys, "best_loglik_per_island": res["best_loglik_per_island"],
             "ga_best_loglik": res.get("ga_best_loglik"), "local_search": res.get("local_search"),
             "at_bound": at_bounds(space, values), "dir": name}
    if entry["at_bound"]:
        log.warning("structure %s: fitted at a bound: %s", name,
                    ", ".join(f"{k} ({v})" for k, v in entry["at_bound"].items()))
    graph = demes_graph(space, values, nanc or 1e4, list(data.pop_ids), cfg.generation_time if nanc else None)
    demes.dump(graph, sdir / "model.demes.yaml")
    demes.load(sdir / "model.demes.yaml")  # validated by the demes library on the way back
    (sdir / "model_moments.py").write_text(moments_code(space, values, data_path, cfg))
    if space.n_pops <= 3:
        pts = cfg.pts or default_pts(data.sample_sizes)
        (sdir / "model_dadi.py").write_text(dadi_code(space, values, data_path, cfg, pts))
    if plots:
        try:
            plot_model(graph, sdir / "model.png")
            model = expected_fs(space, values, data, cfg)
            plot_afs(model, data, sdir / "afs_comparison.png", theta if cfg.likelihood == "poisson" else None)
        except Exception as exc:  # noqa: BLE001 - a plot must never lose the results
            log.warning("plots for %s failed: %s", name, exc)
    return entry
