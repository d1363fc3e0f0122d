"""Memory and CPU of the benchmarks' processes, read from /proc (Linux; zeros elsewhere)."""

from __future__ import annotations

import os
import threading


def rss_mb() -> float:
    """This process's resident memory now (MB), from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def status_mb(pid: int | str, key: str) -> float:
    """A ``kB`` field of /proc/PID/status (VmHWM: peak RSS, VmRSS: RSS now) in MB; 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def descendants(pid: int) -> list[int]:
    """Processes below ``pid`` (children, their children...), from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids: list[int] = []
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids += [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            continue
        out += kids
        todo += kids
    return out


class ProcSampler:
    """While in use, samples every ``interval`` s this process's RSS (peak kept) and, with ``children``, for
    each descendant process (Dask nanny and workers) its peak RSS (VmHWM) and CPU seconds."""

    def __init__(self, interval: float = 0.05, children: bool = True) -> None:
        self.interval = interval
        self.children = children
        self.peak_mb = 0.0
        self.child_peak_mb: dict[int, float] = {}
        self.child_cpu_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """One sample of this process and its descendants."""
        self.peak_mb = max(self.peak_mb, rss_mb())
        for pid in descendants(os.getpid()) if self.children else []:
            hwm, cpu = status_mb(pid, "VmHWM"), cpu_s(pid)
            if hwm:
                self.child_peak_mb[pid] = max(self.child_peak_mb.get(pid, 0.0), hwm)
            if cpu:
                self.child_cpu_s[pid] = max(self.child_cpu_s.get(pid, 0.0), cpu)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
