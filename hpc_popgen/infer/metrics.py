"""Test-set metrics: accuracy, confusion matrices (JSON and PNG), RMSE and bias of point estimates."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Counts[i, j] of images of true class i predicted as class j."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def rmse(est: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error of estimates against true values."""
    d = np.asarray(est, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(np.mean(d ** 2)))


def bias(est: np.ndarray, truth: np.ndarray) -> float:
    """Mean of estimate minus truth."""
    return float(np.mean(np.asarray(est, dtype=np.float64) - np.asarray(truth, dtype=np.float64)))


def plot_confusion(cm: np.ndarray, labels: list[str], path: str | Path, title: str = "") -> None:
    """The confusion matrix, row-normalised (the fraction of each true class), as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm, dtype=np.float64), where=rows > 0)
    n = len(labels)
    size = max(3.5, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{frac[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
