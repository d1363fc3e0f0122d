"""Training targets from a store's simulated parameters: binary, classes of S, or continuous S.

Class labels are the nearest of ``n`` class centres (``linspace`` over the S range, or the store's own
discrete classes). Encodings: ``categorical`` (one-hot), ``gaussian`` (a normal kernel around the
true position, sd in class units) and ``perturbed`` (the class shifted by up to ±k, redrawn every
epoch), the last two being the paper's ways of telling the net that neighbouring classes are close.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ManifestError, StoreError

MODES = ("binary", "classes", "continuous")
ENCODINGS = ("categorical", "gaussian", "perturbed")


@dataclass(frozen=True)
class LabelSpec:
    """How S becomes a target; saved with the model so that predictions map back to S unambiguously."""

    mode: str = "binary"
    classes: tuple[float, ...] = ()   # class centres in S units (classes mode; binary: (0, 1) labels)
    encoding: str = "categorical"
    sd: float = 0.5                   # gaussian: sd in class units
    k: int = 1                        # perturbed: largest shift in classes
    low: float = 0.0                  # S range (classes: ends of the bins; continuous: scaling)
    high: float = 1.0
    prior: tuple[float, ...] = ()     # class weights of the training set (for Bayes factors)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["prior"] = list(self.prior)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpec:
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


def resolve_labels(params: dict, store_classes: list[float] | None, s_min: float, s_max: float,
                   *, source: str = "labels") -> LabelSpec:
    """The LabelSpec for manifest ``labels`` given the store's classes (or None) and S range."""
    mode = params.get("mode", "binary")
    encoding = params.get("encoding", "categorical")
    if mode not in MODES:
        raise ManifestError(f"{source}.mode: {mode!r} is not one of {', '.join(MODES)}")
    if encoding not in ENCODINGS:
        raise ManifestError(f"{source}.encoding: {encoding!r} is not one of {', '.join(ENCODINGS)}")
    rng_ = params.get("range")
    low, high = (float(rng_[0]), float(rng_[1])) if rng_ else (float(s_min), float(s_max))
    if mode == "binary":
        if s_max <= 0:
            raise StoreError(f"{source}.mode: binary labels need selected images (S > 0); the store has none")
        if s_min > 0:
            raise StoreError(f"{source}.mode: binary labels need neutral images (S = 0); the store has none")
        if encoding != "categorical":
            raise ManifestError(f"{source}.encoding: binary labels take only 'categorical' (got {encoding!r})")
        return LabelSpec(mode="binary", encoding="categorical", low=0.0, high=1.0)
    if high <= low:
        raise ManifestError(f"{source}.range: needs low < high (got {low}, {high})")
    if mode == "continuous":
        return LabelSpec(mode="continuous", encoding="categorical", low=low, high=high)
    n = params.get("n_classes")
    if n is None and store_classes:
        centres = tuple(sorted(float(c) for c in store_classes))
    elif n is None:
        raise ManifestError(f"{source}.n_classes: the store's S is continuous; set the number of classes")
    else:
        if int(n) < 2:
            raise ManifestError(f"{source}.n_classes: needs at least 2 classes (got {n})")
        centres = tuple(float(c) for c in np.linspace(low, high, int(n)))
    return LabelSpec(mode="classes", classes=centres, encoding=encoding, sd=float(params.get("sd", 0.5)),
                     k=int(params.get("k", 1)), low=centres[0], high=centres[-1])


def with_prior(spec: LabelSpec, s_train: np.ndarray) -> LabelSpec:
    """``spec`` with the training set's class weights, the prior that the softmax posterior carries."""
    if spec.mode == "continuous":
        return spec
    counts = np.bincount(spec.class_of(s_train), minlength=len(spec.centres)).astype(np.float64)
    if counts.sum() == 0:
        raise StoreError("the training split holds no images")
    return dataclasses.replace(spec, prior=tuple((counts / counts.sum()).tolist()))
