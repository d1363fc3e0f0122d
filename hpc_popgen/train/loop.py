"""The training loop: one process, or one Horovod rank of many (same code; Horovod when available).

Per epoch every rank trains on its own disjoint shards for the same number of steps (the smallest
rank's share, so allreduces never wait for a rank that ran out), validates on its own validation
images, and Horovod averages gradients (DistributedOptimizer, learning rate times the rank count) and
epoch metrics (MetricAverageCallback). Rank 0 alone writes checkpoints, the ledger, TensorBoard logs
and the final model bundle. A restarted training continues from the newest checkpoint that has a
ledger record; early stopping and the learning-rate schedule watch the validation loss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import StoreError
from ..ledger import Ledger
from ..store import ImageStore, open_store
from . import checkpoint, tfenv
from .calibration import calibrate
from .config import TrainJob
from .data import ShardReader, blocks, rank_shards, split_code, split_counts, to_dataset
from .handlers import EarlyStopping, ReduceLROnPlateau
from .models import build_model, make_optimizer
from .progress import PROGRESS_FILE, ProgressFile
from .saved import TrainedModel, save_bundle

log = logging.getLogger(__name__)


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


def _progress_callback(tf: Any, progress: ProgressFile) -> Any:
    """A Keras callback that puts the batch being trained or validated into the progress file."""

    class BatchProgress(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            loss = (logs or {}).get("loss")
            progress.update(phase="train", batch=batch + 1, **({"loss": float(loss)} if loss is not None else {}))

        def on_test_begin(self, logs: dict | None = None) -> None:
            progress.update(force=True, phase="validation", val_batch=0)

        def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
            progress.update(val_batch=batch + 1)

    return BatchProgress()


def run_training(job: TrainJob, where: dict | None = None) -> dict:
    """Train (or resume) as this process's rank; rank 0 writes the model and result.json; all return the result.

    ``where`` (host, SLURM job) goes into every epoch's completion record.
    """
    trainer = Trainer(job, where)
    trainer.resume()
    while not trainer.done:
        trainer.train_epoch()
    return trainer.finish()


def _open_training_store(job: TrainJob, size: int) -> ImageStore:
    """The job's store, refused when its shards cannot go round the ranks or (static mode) are not all written."""
    store = open_store(job.store)
    if store.n_shards < size:
        raise StoreError(f"{job.store}: {store.n_shards} shards cannot be shared by {size} ranks "
                         "(each rank reads whole shards); simulate with smaller shards or use fewer ranks")
    if not job.config.stream.enabled:
        written = store.written_shards()
        if len(written) < store.n_shards:
            raise StoreError(f"{job.store}: only {len(written)} of {store.n_shards} shards are written; finish "
                             "the simulate stage first, or train with stream: {enabled: true}")
    return store


