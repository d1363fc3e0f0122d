"""Training targets from a store's simulated parameters: binary, classes of S, or continuous S.

Class labels are the nearest of ``n`` class centres (``linspace`` over the S range, or the store's own
discrete classes). Encodings: ``categorical`` (one-hot), ``gaussian`` (a normal kernel around the
true position, sd in class units) and ``perturbed`` (the class shifted by up to ±k, redrawn every
epoch), the last two being the paper's ways of telling the net that neighbouring classes are close.
Errors are ``ParamError`` naming keys of the manifest's ``labels`` mapping (``mode``, ``n_classes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import to_params
from ..errors import LabelStoreError, ParamError, StoreError

if TYPE_CHECKING:
    from ..store import ImageStore

MODES = ("binary", "classes", "continuous")
ENCODINGS = ("categorical", "gaussian", "perturbed")


@dataclass(frozen=True, kw_only=True)
class LabelParams:
    """The manifest's ``labels``: how S becomes the target; :func:`resolve_labels` fits it to a store."""

    mode: str
    n_classes: int | None
    range: tuple[float, float] | None
    encoding: str
    sd: float
    k: int

    def __post_init__(self) -> None:
        for key, allowed in (("mode", MODES), ("encoding", ENCODINGS)):
            if getattr(self, key) not in allowed:
                raise ParamError(key, f"{getattr(self, key)!r} is not one of {', '.join(allowed)}")
        if self.mode == "binary" and self.encoding != "categorical":
            raise ParamError("encoding", f"binary labels take only 'categorical' (got {self.encoding!r})")
        if self.range is not None and self.range[0] >= self.range[1]:
            raise ParamError("range", f"low must be below high (got {list(self.range)})")
        if self.n_classes is not None and self.n_classes < 2:
            raise ParamError("n_classes", f"needs at least 2 classes (got {self.n_classes})")


