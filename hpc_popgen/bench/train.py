"""``hpcpop bench train``: training images per second of the paper's CNNs, on the device TensorFlow uses.

For each preset (``binary``, ``multiclass``, ``continuous``) the network is built and compiled exactly as
a train stage builds it (:func:`hpc_popgen.train.models.build_model`, the loop's loss), and timed over
whole training steps on in-memory 0/1 images: the compute the loader has to keep fed, without the
loader (``hpcpop bench loader`` times that). The first pass warms up (graph tracing, autotuning). It
prints the device, so the figure can be taken on a GPU node with the same command.
"""

from __future__ import annotations

import json
import os
import time

import click
import numpy as np

PRESETS = ("binary", "multiclass", "continuous")
N_OUTPUTS = {"binary": 1, "multiclass": 3, "continuous": 11}


def run_bench(size: int = 128, batch_size: int = 64, steps: int = 30, presets: tuple[str, ...] = PRESETS) -> dict:
    """Images/s of each preset's training step; returns the JSON-ready result."""
    from ..config import config_with_defaults
    from ..train.config import TrainConfig
    from ..train.loop import _loss_and_metrics
    from ..train.models import build_model, make_optimizer, resolve_model
    from ..train.tfenv import tf as get_tf

    tf = get_tf()
    gpus = tf.config.list_physical_devices("GPU")
    device = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name) if gpus
              else "CPU")
    rng = np.random.default_rng(1)
    x = (rng.random((batch_size * steps, size, size)) < 0.3).astype(np.uint8)
    out: dict = {"device": device, "gpus": len(gpus), "cores": len(os.sched_getaffinity(0)),
                 "tensorflow": tf.__version__, "image_shape": [size, size], "batch_size": batch_size,
                 "timed_images": int(x.shape[0])}
    for preset in presets:
        mode = "binary" if preset == "binary" else "classes"
        cfg = config_with_defaults(TrainConfig, "stages/train.schema.json",
                                   {"store": "bench.zarr", "model": {"preset": preset}, "labels": {"mode": mode}})
        model_cfg = resolve_model(cfg.model)
        head = cfg.model.head
        n_out = N_OUTPUTS[preset]
        model = build_model(model_cfg, (size, size), n_out, head)
        loss, metrics = _loss_and_metrics(head)
        model.compile(optimizer=make_optimizer(model_cfg), loss=loss, metrics=metrics)
        if head == "binary":
            y = rng.integers(0, 2, size=(x.shape[0], 1)).astype(np.float32)
        else:
            y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, size=x.shape[0])]
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache()
        model.fit(ds, epochs=1, verbose=0)  # warm-up: tracing, autotuning, the cache filled
        t0 = time.perf_counter()
        model.fit(ds, epochs=1, verbose=0)
        wall = time.perf_counter() - t0
        out[f"{preset}_images_per_s"] = round(x.shape[0] / wall, 1)
        out[f"{preset}_parameters"] = int(model.count_params())
    return out


@click.command()
@click.option("--size", default=128, show_default=True, help="Image side (pixels).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--steps", default=30, show_default=True, help="Timed training steps per preset (after a warm-up pass).")
@click.option("--preset", "presets", multiple=True, type=click.Choice(PRESETS), help="Only these presets (repeatable).")
def command(size: int, batch_size: int, steps: int, presets: tuple[str, ...]) -> None:
    """Training images/s of the paper's CNNs (binary, multiclass, continuous) on this machine's device."""
    click.echo(json.dumps(run_bench(size, batch_size, steps, presets or PRESETS)))
