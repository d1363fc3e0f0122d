"""A worker plugin that lets a closed worker process exit at once instead of finalising Python.

After TensorFlow's import, interpreter finalisation takes about 2 s (more on a busy machine), past the
nanny's 4 s grace: every stage that trained or scored paid 4 s at its close and logged "Worker process
still alive after 4.0 seconds, killing". Registered when the worker closes, the exit handler runs before
every other one (atexit is last in, first out): it flushes logging and the standard streams, then
``os._exit(0)``. Only in a process a nanny spawned, never in the driver (``processes: false``).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import sys
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

NAME = "hpcpop-quick-exit"


def _exit_now() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed stream: nothing left to flush
            pass
    os._exit(0)


class QuickExit(WorkerPlugin):
    """On a nanny-spawned worker's close, skip Python's finalisation at process exit."""

    name = NAME

    def teardown(self, worker: Any) -> None:
        if getattr(worker, "nanny", None) and multiprocessing.parent_process() is not None:
            atexit.register(_exit_now)
