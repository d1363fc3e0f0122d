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
from pathlib import Path

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
@click.option("-v", "--verbose", count=True,
              help="Libraries' warnings and Dask's own log lines on the console too (-vv: debug lines as well).")
@click.version_option(package_name="hpc_popgen")
def main(verbose: int) -> None:
    """hpcpop: simulation-based inference for population genomics on Dask, Zarr, Horovod and SLURM."""
    # for processes started from here too (Dask workers, training jobs): TensorFlow's start-up lines
    # (train/tfenv.py), workers' warnings and Dask lines only with -v
    os.environ["HPCPOP_VERBOSE"] = str(verbose)
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    ours = logging.getLogger("hpc_popgen")
    handler = _console_handler(ours, "%(levelname)s %(name)s: %(message)s")
    ours.setLevel(level)
    ours.propagate = False  # dadi calls logging.basicConfig(): without this every line prints twice
    handler.setLevel(level)
    # every other library logs through the root logger (or py.warnings, or distributed's own handler:
    # quiet_libraries); their console handler shows them with -v only, the run's log file always (run_log)
    for name in ("", "py.warnings"):
        _console_handler(logging.getLogger(name), "%(levelname)s %(name)s: %(message)s", library=True)
    logging.getLogger("py.warnings").propagate = False
    logging.captureWarnings(True)  # Python warnings become log lines of py.warnings
    if verbose < 1:  # Dask's own INFO lines (nanny/scheduler start and stop) not even in the log file
        for name in ("distributed", "dask_jobqueue"):
            logging.getLogger(name).setLevel(logging.WARNING)


class LibraryLinesOff(logging.Filter):
    """On a library's console handler unless -v: drops every record. A filter, not a level, because
    LocalCluster sets the level of distributed's console handlers while it runs (``silence_logs``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _console_handler(logger: logging.Logger, fmt: str, library: bool = False) -> logging.Handler:
    """The logger's stderr handler of the CLI, added once however often main() runs in a process.

    ``library``: a library's lines, shown with -v only (the handler stays, so Python's last-resort
    handler does not print them instead, and a later ``logging.basicConfig`` adds no other)."""
    handler = next((h for h in logger.handlers if getattr(h, "_hpcpop_cli", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt))
        handler._hpcpop_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    if library:
        _show_library_lines(handler)
    return handler


def _show_library_lines(handler: logging.Handler) -> None:
    """Library lines through this console handler only with -v."""
    for f in [f for f in handler.filters if isinstance(f, LibraryLinesOff)]:
        handler.removeFilter(f)
    if not tf_verbose():
        handler.addFilter(LibraryLinesOff())


def quiet_libraries() -> None:
    """Unless -v: distributed's and dask-jobqueue's console lines off in the driver (where importing
    distributed added its handler; the run's log file still gets their warnings), and in LocalCluster
    workers, whose stderr is ours, Dask's lines below ERROR and Python warnings off (through the nanny's
    pre-spawn environment). SLURM worker jobs keep theirs in their log files."""
    import dask
    import distributed  # noqa: F401 - attaches distributed's console handler, filtered here

    for name in ("distributed", "dask_jobqueue"):
        for h in logging.getLogger(name).handlers:
            if type(h) in (logging.StreamHandler, BarSafeHandler) and h.stream in (sys.stderr, sys.stdout):
                _show_library_lines(h)
    if tf_verbose():
        return
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env.update(DASK_LOGGING__DISTRIBUTED="error", PYTHONWARNINGS="ignore")
    dask.config.set({"distributed.nanny.pre-spawn-environ": env})


LIBRARY_LOGGERS = ("", "py.warnings", "distributed", "dask_jobqueue")  # the root: every other library


@contextmanager
def run_log(path: str | Path) -> Iterator[None]:
    """Meanwhile, libraries' warnings (and Dask's lines) also go to the run's log file, next to ours."""
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh.setLevel(logging.WARNING if not tf_verbose() else logging.INFO)
    # the root, and those that do not pass their records on to it (a record is written once)
    loggers = [lg for lg in map(logging.getLogger, LIBRARY_LOGGERS) if lg is logging.root or not lg.propagate]
    for logger in loggers:
        logger.addHandler(fh)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(fh)
        fh.close()


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
def logs_through_bars(names: tuple[str, ...] = ("hpc_popgen", *LIBRARY_LOGGERS)) -> Iterator[None]:
    """Meanwhile, the console handlers of these loggers write through tqdm (file handlers are kept)."""
    quiet_libraries()

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
