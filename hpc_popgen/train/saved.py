"""A trained model bundle: the Keras model plus what maps data to its inputs and outputs back to S.

``MODEL_DIR/model.keras`` is a plain tf.keras (Keras 2) model; ``MODEL_DIR/hpcpop_model.json`` holds
the label mapping (classes, encoding, training prior), the image processing settings and image shape
of the training store, the network config and the posterior's calibration (a softmax temperature fitted
on the validation split; bundles without one use T = 1). Prediction goes through :class:`TrainedModel`, which
refuses images of another shape and builds images from genotypes with the stored settings, so new
data cannot silently be preprocessed differently from the training data.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import InputDataError
from .labels import LabelSpec
from .models import ModelConfig

log = logging.getLogger(__name__)
BUNDLE_FORMAT = "hpc_popgen.trained_model"
META_FILE = "hpcpop_model.json"
MODEL_FILE = "model.keras"


@dataclass
class TrainedModel:
    """A loaded model bundle; :meth:`posterior` turns (n, H, W) 0/1 images into class probabilities."""

    keras_model: Any
    labels: LabelSpec
    image: dict
    image_shape: tuple[int, int]
    model_config: ModelConfig
    path: str = ""
    info: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def centres(self) -> np.ndarray:
        """The S value (or binary label) of each posterior class."""
        return self.labels.centres

    @property
    def temperature(self) -> float:
        """The softmax temperature the class posterior divides logits by (1: uncalibrated)."""
        return float(self.calibration.get("temperature", 1.0))

    def credible_mass(self, level: float) -> float:
        """The posterior mass of the HPD region reported at credible ``level`` (``level`` itself unless the
        bundle was calibrated with ``levels``: then the mass whose regions covered at ``level`` on validation)."""
        from .calibration import mass_for

        return mass_for(self.calibration.get("level_map"), level)

    def image_config(self) -> Any:
        """The training store's ImageConfig (how genotypes must be turned into images)."""
        from ..images import ImageConfig

        return ImageConfig.from_dict(self.image)

    def check_images(self, images: np.ndarray, source: str = "images") -> np.ndarray:
        """``images`` as (n, H, W) uint8, or InputDataError when their shape is not the training shape or a
        pixel is not exactly 0 or 1 (see :func:`check_pixels`)."""
        x = check_pixels(images, source)
        if x.ndim != 3 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise InputDataError(f"{source}: images of shape {list(x.shape[1:]) if x.ndim >= 2 else list(x.shape)} "
                                 f"do not match the model's {list(self.image_shape)} (model {self.path})")
        return x.astype(np.uint8, copy=False)

    def _logit_parts(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """(model up to the output layer's input, output weights, output bias) for exact log-odds."""
        if "logits" not in self._cache:
            from .tfenv import tf as get_tf

            km = self.keras_model
            out_layer = km.get_layer("output")
            features = get_tf().keras.Model(km.inputs, out_layer.input)
            w, b = (np.asarray(v, dtype=np.float64) for v in out_layer.get_weights())
            self._cache["logits"] = (features, w, b)
        return self._cache["logits"]

    def raw_predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The network's pre-activation outputs (logits; regression: the scaled estimate) in float64.

        Working with logits keeps tiny class probabilities and large Bayes factors exact instead of
        rounding them to 0 or 1 in the float32 softmax / sigmoid.
        A model trained with ``flip_sites`` treats an image and its site-reversed copy as the same
        data, so its output is the mean of the two orientations' outputs (less noise, same symmetry).
        """
        x = self.check_images(images)
        if len(x) == 0:
            return np.zeros((0, self.labels.n_outputs), dtype=np.float64)
        features, w, b = self._logit_parts()
        views = (x, x[:, :, ::-1]) if self.info.get("flip_sites") else (x,)
        out = []
        for i in range(0, len(x), batch_size):
            z = [np.asarray(features(np.ascontiguousarray(v[i:i + batch_size]), training=False), dtype=np.float64)
                 for v in views]
            out.append(np.mean(z, axis=0) @ w + b)
        return np.concatenate(out)

    def posterior(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(n, n_classes) class probabilities (binary: [P(neutral), P(selection)])."""
        return self.posterior_from_outputs(self.raw_predict(images, batch_size))

    def posterior_from_outputs(self, z: np.ndarray) -> np.ndarray:
        """Class probabilities from logits (see :meth:`raw_predict`), computed in float64, with the
        bundle's calibration applied (logits divided by :attr:`temperature`)."""
        from scipy.special import expit, softmax

        z = np.asarray(z, dtype=np.float64) / self.temperature
        if self.labels.mode == "binary":
            zz = z.reshape(-1)
            return np.stack([expit(-zz), expit(zz)], axis=1)
        if self.labels.mode == "continuous":
            raise InputDataError(f"{self.path}: a regression model gives point estimates, not a class posterior")
        return softmax(z, axis=1)

    def prior(self) -> np.ndarray:
        """The training set's class weights (uniform if unknown)."""
        n = len(self.centres)
        pr = np.asarray(self.labels.prior, dtype=np.float64)
        return pr if len(pr) == n else np.full(n, 1.0 / n)

    @property
    def n_haplotypes(self) -> int | None:
        """Haplotypes per training image (the simulate stage's ``n_haplotypes``); None for bundles that
        do not record it."""
        n = self.info.get("n_haplotypes")
        return int(n) if n is not None else None

    def image_from_haplotypes(self, haps: Any) -> np.ndarray:
        """The (H, W) image of a Haplotypes region, made with the training store's settings; a region with
        another number of haplotypes than the training images had is refused (it would be resized or
        cropped into an image of a sample the network never saw)."""
        from ..images import make_image

        if self.n_haplotypes is not None and haps.n_haps != self.n_haplotypes:
            raise InputDataError(f"{haps.source or 'region'}: {haps.n_haps} haplotypes; the model was trained on "
                                 f"{self.n_haplotypes} (n_haplotypes of its training store; model {self.path})")
        return make_image(haps.matrix, haps.positions, self.image_config(), centre=haps.centre())


def check_pixels(images: Any, source: str = "images") -> np.ndarray:
    """``images`` as an array with (H, W) and (n, H, W, 1) made (n, H, W), or InputDataError naming the first
    pixel that is not exactly 0 or 1 (NaN, 0.5, 255) or a dtype that is not numbers: the network never saw
    such pixels, and a cast to uint8 would hide them. Needs no model, so input is checked before one loads."""
    x = np.asarray(images)
    if x.dtype.kind not in "biuf":
        what = f"text ({x.dtype})" if x.dtype.kind in "US" else str(x.dtype)
        raise InputDataError(f"{source}: image values must be 0/1 numbers, not {what}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.dtype.kind != "b" and x.size:
        bad = (x != 0) & (x != 1)  # NaN compares unequal to both, so it is caught too
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            at = (f"image {where[0]} row {where[1]} column {where[2]}" if len(where) == 3
                  else f"index {list(where)}")
            raise InputDataError(f"{source}: image values must be 0/1; {at} is {x[where].item()!r} "
                                 f"({int(bad.sum())} such pixel(s))")
    return x


def save_bundle(model_dir: str | Path, keras_model: Any, labels: LabelSpec, image: dict,
                image_shape: tuple[int, int], model_config: ModelConfig, info: dict,
                calibration: dict | None = None) -> Path:
    """Write the bundle: the Keras model first, the JSON (which makes the bundle valid) last."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".tmp-{os.getpid()}-{MODEL_FILE}"
    keras_model.save(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, d / MODEL_FILE)
    atomic.fsync_dir(d)
    meta = {"format": BUNDLE_FORMAT, "version": 1, "labels": labels.to_dict(), "image": image,
            "image_shape": list(image_shape), "model": model_config.to_dict(), "info": info}
    if calibration:
        meta["calibration"] = calibration
    atomic.write_json(d / META_FILE, meta)
    return d


def write_calibration(model_dir: str | Path, calibration: dict) -> None:
    """Replace the calibration record of a saved bundle (atomically rewrites its JSON)."""
    path = Path(model_dir) / META_FILE
    meta = json.loads(path.read_text())
    meta["calibration"] = calibration
    atomic.write_json(path, meta)


def save_untrained_bundle(model_dir: str | Path, image: dict, model_config: ModelConfig, seed: int = 3,
                          n_haplotypes: int | None = None) -> Path:
    """A real binary model bundle with random (seeded) weights, for the images ``image`` describes.

    Scans and predictions run through it exactly as through a trained one (same loading, image checks,
    Bayes factors), so tests and speed/memory benchmarks need no training; its posteriors mean nothing.
    ``image``: an ImageConfig's dict (its ``size`` is the input shape); labels: binary, prior 0.5/0.5;
    ``n_haplotypes``: recorded as a trained bundle records its store's, so predict checks regions against it.
    """
    from .models import build_model
    from .tfenv import set_random_seed

    set_random_seed(seed)
    shape = (int(image["size"][0]), int(image["size"][1]))
    return save_bundle(model_dir, build_model(model_config, shape, 1, "binary"),
                       LabelSpec(mode="binary", prior=(0.5, 0.5)), image, shape, model_config,
                       {"untrained": True, "seed": seed,
                        **({"n_haplotypes": n_haplotypes} if n_haplotypes is not None else {})})


def load_bundle(model_dir: str | Path) -> TrainedModel:
    """Load a model bundle written by the train stage (a directory or its hpcpop_model.json)."""
    from .tfenv import tf as get_tf

    d = Path(model_dir)
    if d.name == META_FILE or d.suffix == ".keras":
        d = d.parent
    meta_path = d / META_FILE
    if not meta_path.exists():
        raise InputDataError(f"{d}: not a trained model (no {META_FILE}; point to RUN_DIR/<train stage>/model)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputDataError(f"{meta_path}: not valid JSON: {exc}") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise InputDataError(f"{meta_path}: format {meta.get('format')!r} is not {BUNDLE_FORMAT!r}")
    tf = get_tf()
    km = tf.keras.models.load_model(d / MODEL_FILE, compile=False)
    return TrainedModel(keras_model=km, labels=LabelSpec.from_dict(meta["labels"]), image=meta["image"],
                        image_shape=tuple(meta["image_shape"]), model_config=ModelConfig.from_dict(meta["model"]),
                        path=str(d), info=meta.get("info", {}), calibration=_calibration(meta_path, meta))


def _calibration(meta_path: Path, meta: dict) -> dict:
    """The bundle's calibration record ({} for bundles saved before there was one: T = 1)."""
    cal = meta.get("calibration") or {}
    t = cal.get("temperature", 1.0) if isinstance(cal, dict) else cal
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not np.isfinite(t) or t <= 0:
        raise InputDataError(f"{meta_path}: calibration.temperature must be a positive number (got {t!r})")
    lm = cal.get("level_map") if isinstance(cal, dict) else None
    if lm is not None:
        try:
            nominal, mass = np.asarray(lm["nominal"], dtype=np.float64), np.asarray(lm["mass"], dtype=np.float64)
            ok = (nominal.ndim == 1 and nominal.shape == mass.shape and len(nominal) >= 2
                  and np.all(np.diff(nominal) > 0) and np.all(np.diff(mass) >= 0)
                  and nominal[0] == mass[0] == 0.0 and nominal[-1] == mass[-1] == 1.0)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise InputDataError(f"{meta_path}: calibration.level_map must hold rising lists nominal and mass of one "
                                 "length, from 0 to 1")
    return cal
