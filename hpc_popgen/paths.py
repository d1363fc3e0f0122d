"""Where the packaged schemas, profiles and data live: package data, so any install finds them.

The repository's top-level ``storage_schemas/`` and ``cluster_profiles/`` are links to these folders.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # a checkout's root (for the git commit in provenance), if any
SCHEMA_DIR = Path(os.environ.get("HPCPOP_SCHEMA_DIR", PACKAGE_DIR / "storage_schemas"))
PROFILE_DIR = Path(os.environ.get("HPCPOP_PROFILE_DIR", PACKAGE_DIR / "cluster_profiles"))
USER_PROFILE_DIR = Path(os.environ.get("HPCPOP_USER_PROFILE_DIR",
                                       Path.home() / ".config" / "hpcpop" / "profiles"))
DATA_DIR = PACKAGE_DIR / "data"
YRI_CEU_FS = DATA_DIR / "YRI_CEU.fs"  # the 20x20 YRI-CEU spectrum of Gutenkunst et al. 2009 (dadi format)


def input_file(name: str, base_dir: str | Path) -> Path:
    """A file named in a manifest: absolute (``~`` expanded), or relative to the manifest's folder."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def is_remote(location: str) -> bool:
    """A URL that fsspec reads (``s3://``, ``gs://``, ``https://``), as opposed to a local path or ``file://``."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> str:
    """A local location without its ``file://`` prefix (remote URLs unchanged)."""
    return location if is_remote(location) else location.removeprefix("file://")
