"""What replicate i is: its seed, its S (class or prior draw), and its train/validation/test split.

Everything derives from (stage seed, i) alone, so a store is the same whether one worker or a
thousand make it, and any image can be re-simulated from the store's records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..images import ImageConfig
from ..seeds import MAX_SEED, derive_seed, rng
from .replicate import SimConfig

SPLIT_KEY = 3  # rng(replicate seed, SPLIT_KEY) decides the split
PRIOR_KEY = 4  # rng(replicate seed, PRIOR_KEY) draws S under a continuous prior


@dataclass(frozen=True)
class Plan:
    """A whole simulate stage: N replicates, where S comes from, images and split settings."""

    sim: SimConfig
    image: ImageConfig
    seed: int
    classes: tuple[float, ...] | None = None
    n_per_class: int = 0
    prior: dict = field(default_factory=dict)  # {"min": a, "max": b, "n": N, "n_bins": k}
    split: dict = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})

    @property
    def n_images(self) -> int:
        if self.classes is not None:
            return len(self.classes) * self.n_per_class
        return int(self.prior["n"])

    def replicate_seed(self, i: int) -> int:
        return derive_seed(self.seed, i)

    def s_of(self, i: int, seed: int | None = None) -> tuple[float, int]:
        """(S, class index) of replicate i: classes interleave (i mod C) so every shard mixes classes."""
        if self.classes is not None:
            k = i % len(self.classes)
            return float(self.classes[k]), k
        seed = self.replicate_seed(i) if seed is None else seed
        return float(rng(seed, PRIOR_KEY).uniform(self.prior["min"], self.prior["max"])), -1

    def split_of(self, seed: int) -> int:
        """0 train, 1 validation, 2 test, from the replicate's own seed."""
        u = derive_seed(seed, SPLIT_KEY) / MAX_SEED  # uniform in (0, 1], cheaper than a Generator
        if u < self.split["train"]:
            return 0
        if u < self.split["train"] + self.split["validation"]:
            return 1
        return 2

    def prior_dict(self) -> dict:
        if self.classes is not None:
            return {"kind": "classes", "n_per_class": self.n_per_class}
        return {"kind": "uniform", **self.prior}

    def to_dict(self) -> dict:
        return {"sim": self.sim.to_dict(), "image": self.image.to_dict(), "seed": self.seed,
                "classes": list(self.classes) if self.classes is not None else None,
                "n_per_class": self.n_per_class, "prior": dict(self.prior), "split": dict(self.split)}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(sim=SimConfig.from_dict(d["sim"]), image=ImageConfig.from_dict(d["image"]), seed=int(d["seed"]),
                   classes=tuple(d["classes"]) if d.get("classes") is not None else None,
                   n_per_class=int(d.get("n_per_class", 0)), prior=dict(d.get("prior") or {}),
                   split=dict(d["split"]))
