"""``hpcpop show STORE --png out.png [--index i]``: one replicate drawn unsorted, rows, columns, both.

The store holds processed images, so the replicate is re-simulated from its recorded seed, S and
attempt (bit-identical), then imaged with each sorting, next to the stored image (the paper's Fig. 2).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click

from ..errors import HpcPopError

log = logging.getLogger(__name__)
TITLES = {"stored": "stored", "none": "unsorted", "rows": "rows sorted", "columns": "columns sorted",
          "both": "rows + columns"}


@click.command("show")
@click.argument("store")
@click.option("--png", "png", type=click.Path(dir_okay=False), required=True, help="Where to write the figure.")
@click.option("--index", "index", default=0, show_default=True, help="Image index in the store.")
def show(store: str, png: str, index: int) -> None:
    """Draw image INDEX of STORE side by side: stored, unsorted, rows, columns, both."""
    _check_writable(png)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..simulate.replay import replay
    from ..store import open_store

    st = open_store(store)
    views = replay(st, index)
    panels = [k for k in ("stored", "none", "rows", "columns", "both") if k in views]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        ax.imshow(views[key], cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(TITLES[key], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    info = views["info"]
    named = f"{info['class']}, " if "class" in info else ""
    fig.suptitle(f"{st.url}  image {index}: {named}S={info['s']:g}, seed {info['seed']}, {info['n_sites']} sites",
                 fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=120)
    except OSError as exc:
        raise HpcPopError(f"--png {png}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    if len(panels) == 1:
        click.echo("note: this store records no simulation settings; only the stored image is drawn", err=True)
    info = {k: None if isinstance(v, float) and v != v else v for k, v in info.items()}  # NaN (unknown): null
    click.echo(json.dumps({"png": png, "index": index, "panels": panels, **info}, allow_nan=False))


def _check_writable(png: str) -> None:
    """Refuse an output path we cannot write before any work is done (one line, nothing written)."""
    path = Path(png).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise HpcPopError(f"--png {png}: {folder} {why}")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise HpcPopError(f"--png {png}: not writable ({path if path.exists() else folder} is not writable by you)")
