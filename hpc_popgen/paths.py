"""Where the packaged schemas and profiles live (the repository checkout, installed editable)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = Path(os.environ.get("HPCPOP_SCHEMA_DIR", REPO_ROOT / "storage_schemas"))
PROFILE_DIR = Path(os.environ.get("HPCPOP_PROFILE_DIR", REPO_ROOT / "cluster_profiles"))
USER_PROFILE_DIR = Path(os.environ.get("HPCPOP_USER_PROFILE_DIR",
                                       Path.home() / ".config" / "hpcpop" / "profiles"))
