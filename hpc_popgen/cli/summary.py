"""What a run found, in a few lines read from its report.json: the end of ``hpcpop submit`` / ``rerun``
and the foot of ``hpcpop status`` print the same lines, so the two never disagree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Stage = dict[str, Any]


def summary_lines(report: dict[str, Any], run_dir: str | Path) -> list[str]:
    """One line per stage that finished (its finding and where its outputs are), then the run directory
    and the dashboard: live while the run runs, else where report.json is."""
    run = Path(run_dir)
    stages = [s for s in report.get("stages", []) if s.get("status") == "completed"]
    width = max((len(s["name"]) for s in stages), default=0)
    lines = []
    for st in stages:
        found = FINDINGS.get(st.get("kind", ""), _units)(st, run)
        seconds = f"{st['seconds']:.0f} s" if st.get("seconds") is not None else "? s"
        lines.append(f"  {st['name']:<{width}}  {seconds:>6}  {found}")
    lines.append(f"run directory: {run}  (`hpcpop status {run}`; log: {run / 'hpcpop.log'})")
    if report.get("status") == "running" and report.get("dashboard"):
        lines.append(f"Dask dashboard: {report['dashboard']}")
    else:
        lines.append(f"Dask dashboard: none (the run's clusters are closed); its report: {run / 'report.json'}")
    return lines


def _demography(st: Stage, run: Path) -> str:
    m = st.get("metrics") or {}
    best = m.get("best") or {}
    structure = best.get("structure") or m.get("best_by_aic") or m.get("best_by_loglik")
    if not structure:
        return _units(st, run)
    key = "-".join(map(str, structure))
    ll = (m.get("best_loglik_per_structure") or {}).get(key, m.get("best_loglik"))
    folder = run / st["name"] / f"structure-{key}"
    method = m.get("uncertainty_method")
    intervals = f"; 95% intervals: {method.split(' (')[0]}" if method and key in (m.get("intervals_95") or {}) else ""
    return (f"model structure {key} (best by {best.get('criterion', 'AIC')}), log-likelihood {_num(ll, '.2f')}"
            f"{intervals}; demes YAML, code and plots: {folder}/")


def _simulate(st: Stage, run: Path) -> str:
    m = st.get("metrics") or {}
    return f"{m.get('n_images', '?')} images in {m.get('store', '?')}"


def _train(st: Stage, run: Path) -> str:
    m = st.get("metrics") or {}
    for key, what in (("best_val_binary_accuracy", "validation accuracy"),
                      ("best_val_categorical_accuracy", "validation accuracy"), ("best_val_mae", "validation MAE")):
        if m.get(key) is not None:
            score = f"{what} {_num(m[key], '.3f')}"
            break
    else:
        score = f"validation loss {_num(m.get('best_val_loss'), '.4g')}"
    return f"{score} (epoch {m.get('best_epoch', '?')} of {m.get('epochs_run', '?')}); model: {m.get('model', '?')}"


def _evaluate(st: Stage, run: Path) -> str:
    m = st.get("metrics") or {}
    score = f"test accuracy {_num(m['test_accuracy'], '.3f')}" if m.get("test_accuracy") is not None else "evaluated"
    return f"{score} on {m.get('n_images', '?')} images; confusion matrix: {run / st['name'] / 'confusion.png'}"


def _scan(st: Stage, run: Path) -> str:
    m = st.get("metrics") or {}
    where = m.get("candidates") or f"{run / st['name']}/"
    verdict = (m.get("model_check") or {}).get("verdict")
    check = f"; model check: the history {verdict.replace('_', ' ')}" if verdict and verdict != "not_run" else ""
    return f"{m.get('n_windows', '?')} windows scanned ({m.get('chrom', '?')}){check}; results: {where}"


def _units(st: Stage, run: Path) -> str:
    return f"{st.get('units_done', '?')}/{st.get('units_total', '?')} units; outputs: {run / st['name']}/"


def _num(value: Any, fmt: str) -> str:
    return "?" if value is None else format(float(value), fmt)


FINDINGS: dict[str, Callable[[Stage, Path], str]] = {
    "demography": _demography, "simulate": _simulate, "train": _train, "evaluate": _evaluate, "scan": _scan}
