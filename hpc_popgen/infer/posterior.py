"""Summaries of a discrete posterior over classes of S: MAP, mean, HPDI and the Bayes factor.

A softmax trained on a labelled set estimates P(class | image) under that set's class weights, so the
Bayes factor of selection divides the posterior odds by the prior odds of the training classes.
The HPDI is given exactly from the discrete posterior and, as in ImaGene, from Monte Carlo samples
spread uniformly within each class's bin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..train.calibration import bin_edges

__all__ = ["bayes_factor", "bin_edges", "hpdi_discrete", "hpdi_samples", "neutral_index", "plot_posterior",
           "sample_posterior", "summarize"]
EPS = 1e-300


def neutral_index(centres: np.ndarray) -> int:
    """The class standing for neutrality: the one whose centre is closest to S = 0."""
    return int(np.argmin(np.abs(np.asarray(centres, dtype=np.float64))))


def hpdi_discrete(probs: np.ndarray, centres: np.ndarray, level: float) -> tuple[float, float, float]:
    """Smallest set of classes holding at least ``level`` of the mass: (lowest centre, highest, mass)."""
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    n = int(np.searchsorted(cum, level - 1e-12) + 1)
    chosen = order[: min(n, len(order))]
    c = np.asarray(centres, dtype=np.float64)[chosen]
    return float(c.min()), float(c.max()), float(probs[chosen].sum())


def sample_posterior(probs: np.ndarray, centres: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of S: a class by its posterior weight, then uniform within that class's bin."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    edges = bin_edges(centres)
    k = rng.choice(len(probs), size=n, p=probs)
    return rng.uniform(edges[k], edges[k + 1])


def hpdi_samples(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The shortest interval holding a fraction ``level`` of the samples."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    m = max(1, int(np.ceil(level * len(x))))
    if m >= len(x):
        return float(x[0]), float(x[-1])
    widths = x[m - 1:] - x[: len(x) - m + 1]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + m - 1])


def bayes_factor(probs: np.ndarray, prior: np.ndarray, neutral: int) -> float:
    """Bayes factor of selection (S > 0) against neutrality, corrected for the prior class weights."""
    probs = np.asarray(probs, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    p0 = max(probs[neutral], EPS)
    p1 = max(probs.sum() - probs[neutral], EPS)
    q0 = max(prior[neutral], EPS)
    q1 = max(prior.sum() - prior[neutral], EPS)
    return float((p1 / p0) / (q1 / q0))


def summarize(probs: np.ndarray, centres: np.ndarray, prior: np.ndarray | None, *, level: float,
              mc_samples: int, rng: np.random.Generator | None = None, mass: float | None = None) -> dict:
    """Everything reported for one region: posterior, MAP, mean, exact and MC HPDI, Bayes factor.

    ``mass``: the posterior mass of the region reported at ``level`` (a calibrated bundle's
    :meth:`~hpc_popgen.train.saved.TrainedModel.credible_mass`; default ``level``)."""
    mass = level if mass is None else mass
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    centres = np.asarray(centres, dtype=np.float64)
    if prior is None or len(prior) != len(probs):
        prior = np.full(len(probs), 1.0 / len(probs))
    neutral = neutral_index(centres)
    lo, hi, held = hpdi_discrete(probs, centres, mass)
    out = {
        "classes": centres.tolist(),
        "posterior": probs.tolist(),
        "map": float(centres[int(np.argmax(probs))]),
        "mean": float(probs @ centres / probs.sum()),
        "hpdi_level": level,
        "hpdi": [lo, hi],
        "hpdi_mass": held,
        "bayes_factor": bayes_factor(probs, prior, neutral),
    }
    out["log10_bayes_factor"] = float(np.log10(out["bayes_factor"]))
    if mc_samples and len(probs) > 2:
        rng = rng if rng is not None else np.random.default_rng(0)
        out["hpdi_mc"] = list(hpdi_samples(sample_posterior(probs, centres, mc_samples, rng), mass))
    return out


def plot_posterior(summary: dict, path: str | Path, title: str = "") -> None:
    """A bar chart of the class posterior with MAP, mean and the HPDI marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    c = np.asarray(summary["classes"])
    p = np.asarray(summary["posterior"])
    width = float(np.min(np.diff(c))) * 0.8 if len(c) > 1 else 1.0
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(c, p, width=width, color="#4c72b0", label="posterior")
    ax.axvline(summary["map"], color="#c44e52", ls="-", label=f"MAP {summary['map']:g}")
    ax.axvline(summary["mean"], color="#55a868", ls="--", label=f"mean {summary['mean']:.1f}")
    lo, hi = summary["hpdi"]
    ax.axvspan(lo - width / 2, hi + width / 2, color="grey", alpha=0.15,
               label=f"{summary['hpdi_level']:.0%} HPDI [{lo:g}, {hi:g}]")
    ax.set_xlabel("S (2Ne s)")
    ax.set_ylabel("P(class | data)")
    ax.set_title(title or f"Bayes factor of selection {summary['bayes_factor']:.3g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
