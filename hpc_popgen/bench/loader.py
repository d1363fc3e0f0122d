"""``hpcpop bench loader``: images per second through the training input pipeline alone, on one core.

Writes a temporary image store of 128x128 images (haplotype-like: rows grouped, columns with varied
allele frequencies), then times full epochs of the tf.data loader (shard reads, Zstd decoding and
bit unpacking, cross-shard shuffling, batching, prefetching uint8 batches; models cast to float
themselves) with no model attached. Also reports the images' stored bytes per image.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import click
import numpy as np


def fake_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images shaped like sorted haplotype images: a few dozen distinct rows, repeated, grouped."""
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        freq = rng.beta(0.3, 1.5, size=size)
        distinct = (rng.random((24, size)) < freq).astype(np.uint8)
        counts = np.sort(rng.multinomial(size, rng.dirichlet(np.full(24, 0.5))))[::-1]
        out[i] = np.repeat(distinct, counts, axis=0)
    return out


def make_bench_store(url: str, n_images: int, size: int, shard_images: int, seed: int = 1) -> object:
    """A store of ``n_images`` fake images, half neutral, through the store's own writer."""
    import zarr

    from ..store import create_store, empty_shard

    meta = dict(classes=[0.0, 200.0], prior={"kind": "classes", "n_per_class": n_images // 2},
                demography={"name": "bench"},
                image={"polarisation": "major_minor", "maf": 0.0, "sort": "rows", "size": [size, size],
                       "resize": "resize"},
                split={"train": 1.0, "validation": 0.0, "test": 0.0}, stage_params={},
                versions={"zarr": zarr.__version__}, seed=seed)
    st = create_store(url, meta, n_images=n_images, image_shape=(size, size), shard_images=shard_images)
    rng = np.random.default_rng(seed)
    for i in range(st.n_shards):
        a, b = st.shard_range(i)
        data = empty_shard(b - a, (size, size))
        data["images"] = fake_images(b - a, size, rng)
        data["s"][:] = np.where(np.arange(a, b) % 2, 200.0, 0.0)
        data["class_index"][:] = np.arange(a, b) % 2
        st.write_shard(i, data)
    return st


def run_bench(n_images: int = 16384, size: int = 128, shard_images: int = 512, batch_size: int = 64,
              buffer: int = 4096, epochs: int = 8, one_core: bool = True) -> dict:
    """Time the loader over ``epochs`` passes of a fresh store; returns the JSON-ready result."""
    if one_core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from ..train.data import ShardReader, blocks, to_dataset
    from ..train.labels import LabelSpec
    from ..train.tfenv import tf as get_tf

    tf = get_tf()
    if one_core:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-loader-") as tmp:
        st = make_bench_store(os.path.join(tmp, "bench.zarr"), n_images, size, shard_images)
        bytes_per_image = st.disk_bytes("images") / st.n_images
        labels = LabelSpec(mode="binary")
        reader = ShardReader(st, split=0)
        shards = list(range(st.n_shards))
        rates = []
        seen = 0
        for epoch in range(epochs):
            ds = to_dataset(lambda e=epoch: blocks(reader, shards, lambda s, r: labels.encode(s, r),
                                                    batch_size=batch_size, buffer=buffer, seed=1, epoch=e),
                            (size, size), 1)
            t0 = time.perf_counter()
            n = 0
            for x, _y in ds:
                n += int(x.shape[0])
            if epoch > 0 or epochs == 1:  # the first pass warms up tf.data and the page cache
                rates.append(n / (time.perf_counter() - t0))
            seen += n
    return {"loader_images_per_s": round(float(np.median(rates)), 1),
            "epoch_images_per_s": [round(float(r), 1) for r in rates], "images_per_epoch": seen // epochs,
            "stored_bytes_per_image": round(bytes_per_image, 1),
            "timed_epochs": len(rates), "image_shape": [size, size], "batch_size": batch_size, "shuffle_buffer": buffer,
            "shard_images": shard_images, "cores": 1 if one_core else os.cpu_count()}


@click.command()
@click.option("--images", "n_images", default=16384, show_default=True, help="Images in the temporary store.")
@click.option("--size", default=128, show_default=True, help="Image side (pixels).")
@click.option("--shard-images", default=512, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--buffer", default=4096, show_default=True, help="Shuffle buffer (images).")
@click.option("--epochs", default=8, show_default=True, help="Passes; the first is a warm-up, the median of the others is reported.")
@click.option("--all-cores", is_flag=True, help="Do not pin to one core.")
def command(n_images: int, size: int, shard_images: int, batch_size: int, buffer: int, epochs: int,
            all_cores: bool) -> None:
    """Loader throughput (images/s) on one core, 128x128 images; target >= 30,000."""
    res = run_bench(n_images, size, shard_images, batch_size, buffer, epochs, one_core=not all_cores)
    click.echo(json.dumps(res))
