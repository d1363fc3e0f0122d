"""One driver per run directory: an advisory file lock plus a heartbeat record, so a second ``submit``,
``rerun`` or detached driver on a run is refused, and ``hpcpop status`` can tell a live run from a dead driver.

``RUN_DIR/driver.lock`` is held with ``fcntl.flock`` for as long as the driver runs; the kernel drops it when
the driver dies, even by SIGKILL. ``RUN_DIR/driver.json`` names the holder (host, pid, the pid's start time,
start time, command) and a heartbeat a daemon thread renews every ``HEARTBEAT_S`` seconds; it is removed
when the driver ends. On NFS or Lustre ``flock`` may be local to one client (or refused), so across hosts the
record is the truth: a holder on another host is alive while its heartbeat is younger than ``STALE_S``; on
this host while its pid runs (the same process: its start time matches). A record whose holder is gone is
taken over, with a log line.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import atomic
from .errors import RunDirError

log = logging.getLogger(__name__)

LOCK_FILE = "driver.lock"
RECORD_FILE = "driver.json"
HEARTBEAT_S = 15.0  # how often a driver renews its heartbeat
STALE_S = 180.0  # a holder on another host whose heartbeat is older than this is gone


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).astimezone().isoformat(timespec="seconds")


def pid_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc``), to tell it from a later
    process that reuses its pid; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the command name


def pid_running(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` runs on this host (and, when ``start`` is known, is the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it runs
    if start is not None:
        now = pid_start(pid)
        return now is None or now == start
    return True


@dataclass(frozen=True)
class Holder:
    """The driver named in ``driver.json``: where it runs, since when, and its last heartbeat."""

    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    pid_start: str | None = None
    command: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> Holder:
        return cls(host=str(data["host"]), pid=int(data["pid"]), started_at=float(data["started_at"]),
                   heartbeat_at=float(data["heartbeat_at"]), pid_start=data.get("pid_start"),
                   command=str(data.get("command", "")))

    def to_dict(self) -> dict:
        return {"host": self.host, "pid": self.pid, "started_at": self.started_at,
                "started": _iso(self.started_at), "heartbeat_at": self.heartbeat_at,
                "heartbeat": _iso(self.heartbeat_at), "pid_start": self.pid_start, "command": self.command}

    def alive(self, now: float | None = None) -> bool:
        """On this host: its process runs. Elsewhere: its heartbeat is younger than STALE_S."""
        if self.host == socket.gethostname():
            return pid_running(self.pid, self.pid_start)
        return (time.time() if now is None else now) - self.heartbeat_at < STALE_S

    def describe(self) -> str:
        """``host h, pid 123, since 2025-…, last heartbeat 2025-… (4 s ago)``."""
        ago = max(0, round(time.time() - self.heartbeat_at))
        return (f"host {self.host}, pid {self.pid}, since {_iso(self.started_at)}, "
                f"last heartbeat {_iso(self.heartbeat_at)} ({ago} s ago)")


def read_holder(run_path: str | Path) -> Holder | None:
    """The driver recorded in ``RUN_DIR/driver.json``, or None when there is none (or it is unreadable)."""
    try:
        return Holder.from_dict(json.loads((Path(run_path) / RECORD_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def driver_state(run_path: str | Path) -> tuple[str, Holder | None]:
    """``("live", holder)``, ``("gone", holder)`` (a record whose driver is dead or silent) or ``("none", None)``."""
    holder = read_holder(run_path)
    if holder is None:
        return "none", None
    return ("live" if holder.alive() else "gone"), holder


def refused(run_path: str | Path, holder: Holder) -> RunDirError:
    """The one line a second driver gets."""
    return RunDirError(f"{run_path}: another driver runs this run ({holder.describe()}); wait for it, or stop "
                       f"it (kill {holder.pid} on {holder.host}) and `hpcpop rerun {run_path}`")


def check_free(run_path: str | Path) -> None:
    """Raise the refusal when a live driver holds the run (e.g. before submitting a detached driver)."""
    state, holder = driver_state(run_path)
    if state == "live" and holder is not None and holder.pid != os.getpid():
        raise refused(run_path, holder)


class RunLock:
    """The run's driver lock, held between ``acquire`` and ``release`` (or as a context manager).

    ``acquire`` refuses (RunDirError, nothing written) when a live driver holds the run; otherwise it takes
    the lock, over a gone holder's record if there is one, writes the record and starts the heartbeat."""

    def __init__(self, run_path: str | Path, command: str | None = None, heartbeat_s: float = HEARTBEAT_S):
        self.path = Path(run_path)
        self.command = " ".join(sys.argv) if command is None else command
        self.heartbeat_s = heartbeat_s
        self._fh: IO[bytes] | None = None
        self._holder: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> Holder:
        """Take the run or raise the one-line refusal naming its holder."""
        check_free(self.path)  # a live holder: refused before even the lock file is made
        fh = open(self.path / LOCK_FILE, "ab")  # noqa: SIM115 - held open while the driver runs
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                fh.close()
                holder = read_holder(self.path)
                if holder is None:  # between another driver's flock and its record: it is starting
                    raise RunDirError(f"{self.path}: another driver is starting on this run ({self.path / LOCK_FILE} "
                                      "is locked); wait for it or stop it") from None
                raise refused(self.path, holder) from None
            # flock unsupported (some NFS mounts): the heartbeat record alone decides
            log.warning("%s: no file lock on this file system (%s); relying on the driver record", self.path, exc)
        holder = read_holder(self.path)
        if holder is not None:
            if holder.alive() and not (holder.host == socket.gethostname() and holder.pid == os.getpid()):
                fh.close()
                raise refused(self.path, holder)
            log.warning("%s: the previous driver is gone (%s); taking over the run", self.path, holder.describe())
        now = time.time()
        self._fh = fh
        self._holder = Holder(host=socket.gethostname(), pid=os.getpid(), started_at=now, heartbeat_at=now,
                              pid_start=pid_start(os.getpid()), command=self.command)
        self._write(now)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"hpcpop-heartbeat-{self.path.name}", daemon=True)
        self._thread.start()
        return self._holder

    def _write(self, at: float) -> None:
        assert self._holder is not None
        self._holder = Holder(**{**self._holder.__dict__, "heartbeat_at": at})
        atomic.write_json(self.path / RECORD_FILE, self._holder.to_dict())

    def _beat(self) -> None:
        """Renew the heartbeat until released; a failed write is logged and tried again next time."""
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write(time.time())
            except OSError as exc:
                log.warning("%s: heartbeat not written: %s", self.path, exc)

    def release(self) -> None:
        """Stop the heartbeat, remove the record, drop the lock (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
            self._thread = None
        if self._fh is None:
            return
        current = read_holder(self.path)
        if current is not None and self._holder is not None and (current.host, current.pid) == (
                self._holder.host, self._holder.pid):
            try:
                (self.path / RECORD_FILE).unlink()
            except FileNotFoundError:
                pass
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        except OSError:
            pass
        self._fh.close()
        self._fh = None
        self._holder = None
