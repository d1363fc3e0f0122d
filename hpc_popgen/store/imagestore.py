"""Create, open (schema-checked), read and write the image store: one Zarr v3 group, sharded by images.

Writing rule (measured with zarr 3.1: two processes writing different images of one shard lost 702 of
2,000 images, silently): arrays are pre-created once, then each task writes one whole shard with one
assignment per array and only then sets ``shard_written[i] = 1``. Rewriting a shard writes the same bytes again, so a redone task is harmless.
"""

from __future__ import annotations

import json
import logging
import warnings
from functools import cache
from typing import Any

import jsonschema
import numpy as np
import zarr

from ..errors import StoreError
from ..paths import SCHEMA_DIR
from .layout import (
    ATTRS_KEY,
    FORMAT,
    PER_IMAGE_ARRAYS,
    SHARD_FLAG,
    VERSION,
    codecs_for,
    n_shards_for,
    shard_bounds,
)

log = logging.getLogger(__name__)
_QUIET = "Numcodecs codecs are not in the Zarr"


def _quiet(fn):
    """PackBits is a numcodecs codec, outside the Zarr v3 core spec; zarr-python reads it fine: no warning."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_QUIET)
            return fn(*args, **kwargs)
    return wrapper

SCHEMA_FILE = "image_store.schema.json"


@cache
def _schema() -> dict:
    with open(SCHEMA_DIR / SCHEMA_FILE) as fh:
        return json.load(fh)


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples -> lists, numpy scalars -> Python, so stored and new attrs compare equal."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def normalise_url(url: str) -> str:
    """Local paths and ``file://`` URLs become plain paths (zarr's LocalStore creates folders); other
    fsspec URLs (``memory://``, ``s3://``) are passed to zarr as they are."""
    url = str(url)
    return url.removeprefix("file://") if url.startswith("file://") else url


def _open_group(url: str, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(store=normalise_url(url), mode=mode, zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        raise StoreError(f"{url}: no image store here (not a Zarr v3 group)") from None
    except zarr.errors.ContainsArrayError:
        raise StoreError(f"{url}: a Zarr array, not an hpc_popgen image store (a Zarr v3 group)") from None
    except (zarr.errors.BaseZarrError, ValueError, json.JSONDecodeError) as exc:
        raise StoreError(f"{url}: not an hpc_popgen image store: {str(exc).splitlines()[0]}") from None


def store_exists(url: str) -> bool:
    """Whether anything Zarr-like (a group or an array) already exists at ``url``."""
    try:
        zarr.open(store=normalise_url(url), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return False
    except Exception:  # noqa: BLE001 - e.g. an unreadable zarr.json: something is there
        return True
    return True


@_quiet
def create_store(url: str, meta: dict, *, n_images: int, image_shape: tuple[int, int], shard_images: int,
                 chunk_images: int | None = None) -> ImageStore:
    """Pre-create every array (empty) and the attrs; refuses to overwrite an existing store.

    ``meta`` holds the stage-specific attrs (classes, prior, demography, image, split, stage_params,
    versions, seed); format, version, sizes and shard counts are filled in here.
    """
    url = str(url)
    if n_images < 1 or shard_images < 1:
        raise StoreError(f"{url}: n_images and shard_images must be >= 1 (got {n_images}, {shard_images})")
    if store_exists(url):
        raise StoreError(f"{url}: a store already exists here; remove it or choose another path")
    chunk = min(int(chunk_images or shard_images), shard_images)
    if shard_images % chunk:
        raise StoreError(f"{url}: shard_images ({shard_images}) must be a multiple of chunk_images ({chunk})")
    h, w = (int(v) for v in image_shape)
    n_shards = n_shards_for(n_images, shard_images)
    attrs = dict(meta)
    attrs.update(format=FORMAT, version=VERSION, n_images=int(n_images), image_shape=[h, w],
                 shard_images=int(shard_images), n_shards=int(n_shards))
    attrs = _plain(attrs)
    _validate_attrs(url, attrs)
    group = zarr.open_group(store=normalise_url(url), mode="w-", zarr_format=3)
    for spec in PER_IMAGE_ARRAYS:
        tail = (h, w) if spec.image else ()
        group.create_array(spec.name, shape=(n_images, *tail), dtype=spec.dtype,
                           chunks=(chunk, *tail), shards=(shard_images, *tail), fill_value=0,
                           **codecs_for(spec))
    group.create_array(SHARD_FLAG, shape=(n_shards,), dtype="uint8", chunks=(1,), fill_value=0)
    group.attrs[ATTRS_KEY] = attrs  # last: a store with attrs has all its arrays
    log.info("created image store %s: %d images in %d shards of %d", url, n_images, n_shards, shard_images)
    return open_store(url, mode="r+")


def _validate_attrs(url: str, attrs: dict, arrays: dict | None = None) -> None:
    doc: dict[str, Any] = {"attrs": attrs}
    if arrays is not None:
        doc["arrays"] = arrays
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    err = jsonschema.exceptions.best_match(cls(schema).iter_errors(doc))
    if err is not None:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise StoreError(f"{url}: not a valid image store ({SCHEMA_FILE}): {where}: {err.message}")


@_quiet
def open_store(url: str, mode: str = "r") -> ImageStore:
    """Open an existing image store, checking its layout against ``image_store.schema.json``."""
    url = str(url)
    if mode not in ("r", "r+"):
        raise StoreError(f"{url}: open_store mode must be 'r' or 'r+' (got {mode!r})")
    group = _open_group(url, mode)
    attrs = group.attrs.asdict().get(ATTRS_KEY)
    if not isinstance(attrs, dict):
        raise StoreError(f"{url}: a Zarr group but not an hpc_popgen image store (no attrs[{ATTRS_KEY!r}])")
    arrays = {}
    for name, arr in group.arrays():
        arrays[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "chunks": list(arr.chunks),
                        "shards": list(arr.shards) if arr.shards else None}
    _validate_attrs(url, attrs, arrays)
    store = ImageStore(url, group, attrs)
    store._check_shapes(arrays)
    return store


class ImageStore:
    """An opened image store: metadata, shard reads, whole-shard writes, and which shards are written."""

    def __init__(self, url: str, group: zarr.Group, meta: dict):
        self.url = url
        self.group = group
        self.meta = meta
        self._arrays: dict[str, zarr.Array] = {}

    def __repr__(self) -> str:
        return f"ImageStore({self.url!r}, n_images={self.n_images}, image_shape={self.image_shape})"

    @property
    def n_images(self) -> int:
        return int(self.meta["n_images"])

    @property
    def image_shape(self) -> tuple[int, int]:
        h, w = self.meta["image_shape"]
        return int(h), int(w)

    @property
    def shard_images(self) -> int:
        return int(self.meta["shard_images"])

    @property
    def n_shards(self) -> int:
        return int(self.meta["n_shards"])

    @property
    def classes(self) -> list[float] | None:
        return self.meta.get("classes")

    def _check_shapes(self, arrays: dict) -> None:
        n, k = self.n_images, self.shard_images
        for spec in PER_IMAGE_ARRAYS:
            info = arrays[spec.name]
            want = [n, *self.image_shape] if spec.image else [n]
            if info["shape"] != want:
                raise StoreError(f"{self.url}: array {spec.name} has shape {info['shape']}, expected {want}")
            if not info["shards"] or info["shards"][0] != k:
                raise StoreError(f"{self.url}: array {spec.name} is not sharded by {k} images")
        if arrays[SHARD_FLAG]["shape"] != [self.n_shards]:
            raise StoreError(f"{self.url}: {SHARD_FLAG} has shape {arrays[SHARD_FLAG]['shape']}, expected [{self.n_shards}]")

    def shard_range(self, i: int) -> tuple[int, int]:
        """Image indices [start, stop) of shard ``i``."""
        if not 0 <= i < self.n_shards:
            raise StoreError(f"{self.url}: shard {i} out of range (0..{self.n_shards - 1})")
        return shard_bounds(i, self.n_images, self.shard_images)

    @_quiet
    def array(self, name: str) -> zarr.Array:
        """One of the store's zarr arrays (opened once per ImageStore)."""
        if name not in self._arrays:
            self._arrays[name] = self.group[name]  # type: ignore[assignment]
        return self._arrays[name]

    @_quiet
    def read_shard(self, i: int) -> dict[str, np.ndarray]:
        """Every per-image array for shard ``i`` (written or not: unwritten shards read as zeros)."""
        start, stop = self.shard_range(i)
        return {spec.name: self.array(spec.name)[start:stop] for spec in PER_IMAGE_ARRAYS}

    @_quiet
    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One array over an index range (e.g. all labels: ``store.read('s')``)."""
        return self.array(name)[start:self.n_images if stop is None else stop]

    @_quiet
    def written_shards(self) -> np.ndarray:
        """Indices of shards whose data is completely written."""
        return np.flatnonzero(self.array(SHARD_FLAG)[:] == 1)

    @_quiet
    def write_shard(self, i: int, data: dict[str, np.ndarray]) -> None:
        """Write shard ``i`` whole (one assignment per array), then mark it written.

        Only one task may write a given shard; a rewrite with the same data is idempotent.
        """
        start, stop = self.shard_range(i)
        n = stop - start
        missing = [s.name for s in PER_IMAGE_ARRAYS if s.name not in data]
        if missing:
            raise StoreError(f"{self.url}: shard {i}: missing arrays {', '.join(missing)}")
        for spec in PER_IMAGE_ARRAYS:
            values = np.asarray(data[spec.name], dtype=spec.dtype)
            want = (n, *self.image_shape) if spec.image else (n,)
            if values.shape != want:
                raise StoreError(f"{self.url}: shard {i}: {spec.name} has shape {values.shape}, expected {want}")
        for spec in PER_IMAGE_ARRAYS:
            self.array(spec.name)[start:stop] = np.asarray(data[spec.name], dtype=spec.dtype)
        self.array(SHARD_FLAG)[i] = 1

    @_quiet
    def disk_bytes(self, name: str = "images") -> int:
        """Stored (compressed) bytes of one array, as reported by zarr."""
        return int(self.array(name).nbytes_stored())
