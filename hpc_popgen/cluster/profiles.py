"""Cluster profiles: packaged (``cluster_profiles/``), per user (``~/.config/hpcpop/profiles/``) or a path.

A profile holds only what differs from dask's own configuration; keys left out or null fall back to
dask-jobqueue's ``jobqueue.slurm`` and distributed's settings, so nothing is configured twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import from_params, to_params
from ..errors import ManifestError, ParamError, ProfileError
from ..manifest import check_finite, fill_defaults, load_schema, read_yaml, schema_default, validate_against
from ..paths import PROFILE_DIR, USER_PROFILE_DIR

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, tuple[str, ...]]] = set()  # profiles that run code, warned about once per process


@dataclass(frozen=True, kw_only=True)
class Adapt:
    """Adaptive scaling of SLURM worker jobs."""

    minimum_jobs: int
    maximum_jobs: int


@dataclass(frozen=True, kw_only=True)
class WorkerLifetime:
    """SLURM: workers retire this long before their job's walltime, staggered (see ``lifetime_args``)."""

    margin_seconds: int
    stagger_seconds: int


@dataclass(frozen=True, kw_only=True)
class DriverJob:
    """The sbatch job that runs the driver itself (``hpcpop submit --detach``)."""

    cores: int
    memory: str
    walltime: str
    queue: str | None
    account: str | None
    job_extra_directives: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class HorovodSettings:
    """How the train stage launches Horovod ranks on this profile."""

    launcher: str
    ranks: int


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A cluster profile, resolved: every key of profile.schema.json with its default, plus where it came from.

    ``cluster`` stays a mapping: its keys are the cluster class's own keyword arguments, passed through.
    """

    name: str
    source: str
    kind: str
    description: str | None
    cluster: Mapping[str, Any]
    adapt: Adapt
    dashboard_address: str
    tls: bool
    worker_lifetime: WorkerLifetime | None
    max_tasks_in_flight: int
    task_retries: int
    stall_timeout_s: float
    lost_worker_timeout_s: float
    gpus_per_node: int | None
    driver: DriverJob
    horovod: HorovodSettings

    def cluster_value(self, key: str) -> Any:
        """One ``cluster:`` setting, or None when the profile leaves it to dask's configuration."""
        return self.cluster.get(key)

    @property
    def queue(self) -> str | None:
        """The driver job's partition: its own, else the worker jobs'."""
        return self.driver.queue if self.driver.queue is not None else self.cluster_value("queue")

    @property
    def account(self) -> str | None:
        """The driver job's account: its own, else the worker jobs'."""
        return self.driver.account if self.driver.account is not None else self.cluster_value("account")

    def to_dict(self) -> dict:
        """The resolved profile as recorded in ``RUN_DIR/profile.resolved.yaml``."""
        return to_params(self)


def profile_from_data(data: Mapping[str, Any], *, name: str, source: str) -> Profile:
    """The typed Profile from a validated profile mapping (defaults filled here, from the schema)."""
    found = check_code(data, source, read_back=True)
    if found and (str(source), tuple(found)) not in _WARNED:
        _WARNED.add((str(source), tuple(found)))
        log.warning("profile %s runs code named by the user: %s", source,
                    ", ".join(f.split(": ", 1)[0] for f in found))
    filled = with_defaults(dict(data))
    filled.pop("name", None)
    filled.pop("source", None)
    if filled.get("dashboard_address") is None:  # null: loopback, as when absent
        filled["dashboard_address"] = schema_default("profile.schema.json", "dashboard_address")
    try:
        return from_params(Profile, {**filled, "name": name, "source": source})
    except ParamError as exc:
        raise ProfileError(f"{source}: {exc}") from None


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    path: Path
    origin: str  # "packaged" | "user" | "file"
    kind: str
    description: str


def _candidates() -> dict[str, tuple[Path, str]]:
    """Profile names to files; user profiles shadow packaged ones of the same name."""
    found: dict[str, tuple[Path, str]] = {}
    for origin, folder in (("packaged", PROFILE_DIR), ("user", USER_PROFILE_DIR)):
        if folder.is_dir():
            for p in sorted(folder.glob("*.y*ml")):
                found[p.stem] = (p, origin)
    return found


def list_profiles() -> list[ProfileInfo]:
    out = []
    for name, (path, origin) in sorted(_candidates().items()):
        try:
            data = load_profile_file(path)
            out.append(ProfileInfo(name, path, origin, data["kind"], data.get("description", "")))
        except ProfileError as exc:
            out.append(ProfileInfo(name, path, origin, "invalid", str(exc)))
    return out


