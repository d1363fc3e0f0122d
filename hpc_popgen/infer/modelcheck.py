"""A model check before anyone trusts a scan: do the real chromosome's windows look like the null's?

The scan's null chromosomes are simulated under the history the CNN was trained under. If that history
is wrong (a bottleneck the inference missed, a recent expansion), the network sees data unlike its
training data and false sweeps follow (ImaGene's Fig. 4). So the scan stage compares, window by window,
summary statistics of the real chromosome with those of its null chromosomes:

* ``pi`` (nucleotide diversity per bp), ``theta_w`` (Watterson's theta per bp), ``tajima_d`` and ``h12``
  (Garud's H12 over the window's haplotypes), all from scikit-allel on the haplotype matrix;
* the per-window folded site-frequency spectrum: the share of a window's segregating sites whose minor
  allele count falls in log2 classes (1, 2, 3-4, 5-8, ...), ``sfs_1``, ``sfs_2``, ``sfs_3_4``, ...

Every statistic is invariant to polarisation (major/minor or derived images give the same check). The
same code computes the real and the simulated values, on the same window plan and mask.

**Distance and verdict.** For each statistic, the distance D is the two-sample Kolmogorov–Smirnov
statistic between the real windows and the pooled null windows (for the SFS: the largest D over its
classes). Windows of one chromosome are correlated, so a KS p-value would be far too small; instead D is
scaled by what it is between chromosomes that *do* follow the history: each null chromosome in turn is
compared with the other null chromosomes pooled (leave one out), and ``score = D_real / mean(D_loo)``.
A chromosome matching the history scores about 1 on every statistic. The history ``does_not_fit`` when
the largest score over the statistics exceeds ``threshold``, else it ``fits``.

**The threshold** (the schema's ``model_check.threshold``) was chosen on simulated data, seeds apart from
those of ``hpcpop bench modelcheck``: 100 chromosomes simulated under the history used for training,
each checked against 20 null chromosomes of that history; the threshold is the 98th percentile of their
largest score (so about 2% of chromosomes that do follow the history are flagged): 2.75.
``hpcpop bench modelcheck`` reruns that choice and measures the flag rates on other seeds. It was
chosen at 20 null chromosomes (the scan's default): with fewer, the leave-one-out scale is noisier.

No Dask, no click here: the scan stage computes the statistics inside its window and null tasks.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic

log = logging.getLogger(__name__)

SCALAR_STATISTICS = ("pi", "theta_w", "tajima_d", "h12")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
FITS, DOES_NOT_FIT = "fits", "does_not_fit"


def sfs_classes(n_haplotypes: int) -> list[tuple[int, int]]:
    """The folded SFS classes of ``n_haplotypes``: minor allele counts [1, 1], [2, 2], [3, 4], [5, 8], ...
    up to n // 2 (log2 classes keep enough sites per class in an 80 kb window)."""
    top = n_haplotypes // 2
    out: list[tuple[int, int]] = []
    lo, hi = 1, 1
    while lo <= top:
        out.append((lo, min(hi, top)))
        lo, hi = hi + 1, max(2, 2 * hi)
    return out


def class_name(lo: int, hi: int) -> str:
    """``sfs_1``, ``sfs_3_4``: the statistic name of a folded SFS class."""
    return f"sfs_{lo}" if lo == hi else f"sfs_{lo}_{hi}"


