"""Streaming input from an image store: shard by shard, shuffled across shards, never all in RAM.

Each rank (Horovod) reads its own disjoint shards (``shards[rank::size]``). Within an epoch the
rank's shards are visited in a seeded random order, ``buffer`` images' worth of shards at a time are
pooled and permuted, and batches are cut from the pool (leftovers carry over), so batches mix images
from several shards while memory stays at about ``buffer`` images. A background thread reads the next
group of shards while the current one is consumed. In stream mode a shard is read only once the
simulate stage has marked it written (:meth:`ImageStore.is_written`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..errors import StoreError
from ..seeds import rng as seeded_rng
from ..store import SPLIT_CODES, ImageStore
from ..store.layout import unpack_images
from .config import StreamConfig

log = logging.getLogger(__name__)

Encoder = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def split_code(split: str) -> int:
    """The integer code of a split name (train, validation, test)."""
    if split not in SPLIT_CODES:
        raise StoreError(f"unknown split {split!r} (known: {', '.join(SPLIT_CODES)})")
    return SPLIT_CODES[split]


def rank_shards(shards: Sequence[int], rank: int, size: int) -> list[int]:
    """The disjoint share of ``shards`` read by one rank."""
    return [int(s) for s in list(shards)[rank::size]]


def split_counts(store: ImageStore, shards: Sequence[int]) -> dict[str, np.ndarray]:
    """Images per split in each of ``shards`` (reads only the small ``split`` array)."""
    split = store.read("split")
    out = {name: np.zeros(len(shards), dtype=np.int64) for name in SPLIT_CODES}
    for j, i in enumerate(shards):
        a, b = store.shard_range(int(i))
        counts = np.bincount(split[a:b], minlength=3)
        for name, code in SPLIT_CODES.items():
            out[name][j] = counts[code]
    return out


@dataclass
class ShardReader:
    """Reads the images and S of one split from a shard, optionally waiting for it to be written."""

    store: ImageStore
    split: int | None  # None: every image
    stream: StreamConfig | None = None  # None: the store is complete; else wait for each shard as it says

    def wait_written(self, shard: int) -> None:
        """Block until the simulate stage has written ``shard`` (stream mode)."""
        assert self.stream is not None
        t0 = time.monotonic()
        while not self.store.is_written(shard):
            if time.monotonic() - t0 > self.stream.timeout_s:
                raise StoreError(f"{self.store.url}: shard {shard} not written after {self.stream.timeout_s:.0f} s")
            time.sleep(self.stream.poll_s)

    def packed_width(self) -> int | None:
        """The image width when the store keeps images bit-packed (layout 5), else None."""
        from ..store.imagestore import PackedImages

        arr = self.store.array("images")
        return arr.width if isinstance(arr, PackedImages) else None

    def read(self, shard: int, packed: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images (n, H, W) uint8, S (n,) float64, indices of this split's images) of ``shard``; with
        ``packed`` (and a layout-5 store) the images' rows stay bit-packed, (n, H, ceil(W/8)).

        Images are returned whole with the indices of the wanted split, so that they are copied only
        once more (when batches are gathered), not filtered first.
        """
        if self.stream is not None:
            self.wait_written(shard)
        a, b = self.store.shard_range(shard)
        arr = self.store.array("images")
        images = np.asarray(arr.packed[a:b]) if packed and self.packed_width() is not None else arr[a:b]
        s = self.store.read("s", a, b)
        if self.split is None:
            return images, s, np.arange(b - a)
        keep = np.flatnonzero(self.store.read("split", a, b) == self.split)
        return images, s, keep


