"""The train stage's parameters as a typed, frozen config, and the job a training process is given.

Defaults live in the stage's JSON Schema (storage_schemas/stages/train.schema.json); errors are
``ParamError`` naming keys relative to the stage's parameters (``model.preset``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..config import from_params, to_params
from ..errors import ParamError
from .labels import LabelParams, LabelSpec
from .models import ModelConfig, ModelParams


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingConfig:
    """Stop after ``patience`` epochs (0: never) without a validation-loss decrease of ``min_delta``."""

    patience: int
    min_delta: float
    restore_best: bool


@dataclass(frozen=True, kw_only=True)
class ReduceLRConfig:
    """Multiply the learning rate by ``factor`` after ``patience`` flat epochs, never below ``min_lr``."""

    factor: float
    patience: int
    min_lr: float


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """Train on shards as the simulate stage writes them, polling every ``poll_s`` up to ``timeout_s``."""

    enabled: bool
    poll_s: float
    timeout_s: float


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a train stage is given; see storage_schemas/stages/train.schema.json."""

    store: str
    seed: int | None
    model: ModelParams
    labels: LabelParams
    epochs: int
    batch_size: int
    shuffle_buffer: int
    flip_sites: bool
    early_stopping: EarlyStoppingConfig
    reduce_lr: ReduceLRConfig | None
    calibrate: str
    stream: StreamConfig
    ranks: int | None
    tensorboard: bool

    def __post_init__(self) -> None:
        preset, mode = self.model.preset, self.labels.mode
        if self.model.head == "binary" and mode != "binary":
            raise ParamError("model.preset", f"{preset!r} has a sigmoid output for binary labels; labels.mode is "
                             f"{mode!r} (use preset multiclass or continuous)")
        if self.model.head != "binary" and mode == "binary":
            raise ParamError("labels.mode", f"'binary' needs model.preset binary (got {preset!r})")


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    """Everything a training process needs, as JSON for Horovod ranks started by a launcher.

    ``config`` is the stage's config; ``model`` and ``labels`` are resolved against the store, ``store``
    is its resolved URL and ``seed`` the stage's seed.
    """

    store: str
    out_dir: str
    model: ModelConfig
    labels: LabelSpec
    config: TrainConfig
    seed: int
    ledger_dir: str | None
    threads: int
    use_horovod: bool

    def to_json(self) -> str:
        return json.dumps(to_params(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainJob:
        return from_params(cls, json.loads(text))