def window_statistics(matrix: np.ndarray, positions: np.ndarray,
                      windows: Sequence[tuple[int, int, int, int]]) -> dict[str, np.ndarray]:
    """Per-window statistics of a (haplotypes, sites) 0/1 ``matrix`` at 1-based ``positions``, for windows
    (lo, hi, start, end): sites [lo, hi) of the matrix, bp [start, end] inclusive. Per-bp values divide by
    end - start + 1. Returns one float array per statistic (NaN where undefined, e.g. D with < 3 sites)."""
    import allel

    n_hap = int(matrix.shape[0])
    classes = sfs_classes(n_hap)
    m = len(windows)
    out = {name: np.full(m, np.nan) for name in SCALAR_STATISTICS}
    out.update({class_name(lo, hi): np.full(m, np.nan) for lo, hi in classes})
    if m == 0:
        return out
    pos = np.asarray(positions, dtype=np.int64)
    derived = matrix.sum(axis=0, dtype=np.int64)
    ac = allel.AlleleCountsArray(np.column_stack([n_hap - derived, derived]).astype(np.int32))
    bounds = np.array([[w[2], w[3]] for w in windows], dtype=np.int64)
    sorted_windows = np.all(np.diff(bounds[:, 0]) >= 0) if m > 1 else True
    order = np.arange(m) if sorted_windows else np.argsort(bounds[:, 0], kind="stable")
    bw = bounds[order]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["pi"][order] = allel.windowed_diversity(pos, ac, windows=bw)[0]
        out["theta_w"][order] = allel.windowed_watterson_theta(pos, ac, windows=bw)[0]
        out["tajima_d"][order] = allel.windowed_tajima_d(pos, ac, windows=bw, min_sites=3)[0]
    minor = np.minimum(derived, n_hap - derived)
    edges = np.array([lo for lo, _ in classes] + [classes[-1][1] + 1]) if classes else np.array([1])
    for i, (lo, hi, _start, _end) in enumerate(windows):
        if hi - lo >= 1:
            out["h12"][i] = allel.garud_h(allel.HaplotypeArray(matrix[:, lo:hi].T))[1]
            counts = np.histogram(minor[lo:hi], bins=edges)[0]
            total = counts.sum()
            if total:
                for (c_lo, c_hi), k in zip(classes, counts, strict=True):
                    out[class_name(c_lo, c_hi)][i] = k / total
    return out


def write_statistics(path: str | Path, stats: dict[str, np.ndarray]) -> None:
    """Save one task's window statistics (an .npz, written atomically)."""
    buf = io.BytesIO()
    np.savez(buf, **stats)
    atomic.write_bytes(path, buf.getvalue())


