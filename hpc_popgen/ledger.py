"""The unit ledger: one completion record per finished unit (shard, epoch, island checkpoint).

A record is written atomically and only after the unit's output is durable, so a unit with a record
is never redone by ``hpcpop rerun`` and a unit without one always is.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from . import atomic


class Ledger:
    """Completion and failure records of one stage, under ``RUN_DIR/ledger/<stage>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.done_dir = self.root / "done"
        self.fail_dir = self.root / "failed"

    def _name(self, unit: str) -> str:
        if not unit or "/" in unit or unit.startswith("."):
            raise ValueError(f"bad unit id {unit!r}")
        return f"{unit}.json"

    def is_done(self, unit: str) -> bool:
        return (self.done_dir / self._name(unit)).exists()

    def done(self) -> dict[str, dict]:
        """All completion records, by unit id."""
        out: dict[str, dict] = {}
        if self.done_dir.is_dir():
            for p in sorted(self.done_dir.glob("*.json")):
                try:
                    out[p.stem] = json.loads(p.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # cannot happen with atomic writes; never count a broken record
        return out

    def pending(self, units: list[str]) -> list[str]:
        """The units of ``units`` that have no completion record, in order."""
        finished = {p.stem for p in self.done_dir.glob("*.json")} if self.done_dir.is_dir() else set()
        return [u for u in units if u not in finished]

    def record(self, unit: str, **info: Any) -> dict:
        """Write the completion record of ``unit`` (call only once its output is durable)."""
        rec = {"unit": unit, "finished_at": time.time(), "host": socket.gethostname(),
               "pid": os.getpid(), **info}
        atomic.write_json(self.done_dir / self._name(unit), rec)
        failed = self.fail_dir / self._name(unit)
        if failed.exists():
            failed.unlink()
        return rec

    def forget(self, units: list[str]) -> None:
        """Drop the completion records of ``units`` (their output turned out to be missing)."""
        for unit in units:
            (self.done_dir / self._name(unit)).unlink(missing_ok=True)

    def record_failure(self, unit: str, error: str) -> dict:
        """Count a failed attempt of ``unit`` and keep the last error message."""
        path = self.fail_dir / self._name(unit)
        prev = {}
        if path.exists():
            try:
                prev = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                prev = {}
        rec = {"unit": unit, "attempts": int(prev.get("attempts", 0)) + 1, "error": error[-2000:],
               "at": time.time()}
        atomic.write_json(path, rec)
        return rec

    def failures(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        if self.fail_dir.is_dir():
            for p in sorted(self.fail_dir.glob("*.json")):
                try:
                    out[p.stem] = json.loads(p.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
        return out

