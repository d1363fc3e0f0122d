"""What every stage gets (StageContext) and returns (StageResult), and the shared unit runner.

A stage module names its config class ``CONFIG``, defines ``run(ctx) -> StageResult`` and optionally
``check(stage, job)`` for validation a schema cannot express, run by ``pipeline.prepare`` on the resolved
job (raise ManifestError naming the key). Stages that spread work on
Dask call :meth:`StageContext.run_units`, which skips units already in the ledger, gives each task
a readable key (``<stage>-shard-00042``), and writes a unit's completion record only after its task
returned, i.e. after the task made its output durable.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cluster.profiles import Profile
from ..config import from_params
from ..errors import HpcPopError, ManifestError, ParamError, StageFailed
from ..job import Job, JobStage, Resources
from ..ledger import Ledger
from ..manifest import Manifest, StageSpec
from ..paths import input_file, is_remote, local_path
from ..runs import RunDir
from ..seeds import derive_seed

log = logging.getLogger(__name__)
POLL_S = 0.5  # how often the driver looks at a running task (its bars, SLURM job ids)
WAIT_S = 0.05  # how long the unit runner sleeps when no task has finished
WATCH_S = 5.0  # how often (at most) the watchdog asks the scheduler whether a task runs


@dataclass
class Unit:
    """One resumable piece of a stage: an id for the ledger and task key, and the task's arguments."""

    id: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    weight: int = 1  # e.g. replicates in a shard, for throughput and progress


@dataclass
class StageResult:
    """What a stage reports: units done/total, failures, and stage-specific metrics for report.json."""

    units_total: int
    units_done: int
    failures: int = 0
    metrics: dict = field(default_factory=dict)
    items: int | None = None  # e.g. images, evaluations: throughput is items per second
    item_name: str = "units"
    error: str | None = None  # the first failed unit and its one-line error, for the stage's last line


def key_path(spec: StageSpec, manifest: Manifest, key: str = "") -> str:
    """Where a stage's key sits in its manifest: ``jobs/x.yaml: stages[0].simulate.image.maf``."""
    where = f"{manifest.source}: stages[{spec.index}].{spec.kind}"
    return f"{where}.{key}" if key else where


@contextmanager
def located(spec: StageSpec, manifest: Manifest, prefix: str = "") -> Iterator[None]:
    """Give a science module's ``ParamError`` (key relative to its config) its place in the manifest.

    ``prefix`` is where that config sits inside the stage's parameters (``image``), if not at the top.
    """
    try:
        yield
    except ParamError as exc:
        key = exc.within(prefix).key if prefix else exc.key
        raise ManifestError(f"{key_path(spec, manifest, key)}: {exc.reason}") from None


def input_path(manifest: Manifest, value: str) -> str:
    """A user input file (VCF, AFS, demes YAML) of ``manifest``: URLs as given, paths relative to its folder."""
    if is_remote(value):
        return value
    return str(input_file(local_path(value), manifest.base_dir))


RUN_PREFIX = "@run/"


def resolve_location(manifest: Manifest, value: str, run_dir: Path | None) -> str:
    """Where a store or output path of the manifest lives.

    URLs (``s3://…``) and absolute paths are used as given; ``@run/x`` is inside the run directory (kept
    as ``@run/x`` when ``run_dir`` is None, as at validation, before the run exists); other relative paths
    are under the manifest's ``storage`` (itself relative to the manifest's folder), so runs can share a store.
    """
    if is_remote(value):
        return value
    value = local_path(value)
    if value.startswith(RUN_PREFIX):
        rest = value[len(RUN_PREFIX):]
        return str(run_dir / rest) if run_dir is not None else RUN_PREFIX + str(Path(rest))
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    storage = manifest.storage
    if is_remote(storage):
        return storage.rstrip("/") + "/" + value
    root = Path(local_path(storage))
    if not root.is_absolute():
        root = Path(manifest.base_dir) / root
    return str(root / value)


def check_url(url: str, where: str) -> None:
    """A remote URL's fsspec protocol must be known and the package that implements it installed."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ManifestError(f"{where}: {url}: the {protocol}:// protocol needs a package that is not installed "
                            f"({reason})") from None
    except ValueError:
        raise ManifestError(f"{where}: {url}: {protocol!r} is not a protocol fsspec knows") from None


def store_writers(job: Job, value: str) -> list[JobStage]:
    """The job's simulate stages that write the store ``value``, in order."""
    loc = resolve_location(job.manifest, value, None)
    return [s for s in job.stages if s.kind == "simulate" and resolve_location(job.manifest, s.config.store, None) == loc]


