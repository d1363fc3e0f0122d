"""Helpers for the train/evaluate/scan tests: small real image stores written through the store API, configs.

The images mimic sorted haplotype images: neutral ones are noise, selected ones carry a block of
identical (swept) haplotypes at the top whose share grows with S, so a small CNN learns them in an
epoch or two; everything else (Zarr store, loader, training, Horovod) is the production code.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import zarr
from helpers import write_yaml

from hpc_popgen.config import from_params
from hpc_popgen.manifest import fill_defaults, load_schema
from hpc_popgen.store import create_store, empty_shard
from hpc_popgen.train.config import TrainConfig


def write_manifest(tmp_path: Path, stages: list[dict], *, name: str = "t", seed: int = 11,
                   profile: str | Path | None = None) -> Path:
    """The manifest ``tmp_path/<name>.yaml`` of ``stages``, its storage ``tmp_path/storage``."""
    data = {"name": name, "seed": seed, "storage": str(tmp_path / "storage"), "stages": stages}
    if profile:
        data["profile"] = str(profile)
    return write_yaml(tmp_path / f"{name}.yaml", data)


def train_section(key: str, **params):
    """The typed config of the train stage's ``key`` mapping (``model``, ``labels``) from ``params``, defaults filled."""
    schema = load_schema("stages/train.schema.json")["properties"][key]
    return from_params(typing.get_type_hints(TrainConfig)[key], fill_defaults(params, schema))


def fake_image(s: float, size: int, rng: np.random.Generator, s_max: float = 400.0) -> np.ndarray:
    """One size x size 0/1 image whose top rows are a swept haplotype in proportion to S."""
    img = (rng.random((size, size)) < 0.3).astype(np.uint8)
    swept = int(round(size * 0.75 * min(s, s_max) / s_max))
    if swept:
        hap = (rng.random(size) < 0.15).astype(np.uint8)
        img[:swept] = hap
    return img


def make_store(url, *, classes=(0.0, 200.0), n_per_class=100, prior=None, size=32, shard_images=64,
               split=(0.8, 0.1, 0.1), seed=7, written=None):
    """A store of fake images; ``prior={'min':0,'max':400,'n':N}`` for S ~ U(min, max) instead of classes.

    ``written``: indices of shards to write (default all), for stream-mode tests.
    """
    rng = np.random.default_rng(seed)
    if prior is None:
        n = len(classes) * n_per_class
        s = np.array([classes[i % len(classes)] for i in range(n)], dtype=np.float64)
        cidx = np.array([i % len(classes) for i in range(n)])
        meta_prior = {"kind": "classes", "n_per_class": n_per_class}
        meta_classes = [float(c) for c in classes]
    else:
        n = int(prior["n"])
        s = rng.uniform(prior.get("min", 0.0), prior["max"], size=n)
        cidx = np.full(n, -1)
        meta_prior = {"kind": "uniform", "min": prior.get("min", 0.0), "max": prior["max"], "n": n,
                      "n_bins": prior.get("n_bins", 11)}
        meta_classes = None
    u = rng.random(n)
    sp = np.where(u < split[0], 0, np.where(u < split[0] + split[1], 1, 2)).astype(np.uint8)
    meta = dict(classes=meta_classes, prior=meta_prior, demography={"name": "fake"},
                image={"polarisation": "major_minor", "maf": 0.0, "sort": "rows", "size": [size, size],
                       "resize": "resize"},
                split={"train": split[0], "validation": split[1], "test": split[2]}, stage_params={},
                versions={"zarr": zarr.__version__}, seed=seed)
    st = create_store(str(url), meta, n_images=n, image_shape=(size, size), shard_images=shard_images)
    s_max = float(max(classes)) if prior is None else float(prior["max"])
    for i in range(st.n_shards) if written is None else written:
        write_fake_shard(st, i, s, cidx, sp, size, seed, s_max)
    return st


def write_fake_shard(st, i, s, cidx, sp, size, seed, s_max):
    """Write shard i of a fake store (images drawn from a per-shard seed)."""
    a, b = st.shard_range(i)
    rng = np.random.default_rng([seed, i])
    data = empty_shard(b - a, (size, size))
    data["images"] = np.stack([fake_image(v, size, rng, s_max) for v in s[a:b]])
    data["s"][:] = s[a:b]
    data["class_index"][:] = cidx[a:b]
    data["split"][:] = sp[a:b]
    data["seed"][:] = np.arange(a, b) + 1
    st.write_shard(i, data)
