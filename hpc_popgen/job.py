"""A resolved job: the manifest, the typed profile and, per stage, its typed config, resources and seed.

Built once by :func:`hpc_popgen.pipeline.prepare` (for ``validate``, ``submit``) or from a run
directory's records (``rerun``, a detached driver); frozen, so every stage and check reads the same
values. The classes live here, below ``stages``, so that stages can name them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from .cluster.profiles import Profile
from .config import from_params
from .manifest import Manifest, StageSpec
from .seeds import derive_seed


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one worker of a stage needs (manifest.schema.json's ``resources``); None: the profile decides."""

    cores: int | None
    memory: str | None
    walltime: str | None
    gpus: int | None
    nodes: int | None
    max_workers: int | None

    @classmethod
    def from_dict(cls, resources: dict) -> Resources:
        """From a stage's ``resources`` mapping (keys it leaves out are None)."""
        return from_params(cls, resources)


@dataclass(frozen=True)
class JobStage:
    """One stage of a resolved job."""

    spec: StageSpec
    config: Any  # the stage kind's frozen config class (SimulateConfig, TrainConfig, ...)
    resources: Resources
    seed: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def index(self) -> int:
        return self.spec.index


@dataclass(frozen=True)
class Job:
    """A manifest with its profile and stages resolved; what ``execute`` runs."""

    manifest: Manifest
    profile: Profile
    stages: tuple[JobStage, ...]


def stage_seed(manifest: Manifest, spec: StageSpec, config: Any) -> int:
    """A stage's seed: its config's ``seed`` if set, else derived from the manifest seed and stage name.

    Keyed by name, not position, so two simulate stages never share replicate seeds and reordering
    stages does not change outputs.
    """
    explicit = getattr(config, "seed", None)
    if explicit is not None:
        return int(explicit)
    return derive_seed(manifest.seed, zlib.crc32(spec.name.encode()))
