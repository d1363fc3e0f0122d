"""The unit ledger: one completion record per finished unit (shard, epoch, island checkpoint).

A record is appended only after the unit's output is durable, so a unit with a record is never redone
by ``hpcpop rerun`` and a unit without one always is.

Each stage keeps one append-only file, ``RUN_DIR/ledger/<stage>/records.jsonl``: one JSON object per
line, ``{"event": "done" | "failed" | "forget", "unit": ..., ...}``, each written with one ``write``,
then fsync'd. Later lines win: ``forget`` drops a unit's completion, ``done`` clears its failures. One
file per stage rather than one per unit keeps a run of 10^6 images to a few files (parallel file
systems count inodes). A line cut short by a kill is never read as a record, and the next append starts
on a fresh line. A stage has one writer at a time (the driver; rank 0 for training epochs). Runs made
before this layout (``done/<unit>.json``) are still read.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from . import atomic

RECORDS = "records.jsonl"


class Ledger:
    """Completion and failure records of one stage, in ``RUN_DIR/ledger/<stage>/records.jsonl``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / RECORDS

    @staticmethod
    def _check(unit: str) -> str:
        if not unit or "/" in unit or unit.startswith(".") or "\n" in unit:
            raise ValueError(f"bad unit id {unit!r}")
        return unit

    def _append(self, event: str, unit: str, info: dict[str, Any]) -> dict:
        """Append one record as one line, durably (write, fsync; the folder too when the file is new)."""
        rec = {"event": event, "unit": self._check(unit), **info}
        line = (json.dumps(rec, default=atomic._jsonable) + "\n").encode()
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a kill cut the last line short: leave it alone, start afresh
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if size == 0:
            atomic.fsync_dir(self.root)
        return {k: v for k, v in rec.items() if k != "event"}

    def _events(self) -> list[dict]:
        """Every whole record, in order (a line that is not a whole JSON object is skipped)."""
        out = []
        legacy = self.root / "done"
        if legacy.is_dir():
            for p in sorted(legacy.glob("*.json")):
                try:
                    out.append({"event": "done", **json.loads(p.read_text())})
                except (OSError, json.JSONDecodeError):
                    continue
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return out
        for raw in data.split(b"\n"):
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and "unit" in rec and "event" in rec:
                out.append(rec)
        return out

    def _replay(self) -> tuple[dict[str, dict], dict[str, dict]]:
        done: dict[str, dict] = {}
        failed: dict[str, dict] = {}
        for rec in self._events():
            event, unit = rec.pop("event"), rec["unit"]
            if event == "done":
                done[unit] = rec
                failed.pop(unit, None)
            elif event == "forget":
                done.pop(unit, None)
            elif event == "failed":
                failed[unit] = rec
        return done, failed

    def is_done(self, unit: str) -> bool:
        return unit in self.done()

    def done(self) -> dict[str, dict]:
        """All completion records, by unit id."""
        return self._replay()[0]

    def pending(self, units: list[str]) -> list[str]:
        """The units of ``units`` that have no completion record, in order."""
        finished = self.done()
        return [u for u in units if u not in finished]

    def record(self, unit: str, **info: Any) -> dict:
        """Record that ``unit`` is finished (call only once its output is durable); clears its failures."""
        return self._append("done", unit, {"finished_at": time.time(), "host": socket.gethostname(),
                                           "pid": os.getpid(), **info})

    def forget(self, units: list[str]) -> None:
        """Drop the completion records of ``units`` (their output turned out to be missing)."""
        for unit in units:
            self._append("forget", unit, {"at": time.time()})

    def record_failure(self, unit: str, error: str) -> dict:
        """Count a failed attempt of ``unit`` and keep the last error message."""
        prev = self.failures().get(unit, {})
        return self._append("failed", unit, {"attempts": int(prev.get("attempts", 0)) + 1, "error": error[-2000:],
                                             "at": time.time()})

    def failures(self) -> dict[str, dict]:
        """The units whose last attempts failed (since their last completion), with attempts and error."""
        return self._replay()[1]
