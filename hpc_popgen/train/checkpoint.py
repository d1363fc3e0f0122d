"""Per-epoch training checkpoints: weights, optimizer state and loop state in one atomically written file.

``checkpoints/epoch-0003.npz`` holds everything needed to continue after epoch 3 (model weights,
optimizer variables, the history and the state of early stopping and of the learning-rate schedule). It is written to a temporary name, fsynced and
renamed, so a checkpoint either exists whole or not at all; only then is the ledger record
``epoch-0003`` written. Resuming takes the newest epoch that has both.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..ledger import Ledger

_NAME = re.compile(r"^epoch-(\d{4,})\.npz$")


def unit_id(epoch: int) -> str:
    """Ledger unit id of a finished epoch (1-based): ``epoch-0003``."""
    return f"epoch-{epoch:04d}"


def save(path: str | Path, weights: list[np.ndarray], opt_vars: list[np.ndarray], state: dict) -> None:
    """Write one checkpoint atomically (durable when this returns)."""
    arrays: dict[str, Any] = {f"w{i:04d}": w for i, w in enumerate(weights)}
    arrays.update({f"o{i:04d}": v for i, v in enumerate(opt_vars)})
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic.write_bytes(path, buf.getvalue())


def load(path: str | Path) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """(weights, optimizer variables, state) of a checkpoint file."""
    with np.load(path) as z:
        weights = [z[k] for k in sorted(k for k in z.files if k.startswith("w"))]
        opt_vars = [z[k] for k in sorted(k for k in z.files if k.startswith("o"))]
        state = json.loads(z["state"].tobytes().decode())
    return weights, opt_vars, _upgrade(state)


def _upgrade(state: dict) -> dict:
    """The loop state of a checkpoint written before its handlers kept their own (one flat dict) as today's."""
    if "early_stopping" in state:
        return state
    return {"epoch": state["epoch"], "history": state["history"],
            "early_stopping": {k: state[k] for k in ("best", "best_epoch", "wait", "stopped")},
            "reduce_lr": {"lr": state.get("lr"), "wait": state.get("lr_wait", 0)}}


def latest(ckpt_dir: str | Path, ledger: Ledger | None) -> tuple[int, Path] | None:
    """The newest (epoch, file) that has a checkpoint file and (when a ledger is given) a ledger record."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    done = set(ledger.done()) if ledger is not None else None
    best: tuple[int, Path] | None = None
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if not m:
            continue
        epoch = int(m.group(1))
        if done is not None and unit_id(epoch) not in done:
            continue
        if best is None or epoch > best[0]:
            best = (epoch, p)
    return best


def prune(ckpt_dir: str | Path, keep: set[int]) -> None:
    """Delete checkpoint files of epochs not in ``keep`` (the last one and the best one are kept)."""
    d = Path(ckpt_dir)
    for p in d.glob("epoch-*.npz"):
        m = _NAME.match(p.name)
        if m and int(m.group(1)) not in keep:
            p.unlink(missing_ok=True)
