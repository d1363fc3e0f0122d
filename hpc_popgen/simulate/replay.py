"""Re-simulate one stored replicate from its records, and image it every way: a batched replicate from
its batch seed and index (msprime's replicate_index), one simulated alone from its seed and attempt.

The store keeps processed images only; Fig. 2 of the paper (unsorted / rows / columns / both) needs
the raw matrix, which is cheap to regenerate exactly from the store's records.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import StoreError
from ..images import ImageConfig, make_image
from ..store import ImageStore
from .demographies import DemographyModel
from .forward import simulate_forward
from .plan import end_frequency, forward_from_dict
from .replicate import SimConfig, simulate_member, simulate_once

VIEWS = ("none", "rows", "columns", "both")


def replay(store: ImageStore, index: int) -> dict:
    """{"stored": image, "none"/"rows"/"columns"/"both": re-made images, "info": {...}} for one image."""
    if not 0 <= index < store.n_images:
        raise StoreError(f"{store.url}: index {index} out of range (0..{store.n_images - 1})")
    shard = index // store.shard_images
    if shard not in set(store.written_shards().tolist()):
        raise StoreError(f"{store.url}: image {index} is in shard {shard}, which is not written yet")
    rec = {name: store.read(name, index, index + 1)[0] for name in
           ("images", "s", "class_index", "seed", "attempts", "split", "n_sites_raw", "n_sites", "end_freq",
            "model_index", "batch_seed", "batch_index")}
    info = {k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items() if k != "images"}
    out: dict = {"stored": np.asarray(rec["images"]), "info": info}
    names = store.meta.get("class_names")
    if names and int(rec["class_index"]) >= 0:
        info["class"] = names[int(rec["class_index"])]
    sim_meta = store.meta.get("simulation")
    if not sim_meta:
        return out  # not made by the simulate stage: nothing to re-simulate
    meta = store.meta
    parts = meta.get("class_plans")
    if parts and int(rec["class_index"]) >= 0:  # a class with its own sweep: its own plan's settings
        meta = {**meta, **parts[int(rec["class_index"])]}
        sim_meta = meta["simulation"]
    cfg = SimConfig.from_dict(sim_meta)
    base = ImageConfig.from_dict(store.meta["image"])
    S, seed = float(rec["s"]), int(rec["seed"])
    forward = meta["ensemble"][int(rec["model_index"])] if meta.get("ensemble") else meta.get("forward")
    if forward:  # the forward engine: a replicate is determined by its seed (and its history) alone
        fwd = simulate_forward(forward_from_dict(forward), S, seed, end_frequency=end_frequency(cfg, S))
        matrix, positions = fwd.matrix, fwd.positions
    elif store.meta.get("models"):  # drawn histories on msprime: the image's own history, simulated alone
        own = dataclasses.replace(cfg, demography=DemographyModel.from_dict(store.meta["models"][int(rec["model_index"])]))
        matrix, positions = simulate_once(own, S, seed, int(rec["attempts"]) - 1)
    elif int(rec["batch_seed"]):
        matrix, positions = simulate_member(cfg, S, seed, int(rec["batch_seed"]), int(rec["batch_index"]))
    else:
        matrix, positions = simulate_once(cfg, S, seed, int(rec["attempts"]) - 1)
    drawn = store.meta.get("demography") or {}
    if drawn.get("draw") and drawn.get("vectors"):  # which drawn history, as parameter values
        out["info"]["history"] = dict(zip(drawn["names"], drawn["vectors"][int(rec["model_index"])], strict=True))
    centre = cfg.position * cfg.sequence_length
    for view in VIEWS:
        out[view] = make_image(matrix, positions, dataclasses.replace(base, sort=view), centre=centre)
    out["info"]["remade_equals_stored"] = bool(np.array_equal(make_image(matrix, positions, base, centre=centre),
                                                              out["stored"]))
    return out
