"""The paper's CNNs as named presets, and a resolved ModelConfig that builds a tf.keras model.

Presets follow ImaGene (Torada et al. 2019): 3x3 kernels, stride 1, no padding, ReLU, a 2x2 max-pool
after each convolution. The paper's own regularisation (L1/L2 0.005) with rmsprop does not learn at
the sizes users run (../shared/notes/FINDINGS.md), so the plain presets default to no regularisation
and Adam; ``paper: true`` (or a ``*_paper`` preset) restores the published settings exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ManifestError

PAPER_L1L2 = 0.005

# preset -> architecture; the head is decided by the label mode, checked against the preset
PRESETS: dict[str, dict[str, Any]] = {
    "binary": {"filters": [32, 32, 32], "dense": [64], "head": "binary",
               "description": "3 x Conv2D 32, Dense 64, sigmoid (neutral vs selection)"},
    "multiclass": {"filters": [32, 64, 64], "dense": [], "head": "classes",
                   "description": "Conv2D 32, 64, 64, softmax, no dense layer"},
    "continuous": {"filters": [32, 64, 128], "dense": [], "head": "classes",
                   "description": "Conv2D 32, 64, 128, softmax over 11 classes of S"},
}
for _name in list(PRESETS):
    PRESETS[f"{_name}_paper"] = {**PRESETS[_name], "paper": True,
                                 "description": PRESETS[_name]["description"] + "; paper settings "
                                 "(L1/L2 0.005, rmsprop)"}


@dataclass(frozen=True)
class ModelConfig:
    """A fully resolved network: what to build and how to optimise it; stored with the trained model."""

    preset: str = "binary"
    filters: tuple[int, ...] = (32, 32, 32)
    kernel_size: int = 3
    dense: tuple[int, ...] = (64,)
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 0.001
    paper: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        d["dense"] = list(self.dense)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["filters"] = tuple(d.get("filters", ()))
        d["dense"] = tuple(d.get("dense", ()))
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def resolve_model(params: dict, *, source: str = "model") -> ModelConfig:
    """Turn the manifest's ``model`` mapping into a ModelConfig: preset values, then explicit overrides."""
    preset = params.get("preset", "binary")
    if preset not in PRESETS:
        raise ManifestError(f"{source}.preset: unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    base = PRESETS[preset]
    paper = bool(params.get("paper") or base.get("paper", False))
    reg = PAPER_L1L2 if paper else 0.0
    cfg = {
        "preset": preset,
        "filters": tuple(params.get("filters") or base["filters"]),
        "kernel_size": int(params.get("kernel_size") or 3),
        "dense": tuple(params["dense"] if params.get("dense") is not None else base["dense"]),
        "l1": float(params["l1"]) if params.get("l1") is not None else reg,
        "l2": float(params["l2"]) if params.get("l2") is not None else reg,
        "dropout": float(params.get("dropout") or 0.0),
        "optimizer": params.get("optimizer") or ("rmsprop" if paper else "adam"),
        "learning_rate": float(params.get("learning_rate") or 0.001),
        "paper": paper,
    }
    if not cfg["filters"]:
        raise ManifestError(f"{source}.filters: a network needs at least one convolution layer")
    return ModelConfig(**cfg)


def min_input_size(cfg: ModelConfig) -> int:
    """The smallest image side that survives every valid convolution and 2x2 pool of ``cfg``."""
    size = 1
    for _ in cfg.filters:
        size = size * 2 + cfg.kernel_size - 1
    return size


def build_model(cfg: ModelConfig, input_shape: tuple[int, int], n_outputs: int, head: str) -> Any:
    """The tf.keras (Keras 2) model: conv/pool blocks, dense layers, then the head.

    ``head``: ``binary`` (one sigmoid unit), ``classes`` (softmax over ``n_outputs``) or
    ``regression`` (one linear unit).
    """
    from . import tfenv

    tf = tfenv.tf()
    keras = tf.keras
    h, w = input_shape
    need = min_input_size(cfg)
    if min(h, w) < need:
        raise ManifestError(f"model.filters: {len(cfg.filters)} convolution blocks need images of at least "
                            f"{need}x{need}; the store's images are {h}x{w}")

    def reg():
        if cfg.l1 or cfg.l2:
            return keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2)
        return None

    # uint8 0/1 images go in as they are stored (4x less data through the input pipeline and to a
    # GPU); the cast to float happens inside the model, on the device.
    inputs = keras.Input(shape=(h, w), dtype="uint8", name="image")
    x = keras.layers.Reshape((h, w, 1), name="channel")(inputs)
    x = keras.layers.Rescaling(1.0, name="to_float")(x)
    for i, nf in enumerate(cfg.filters):
        x = keras.layers.Conv2D(nf, cfg.kernel_size, strides=1, padding="valid", activation="relu",
                                kernel_regularizer=reg(), name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(pool_size=2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(cfg.dense):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=reg(), name=f"dense{i}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout{i}")(x)
    if cfg.dropout and not cfg.dense:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    if head == "binary":
        out = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    elif head == "classes":
        out = keras.layers.Dense(n_outputs, activation="softmax", name="output")(x)
    elif head == "regression":
        out = keras.layers.Dense(1, activation="linear", name="output")(x)
    else:
        raise ValueError(f"unknown head {head!r}")
    return keras.Model(inputs, out, name=f"hpcpop_{cfg.preset}")


def make_optimizer(cfg: ModelConfig, scale: float = 1.0) -> Any:
    """The optimizer named in ``cfg`` with its learning rate times ``scale`` (Horovod: the rank count)."""
    from . import tfenv

    keras = tfenv.tf().keras
    lr = cfg.learning_rate * scale
    table = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
             "sgd": keras.optimizers.SGD}
    if cfg.optimizer not in table:
        raise ManifestError(f"model.optimizer: unknown optimizer {cfg.optimizer!r} (known: {', '.join(table)})")
    return table[cfg.optimizer](learning_rate=lr)