def read_statistics(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """The statistics of several parts (:func:`write_statistics`), windows concatenated in the order given."""
    parts = []
    for p in paths:
        with np.load(p) as z:
            parts.append({k: z[k] for k in z.files})
    if not parts:
        return {}
    return {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov–Smirnov statistic (NaNs left out; NaN when either side is empty)."""
    from scipy.stats import ks_2samp

    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(ks_2samp(a, b).statistic)


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """The first Wasserstein distance (NaNs left out), in the statistic's units (reported, not scored)."""
    from scipy.stats import wasserstein_distance

    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(wasserstein_distance(a, b))


def _groups(names: Sequence[str]) -> dict[str, list[str]]:
    """The scored statistics: each scalar on its own, the SFS classes together as ``sfs``."""
    groups = {s: [s] for s in SCALAR_STATISTICS if s in names}
    sfs = [n for n in names if n.startswith("sfs_")]
    if sfs:
        groups["sfs"] = sfs
    return groups


def _distance(x: dict[str, np.ndarray], pool: dict[str, np.ndarray], members: list[str]) -> float:
    d = [ks_distance(x[n], pool[n]) for n in members]
    d = [v for v in d if not np.isnan(v)]
    return max(d) if d else float("nan")


def _pool(chromosomes: Sequence[dict[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {n: np.concatenate([c[n] for c in chromosomes]) for n in names}


def _quantiles(v: np.ndarray) -> list[float | None]:
    v = v[~np.isnan(v)]
    return [float(q) for q in np.quantile(v, QUANTILES)] if len(v) else [None] * len(QUANTILES)


def check_model(real: dict[str, np.ndarray], nulls: Sequence[dict[str, np.ndarray]], threshold: float) -> dict[str, Any]:
    """The model check of ``real`` windows against the windows of ``nulls`` (one dict per null chromosome):
    per statistic the real and simulated quantiles, KS and Wasserstein distances, the leave-one-out scale
    and the score; the verdict (``fits`` / ``does_not_fit``) and the statistic that decided it.

    Needs at least 2 null chromosomes (the leave-one-out scale); raises ValueError otherwise.
    """
    if len(nulls) < 2:
        raise ValueError(f"the model check needs at least 2 null chromosomes, got {len(nulls)}")
    names = list(real)
    groups = _groups(names)
    pooled = _pool(nulls, names)
    loo_pools = [_pool([c for j, c in enumerate(nulls) if j != i], names) for i in range(len(nulls))]
    statistics: dict[str, Any] = {}
    scores: dict[str, float] = {}
    for group, members in groups.items():
        d_real = _distance(real, pooled, members)
        d_loo = np.array([_distance(c, loo_pools[i], members) for i, c in enumerate(nulls)])
        scale = float(np.nanmean(d_loo)) if np.any(~np.isnan(d_loo)) else float("nan")
        score = d_real / scale if scale > 0 else float("nan")
        entry: dict[str, Any] = {"ks": d_real, "loo_ks_mean": scale, "loo_ks_max": float(np.nanmax(d_loo))
                                 if np.any(~np.isnan(d_loo)) else None, "score": score, "classes": {}}
        for n in members:
            entry["classes"][n] = {"real_quantiles": _quantiles(real[n]), "null_quantiles": _quantiles(pooled[n]),
                                   "real_mean": _mean(real[n]), "null_mean": _mean(pooled[n]),
                                   "ks": ks_distance(real[n], pooled[n]), "wasserstein": wasserstein(real[n], pooled[n])}
        if len(members) == 1:
            entry.update(entry.pop("classes")[members[0]])
        statistics[group] = entry
        if not np.isnan(score):
            scores[group] = score
    worst = max(scores, key=scores.__getitem__) if scores else None
    max_score = scores[worst] if worst else float("nan")
    verdict = DOES_NOT_FIT if worst is not None and max_score > threshold else FITS
    return {"verdict": verdict, "threshold": threshold, "max_score": max_score, "worst_statistic": worst,
            "real_windows": int(len(real[names[0]])) if names else 0, "null_chromosomes": len(nulls),
            "null_windows": int(len(pooled[names[0]])) if names else 0, "quantiles": list(QUANTILES),
            "statistics": statistics}


def _mean(v: np.ndarray) -> float | None:
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else None


def max_score(real: dict[str, np.ndarray], nulls: Sequence[dict[str, np.ndarray]]) -> float:
    """The largest score of :func:`check_model` (what the threshold is compared with)."""
    return float(check_model(real, nulls, float("inf"))["max_score"])


def choose_threshold(scores: Sequence[float], flag_rate: float = 0.02) -> float:
    """The threshold that flags a share ``flag_rate`` of chromosomes following the history: the (1 -
    flag_rate) quantile of their largest scores (scored against null chromosomes of their own history)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[~np.isnan(s)]
    if len(s) == 0:
        raise ValueError("no scores to choose a threshold from")
    return float(np.quantile(s, 1.0 - flag_rate))


def plot_model_check(real: dict[str, np.ndarray], nulls: Sequence[dict[str, np.ndarray]], result: dict[str, Any],
                     path: str | Path) -> None:
    """Real vs simulated window distributions per statistic (histograms; the SFS as mean class shares with
    their 5-95% range), each panel titled with its KS distance and score, the verdict in the title."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(real)
    pooled = _pool(nulls, names)
    groups = _groups(names)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (group, members) in zip(axes, groups.items(), strict=True):
        st = result["statistics"][group]
        if group == "sfs":
            x = np.arange(len(members))
            for data, label, color, dx in ((pooled, "simulated", "#4c72b0", -0.15), (real, "real", "#c44e52", 0.15)):
                mean = [np.nanmean(data[n]) if np.any(~np.isnan(data[n])) else np.nan for n in members]
                lo = [np.nanquantile(data[n], 0.05) if np.any(~np.isnan(data[n])) else np.nan for n in members]
                hi = [np.nanquantile(data[n], 0.95) if np.any(~np.isnan(data[n])) else np.nan for n in members]
                ax.errorbar(x + dx, mean, yerr=[np.subtract(mean, lo), np.subtract(hi, mean)], fmt="o", ms=3,
                            color=color, label=label, lw=1)
            ax.set_xticks(x, [m.removeprefix("sfs_").replace("_", "-") for m in members], fontsize=7)
            ax.set_xlabel("minor allele count")
            ax.set_ylabel("share of window's sites")
        else:
            a, b = real[group][~np.isnan(real[group])], pooled[group][~np.isnan(pooled[group])]
            both = np.concatenate([a, b])
            bins = np.linspace(both.min(), both.max(), 30) if len(both) and both.min() < both.max() else 10
            ax.hist(b, bins=bins, density=True, color="#4c72b0", alpha=0.5, label="simulated")
            ax.hist(a, bins=bins, density=True, color="#c44e52", alpha=0.5, label="real")
            ax.set_xlabel(group)
        ax.set_title(f"{group}: KS {st['ks']:.2f}, score {st['score']:.2f}", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"model check: {result['verdict']} (max score {result['max_score']:.2f}, "
                 f"threshold {result['threshold']:.2f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def with_verdict_column(candidates_text: str, verdict: str) -> str:
    """candidates.tsv's text with a ``model_check`` column: the verdict beside each candidate."""
    lines = candidates_text.splitlines()
    out = [lines[0] + "\tmodel_check"] + [ln + "\t" + verdict for ln in lines[1:]]
    return "\n".join(out) + "\n"
