"""Cluster profiles: packaged (``cluster_profiles/``), per user (``~/.config/hpcpop/profiles/``) or a path.

A profile holds only what differs from dask's own configuration; keys left out or null fall back to
dask-jobqueue's ``jobqueue.slurm`` and distributed's settings, so nothing is configured twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ManifestError, ProfileError
from ..manifest import fill_defaults, load_schema, read_yaml, validate_against
from ..paths import PROFILE_DIR, USER_PROFILE_DIR


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
    from .clusters import check_cluster_keys

    data = with_defaults(data)
    check_cluster_keys(data, str(path))
    return data


def with_defaults(data: dict) -> dict:
    """A validated profile with the defaults of profile.schema.json filled in."""
    return fill_defaults(data, load_schema("profile.schema.json"))


def resolve_profile(name_or_path: str, base_dir: str | Path = ".") -> dict:
    """The profile dict for a name or a YAML path, with ``name`` and ``source`` recorded in it."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path
    if looks_like_path:
        path = Path(name_or_path).expanduser()
        if not path.is_absolute() and not path.exists():
            path = Path(base_dir) / path
        if not path.exists():
            raise ProfileError(f"{name_or_path}: profile file not found")
        data = load_profile_file(path)
        data.setdefault("name", path.stem)
        data["source"] = str(path.resolve())
        return data
    cands = _candidates()
    if name_or_path not in cands:
        known = ", ".join(sorted(cands)) or "none"
        raise ProfileError(f"unknown cluster profile {name_or_path!r} (known: {known}; or give a path to a profile YAML)")
    path, _origin = cands[name_or_path]
    data = load_profile_file(path)
    data["name"] = name_or_path
    data["source"] = str(path)
    return data
