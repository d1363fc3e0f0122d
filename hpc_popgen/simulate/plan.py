"""What replicate i is: its seed, its S (class or prior draw), and its train/validation/test split.

Everything derives from (stage seed, i) alone, so a store is the same whether one worker or a
thousand make it, and any image can be re-simulated from the store's records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..images import ImageConfig
from ..seeds import MAX_SEED, derive_seed, rng
from .config import SimulateConfig
from .demographies import load_demography
from .replicate import SimConfig
from .units import onset_generations

SPLIT_KEY = 3  # rng(replicate seed, SPLIT_KEY) decides the split
PRIOR_KEY = 4  # rng(replicate seed, PRIOR_KEY) draws S under a continuous prior


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A whole simulate stage: N replicates, where S comes from, images and split settings.

    Either ``classes`` with ``n_per_class``, or ``prior`` ({"min", "max", "n", "n_bins"}).
    ``split`` holds the train, validation and test fractions.
    """

    sim: SimConfig
    image: ImageConfig
    seed: int
    split: dict
    classes: tuple[float, ...] | None = None
    n_per_class: int = 0
    prior: dict | None = None

    @classmethod
    def from_config(cls, cfg: SimulateConfig, seed: int, base_dir: str | Path = ".") -> Plan:
        """The plan of a simulate stage's config (demes files relative to ``base_dir``)."""
        demography = load_demography(cfg.demography, cfg.reference_ne, base_dir)
        sw = cfg.sweep
        sim = SimConfig(demography=demography, n_haplotypes=cfg.n_haplotypes, sequence_length=cfg.sequence_length,
                        mutation_rate=cfg.mutation_rate, recombination_rate=cfg.recombination_rate,
                        reference_ne=cfg.reference_ne,
                        onset=onset_generations(sw.onset, sw.onset_unit, sw.generation_time),
                        start_frequency=sw.start_frequency, position=sw.position, dt=sw.dt,
                        max_attempts=sw.max_attempts)
        if cfg.classes is not None:
            return cls(sim=sim, image=cfg.image, seed=int(seed), split=cfg.split.fractions(), classes=cfg.classes,
                       n_per_class=int(cfg.n_per_class or 0))
        pr = cfg.prior
        assert pr is not None  # SimulateConfig holds classes or a prior
        return cls(sim=sim, image=cfg.image, seed=int(seed), split=cfg.split.fractions(),
                   prior={"min": pr.min, "max": pr.max, "n": pr.n, "n_bins": pr.n_bins})

    @property
    def n_images(self) -> int:
        if self.classes is not None:
            return len(self.classes) * self.n_per_class
        assert self.prior is not None
        return int(self.prior["n"])

    def replicate_seed(self, i: int) -> int:
        return derive_seed(self.seed, i)

    def s_of(self, i: int, seed: int | None = None) -> tuple[float, int]:
        """(S, class index) of replicate i: classes interleave (i mod C) so every shard mixes classes."""
        if self.classes is not None:
            k = i % len(self.classes)
            return float(self.classes[k]), k
        assert self.prior is not None
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
                "n_per_class": self.n_per_class, "prior": dict(self.prior or {}), "split": dict(self.split)}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(sim=SimConfig.from_dict(d["sim"]), image=ImageConfig.from_dict(d["image"]), seed=int(d["seed"]),
                   classes=tuple(d["classes"]) if d.get("classes") is not None else None,
                   n_per_class=int(d["n_per_class"]), prior=dict(d["prior"]) if d["prior"] else None,
                   split=dict(d["split"]))
