"""The ``hpcpop`` command: a thin click shell over the library; user errors print as one line.

Commands live in small modules of this package and are loaded lazily, so ``hpcpop validate`` does not
import TensorFlow. Benchmarks are subcommands of ``hpcpop bench`` defined in ``hpc_popgen/bench/``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from ..errors import HpcPopError
from ..train.tfenv import verbose as tf_verbose

# command name -> "module:attribute" (module relative to hpc_popgen)
COMMANDS = {
    "validate": "cli.run_commands:validate",
    "submit": "cli.run_commands:submit",
    "status": "cli.run_commands:status",
    "rerun": "cli.run_commands:rerun",
    "profiles": "cli.run_commands:profiles",
    "catalogue": "cli.catalogue:catalogue",
    "show": "cli.show:show",
    "predict": "cli.predict:predict",
    "bench": "bench:bench",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            mod, attr = self.lazy[name].split(":")
            try:
                module = importlib.import_module(f"hpc_popgen.{mod}")
            except ModuleNotFoundError as exc:
                if exc.name == f"hpc_popgen.{mod}":
                    return None
                raise
            return getattr(module, attr)
        return super().get_command(ctx, name)


class ErrorHandlingGroup(LazyGroup):
    """Turn HpcPopError into ``Error: <message>`` and exit 2 (bad input) without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HpcPopError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            click.echo("Interrupted; finished units are kept. Resume with `hpcpop rerun RUN_DIR`.", err=True)
            sys.exit(getattr(exc, "exit_code", 130))  # 143 after SIGTERM (pipeline.Terminated)


@click.group(cls=ErrorHandlingGroup, lazy=COMMANDS)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="hpc_popgen")
def main(verbose: int) -> None:
    """hpcpop: simulation-based inference for population genomics on Dask, Zarr, Horovod and SLURM."""
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    # for processes started from here too (Dask workers, training jobs): TensorFlow's start-up lines
    # (train/tfenv.py) only with -v
    os.environ["HPCPOP_VERBOSE"] = str(verbose)
    root = logging.getLogger("hpc_popgen")
    handler = next((h for h in root.handlers if getattr(h, "_hpcpop_cli", False)), None)
    if handler is None:  # one console handler, however often main() runs in a process
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._hpcpop_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    root.propagate = False  # dadi calls logging.basicConfig(): without this every line prints twice
    handler.setLevel(level)
    if verbose < 1:  # Dask's own INFO lines (nanny/scheduler start and stop) drown ours
        for name in ("distributed", "dask_jobqueue"):
            logging.getLogger(name).setLevel(logging.WARNING)
    _warnings_as_logs(handler, verbose)


QUIET_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ResourceWarning)


def _warnings_as_logs(handler: logging.Handler, verbose: int) -> None:
    """Python warnings become log lines (``py.warnings``, through the bars like ours); libraries'
    deprecation and resource warnings, meant for their developers, only with -v (workers too)."""
    import warnings

    if verbose < 1:
        for category in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", category=category)
    logging.captureWarnings(True)
    wlog = logging.getLogger("py.warnings")
    if handler not in wlog.handlers:
        wlog.addHandler(handler)
    wlog.propagate = False


def _quiet_dask() -> None:
    """Unless -v: distributed's INFO lines (nanny and scheduler start and stop) off in the driver, where
    importing distributed set them, and in LocalCluster workers (through the nanny's pre-spawn
    environment, with the warnings filter); SLURM worker jobs keep theirs in their log files."""
    import dask

    if tf_verbose():
        return
    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.WARNING)
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env.update(DASK_LOGGING__DISTRIBUTED="warning",
               PYTHONWARNINGS=",".join(f"ignore::{c.__name__}" for c in QUIET_WARNINGS))
    dask.config.set({"distributed.nanny.pre-spawn-environ": env})


class BarSafeHandler(logging.StreamHandler):
    """Writes each record through ``tqdm.write``, above the progress bars instead of across them (as
    tqdm's ``logging_redirect_tqdm`` does, but keeping the replaced handler's level)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


@contextmanager
def logs_through_bars(names: tuple[str, ...] = ("hpc_popgen", "distributed", "dask_jobqueue", "py.warnings"),
                      ) -> Iterator[None]:
    """Meanwhile, the console handlers of these loggers write through tqdm (file handlers are kept)."""
    import distributed  # noqa: F401 - its console handler is attached on import; swap that one too

    _quiet_dask()

    swapped = []
    for name in names:
        logger = logging.getLogger(name)
        for i, h in enumerate(logger.handlers):
            if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.stdout):
                new = BarSafeHandler(h.stream)
                new.setLevel(h.level)
                new.setFormatter(h.formatter)
                for f in h.filters:
                    new.addFilter(f)
                logger.handlers[i] = new
                swapped.append((logger, h, new))
    try:
        yield
    finally:
        for logger, old, new in swapped:
            if new in logger.handlers:
                logger.handlers[logger.handlers.index(new)] = old
