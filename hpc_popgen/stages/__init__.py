"""Stage kinds, registered by name; each module turns manifest parameters into units and tasks."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ManifestError

# kind -> module under hpc_popgen.stages; imported lazily (science deps are heavy)
STAGE_MODULES = {
    "simulate": "simulate",
    "train": "train",
    "evaluate": "evaluate",
    "scan": "scan",
    "demography": "demography",
}


def get_stage(kind: str) -> ModuleType:
    """The module implementing a stage kind (``run(ctx)``, optional ``check(spec, manifest)``)."""
    if kind not in STAGE_MODULES:
        raise ManifestError(f"unknown stage kind {kind!r} (known: {', '.join(STAGE_MODULES)})")
    try:
        return importlib.import_module(f"{__name__}.{STAGE_MODULES[kind]}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{STAGE_MODULES[kind]}":
            raise ManifestError(f"stage kind {kind!r} is not available in this version of hpc_popgen") from None
        raise