def load_profile_file(path: Path) -> dict:
    """A profile file's mapping, validated against profile.schema.json, defaults filled, cluster keys checked."""
    try:
        data = read_yaml(path, what="profile")
    except ManifestError as exc:
        raise ProfileError(str(exc)) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a YAML mapping with at least `kind`")
    try:
        check_finite(data, source=str(path))  # the schema's minimum/maximum never reject NaN
        validate_against(data, "profile.schema.json", source=str(path))
    except ManifestError as exc:
        raise ProfileError(str(exc)) from None
    data = with_defaults(data)
    check_cluster_keys(data, str(path))
    check_code(data, path, read_back=False)
    return data


# Keyword arguments of LocalCluster, Nanny, Worker, SLURMCluster and SLURMJob that load or run code, or
# pass keywords on unchecked: a profile may name them only from the user's own folder (USER_PROFILE_DIR).
RUNS_CODE = {
    "preload": "imports a module or runs a file in every worker",
    "preload_argv": "arguments for preloaded code",
    "preload_nanny": "imports a module or runs a file in every nanny",
    "preload_nanny_argv": "arguments for preloaded code",
    "plugins": "worker plugins (code)",
    "extensions": "worker extensions (classes)",
    "worker_class": "a class imported by name",
    "job_cls": "a class imported by name",
    "scheduler_cls": "a class imported by name",
    "WorkerStateClass": "a class",
    "executor": "executors (objects)",
    "data": "a storage class or callable",
    "metrics": "callables run by every worker",
    "startup_information": "callables run by every worker",
    "services": "extra servers (classes imported by name, ports opened)",
    "worker_services": "extra servers (classes imported by name, ports opened)",
    "jupyter": "a Jupyter server on the scheduler",
    "worker_kwargs": "keywords passed on unchecked",
    "scheduler_kwargs": "keywords passed on unchecked",
    "service_kwargs": "keywords passed on unchecked",
    "job_kwargs": "keywords passed on unchecked",
    "base_class_kwargs": "keywords passed on unchecked",
    "env": "environment of worker processes (LD_PRELOAD, PYTHONPATH)",
    "config": "dask configuration of worker processes (distributed.worker.preload)",
    "python": "the interpreter the SLURM job runs",
    "worker_command": "the module the SLURM job runs",
    "shebang": "the interpreter of the SLURM job script",
    "job_script_prologue": "shell lines in the SLURM job script",
    "env_extra": "shell lines in the SLURM job script",
}
# Set by hpcpop from the profile's own keys, so that what is recorded is what runs.
SET_BY_HPCPOP = {"dashboard_address": "the profile's top-level `dashboard_address`",
                 "security": "the profile's `tls`", "shared_temp_directory": "the profile's `tls`"}
WORKER_OPTIONS_RUNNING_CODE = ("--preload", "--worker-class")  # dask worker's command-line options
DIRECTIVES_RUNNING_CODE = ("--export", "--wrap", "--bb")  # sbatch options that set the job's environment or script
SHELL_SPECIAL = set(";&|<>()`\\")  # in the worker command line of the SLURM job script, unquoted by dask-jobqueue
DIRECTIVE_KEYS = ("job_extra_directives", "job_extra")  # #SBATCH lines: a comment to the shell


def code_settings(data: Mapping[str, Any]) -> list[str]:
    """The settings of a profile mapping that would run code the user names, each as ``key: value (why)``.

    Keywords of ``RUNS_CODE``, ``scheduler_options`` that do, worker options that preload, sbatch directives
    that set the job's environment, and, on SLURM, strings with shell syntax or control characters in what
    becomes the job script (dask-jobqueue writes them unquoted).
    """
    found: list[str] = []
    cluster = data.get("cluster") or {}
    slurm = data.get("kind") == "slurm"
    for key, value in cluster.items():
        plain = to_params(value)
        if key in RUNS_CODE and plain not in (None, False, "", [], {}):  # an empty setting runs nothing
            found.append(f"cluster.{key}: {plain!r} ({RUNS_CODE[key]})")
        elif key == "scheduler_options" and isinstance(value, Mapping):
            found += [f"cluster.scheduler_options.{k}: {to_params(v)!r} ({RUNS_CODE[k]})"
                      for k, v in value.items() if k in RUNS_CODE and to_params(v) not in (None, False, "", [], {})]
        for text in [] if key in RUNS_CODE else _strings(plain):
            why = _unsafe_text(text, directive=key in DIRECTIVE_KEYS, slurm=slurm)
            if why:
                found.append(f"cluster.{key}: {text!r} ({why})")
    for text in _strings(to_params((data.get("driver") or {}).get("job_extra_directives") or [])):
        why = _unsafe_text(text, directive=True, slurm=True)
        if why:
            found.append(f"driver.job_extra_directives: {text!r} ({why})")
    return found


