"""The paper's CNNs as catalogue presets, and a resolved ModelConfig that builds a tf.keras model.

Presets follow ImaGene (Torada et al. 2019): 3x3 kernels, stride 1, no padding, ReLU, a 2x2 max-pool
after each convolution. The paper's own regularisation (L1/L2 0.005) with rmsprop does not learn at
the sizes users run (marth3, S=200 vs neutral, 3,240 training images: validation accuracy stuck at 0.497
after 8 epochs, against 0.995 without regularisation and with Adam), so the plain presets default to no regularisation
and Adam; ``paper: true`` (or a ``*_paper`` preset) restores the published settings exactly.
Errors are ``ParamError`` naming keys of the manifest's ``model`` mapping (``preset``, ``filters``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..catalogue import TORADA_2019, Catalogue, Entry
from ..config import to_params
from ..errors import ParamError

PAPER_L1L2 = 0.005
PAPER_SETTINGS = "paper settings (L1/L2 0.005, rmsprop)"
OPTIMIZERS = ("adam", "rmsprop", "sgd")


@dataclass(frozen=True, kw_only=True)
class Network:
    """A preset's architecture: Conv2D filters (each with a 2x2 max-pool), dense units, its head, paper settings.

    ``head`` is the label head the preset is made for (``binary``: sigmoid; ``classes``: softmax).
    """

    filters: tuple[int, ...]
    dense: tuple[int, ...]
    head: str
    paper: bool


PRESETS: Catalogue[Network] = Catalogue("preset", "preset")


def _add_presets(*rows: tuple[str, str, tuple[int, ...], tuple[int, ...], str]) -> None:
    """Register each (id, description, filters, dense, head) as it is and with the paper's settings (``_paper``)."""
    for id_, description, filters, dense, head in rows:
        for paper in (False, True):
            PRESETS.add(Entry(id=f"{id_}_paper" if paper else id_,
                              description=f"{description}; {PAPER_SETTINGS}" if paper else description,
                              citations=(TORADA_2019,),
                              value=Network(filters=filters, dense=dense, head=head, paper=paper)))


_add_presets(("binary", "3 x Conv2D 32, Dense 64, sigmoid (neutral vs selection)", (32, 32, 32), (64,), "binary"),
             ("multiclass", "Conv2D 32, 64, 64, softmax, no dense layer", (32, 64, 64), (), "classes"),
             ("continuous", "Conv2D 32, 64, 128, softmax over 11 classes of S", (32, 64, 128), (), "classes"))


@dataclass(frozen=True, kw_only=True)
class ModelParams:
    """The manifest's ``model``: a preset and the parts that replace its own (None: the preset's choice)."""

    preset: str
    paper: bool
    filters: tuple[int, ...] | None
    kernel_size: int
    dense: tuple[int, ...] | None
    l1: float | None
    l2: float | None
    dropout: float
    optimizer: str | None
    learning_rate: float

    def __post_init__(self) -> None:
        PRESETS.get(self.preset)  # an unknown preset names the known ones
        if self.filters is not None and not self.filters:
            raise ParamError("filters", "a network needs at least one convolution layer")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ParamError("optimizer", f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})")

    @property
    def head(self) -> str:
        """The label head of the preset (``binary`` or ``classes``)."""
        return PRESETS.get(self.preset).value.head


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A fully resolved network: what to build and how to optimise it; stored with the trained model."""

    preset: str
    filters: tuple[int, ...]
    kernel_size: int
    dense: tuple[int, ...]
    l1: float
    l2: float
    dropout: float
    optimizer: str
    learning_rate: float
    paper: bool

    def to_dict(self) -> dict:
        return to_params(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; keys of older bundles that are no longer used are ignored."""
        known = cls.__dataclass_fields__
        return cls(**{k: tuple(v) if k in ("filters", "dense") else v for k, v in d.items() if k in known})


def resolve_model(params: ModelParams) -> ModelConfig:
    """The network of the manifest's ``model``: the preset's architecture, then the explicit overrides.

    Paper settings (the preset's or ``paper: true``) turn the unset regularisation to L1/L2 0.005 and
    the unset optimizer to rmsprop; otherwise they are 0 and Adam.
    """
    net = PRESETS.get(params.preset).value
    paper = params.paper or net.paper
    reg = PAPER_L1L2 if paper else 0.0
    return ModelConfig(
        preset=params.preset, filters=params.filters or net.filters, kernel_size=params.kernel_size,
        dense=net.dense if params.dense is None else params.dense,
        l1=reg if params.l1 is None else params.l1, l2=reg if params.l2 is None else params.l2,
        dropout=params.dropout, optimizer=params.optimizer or ("rmsprop" if paper else "adam"),
        learning_rate=params.learning_rate, paper=paper)


def min_input_size(cfg: ModelConfig) -> int:
    """The smallest image side that survives every valid convolution and 2x2 pool of ``cfg``."""
    size = 1
    for _ in cfg.filters:
        size = size * 2 + cfg.kernel_size - 1
    return size


def check_input_size(cfg: ModelConfig, input_shape: tuple[int, int]) -> None:
    """Refuse images too small for the network's convolution blocks (naming ``filters``)."""
    h, w = input_shape
    need = min_input_size(cfg)
    if min(h, w) < need:
        raise ParamError("filters", f"{len(cfg.filters)} convolution blocks need images of at least "
                         f"{need}x{need}; the store's images are {h}x{w}")


def build_model(cfg: ModelConfig, input_shape: tuple[int, int], n_outputs: int, head: str) -> Any:
    """The tf.keras (Keras 2) model: conv/pool blocks, dense layers, then the head.

    ``head``: ``binary`` (one sigmoid unit), ``classes`` (softmax over ``n_outputs``) or
    ``regression`` (one linear unit).
    """
    from . import tfenv

    tf = tfenv.tf()
    keras = tf.keras
    h, w = input_shape
    check_input_size(cfg, input_shape)

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
    table = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}
    if cfg.optimizer not in table:
        raise ParamError("optimizer", f"unknown optimizer {cfg.optimizer!r} (known: {', '.join(table)})")
    return table[cfg.optimizer](learning_rate=cfg.learning_rate * scale)