def check_store_reference(stage: JobStage, job: Job, value: str | None, key: str = "store", *,
                          may_appear: bool = False) -> tuple[int, int] | None:
    """A store a stage reads is written by an earlier simulate stage of the job or is an image store now.

    Returns its image shape where validation can know it (the simulate stage's image size, the store's);
    ``may_appear``: another job may still create it (train's stream mode), so its absence is no error.
    """
    if value is None:
        return None
    manifest = job.manifest
    where = key_path(stage.spec, manifest, key)
    loc = resolve_location(manifest, value, None)
    writers = store_writers(job, value)
    earlier = [s for s in writers if s.index < stage.index]
    if earlier:
        return tuple(earlier[-1].config.image.size)
    if writers:
        raise ManifestError(f"{where}: {value!r} is written by stage {writers[0].name!r}, which runs after this one")
    if is_remote(loc):
        check_url(loc, where)
        return None
    if loc.startswith(RUN_PREFIX):
        raise ManifestError(f"{where}: {value!r} is in the run directory, but no earlier simulate stage of this "
                            "manifest writes it")
    if not Path(loc).exists():
        if may_appear:
            return None
        raise ManifestError(f"{where}: no image store at {loc}, and no earlier simulate stage writes {value!r}")
    from ..store import open_store

    try:
        return tuple(open_store(loc).image_shape)
    except HpcPopError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def stage_config(spec: StageSpec, manifest: Manifest) -> Any:
    """A stage's typed, frozen config from its schema-filled parameters (``pipeline.prepare`` builds it once).

    The stage module names its config class as ``CONFIG``; a bad value names its manifest key.
    """
    from . import get_stage

    with located(spec, manifest):
        return from_params(get_stage(spec.kind).CONFIG, spec.params)


