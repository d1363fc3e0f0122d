"""Posterior summaries for regions: images from genotypes with the model's own settings, then summaries."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..seeds import rng as seeded_rng
from ..train.saved import TrainedModel
from .posterior import summarize


def summarize_images(model: TrainedModel, images: np.ndarray, *, level: float, mc_samples: int,
                     seed: int) -> list[dict]:
    """One summary per image: class posterior, MAP, mean, HPDI (exact and Monte Carlo), Bayes factor."""
    if model.labels.mode == "continuous":
        est = model.labels.decode_regression(model.raw_predict(images))
        return [{"estimate": float(v)} for v in est]
    probs = model.posterior(images)
    prior = model.prior()
    mass = model.credible_mass(level)
    out = []
    for i, p in enumerate(probs):
        summ = summarize(p, model.centres, prior, level=level, mc_samples=mc_samples, rng=seeded_rng(seed, i),
                         mass=mass)
        if model.labels.mode == "binary":
            summ = {"classes": ["neutral", "selection"], "posterior": summ["posterior"],
                    "p_selection": float(p[1]), "bayes_factor": summ["bayes_factor"],
                    "log10_bayes_factor": summ["log10_bayes_factor"]}
        out.append(summ)
    return out


def images_from_haplotypes(model: TrainedModel, regions: list[Any]) -> np.ndarray:
    """(n, H, W) images of Haplotypes regions, made exactly as the training images were."""
    return np.stack([model.image_from_haplotypes(h) for h in regions])
