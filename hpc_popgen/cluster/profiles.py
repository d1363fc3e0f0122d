"""Cluster profiles: packaged (``cluster_profiles/``), per user (``~/.config/hpcpop/profiles/``) or a path.

A profile holds only what differs from dask's own configuration; keys left out or null fall back to
dask-jobqueue's ``jobqueue.slurm`` and distributed's settings, so nothing is configured twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import from_params, to_params
from ..errors import ManifestError, ParamError, ProfileError
from ..manifest import fill_defaults, load_schema, read_yaml, validate_against
from ..paths import PROFILE_DIR, USER_PROFILE_DIR


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
    filled = with_defaults(dict(data))
    filled.pop("name", None)
    filled.pop("source", None)
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
        validate_against(data, "profile.schema.json", source=str(path))
    except ManifestError as exc:
        raise ProfileError(str(exc)) from None
    data = with_defaults(data)
    check_cluster_keys(data, str(path))
    return data


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
    """Refuse ``cluster:`` keys the cluster class does not take, naming the key (before anything runs)."""
    import difflib

    cls_name, allowed = cluster_parameters(profile["kind"])
    for key in profile["cluster"]:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProfileError(f"{source}: cluster.{key}: unknown key for {cls_name}{hint}")


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
        data = load_profile_file(path)
        return profile_from_data(data, name=path.stem, source=str(path.resolve()))
    cands = _candidates()
    if name_or_path not in cands:
        known = ", ".join(sorted(cands)) or "none"
        raise ProfileError(f"unknown cluster profile {name_or_path!r} (known: {known}; or give a path to a profile YAML)")
    path, _origin = cands[name_or_path]
    return profile_from_data(load_profile_file(path), name=name_or_path, source=str(path))