def _unsafe_text(text: str, *, directive: bool, slurm: bool) -> str | None:
    """Why a string of a profile could run code (None when it cannot)."""
    if slurm and any(ord(c) < 32 for c in text):
        return "a control character ends the job script's line"
    tokens = text.split()
    if directive:
        if any(t.startswith(DIRECTIVES_RUNNING_CODE) for t in tokens):
            return "sets the job's environment or script"
        return None
    if any(t.startswith(WORKER_OPTIONS_RUNNING_CODE) for t in tokens):
        return "a worker option that loads code"
    if slurm and SHELL_SPECIAL & set(text):
        return "shell syntax in the job script"
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def in_user_folder(path: str | Path) -> bool:
    """Whether a profile file lies in the user's own profile folder (``USER_PROFILE_DIR``)."""
    folder = Path(USER_PROFILE_DIR).expanduser()
    p = Path(path).expanduser()
    return (Path(os.path.abspath(p)).parent == Path(os.path.abspath(folder))
            or p.resolve().parent == folder.resolve())


def check_code(data: Mapping[str, Any], source: str | Path, *, read_back: bool) -> list[str]:
    """The settings of ``data`` that run code (see :func:`code_settings`), allowed only from the user's own
    profile folder: refused (one line naming the first) for any other file.

    ``read_back``: ``data`` did not come from ``source`` just now (a recorded or typed profile), so it is
    allowed only while the file in the user's folder still holds the same settings.
    """
    found = code_settings(data)
    if not found:
        return found
    if not (in_user_folder(source) and Path(source).is_file()):
        raise ProfileError(f"{source}: {found[0]}: a profile runs code only from your own profile folder, "
                           f"{USER_PROFILE_DIR}")
    if read_back and code_settings(load_profile_file(Path(source))) != found:
        raise ProfileError(f"{source}: {found[0]}: recorded, but the profile file no longer says so")
    return found


def cluster_parameters(kind: str) -> tuple[str, set[str]]:
    """The cluster class's name and every keyword it accepts, its workers' or jobs' included."""
    import inspect

    if kind == "local":
        from distributed import LocalCluster, Nanny, Worker

        classes: tuple[Any, ...] = (LocalCluster, Nanny, Worker)
    else:
        from dask_jobqueue import SLURMCluster
        from dask_jobqueue.core import Job
        from dask_jobqueue.slurm import SLURMJob

        classes = (SLURMCluster, SLURMJob, Job)
    names = {n for c in classes for n, p in inspect.signature(c).parameters.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return classes[0].__name__, names - {"scheduler", "loop", "scheduler_ip", "scheduler_port"}


def check_cluster_keys(profile: dict, source: str) -> None:
    """Refuse ``cluster:`` keys the cluster class does not take (``scheduler_options``: the Scheduler's) and
    keys hpcpop sets itself, naming the key (before anything runs)."""
    cls_name, allowed = cluster_parameters(profile["kind"])
    _known_keys(profile["cluster"], allowed, "cluster", cls_name, source)
    options = profile["cluster"].get("scheduler_options")
    if isinstance(options, Mapping):
        _known_keys(options, scheduler_parameters(), "cluster.scheduler_options", "Scheduler", source)


def _known_keys(settings: Mapping[str, Any], allowed: set[str], where: str, cls_name: str, source: str) -> None:
    import difflib

    for key in settings:
        if key in SET_BY_HPCPOP:
            raise ProfileError(f"{source}: {where}.{key}: set by hpcpop from {SET_BY_HPCPOP[key]}")
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProfileError(f"{source}: {where}.{key}: unknown key for {cls_name}{hint}")


def scheduler_parameters() -> set[str]:
    """The Scheduler's keywords (what SLURMCluster's ``scheduler_options`` passes to it)."""
    import inspect

    from distributed import Scheduler

    return {n for n, p in inspect.signature(Scheduler).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def with_defaults(data: dict) -> dict:
    """A validated profile with the defaults of profile.schema.json filled in."""
    return fill_defaults(data, load_schema("profile.schema.json"))


def resolve_profile(name_or_path: str, base_dir: str | Path = ".") -> Profile:
    """The Profile for a name or a YAML path (a relative path is looked up beside the manifest)."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path
    if looks_like_path:
        path = Path(name_or_path).expanduser()
        if not path.is_absolute() and not path.exists():
            path = Path(base_dir) / path
        if not path.exists():
            raise ProfileError(f"{name_or_path}: profile file not found")
        path = Path(os.path.abspath(path))  # errors and records name the file in full
        return profile_from_data(load_profile_file(path), name=path.stem, source=str(path))
    cands = _candidates()
    if name_or_path not in cands:
        known = ", ".join(sorted(cands)) or "none"
        raise ProfileError(f"unknown cluster profile {name_or_path!r} (known: {known}; or give a path to a profile YAML)")
    path, _origin = cands[name_or_path]
    return profile_from_data(load_profile_file(path), name=name_or_path, source=str(path))