def _set_threads(tf: Any, threads: int) -> None:
    """TensorFlow's thread pools for this rank's share of the cores."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:  # TensorFlow already running in this process (a worker that trained before)
        log.debug("TensorFlow threads already set; keeping them")


class Trainer:
    """One rank's training: the compiled model and its inputs, then :meth:`resume`, epochs, :meth:`finish`."""

    def __init__(self, job: TrainJob, where: dict | None = None):
        self.job = job
        self.where = dict(where or {})
        cfg = job.config
        tf = tfenv.tf()
        self.comm = _Comm(job.use_horovod)
        self.rank, self.size = self.comm.rank, self.comm.size
        self.out = Path(job.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.ledger = Ledger(job.ledger_dir) if job.ledger_dir else None
        _set_threads(tf, job.threads)
        tfenv.set_random_seed(int(job.seed) % (2**31 - 1))
        self.store = _open_training_store(job, self.size)
        self.shape = self.store.image_shape
        labels = job.labels
        self.model = build_model(job.model, self.shape, labels.n_outputs, labels.head)
        self.opt = make_optimizer(job.model, scale=self.size)
        if self.comm.hvd is not None:
            self.opt = self.comm.hvd.DistributedOptimizer(self.opt)
        loss, metrics = _loss_and_metrics(labels.head)
        self.model.compile(optimizer=self.opt, loss=loss, metrics=metrics)
        self.stopper = EarlyStopping(cfg.early_stopping)
        self.schedule = ReduceLROnPlateau(cfg.reduce_lr, self.opt.learning_rate, scale=self.size,
                                          announce=self.rank == 0)
        self.epoch = 0
        self.history: list[dict] = []
        self.resumed_from = 0

        # rank 0 tells the driver which epoch and batch it is at (RUN_DIR/<stage>/progress.json)
        self.progress = ProgressFile(self.out / PROGRESS_FILE if self.rank == 0 else None)
        self.callbacks: list[Any] = []
        if self.rank == 0:
            self.callbacks.append(_progress_callback(tf, self.progress))
        if self.comm.hvd is not None:
            self.callbacks += [self.comm.hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                               _metric_average_callback(tf)]
        if self.rank == 0 and cfg.tensorboard:
            self.callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(self.out / "tensorboard"),
                                                                 write_graph=False, profile_batch=0))
        st = cfg.stream
        self.train_reader = ShardReader(self.store, split_code("train"), stream=st if st.enabled else None)
        self.val_reader = dataclasses.replace(self.train_reader, split=split_code("validation"))
        self.plan = None if st.enabled else _plan_static(self.store, self.rank, self.size, cfg.batch_size)
        self.seen_shards: set[int] = set()
        self.t_train = 0.0
        self.images_trained = 0

    @property
    def done(self) -> bool:
        """Whether the last epoch ran or early stopping ended the training."""
        return self.epoch >= self.job.config.epochs or self.stopper.stopped

    def resume(self) -> None:
        """Continue from the newest checkpoint with a ledger record (rank 0 finds it, every rank loads it)."""
        found = checkpoint.latest(self.ckpt_dir, self.ledger) if self.rank == 0 else None
        found = self.comm.bcast(None if found is None else (found[0], str(found[1])))
        if found is None:
            return
        weights, opt_vars, state = checkpoint.load(found[1])
        self.model.set_weights(weights)
        self.opt.build(self.model.trainable_variables)
        for var, val in zip(self.opt.variables, opt_vars, strict=True):
            var.assign(val)
        self.epoch = self.resumed_from = int(state["epoch"])
        self.history = state["history"]
        self.stopper.load_state_dict(state["early_stopping"])
        self.schedule.load_state_dict(state["reduce_lr"])
        last = self.history[-1] if self.history else {}
        self.progress.update(force=True, phase="resumed", epochs_done=self.epoch, epoch=self.epoch,
                             epochs=self.job.config.epochs, last_loss=last.get("loss"),
                             last_val_loss=last.get("val_loss"))
        if self.rank == 0:
            log.info("resuming from checkpoint %s (epoch %d)", found[1], self.resumed_from)

    def _datasets(self, p: dict, epoch: int) -> tuple[Any, Any]:
        """This rank's training batches of ``epoch`` and its validation batches (None without any)."""
        cfg, labels, rank = self.job.config, self.job.labels, self.rank

        def encode(s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return labels.encode(s, rng)

        ds = to_dataset(lambda: blocks(
            self.train_reader, p["train_shards"], encode, batch_size=cfg.batch_size, buffer=cfg.shuffle_buffer,
            seed=self.job.seed, epoch=epoch, rank=rank, repeat=True, flip_sites=cfg.flip_sites),
            self.shape, labels.n_outputs, steps=p["steps"])
        if not p["val_steps"]:
            return ds, None
        vds = to_dataset(lambda: blocks(
            self.val_reader, p["val_shards"], encode, batch_size=cfg.batch_size, buffer=cfg.shuffle_buffer,
            seed=self.job.seed, epoch=0, rank=rank, shuffle=False, drop_remainder=False, repeat=True),
            self.shape, labels.n_outputs, steps=p["val_steps"])
        return ds, vds

    def train_epoch(self) -> None:
        """Train one epoch, step early stopping and the learning rate, and (rank 0) checkpoint it."""
        cfg = self.job.config
        p = self.plan or _plan_stream(self.store, self.rank, self.size, cfg.batch_size, cfg.epochs, self.epoch)
        self.seen_shards.update(p["train_shards"])
        ds, vds = self._datasets(p, self.epoch)
        self.progress.update(force=True, phase="train", epoch=self.epoch + 1, epochs=cfg.epochs, batch=0,
                             batches=p["steps"], val_batch=0, val_batches=p["val_steps"])
        t0 = time.perf_counter()
        hist = self.model.fit(ds, epochs=self.epoch + 1, initial_epoch=self.epoch, steps_per_epoch=p["steps"],
                              validation_data=vds, validation_steps=p["val_steps"] or None,
                              callbacks=self.callbacks, verbose=0)
        dt = time.perf_counter() - t0
        self.t_train += dt
        n_img = p["steps"] * cfg.batch_size * self.size
        self.images_trained += n_img
        logs = {k: float(v[-1]) for k, v in hist.history.items()}
        self.epoch += 1
        logs.update(epoch=self.epoch, seconds=round(dt, 3), images_per_s=round(n_img / dt, 1),
                    learning_rate=self.schedule.lr)
        monitor = self.comm.bcast(logs.get("val_loss", logs.get("loss")))
        improved = self.stopper.step(self.epoch, monitor)
        if not self.stopper.stopped:  # the last epoch of a stopped training cuts no learning rate
            self.schedule.step(self.epoch, improved)
        self.history.append(logs)
        if self.rank == 0:
            self._checkpoint(logs)

    def _checkpoint(self, logs: dict) -> None:
        """Rank 0: write the epoch's checkpoint, then its ledger record; keep only the last and best files."""
        epoch, best = self.epoch, self.stopper.best_epoch
        state = {"epoch": epoch, "history": self.history, "early_stopping": self.stopper.state_dict(),
                 "reduce_lr": self.schedule.state_dict()}
        checkpoint.save(self.ckpt_dir / f"{checkpoint.unit_id(epoch)}.npz", self.model.get_weights(),
                        [v.numpy() for v in self.opt.variables], state)
        if self.ledger is not None:
            self.ledger.record(checkpoint.unit_id(epoch), **{k: v for k, v in logs.items() if k != "epoch"},
                               **self.where)
        self.progress.update(force=True, phase="epoch done", epochs_done=epoch, epoch=epoch,
                             last_loss=logs.get("loss"), last_val_loss=logs.get("val_loss"))
        checkpoint.prune(self.ckpt_dir, {epoch, best})
        log.info("epoch %d/%d: %s", epoch, self.job.config.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "epoch"))
        if self.stopper.stopped:
            log.info("early stopping after epoch %d (best epoch %d, %s %.4g)", epoch, best,
                     "val_loss" if "val_loss" in logs else "loss", self.stopper.best)

    def finish(self) -> dict:
        """Restore the best epoch (if asked), compare the ranks' weights; rank 0 saves the bundle and result.json."""
        job, store, best = self.job, self.store, self.stopper.best_epoch
        if job.config.early_stopping.restore_best and best and best != self.epoch:
            best_file = self.comm.bcast(str(self.ckpt_dir / f"{checkpoint.unit_id(best)}.npz"))
            self.model.set_weights(checkpoint.load(best_file)[0])
        final_weights = self.model.get_weights()
        rank_info = {"rank": self.rank, "size": self.size, "weights_sha256": weights_digest(final_weights),
                     "train_shards": sorted(self.seen_shards), "images_trained": self.images_trained,
                     "seconds": round(self.t_train, 3)}
        atomic.write_json(self.out / "ranks" / f"rank-{self.rank}.json", rank_info)
        all_info = self.comm.allgather(rank_info)
        result = {"epochs_run": self.epoch, "epochs": job.config.epochs, "stopped_early": self.stopper.stopped,
                  "best_epoch": best, "best_monitor": self.stopper.best, "resumed_from_epoch": self.resumed_from,
                  "history": self.history, "ranks": self.size,
                  "identical_weights": len({i["weights_sha256"] for i in all_info}) == 1,
                  "images_trained_this_attempt": self.images_trained,
                  "train_images_per_s": round(self.images_trained / self.t_train, 1) if self.t_train else None}
        if self.rank == 0:
            info = {"store": job.store, "seed": job.seed, "epochs_run": self.epoch, "best_epoch": best,
                    "history": self.history, "ranks": self.size,
                    "store_classes": store.classes, "store_prior": store.meta.get("prior"),
                    "demography": store.meta.get("demography"), "flip_sites": job.config.flip_sites,
                    "n_haplotypes": (store.meta.get("stage_params") or {}).get("n_haplotypes")}
            clean = build_model(job.model, self.shape, job.labels.n_outputs, job.labels.head)
            clean.set_weights(final_weights)
            cal = calibrate(TrainedModel(keras_model=clean, labels=job.labels, image=store.meta["image"],
                                         image_shape=self.shape, model_config=job.model, info=info),
                            store, job.config.calibrate)
            result["calibration"] = cal
            save_bundle(self.out / "model", clean, job.labels, store.meta["image"], self.shape, job.model, info, cal)
            atomic.write_json(self.out / "result.json", result)
        self.progress.update(force=True, phase="done")
        return result
