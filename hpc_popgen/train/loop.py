"""The training loop: one process, or one Horovod rank of many (same code; Horovod when available).

Per epoch every rank trains on its own disjoint shards for the same number of steps (the smallest
rank's share, so allreduces never wait for a rank that ran out), validates on its own validation
images, and Horovod averages gradients (DistributedOptimizer, learning rate times the rank count) and
epoch metrics (MetricAverageCallback). Rank 0 alone writes checkpoints, the ledger, TensorBoard logs
and the final model bundle. A restarted training continues from the newest checkpoint that has a
ledger record; early stopping watches the validation loss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import StoreError
from ..ledger import Ledger
from ..store import open_store
from . import checkpoint, tfenv
from .data import ShardReader, blocks, rank_shards, split_code, split_counts, to_dataset
from .labels import LabelSpec
from .models import ModelConfig, build_model, make_optimizer
from .saved import save_bundle

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything a training process needs (written as JSON for Horovod ranks started by a launcher)."""

    store: str
    out_dir: str
    model: dict
    labels: dict
    epochs: int = 10
    batch_size: int = 64
    shuffle_buffer: int = 4096
    flip_sites: bool = False
    patience: int = 3
    min_delta: float = 0.0
    restore_best: bool = True
    seed: int = 1
    ledger_dir: str | None = None
    tensorboard: bool = True
    threads: int | None = None
    use_horovod: bool = True
    stream: dict = field(default_factory=dict)
    reduce_lr: dict | None = None  # {factor, patience, min_lr} (schema defaults filled): cut on a plateau

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainJob:
        return cls(**json.loads(text))


class _Comm:
    """The few collective operations the loop needs; trivial without Horovod."""

    def __init__(self, use_horovod: bool):
        self.hvd = tfenv.horovod() if use_horovod else None
        if self.hvd is not None:
            self.hvd.init()
            if self.hvd.size() == 1:
                log.info("horovod available; running as a single rank")
        self.rank = self.hvd.rank() if self.hvd else 0
        self.size = self.hvd.size() if self.hvd else 1

    def bcast(self, obj: Any) -> Any:
        """Rank 0's value of ``obj`` on every rank."""
        if self.hvd is None or self.size == 1:
            return obj
        import horovod.tensorflow as hvd_tf

        return hvd_tf.broadcast_object(obj, root_rank=0)

    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if self.hvd is None or self.size == 1:
            return [obj]
        import horovod.tensorflow as hvd_tf

        return hvd_tf.allgather_object(obj)


