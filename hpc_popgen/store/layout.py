"""The image store's layout: which arrays, their dtypes and per-image shapes, and their codecs.

Images are stored bit-packed (zarr's PackBits filter) then Zstd-compressed, keeping the logical
(N, H, W) shape: a 128x128 row-sorted image takes about 400-500 bytes on disk. They are sharded by
``shard_images`` along axis 0 (a shard is the unit of writing); chunks (the unit of reading) hold
``chunk_images`` images. The per-image numbers (S, class, seed, split, ...) are the columns of one
float64 ``records`` array, sharded and chunked as the images, whose last column is 1 once the shard is
whole: a shard is two files whatever the number of fields (layout 4), where one array per field made 15
and parallel file systems count files; finding the written shards reads one small chunk per shard.
Every field's values are exact in float64 (integers < 2**53).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

FORMAT = "hpc_popgen.image_store"
VERSION = 4  # 2: model_index; 3: batch_seed, batch_index; 4: the per-image fields as columns of one records array
READABLE_VERSIONS = (2, 3, 4)  # 2 and 3 (one array per field, a shard_written array) are read, not written
ATTRS_KEY = "hpc_popgen"


@dataclass(frozen=True)
class ArraySpec:
    """One per-image array: its name, dtype, and whether it is the (H, W) image array."""

    name: str
    dtype: str
    image: bool = False


PER_IMAGE_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("images", "uint8", image=True),
    ArraySpec("s", "float64"),
    ArraySpec("class_index", "int16"),
    ArraySpec("onset", "float64"),
    ArraySpec("start_freq", "float64"),
    ArraySpec("end_freq", "float64"),
    ArraySpec("n_sites_raw", "int32"),
    ArraySpec("n_sites", "int32"),
    ArraySpec("seed", "uint32"),
    ArraySpec("attempts", "uint8"),
    ArraySpec("split", "uint8"),
    ArraySpec("model_index", "int16"),
    ArraySpec("batch_seed", "uint32"),  # msprime seed of the image's batch (0: simulated alone)
    ArraySpec("batch_index", "uint32"),  # its replicate_index in that batch
)
IMAGES = PER_IMAGE_ARRAYS[0]
RECORD_FIELDS: tuple[ArraySpec, ...] = PER_IMAGE_ARRAYS[1:]  # the columns of ``records``, in order
RECORDS = "records"
WRITTEN_COLUMN = len(RECORD_FIELDS)  # the records' last column: 1 once the shard is written whole
RECORDS_WIDTH = WRITTEN_COLUMN + 1  # columns of ``records``: the fields, then the written flag
SHARD_FLAG = "shard_written"  # layouts 2-3 only
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


def codecs_for(spec: ArraySpec) -> dict:
    """filters/compressors keyword arguments for ``zarr.create_array``."""
    from zarr.codecs import ZstdCodec

    if spec.image:
        from zarr.codecs.numcodecs import PackBits

        with warnings.catch_warnings():  # "numcodecs codecs are not in the Zarr v3 spec": known, wanted
            warnings.simplefilter("ignore")
            packbits = PackBits()
        return {"filters": [packbits], "compressors": [ZstdCodec(level=5)]}
    return {"filters": None, "compressors": [ZstdCodec(level=3)]}


def n_shards_for(n_images: int, shard_images: int) -> int:
    return -(-int(n_images) // int(shard_images))


def shard_bounds(i: int, n_images: int, shard_images: int) -> tuple[int, int]:
    """Image index range [start, stop) of shard ``i``."""
    start = i * shard_images
    return start, min(start + shard_images, n_images)


def empty_shard(n: int, image_shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Zero-filled arrays for ``n`` images, one entry per per-image array (what a writer fills)."""
    out = {}
    for spec in PER_IMAGE_ARRAYS:
        shape = (n, *image_shape) if spec.image else (n,)
        out[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return out