def worker_location() -> dict:
    """Where this process runs (host, SLURM job id when inside one), for completion records."""
    import os
    import socket

    where = {"worker_host": socket.gethostname()}
    if os.environ.get("SLURM_JOB_ID"):
        where["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return where


@dataclass(frozen=True)
class TaskError:
    """A task's own exception, returned as its value: Dask then neither retries the task (its retries are
    for lost workers) nor logs a traceback block per attempt, and the driver records the unit's failure once.

    ``exception`` is the original when it survives pickling (it is re-raised in the driver), else None.
    """

    type_name: str
    message: str
    exception: BaseException | None = None

    @classmethod
    def of(cls, exc: BaseException) -> TaskError:
        import pickle

        message = " ".join(str(exc).split()) or type(exc).__name__  # one line
        if len(message) > 1000:
            message = message[:997] + "..."
        try:
            kept: BaseException | None = exc if type(pickle.loads(pickle.dumps(exc))) is type(exc) else None
        except Exception:  # noqa: BLE001 - e.g. an __init__ that unpickling cannot call
            kept = None
        return cls(type(exc).__name__, message, kept)

    def line(self) -> str:
        """``StoreError: x.zarr: ...`` (the type is left out for our own errors, whose text says it all)."""
        ours = isinstance(self.exception, HpcPopError)
        return self.message if ours else f"{self.type_name}: {self.message}"

    def raise_(self, key: str) -> None:
        """In the driver: our own error as it was raised; anything else as one StageFailed line naming the task."""
        if isinstance(self.exception, HpcPopError):
            raise self.exception
        raise StageFailed(f"task {key}: {self.line()}") from self.exception


def _call_on_worker(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, dict]:
    """Run a unit's task and say where it ran (host, SLURM job), for the completion record; the task's own
    exception comes back as a :class:`TaskError` value (its traceback goes to the worker's log at debug)."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a deterministic error: no retry, recorded once by the driver
        log.debug("task failed", exc_info=True)
        result = TaskError.of(exc)
    return result, worker_location()


class ProgressWatch:
    """The driver's bars for work that runs elsewhere and writes a progress file (see train/progress.py).

    With ``epochs`` an epoch bar sits above a batch bar (training); without, one batch bar (evaluation).
    ``on_change`` gets each new state, e.g. to put the epoch into report.json.
    """

    def __init__(self, ctx: StageContext, path: str | Path, *, desc: str, epochs: int | None = None,
                 on_change: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.on_change = on_change
        self.seen: float | None = None
        self.epoch_bar = (ctx.progress(epochs, desc=f"{desc} epochs", unit="epoch", position=0)
                          if epochs else None)
        self.batch_bar = ctx.progress(0, desc=desc, unit="batch", position=1 if epochs else 0,
                                      leave=not epochs)

    def poll(self) -> None:
        """Bring the bars up to the last state written."""
        from ..train.progress import read_progress

        data = read_progress(self.path)
        if not data or data.get("updated_at") == self.seen:
            return
        self.seen = data.get("updated_at")
        if self.epoch_bar is not None and data.get("epochs_done") is not None:
            self.epoch_bar.n = int(data["epochs_done"])
            if data.get("last_val_loss") is not None:
                self.epoch_bar.set_postfix(val_loss=f"{data['last_val_loss']:.4g}", refresh=False)
            self.epoch_bar.refresh()
        validating = data.get("phase") == "validation"
        total = data.get("val_batches" if validating else "batches")
        if total is not None:
            self.batch_bar.total = int(total)
            self.batch_bar.n = int(data.get("val_batch" if validating else "batch") or 0)
            if data.get("epoch") is not None:
                self.batch_bar.set_description(f"{'validation' if validating else 'epoch'} {data['epoch']}",
                                               refresh=False)
            if data.get("loss") is not None and not validating:
                self.batch_bar.set_postfix(loss=f"{data['loss']:.4g}", refresh=False)
            self.batch_bar.refresh()
        if self.on_change is not None:
            self.on_change(data)

    def close(self) -> None:
        """A last poll, then close the bars."""
        self.poll()
        self.batch_bar.close()
        if self.epoch_bar is not None:
            self.epoch_bar.close()


class Watchdog:
    """Fails a stage that waits for nothing: ``timeout`` seconds in which no unit finished and no task ran on
    any worker (every worker gone, none able to take the tasks, worker jobs still queued) raise StageFailed
    with one line, instead of waiting forever. A task that runs is progress, however long it takes.
    ``timeout`` 0 turns it off (the profile's ``stall_timeout_s``). Its clock starts at the first check.
    """

    def __init__(self, ctx: StageContext, timeout: float, units_done: int = 0, units_total: int | None = None):
        self.ctx = ctx
        self.timeout = float(timeout)
        self.units_done, self.units_total = units_done, units_total
        self.every = min(WATCH_S, self.timeout / 4)
        self.last_progress: float | None = None
        self.next_look = 0.0

    def progressed(self) -> None:
        """A unit finished (done or failed)."""
        self.last_progress = time.monotonic()
        self.units_done += 1

    def touch(self) -> None:
        """New work was submitted: the stall clock starts again."""
        self.last_progress = time.monotonic()

    def check(self) -> None:
        """Ask the scheduler (at most every few seconds) whether a task runs; raise when stalled too long."""
        now = time.monotonic()
        if self.last_progress is None:
            self.last_progress = now
        if not self.timeout or now < self.next_look:
            return
        self.next_look = now + self.every
        client = self.ctx.client
        workers = len(client.nthreads())
        if workers and any(client.processing().values()):
            self.last_progress = now
            return
        idle = now - self.last_progress
        if idle < self.timeout:
            return
        why = (f"{workers} worker(s) connected, none running a task" if workers
               else "no Dask worker left (all gone, or worker jobs still queued)")
        done = f"; {self.units_done}/{self.units_total} units finished" if self.units_total is not None else ""
        raise StageFailed(f"stage {self.ctx.name}: stalled: no unit finished and no task ran for {idle:.0f} s "
                          f"({why}; the profile's stall_timeout_s is {self.timeout:g}){done}; "
                          f"`hpcpop rerun {self.ctx.run_dir}` goes on from there")


class StageContext:
    """Everything a stage may use: its resolved config, resources and seed, the run dir, ledger, paths,
    the cluster, progress."""

    def __init__(self, run: RunDir, job: Job, stage: JobStage,
                 cluster_factory: Callable[[JobStage], Any] | None = None, show_progress: bool = True):
        self.run = run
        self.job = job
        self.stage = stage
        self.manifest: Manifest = job.manifest
        self.spec: StageSpec = stage.spec
        self.profile: Profile = job.profile
        self.config: Any = stage.config
        self.resources: Resources = stage.resources
        self.seed: int = stage.seed
        self.ledger: Ledger = run.ledger(stage.name)
        self._cluster_factory = cluster_factory
        self._handle: Any = None
        self.show_progress = show_progress

    # --- convenience ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def params(self) -> dict:
        """The stage's schema-filled parameters as written to the run (for store attrs and records)."""
        return self.spec.params

    @property
    def run_dir(self) -> Path:
        return self.run.path

    def unit_seed(self, *keys: int) -> int:
        """Seed of one unit of this stage, e.g. ``ctx.unit_seed(replicate_index)``."""
        return derive_seed(self.seed, *keys)

    def stage_dir(self) -> Path:
        """A private folder for this stage's outputs inside the run directory."""
        d = self.run.path / self.spec.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, value: str) -> str:
        """Resolve a store or file path from the manifest (see :func:`resolve_location`)."""
        return resolve_location(self.manifest, value, self.run.path)

    def input_path(self, value: str) -> str:
        """Resolve a user input file (VCF, AFS, demes YAML): relative to the manifest's folder."""
        return input_path(self.manifest, value)

    def progress(self, total: int, desc: str | None = None, unit: str = "unit", initial: int = 0, **kwargs: Any):
        """A progress bar for a long loop (tqdm on stderr; silent when progress is off or stderr is no terminal).

        ``kwargs`` go to tqdm (``position``, ``leave``).
        """
        from tqdm.auto import tqdm

        kwargs.setdefault("leave", True)
        return tqdm(total=total, initial=initial, desc=desc or self.name, unit=unit,
                    disable=True if not self.show_progress else None, dynamic_ncols=True, **kwargs)

    def report(self, **metrics: Any) -> None:
        """Merge stage metrics into report.json now (e.g. best log-likelihood per island, live)."""
        self.run.update_stage(self.name, metrics=metrics)

    # --- cluster -----------------------------------------------------------------------------
    @property
    def cluster(self) -> Any:
        """The stage's cluster handle, started on first use (stages that never use Dask never start one)."""
        if self._handle is None:
            if self._cluster_factory is None:
                raise HpcPopError(f"stage {self.name}: no cluster available")
            self._handle = self._cluster_factory(self.stage)
        return self._handle

    @property
    def client(self) -> Any:
        return self.cluster.client

    def note_jobs(self) -> None:
        """Record SLURM worker job ids seen so far in the run directory."""
        if self._handle is not None and self._handle.kind == "slurm":
            self.run.add_slurm_jobs(f"workers:{self.name}", self._handle.poll_job_ids())

    def run_task(self, fn: Callable[..., Any], *args: Any, key: str, watch: ProgressWatch | None = None,
                 **kwargs: Any) -> tuple[Any, dict]:
        """Run ``fn(*args, **kwargs)`` as one Dask task on this stage's cluster, i.e. on a worker with the
        stage's resources (a SLURM worker job under SLURM profiles), never in the driver.

        The driver waits, polling ``watch`` for its bars and noting worker job ids. The task's key (e.g.
        ``train-epochs``) names it on the dashboard. Returns the task's result and where it ran (host,
        SLURM job). A lost worker's task is rescheduled by Dask (its ``allowed-failures``); an exception
        in the task is raised here once (no retries): our own errors as they were, others as StageFailed.
        """
        client = self.client
        self.run.update_report(dashboard=self.cluster.dashboard)
        fut = client.submit(_call_on_worker, fn, *args, key=key, pure=False, **kwargs)
        last_note = 0.0
        dog = Watchdog(self, self.profile.stall_timeout_s)
        try:
            while not fut.done():
                time.sleep(POLL_S)
                dog.check()
                if watch is not None:
                    watch.poll()
                if time.time() - last_note > 5.0:
                    last_note = time.time()
                    self.note_jobs()
            result, where = fut.result()
        except BaseException:
            fut.cancel()
            raise
        finally:
            self.note_jobs()
            if watch is not None:
                watch.close()
        if isinstance(result, TaskError):
            result.raise_(key)
        return result, where

    # --- the shared unit runner ----------------------------------------------------------------
    def run_units(self, units: Iterable[Unit], fn: Callable[..., Any], *,
                  item_name: str = "units",
                  on_done: Callable[[Unit, Any], dict | None] | None = None,
                  resources: dict | None = None,
                  still_done: Callable[[Unit], bool] | None = None) -> StageResult:
        """Run ``fn(*unit.args, **unit.kwargs)`` as one Dask task per pending unit.

        Units with a completion record are skipped, unless ``still_done(unit)`` says their output is gone
        (e.g. a shard not flagged written in the store): such a record does not count, which is logged,
        and the unit is redone. When a task returns, ``on_done`` may turn its
        result into extra fields of the completion record. A task whose worker dies is resubmitted by
        Dask (the profile's ``task_retries``); a task that raises is recorded as a failure once (no retry: its
        error is deterministic) and the stage fails at the end, after every other unit had its chance. A
        stage where no unit finishes and no task runs for the profile's ``stall_timeout_s`` fails at once
        (:class:`Watchdog`); its unfinished units are cancelled and a rerun does them.
        """
        from distributed import as_completed

        units = list(units)
        total_items = sum(u.weight for u in units)
        done_ids = set(self.ledger.done())
        if still_done is not None:
            gone = [u.id for u in units if u.id in done_ids and not still_done(u)]
            if gone:
                log.warning("stage %s: %d unit(s) have a completion record but their output is missing (%s); "
                            "redoing them", self.name, len(gone), ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else ""))
                self.ledger.forget(gone)
                done_ids -= set(gone)
        pending = [u for u in units if u.id not in done_ids]
        done_items = total_items - sum(u.weight for u in pending)
        self.run.update_stage(self.name, units_total=len(units), units_done=len(units) - len(pending))
        failures = 0
        first_error: str | None = None
        t0 = time.time()
        if pending:
            client = self.client
            self.run.update_report(dashboard=self.cluster.dashboard)
            by_key = {}
            queue = iter(pending)

            def submit_next() -> Any:
                u = next(queue, None)
                if u is None:
                    return None
                fut = client.submit(_call_on_worker, fn, *u.args, key=f"{self.name}-{u.id}",
                                    retries=self.profile.task_retries, pure=False, resources=resources, **u.kwargs)
                by_key[fut.key] = u
                return fut

            # waves: at most max_tasks_in_flight submitted at once, one more as each finishes, so the
            # driver's and scheduler's memory do not grow with the number of units
            first = [f for f in (submit_next() for _ in range(self.profile.max_tasks_in_flight)) if f]
            running = as_completed(first)
            n_done = len(units) - len(pending)
            dog = Watchdog(self, self.profile.stall_timeout_s, n_done, len(units))
            with self.progress(total_items, desc=self.name, unit=item_name, initial=done_items) as bar:
                last_note = 0.0
                for fut in _finished(running, dog.check):
                    dog.progressed()
                    u = by_key.pop(fut.key)
                    try:
                        result, where = fut.result()
                        error = result.line() if isinstance(result, TaskError) else None
                    except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker once retries are spent
                        error = " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())
                    fut.release()  # the scheduler forgets it: then the next unit goes out
                    nxt = submit_next()
                    if nxt is not None:
                        running.add(nxt)
                    if error is not None:
                        failures += 1
                        first_error = first_error or f"{u.id}: {error}"
                        self.ledger.record_failure(u.id, error)
                        log.error("unit %s failed: %s", u.id, error)
                        continue
                    extra = on_done(u, result) if on_done else None
                    self.ledger.record(u.id, **where, **(extra or {}))
                    n_done += 1
                    bar.update(u.weight)
                    now = time.time()
                    if now - last_note > 2.0 or n_done == len(units):
                        last_note = now
                        self.note_jobs()
                        self.run.update_stage(self.name, units_done=n_done, failures=failures)
        elapsed = time.time() - t0
        n_done = len(set(self.ledger.done()) & {u.id for u in units})
        return StageResult(units_total=len(units), units_done=n_done, failures=failures,
                           items=total_items, item_name=item_name,
                           metrics={"seconds_this_attempt": round(elapsed, 3)}, error=first_error)


def _finished(running: Any, check: Callable[[], None]) -> Iterator[Any]:
    """The futures of ``running`` (distributed's as_completed) as they finish; while none has, ``check()``
    runs between short sleeps. When it raises (the watchdog), the futures still out are cancelled first."""
    while not running.is_empty():
        batch = running.next_batch(block=False)
        if batch:
            yield from batch
            continue
        try:
            check()
        except BaseException:
            out = list(running.futures)
            running.clear()
            for fut in out:
                fut.cancel()
            raise
        time.sleep(WAIT_S)