def _metric_average_callback(tf: Any) -> Any:
    """A Keras callback averaging epoch metrics over ranks (before TensorBoard and the history see them).

    Horovod's own MetricAverageCallback takes its backend from the ``keras`` package, which is Keras 3
    when installed next to tf-keras, and fails there; this one uses horovod.tensorflow directly.
    """
    import horovod.tensorflow as hvd_tf

    class MetricAverage(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if not logs:
                return
            for key in sorted(logs):
                value = tf.constant(float(logs[key]), dtype=tf.float64)
                logs[key] = float(hvd_tf.allreduce(value, op=hvd_tf.Average, name=f"metric_avg.{key}").numpy())

    return MetricAverage()


def weights_digest(weights: list[np.ndarray]) -> str:
    """SHA-256 of the model weights (to show that every rank ends with the same model)."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _loss_and_metrics(head: str) -> tuple[str, list[str]]:
    if head == "binary":
        return "binary_crossentropy", ["binary_accuracy"]
    if head == "classes":
        return "categorical_crossentropy", ["categorical_accuracy"]
    return "mse", ["mae"]


def _plan_static(store: Any, rank: int, size: int, batch_size: int) -> dict:
    """Shards, steps and validation steps of every rank when the whole store is already written."""
    shards = list(range(store.n_shards))
    counts = split_counts(store, shards)
    train = np.array([counts["train"][r::size].sum() for r in range(size)])
    val = np.array([counts["validation"][r::size].sum() for r in range(size)])
    steps = int(train.min() // batch_size)
    if steps < 1:
        raise StoreError(f"{store.url}: rank with the fewest training images has {int(train.min())}, fewer "
                         f"than one batch of {batch_size}; use a smaller batch_size or fewer ranks")
    mine = rank_shards(shards, rank, size)
    if val.sum() == 0:
        vshards, vsteps = [], 0
    elif val.min() == 0:  # some rank has no validation images: everyone validates on all of them
        vshards, vsteps = shards, int(math.ceil(val.sum() / batch_size))
    else:
        vshards, vsteps = mine, int(math.ceil(val.max() / batch_size))
    return {"train_shards": mine, "steps": steps, "val_shards": vshards, "val_steps": vsteps,
            "train_images_per_rank": train.tolist(), "val_images_per_rank": val.tolist()}


def _plan_stream(store: Any, rank: int, size: int, batch_size: int, epochs: int, epoch: int) -> dict:
    """Stream mode: epoch ``e`` trains once on the e-th block of this rank's shards, as they are written.

    Split labels are unknown before a shard is written, so the steps come from the store's split
    fractions (the block is cycled if a rank runs a few images short).
    """
    shards = list(range(store.n_shards))
    parts = [np.array_split(np.array(rank_shards(shards, r, size), dtype=np.int64), epochs)[epoch]
              for r in range(size)]
    sizes = [sum(store.shard_range(int(i))[1] - store.shard_range(int(i))[0] for i in b) for b in parts]
    frac = store.meta.get("split", {})
    steps = int(min(sizes) * float(frac.get("train", 1.0)) // batch_size)
    vsteps = int(min(sizes) * float(frac.get("validation", 0.0)) // batch_size)
    if steps < 1:
        raise StoreError(f"{store.url}: stream mode: {epochs} epochs over {store.n_shards} shards and {size} "
                         f"rank(s) leave fewer than {batch_size} training images per epoch; use fewer epochs")
    mine = [int(i) for i in parts[rank]]
    return {"train_shards": mine, "steps": steps, "val_shards": mine if vsteps else [], "val_steps": vsteps}


def run_training(job: TrainJob) -> dict:
    """Train (or resume) as this process's rank; rank 0 returns and writes the result, others a digest."""
    tf = tfenv.tf()
    comm = _Comm(job.use_horovod)
    rank, size = comm.rank, comm.size
    out = Path(job.out_dir)
    ckpt_dir = out / "checkpoints"
    ledger = Ledger(job.ledger_dir) if job.ledger_dir else None
    if job.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(job.threads))
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, int(job.threads))))
        except RuntimeError:  # TensorFlow already running in this process (training in the driver)
            log.debug("TensorFlow threads already set; keeping them")
    tf.keras.utils.set_random_seed(int(job.seed) % (2**31 - 1))
    stream = bool(job.stream.get("enabled"))
    store = open_store(job.store)
    if store.n_shards < size:
        raise StoreError(f"{job.store}: {store.n_shards} shards cannot be shared by {size} ranks "
                         "(each rank reads whole shards); simulate with smaller shards or use fewer ranks")
    if not stream:
        written = store.written_shards()
        if len(written) < store.n_shards:
            raise StoreError(f"{job.store}: only {len(written)} of {store.n_shards} shards are written; finish "
                             "the simulate stage first, or train with stream: {enabled: true}")
    labels = LabelSpec.from_dict(job.labels)
    mcfg = ModelConfig.from_dict(job.model)
    shape = store.image_shape

    model = build_model(mcfg, shape, labels.n_outputs, labels.head)
    opt = make_optimizer(mcfg, scale=size)
    if comm.hvd is not None:
        opt = comm.hvd.DistributedOptimizer(opt)
    loss, metrics = _loss_and_metrics(labels.head)
    model.compile(optimizer=opt, loss=loss, metrics=metrics)

    # --- resume ---------------------------------------------------------------------------------
    found = checkpoint.latest(ckpt_dir, ledger) if rank == 0 else None
    found = comm.bcast(None if found is None else (found[0], str(found[1])))
    state: dict = {"epoch": 0, "history": [], "best": None, "best_epoch": 0, "wait": 0, "stopped": False,
                   "lr_wait": 0, "lr": float(opt.learning_rate.numpy())}
    resumed_from = 0
    if found is not None:
        weights, opt_vars, state = checkpoint.load(found[1])
        model.set_weights(weights)
        opt.build(model.trainable_variables)
        for var, val in zip(opt.variables, opt_vars, strict=True):
            var.assign(val)
        resumed_from = int(state["epoch"])
        state.setdefault("lr_wait", 0)
        if "lr" in state:
            opt.learning_rate.assign(float(state["lr"]))
        state["lr"] = float(opt.learning_rate.numpy())
        if rank == 0:
            log.info("resuming from checkpoint %s (epoch %d)", found[1], resumed_from)

    callbacks: list[Any] = []
    if comm.hvd is not None:
        callbacks += [comm.hvd.callbacks.BroadcastGlobalVariablesCallback(0), _metric_average_callback(tf)]
    if rank == 0 and job.tensorboard:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"), write_graph=False,
                                                        profile_batch=0))
    train_reader = ShardReader(store, split_code("train"), wait=stream,
                               poll_s=float(job.stream.get("poll_s", 2.0)),
                               timeout_s=float(job.stream.get("timeout_s", 3600.0)))
    val_reader = dataclasses.replace(train_reader, split=split_code("validation"))

    def encode(s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return labels.encode(s, rng)

    plan = _plan_static(store, rank, size, job.batch_size) if not stream else None
    seen_shards: set[int] = set()
    t_train = 0.0
    images_trained = 0
    epoch = int(state["epoch"])
    while epoch < job.epochs and not state["stopped"]:
        p = plan or _plan_stream(store, rank, size, job.batch_size, job.epochs, epoch)
        seen_shards.update(p["train_shards"])
        ds = to_dataset(lambda p=p, e=epoch: blocks(
            train_reader, p["train_shards"], encode, batch_size=job.batch_size, buffer=job.shuffle_buffer,
            seed=job.seed, epoch=e, rank=rank, repeat=True, flip_sites=job.flip_sites), shape, labels.n_outputs,
            steps=p["steps"])
        vds = None
        if p["val_steps"]:
            vds = to_dataset(lambda p=p: blocks(
                val_reader, p["val_shards"], encode, batch_size=job.batch_size, buffer=job.shuffle_buffer,
                seed=job.seed, epoch=0, rank=rank, shuffle=False, drop_remainder=False, repeat=True),
                shape, labels.n_outputs, steps=p["val_steps"])
        t0 = time.perf_counter()
        hist = model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=p["steps"],
                         validation_data=vds, validation_steps=p["val_steps"] or None, callbacks=callbacks,
                         verbose=0)
        dt = time.perf_counter() - t0
        t_train += dt
        n_img = p["steps"] * job.batch_size * size
        images_trained += n_img
        logs = {k: float(v[-1]) for k, v in hist.history.items()}
        epoch += 1
        logs.update(epoch=epoch, seconds=round(dt, 3), images_per_s=round(n_img / dt, 1), learning_rate=state["lr"])
        monitor = logs.get("val_loss", logs.get("loss"))
        monitor = comm.bcast(monitor)
        if state["best"] is None or monitor < state["best"] - job.min_delta:
            state.update(best=monitor, best_epoch=epoch, wait=0, lr_wait=0)
        else:
            state["wait"] += 1
            state["lr_wait"] += 1
            if job.patience and state["wait"] >= job.patience:
                state["stopped"] = True
            elif job.reduce_lr and state["lr_wait"] >= int(job.reduce_lr["patience"]):
                floor = float(job.reduce_lr["min_lr"]) * size
                lr = max(floor, state["lr"] * float(job.reduce_lr["factor"]))
                if lr < state["lr"]:
                    opt.learning_rate.assign(lr)
                    if rank == 0:
                        log.info("epoch %d: validation loss flat for %d epoch(s); learning rate %.3g -> %.3g",
                                 epoch, state["lr_wait"], state["lr"], lr)
                    state["lr"] = lr
                state["lr_wait"] = 0
        state["epoch"] = epoch
        state["history"].append(logs)
        if rank == 0:
            checkpoint.save(ckpt_dir / f"{checkpoint.unit_id(epoch)}.npz", model.get_weights(),
                            [v.numpy() for v in opt.variables], state)
            if ledger is not None:
                ledger.record(checkpoint.unit_id(epoch), **{k: v for k, v in logs.items() if k != "epoch"})
            checkpoint.prune(ckpt_dir, {epoch, state["best_epoch"]})
            log.info("epoch %d/%d: %s", epoch, job.epochs,
                     ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "epoch"))
        if state["stopped"] and rank == 0:
            log.info("early stopping after epoch %d (best epoch %d, %s %.4g)", epoch, state["best_epoch"],
                     "val_loss" if "val_loss" in logs else "loss", state["best"])

    if job.restore_best and state["best_epoch"] and state["best_epoch"] != state["epoch"]:
        best_file = ckpt_dir / f"{checkpoint.unit_id(state['best_epoch'])}.npz"
        best_file = comm.bcast(str(best_file))
        model.set_weights(checkpoint.load(best_file)[0])
    final_weights = model.get_weights()
    digest = weights_digest(final_weights)
    rank_info = {"rank": rank, "size": size, "weights_sha256": digest, "train_shards": sorted(seen_shards),
                 "images_trained": images_trained, "seconds": round(t_train, 3)}
    atomic.write_json(out / "ranks" / f"rank-{rank}.json", rank_info)
    all_info = comm.allgather(rank_info)
    result = {"epochs_run": state["epoch"], "epochs": job.epochs, "stopped_early": state["stopped"],
              "best_epoch": state["best_epoch"], "best_monitor": state["best"], "resumed_from_epoch": resumed_from,
              "history": state["history"], "ranks": size,
              "identical_weights": len({i["weights_sha256"] for i in all_info}) == 1,
              "images_trained_this_attempt": images_trained,
              "train_images_per_s": round(images_trained / t_train, 1) if t_train else None}
    if rank == 0:
        info = {"store": job.store, "seed": job.seed, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                "history": state["history"], "ranks": size,
                "store_classes": store.classes, "store_prior": store.meta.get("prior"),
                "demography": store.meta.get("demography"), "flip_sites": job.flip_sites}
        clean = build_model(mcfg, shape, labels.n_outputs, labels.head)
        clean.set_weights(final_weights)
        save_bundle(out / "model", clean, labels, store.meta["image"], shape, mcfg, info)
        atomic.write_json(out / "result.json", result)
    return result