def blocks(reader: ShardReader, shards: Sequence[int], encode: Encoder, *, batch_size: int, buffer: int,
           seed: int, epoch: int, rank: int = 0, shuffle: bool = True, drop_remainder: bool = True,
           repeat: bool = False, flip_sites: bool = False, block_batches: int = 16,
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield blocks of consecutive batches, (images (k, B, H, W) uint8, targets (k, B, n) float32), k <= block_batches.

    Cutting the epoch into blocks of batches (not single batches) keeps numpy's calls few: a block's rows
    are gathered, and on a bit-packed store unpacked, in one call each. The batches themselves,
    concatenated, are those of :func:`batches`.

    Shard order, pooling permutations and label noise are seeded by (seed, epoch, rank), so an epoch
    can be replayed exactly after a restart. ``repeat`` cycles through the shards again (used so that
    every rank can supply the same number of steps). ``flip_sites`` reverses the site order of a random
    half of the images (seeded): a sweep at the region centre is symmetric in position, so this doubles
    the distinct training images without changing their distribution.
    """
    shards = [int(s) for s in shards]
    if not shards:
        return
    per_group = max(1, -(-max(buffer, batch_size) // reader.store.shard_images))
    per_block = max(1, int(block_batches)) * batch_size
    # layout 5: pool, shuffle and cut the bit-packed rows (an eighth of the bytes), unpack each block
    width = reader.packed_width()
    cycle = 0

    def images(x: np.ndarray, flip: np.ndarray | None) -> np.ndarray:
        """Rows gathered for a block as images: unpacked if they are packed, the flipped ones reversed."""
        if width is not None:
            x = unpack_images(x, width)
        if flip is not None and flip.any():
            x[flip] = x[flip, :, ::-1]
        return x

    with ThreadPoolExecutor(max_workers=1) as pool:  # reads the next group while this one is consumed
        while True:
            rng = seeded_rng(seed, epoch, rank, cycle)
            order = list(rng.permutation(shards)) if shuffle else list(shards)
            groups = [order[i:i + per_group] for i in range(0, len(order), per_group)]
            carry_x: np.ndarray | None = None
            carry_y: np.ndarray | None = None
            carry_f: np.ndarray | None = None

            def load(group: list[int], rng_key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
                xs, ys, idx = [], [], []
                offset = 0
                for sh in group:
                    x, s, keep = reader.read(sh, packed=width is not None)
                    xs.append(x)
                    ys.append(encode(s[keep], seeded_rng(seed, epoch, sh, rng_key)))
                    idx.append(keep + offset)
                    offset += len(x)
                x = xs[0] if len(xs) == 1 else np.concatenate(xs)
                flip = None
                if flip_sites:
                    flip = seeded_rng(seed, epoch, rank, rng_key, 1 + group[0]).random(len(x)) < 0.5
                return x, np.concatenate(ys), np.concatenate(idx), flip

            future = pool.submit(load, groups[0], cycle) if groups else None
            for gi in range(len(groups)):
                x, y, idx, flip = future.result()
                future = pool.submit(load, groups[gi + 1], cycle) if gi + 1 < len(groups) else None
                order_ = rng.permutation(len(idx)) if shuffle else np.arange(len(idx))
                take, ytake = idx[order_], y[order_]
                ftake = None if flip is None else flip[take]
                start = 0
                if carry_x is not None and len(carry_x):
                    need = batch_size - len(carry_x)
                    if need <= len(take):
                        f = None if ftake is None else np.concatenate([carry_f, ftake[:need]])
                        yield (images(np.concatenate([carry_x, x[take[:need]]]), f)[None],
                               np.concatenate([carry_y, ytake[:need]])[None])
                        carry_x = carry_y = carry_f = None
                        start = need
                    else:
                        carry_x = np.concatenate([carry_x, x[take]])
                        carry_y = np.concatenate([carry_y, ytake])
                        carry_f = None if ftake is None else np.concatenate([carry_f, ftake])
                        continue
                n_full = start + (len(take) - start) // batch_size * batch_size
                for b0 in range(start, n_full, per_block):
                    b1 = min(b0 + per_block, n_full)
                    k = (b1 - b0) // batch_size
                    xb = images(x[take[b0:b1]], None if ftake is None else ftake[b0:b1])
                    yield (xb.reshape(k, batch_size, *xb.shape[1:]),
                           ytake[b0:b1].reshape(k, batch_size, *ytake.shape[1:]))
                carry_x, carry_y = x[take[n_full:]], ytake[n_full:]
                carry_f = None if ftake is None else ftake[n_full:]
            if carry_x is not None and len(carry_x) and not drop_remainder:
                yield images(carry_x, carry_f)[None], carry_y[None]
            if not repeat:
                return
            cycle += 1


def batches(reader: ShardReader, shards: Sequence[int], encode: Encoder, **kwargs) -> Iterator[
        tuple[np.ndarray, np.ndarray]]:
    """Yield (images uint8, targets float32) batches for one epoch of one rank (see :func:`blocks`)."""
    return each_batch(blocks(reader, shards, encode, **kwargs))


def each_batch(block_iter: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of :func:`blocks`' blocks, one at a time."""
    for xb, yb in block_iter:
        yield from zip(xb, yb, strict=True)


def to_dataset(make_iter: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], image_shape: tuple[int, int],
               n_outputs: int, steps: int | None = None, prefetch: int = 16) -> object:
    """A tf.data pipeline of the batches in ``make_iter()``'s blocks (see :func:`blocks`), ``prefetch`` ahead.

    Images stay uint8 (models cast them). The generator hands over one batch at a time: cutting blocks in
    TensorFlow (``unbatch``) cost more than the hand-offs it saved (``hpcpop bench loader``, one core, 8%
    fewer images a second in three alternating runs). The prefetch depth is fixed and tf.data's autotuner
    is off: the pipeline has nothing for it to tune, and on a busy core its periodic optimisation passes
    stall the hand-off of batches (half the throughput of ``hpcpop bench loader`` on one core).
    """
    from .tfenv import tf as get_tf

    tf = get_tf()
    h, w = image_shape

    ds = tf.data.Dataset.from_generator(
        lambda: each_batch(make_iter()),
        output_signature=(tf.TensorSpec(shape=(None, h, w), dtype=tf.uint8),
                          tf.TensorSpec(shape=(None, n_outputs), dtype=tf.float32)))
    if steps is not None:
        ds = ds.take(steps)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(max(1, int(prefetch))).with_options(options)
