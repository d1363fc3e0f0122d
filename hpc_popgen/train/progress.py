"""Live progress of a training or evaluation, as a small JSON file the driver polls for its bars.

The work may run in a Dask worker, a child process or a SLURM job on another node; a file in the
stage folder (a shared filesystem, as the run directory is) reaches the driver from all of them
without a connection back. Writes are throttled and atomic (temp name, rename), so a reader never
sees half a file; losing one is harmless, the next write carries the whole state.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"


class ProgressFile:
    """The state of one piece of work (epoch, batch, losses ...), written at most every ``every_s``."""

    def __init__(self, path: str | Path | None, every_s: float = 0.5):
        self.path = Path(path) if path else None
        self.every_s = every_s
        self.state: dict[str, Any] = {}
        self._last = 0.0

    def update(self, force: bool = False, **fields: Any) -> None:
        """Merge ``fields`` into the state; write it when ``every_s`` passed since the last write, or ``force``."""
        self.state.update(fields)
        now = time.monotonic()
        if self.path is None or (not force and now - self._last < self.every_s):
            return
        self._last = now
        self.state["updated_at"] = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.state, fh)
            os.replace(tmp, self.path)
        except OSError:  # progress is a courtesy: never fail the work for it
            try:
                os.unlink(tmp)
            except OSError:
                pass


def read_progress(path: str | Path) -> dict[str, Any]:
    """The last state written to ``path`` ({} when none yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
