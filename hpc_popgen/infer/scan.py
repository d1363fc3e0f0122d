"""Genome scans: sliding windows over a phased chromosome, each window's image -> posterior summary.

Windows are ``size`` consecutive sites or ``size`` bp, moved by ``step`` (same unit). A chunk of
windows is one task (the scan stage runs chunks as Dask tasks); each chunk writes its rows to a TSV
part atomically, so a rerun redoes only missing chunks. No Dask here.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import atomic
from ..errors import InputDataError
from ..readers.mask import Intervals, accessible_shares
from .regions import summarize_images

log = logging.getLogger(__name__)

COLUMNS = ["chrom", "start", "end", "n_sites", "map", "mean", "hpdi_low", "hpdi_high", "bayes_factor",
           "log10_bayes_factor", "p_neutral", "p", "q"]  # p, q: calibrated by the scan's null (else nan)


@dataclass(frozen=True)
class Window:
    """Sites [lo, hi) of the chromosome; start/end in bp (1-based, inclusive, as in VCF)."""

    lo: int
    hi: int
    start: int
    end: int

    @property
    def n_sites(self) -> int:
        return self.hi - self.lo


def plan_windows(positions: np.ndarray, *, size: int, step: int, unit: str, min_sites: int) -> list[Window]:
    """Sliding windows over sorted ``positions``; windows with fewer than ``min_sites`` sites are left out."""
    pos = np.asarray(positions, dtype=np.int64)
    if size < 1 or step < 1:
        raise InputDataError(f"window size and step must be >= 1 (got {size}, {step})")
    out: list[Window] = []
    if len(pos) == 0:
        return out
    if unit == "sites":
        last = max(len(pos) - size, 0)
        for lo in range(0, last + 1, step):
            hi = min(lo + size, len(pos))
            if hi - lo >= min_sites:
                out.append(Window(lo, hi, int(pos[lo]), int(pos[hi - 1])))
    elif unit == "bp":
        first = int(pos[0])
        for start in range(first, int(pos[-1]) + 1, step):
            end = start + size - 1
            lo, hi = int(np.searchsorted(pos, start, "left")), int(np.searchsorted(pos, end, "right"))
            if hi - lo >= min_sites:
                out.append(Window(lo, hi, start, end))
            if end >= pos[-1]:
                break
    else:
        raise InputDataError(f"window unit {unit!r}: expected sites or bp")
    return out


def accessible_windows(windows: list[Window], accessible: Intervals | None,
                       min_accessible: float) -> tuple[list[Window], int]:
    """The windows whose accessible share (bp in the mask over the window's bp) is at least
    ``min_accessible``, and how many were skipped: a sparser window would image unlike the simulations
    the model learnt from. No mask: all windows, none skipped."""
    if accessible is None or not windows:
        return windows, 0
    shares = accessible_shares(accessible, np.array([w.start for w in windows]), np.array([w.end for w in windows]))
    kept = [w for w, share in zip(windows, shares, strict=True) if share >= min_accessible]
    return kept, len(windows) - len(kept)


@lru_cache(maxsize=2)
def _model(model_dir: str):
    """One loaded model per worker process (a chunk task reuses it)."""
    from ..train.saved import load_bundle

    return load_bundle(model_dir)


def scan_chunk(model_dir: str, matrix: np.ndarray, positions: np.ndarray, windows: list[tuple[int, int, int, int]],
               chrom: str, out_path: str, *, level: float, mc_samples: int, seed: int) -> int:
    """Summarise ``windows`` (site indices relative to ``matrix``'s columns) and write their TSV rows.

    Returns the number of windows written; the TSV part is written atomically.
    """
    from ..images import make_image

    model = _model(model_dir)
    cfg = model.image_config()
    images = []
    for lo, hi, start, end in windows:
        rel = positions[lo:hi] - start
        images.append(make_image(matrix[:, lo:hi], rel, cfg, centre=(end - start) / 2.0))
    summaries = summarize_images(model, np.stack(images), level=level, mc_samples=mc_samples, seed=seed) \
        if images else []
    buf = io.StringIO()
    for (lo, hi, start, end), s in zip(windows, summaries, strict=True):
        buf.write("\t".join(_row(chrom, start, end, hi - lo, s)) + "\n")
    atomic.write_text(out_path, buf.getvalue())
    return len(windows)


def _row(chrom: str, start: int, end: int, n_sites: int, s: dict) -> list[str]:
    if "hpdi" in s:
        vals = [s["map"], s["mean"], s["hpdi"][0], s["hpdi"][1]]
    else:  # binary model: P(selection) as the point estimate, no interval
        vals = [float(s["p_selection"] > 0.5), s["p_selection"], float("nan"), float("nan")]
    p_neutral = s["posterior"][0] if "posterior" in s else float("nan")
    return [chrom, str(start), str(end), str(n_sites), *(f"{v:.6g}" for v in vals), f"{s['bayes_factor']:.6g}",
            f"{s['log10_bayes_factor']:.4f}", f"{p_neutral:.6g}", "nan", "nan"]


def join_parts(paths: Iterable[str | Path]) -> list[list[str]]:
    """The rows of headerless scan parts (what :func:`scan_chunk` writes), in the order given, as TSV fields."""
    return [ln.split("\t") for path in paths for ln in Path(path).read_text().splitlines()]


def scan_tsv(rows: list[list[str]]) -> str:
    """scan.tsv's text: the header, then ``rows`` (TSV fields)."""
    return "\t".join(COLUMNS) + "\n" + "".join("\t".join(r) + "\n" for r in rows)


def strongest_window(table: dict[str, np.ndarray]) -> tuple[float, str]:
    """The largest log10 Bayes factor of a scan table and its window as ``chrom:start-end``."""
    best = int(np.nanargmax(table["log10_bayes_factor"]))
    return (float(table["log10_bayes_factor"][best]),
            f"{table['chrom'][best]}:{int(table['start'][best])}-{int(table['end'][best])}")


def read_scan(path: str | Path) -> dict[str, np.ndarray]:
    """A scan TSV as columns (numbers as float arrays, chrom as strings)."""
    lines = [ln.rstrip("\n").split("\t") for ln in Path(path).read_text().splitlines()]
    header, rows = lines[0], lines[1:]
    cols = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    return {h: (np.array(v) if h == "chrom" else np.array(v, dtype=np.float64)) for h, v in cols.items()}


def read_part_bayes_factors(path: str | Path) -> np.ndarray:
    """The ``bayes_factor`` column of a headerless scan part (what :func:`scan_chunk` writes)."""
    col = COLUMNS.index("bayes_factor")
    return np.array([float(ln.split("\t")[col]) for ln in Path(path).read_text().splitlines()], dtype=np.float64)


def plot_scan(table: dict[str, np.ndarray], path: str | Path, title: str = "", regions: list | None = None,
              fdr: float | None = None) -> None:
    """A Manhattan-style PNG: log10 Bayes factor (windows with q < ``fdr`` in red) and the posterior mean
    (with its HPDI band when the model has one) along the chromosome; candidate ``regions`` shaded."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    mid = (table["start"] + table["end"]) / 2 / 1e6
    has_interval = not np.all(np.isnan(table["hpdi_low"]))
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    ax, ax2 = axes
    lbf = table["log10_bayes_factor"]
    ax.scatter(mid, lbf, s=6, color="#4c72b0", lw=0)
    q = table.get("q")
    if q is not None and fdr is not None and np.any(~np.isnan(q)):
        sig = ~np.isnan(q) & (q < fdr)
        ax.scatter(mid[sig], lbf[sig], s=10, color="#c44e52", lw=0, label=f"q < {fdr:g}")
    ax.axhline(np.log10(100), color="grey", ls="--", lw=0.8, label="BF = 100")
    ax.set_ylabel("log10 BF (selection vs neutral)")
    ax.set_title(title or f"{table['chrom'][0] if len(table['chrom']) else ''} scan")
    if has_interval:
        ax2.fill_between(mid, table["hpdi_low"], table["hpdi_high"], color="grey", alpha=0.3, label="HPDI")
    ax2.plot(mid, table["mean"], color="#55a868", lw=1, label="posterior mean S" if has_interval else "P(selection)")
    ax2.set_ylabel("S" if has_interval else "P(selection)")
    for r in regions or []:
        for a in axes:
            a.axvspan(r.start / 1e6, r.end / 1e6, color="#c44e52", alpha=0.15, lw=0)
    if regions:
        ax.plot([], [], color="#c44e52", alpha=0.3, lw=6, label=f"{len(regions)} candidate region(s)")
    ax.legend(fontsize=7, loc="upper right")
    ax2.legend(fontsize=7, loc="upper right")
    ax2.set_xlabel("position (Mb)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
