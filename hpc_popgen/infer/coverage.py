"""Does the posterior over S cover the truth as often as it says? Coverage at many levels, as in
simulation-based calibration (Talts et al. 2018).

A classes model gives P(class | image). Read as ImaGene does, S is uniform within each class's bin
(:func:`~hpc_popgen.infer.posterior.bin_edges`), so the posterior over S is a piecewise-constant density.
Its highest-density region of mass exactly ``level`` (whole bins by density, then the part of one more
bin that tops the mass up, taken on the side of its included neighbour) covers the true S with
probability ``level`` when the posterior is calibrated: this is ``hpd`` below, the figure to compare with
the level. ``classes`` is the smallest set of whole classes holding at least ``level`` (the set behind
the HPDI evaluate and predict print): it must over-cover, by as much as its mean mass exceeds the level,
which is reported beside it (``classes_mass``). ``pit`` is the posterior CDF at the true S, uniform on
(0, 1) under calibration (SBC's rank statistic); its histogram is reported in ten bins.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..train.calibration import LEVELS, bin_edges, hpd_covers

__all__ = ["LEVELS", "class_set_covers", "coverage_curve", "hpd_covers", "pit", "plot_coverage"]


def class_set_covers(probs: np.ndarray, true_class: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(whether the true class is in the smallest set of classes of mass >= ``level``, that set's mass)."""
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    order = np.argsort(-p, axis=1, kind="stable")
    cum = np.cumsum(p[np.arange(n)[:, None], order], axis=1)
    m = np.minimum((cum < level - 1e-12).sum(axis=1) + 1, k)   # classes taken
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(k)[None, :]
    covered = rank[np.arange(n), np.asarray(true_class, dtype=np.int64)] < m
    return covered, cum[np.arange(n), m - 1]


def pit(probs: np.ndarray, centres: np.ndarray, s_true: np.ndarray) -> np.ndarray:
    """The piecewise-uniform posterior's CDF at each true S (uniform on (0, 1) under calibration)."""
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    edges = bin_edges(centres)
    width = np.maximum(np.diff(edges), 1e-12)
    s = np.clip(np.asarray(s_true, dtype=np.float64), edges[0], edges[-1])
    b = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, p.shape[1] - 1)
    below = np.cumsum(p, axis=1) - p
    rows = np.arange(len(p))
    return below[rows, b] + p[rows, b] * (s - edges[b]) / width[b]


def coverage_curve(probs: np.ndarray, centres: np.ndarray, s_true: np.ndarray, true_class: np.ndarray,
                   levels: tuple[float, ...] = LEVELS, mass_of: Callable[[float], float] | None = None) -> dict:
    """Coverage of the true S at each level (``hpd``, ``classes`` with ``classes_mass``) and the PIT histogram;
    ``mass_of`` gives the posterior mass a level's region takes (a calibrated bundle's ``credible_mass``)."""
    hpd, cls, mass = [], [], []
    for lv in levels:
        m_lv = mass_of(lv) if mass_of else lv
        hpd.append(float(np.mean(hpd_covers(probs, centres, s_true, m_lv))))
        c, m = class_set_covers(probs, true_class, m_lv)
        cls.append(float(np.mean(c)))
        mass.append(float(np.mean(m)))
    u = pit(probs, centres, s_true)
    hist = np.histogram(u, bins=10, range=(0.0, 1.0))[0]
    return {"levels": [float(x) for x in levels], "hpd": hpd, "classes": cls, "classes_mass": mass,
            "pit_histogram": (hist / max(1, len(u))).round(4).tolist(), "n_images": int(len(u))}


def plot_coverage(curves: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Coverage against level for one or more named curves (e.g. before/after calibration), as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="calibrated")
    styles = ["-o", "--s", "-.^", ":v"]
    for i, (name, c) in enumerate(curves.items()):
        ax.plot(c["levels"], c["hpd"], styles[i % len(styles)], ms=3.5, label=f"{name}: HPD region of S")
        ax.plot(c["levels"], c["classes"], styles[i % len(styles)], ms=3, alpha=0.45,
                label=f"{name}: smallest class set")
    ax.set_xlabel("credible level")
    ax.set_ylabel("fraction covering the true S")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
