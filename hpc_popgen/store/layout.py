"""The image store's layout: which arrays, their dtypes and per-image shapes, and their codecs.

Images are 0/1, so each image row is bit-packed here (``numpy.packbits`` along the sites, big bit order,
zero padding) and the packed (N, H, ceil(W/8)) uint8 array is Zstd-compressed: only Zarr v3 spec codecs
(sharding_indexed, bytes, zstd, crc32c) are in its metadata, so tensorstore, zarrs or any v3 reader opens
it, and ``np.unpackbits(a, axis=-1, count=W)`` gives the images back. A 128x128 row-sorted image takes
about 200-500 bytes on disk. Layouts 2-4 packed with numcodecs' PackBits filter (not a spec codec) and
kept the logical (N, H, W) shape; they are still read. Images are sharded by ``shard_images`` along axis
0 (a shard is the unit of writing); chunks (the unit of reading) hold ``chunk_images`` images. The
per-image numbers (S, class, seed, split, ...) are the columns of one float64 ``records`` array, sharded
and chunked as the images, whose last column is 1 once the shard is whole: a shard is two files whatever
the number of fields (layouts 4-5), where one array per field made 15 and parallel file systems count
files; finding the written shards reads one small chunk per shard. Every field's values are exact in
float64 (integers < 2**53).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT = "hpc_popgen.image_store"
VERSION = 5  # 2: model_index; 3: batch_seed, batch_index; 4: one records array; 5: images packed by us, spec codecs
READABLE_VERSIONS = (2, 3, 4, 5)  # 2 and 3 (one array per field, a shard_written array) are read, not written
PACKED_VERSION = 5  # from this layout on, the images array holds bit-packed rows (see pack_images)
PACKING_KEY = "packing"  # the images array's attrs[ATTRS_KEY][PACKING_KEY] says how rows are packed
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
    """filters/compressors keyword arguments for ``zarr.create_array``: Zstd only, a Zarr v3 spec codec."""
    from zarr.codecs import ZstdCodec

    return {"filters": None, "compressors": [ZstdCodec(level=5 if spec.image else 3)]}


def packed_width(width: int) -> int:
    """Bytes per packed image row of ``width`` sites."""
    return -(-int(width) // 8)


def packing_attrs(width: int) -> dict:
    """What the images array's attrs say about its packing, for readers other than hpc_popgen."""
    return {"function": "numpy.packbits", "axis": -1, "bitorder": "big", "count": int(width)}


def pack_images(images: np.ndarray) -> np.ndarray:
    """(..., W) 0/1 uint8 -> (..., ceil(W/8)) uint8, each row packed on its own (big bit order, zero padded)."""
    return np.packbits(np.asarray(images, dtype=np.uint8), axis=-1)


def unpack_images(packed: np.ndarray, width: int) -> np.ndarray:
    """The inverse of ``pack_images``: (..., ceil(W/8)) uint8 -> (..., W) 0/1 uint8."""
    return np.unpackbits(packed, axis=-1, count=int(width))


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