@dataclass(frozen=True, kw_only=True)
class LabelSpec:
    """How S becomes a target; saved with the model so that predictions map back to S unambiguously.

    Only ``mode`` is needed for binary labels; the other fields are those of classes of S (and the
    S range of continuous labels).
    """

    mode: str
    classes: tuple[float, ...] = ()   # class centres in S units (classes mode)
    encoding: str | None = None       # classes mode: categorical, gaussian or perturbed
    sd: float | None = None           # gaussian: sd in class units
    k: int | None = None              # perturbed: largest shift in classes
    low: float = 0.0                  # S range (classes: ends of the bins; continuous: scaling)
    high: float = 1.0
    prior: tuple[float, ...] = ()     # class weights of the training set (for Bayes factors)

    def to_dict(self) -> dict:
        return to_params(self)

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpec:
        """Inverse of :meth:`to_dict` (a saved bundle's ``labels``)."""
        d = dict(d)
        d["classes"] = tuple(float(c) for c in d.get("classes", ()))
        d["prior"] = tuple(float(c) for c in d.get("prior", ()))
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})

    @property
    def n_outputs(self) -> int:
        """Units of the network's last layer."""
        return len(self.classes) if self.mode == "classes" else 1

    @property
    def head(self) -> str:
        """The model head this label mode needs."""
        return {"binary": "binary", "classes": "classes", "continuous": "regression"}[self.mode]

    @property
    def centres(self) -> np.ndarray:
        """S value of each output class (binary: 0 = neutral, 1 = selection as labels)."""
        if self.mode == "binary":
            return np.array([0.0, 1.0])
        return np.asarray(self.classes, dtype=np.float64)

    def class_of(self, s: np.ndarray) -> np.ndarray:
        """The class index of each S (binary: 1 when S > 0; classes: the nearest centre)."""
        s = np.asarray(s, dtype=np.float64)
        if self.mode == "binary":
            return (s > 0).astype(np.int64)
        if self.mode == "continuous":
            raise ValueError("continuous labels have no classes")
        c = self.centres
        return np.abs(s[:, None] - c[None, :]).argmin(axis=1)

    def position(self, s: np.ndarray) -> np.ndarray:
        """Fractional class index of S (for Gaussian labels of a continuous prior)."""
        c = self.centres
        if len(c) < 2:
            return np.zeros(len(s))
        return np.clip(np.interp(s, c, np.arange(len(c))), 0, len(c) - 1)

    def encode(self, s: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The float32 targets of S values; ``rng`` draws the shifts of ``perturbed`` labels."""
        s = np.asarray(s, dtype=np.float64)
        if self.mode == "binary":
            return (s > 0).astype(np.float32)[:, None]
        if self.mode == "continuous":
            return ((s - self.low) / (self.high - self.low)).astype(np.float32)[:, None]
        n = len(self.classes)
        idx = self.class_of(s)
        if self.encoding == "gaussian":
            pos = self.position(s)
            grid = np.arange(n)[None, :]
            w = np.exp(-0.5 * ((grid - pos[:, None]) / self.sd) ** 2)
            return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
        if self.encoding == "perturbed":
            if rng is None:
                raise ValueError("perturbed labels need an rng")
            idx = np.clip(idx + rng.integers(-self.k, self.k + 1, size=len(idx)), 0, n - 1)
        out = np.zeros((len(s), n), dtype=np.float32)
        out[np.arange(len(s)), idx] = 1.0
        return out

    def decode_regression(self, y: np.ndarray) -> np.ndarray:
        """S from a regression head's output."""
        return np.asarray(y, dtype=np.float64).reshape(-1) * (self.high - self.low) + self.low


def resolve_labels(params: LabelParams, store_classes: list[float] | None, s_min: float, s_max: float,
                   ) -> LabelSpec:
    """The LabelSpec of ``params`` given the store's classes (or None) and S range."""
    if params.range is not None:
        low, high = float(params.range[0]), float(params.range[1])
    else:
        low, high = float(s_min), float(s_max)
    if params.mode == "binary":
        if s_max <= 0:
            raise LabelStoreError("mode", "binary labels need selected images (S > 0); the store has none")
        if s_min > 0:
            raise LabelStoreError("mode", "binary labels need neutral images (S = 0); the store has none")
        return LabelSpec(mode="binary")
    if high <= low:
        raise ParamError("range", f"needs low < high (got {low}, {high})")
    if params.mode == "continuous":
        return LabelSpec(mode="continuous", low=low, high=high)
    if params.n_classes is None and store_classes:
        centres = tuple(sorted(float(c) for c in store_classes))
    elif params.n_classes is None:
        raise ParamError("n_classes", "the store's S is continuous; set the number of classes")
    else:
        centres = tuple(float(c) for c in np.linspace(low, high, params.n_classes))
    return LabelSpec(mode="classes", classes=centres, encoding=params.encoding, sd=params.sd, k=params.k,
                     low=centres[0], high=centres[-1])


def with_prior(spec: LabelSpec, s_train: np.ndarray) -> LabelSpec:
    """``spec`` with the training set's class weights, the prior that the softmax posterior carries."""
    if spec.mode == "continuous":
        return spec
    counts = np.bincount(spec.class_of(s_train), minlength=len(spec.centres)).astype(np.float64)
    if counts.sum() == 0:
        raise StoreError("the training split holds no images")
    return dataclasses.replace(spec, prior=tuple((counts / counts.sum()).tolist()))


def s_range(store: ImageStore) -> tuple[float, float]:
    """The S range of a store: its classes, its uniform prior, or (last resort) its written S values."""
    if store.classes:
        return float(min(store.classes)), float(max(store.classes))
    prior = store.meta.get("prior") or {}
    if prior.get("kind") == "uniform":
        return float(prior["min"]), float(prior["max"])
    s = store.read("s")
    return float(s.min()), float(s.max())


def prior_weights(spec: LabelSpec, store: ImageStore, stream: bool) -> np.ndarray:
    """Training class weights: counted from the train split, or from the store's prior when streaming.

    A stream-mode store is still being written, so its S values are unknown; a uniform prior gives each
    class the share of [min, max] nearest to its centre, a classes prior the share of its classes.
    """
    if not stream:
        s = store.read("s")
        split = store.read("split")
        return np.asarray(with_prior(spec, s[split == 0]).prior)
    centres = spec.centres
    prior = store.meta.get("prior") or {}
    if prior.get("kind") == "uniform":
        lo, hi = float(prior["min"]), float(prior["max"])
        edges = np.concatenate([[-np.inf], (centres[1:] + centres[:-1]) / 2, [np.inf]])
        w = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
        return w / w.sum()
    counts = np.bincount(spec.class_of(np.asarray(store.classes, dtype=float)), minlength=len(centres))
    return counts / counts.sum()


def shared_s(names: list[str], values: list[float]) -> str | None:
    """Why classes of S cannot label these classes (two of them share S, e.g. a hard and a soft sweep), or None."""
    seen: dict[float, str] = {}
    for name, S in zip(names, values, strict=True):
        if float(S) in seen:
            return (f"classes {seen[float(S)]!r} and {name!r} share S = {S:g}, so classes of S cannot tell them "
                    "apart; train binary or continuous labels")
        seen[float(S)] = name
    return None


def _refuse_shared_s(store: ImageStore) -> None:
    """Classes of S need one S per class: a store whose classes (with their own sweeps) share S is refused."""
    why = shared_s(store.meta.get("class_names") or [f"S={c:g}" for c in store.classes], store.classes)
    if why:
        raise LabelStoreError("mode", f"{store.url}: {why}")


def labels_for_store(params: LabelParams, store: ImageStore, *, stream: bool) -> LabelSpec:
    """The labels of ``params`` on ``store``, with the class weights of its training images as their prior.

    Unset ``n_classes`` under a continuous prior takes the prior's ``n_bins``.
    """
    n_bins = (store.meta.get("prior") or {}).get("n_bins")
    if params.mode == "classes" and params.n_classes is None and not store.classes and n_bins:
        params = dataclasses.replace(params, n_classes=int(n_bins))
    if params.mode == "classes" and params.n_classes is None and store.classes:
        _refuse_shared_s(store)
    labels = resolve_labels(params, store.classes, *s_range(store))
    if labels.mode == "continuous":
        return labels
    return dataclasses.replace(labels, prior=tuple(float(x) for x in prior_weights(labels, store, stream)))
