"""Create, open (schema-checked), read and write the image store: one Zarr v3 group, sharded by images.

Writing rule (measured with zarr 3.1: two processes writing different images of one shard lost 702 of
2,000 images, silently): arrays are pre-created once, then each task writes one whole shard: its images
in one assignment, then its records (one shard object, whose last column marks the shard written) in one. zarr
writes each object atomically (temporary file, then rename), so a shard's records exist only after its
images. Rewriting a shard writes the same bytes again, so a redone task is harmless. Stores of layouts 2
and 3 (one array per field and a ``shard_written`` array) are read only; layout 4 (images packed by
numcodecs' PackBits, outside the Zarr v3 spec) is read and filled; new stores are layout 5.
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
    IMAGES,
    PACKED_VERSION,
    PACKING_KEY,
    PER_IMAGE_ARRAYS,
    READABLE_VERSIONS,
    RECORD_FIELDS,
    RECORDS,
    RECORDS_WIDTH,
    SHARD_FLAG,
    VERSION,
    WRITTEN_COLUMN,
    codecs_for,
    n_shards_for,
    pack_images,
    packed_width,
    packing_attrs,
    shard_bounds,
    unpack_images,
)

log = logging.getLogger(__name__)
_QUIET = "Numcodecs codecs are not in the Zarr"


def _quiet(fn):
    """Stores of layouts 2-4 use numcodecs' PackBits, outside the Zarr v3 spec; zarr-python reads it fine: no
    warning. Layout 5 uses spec codecs only and raises none."""
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
    wp = packed_width(w)  # rows bit-packed by us: the array's codecs stay Zarr v3 spec codecs
    group.create_array(IMAGES.name, shape=(n_images, h, wp), dtype=IMAGES.dtype, chunks=(chunk, h, wp),
                       shards=(shard_images, h, wp), fill_value=0, attributes={ATTRS_KEY: {PACKING_KEY: packing_attrs(w)}},
                       **codecs_for(IMAGES))
    width = RECORDS_WIDTH
    group.create_array(RECORDS, shape=(n_images, width), dtype="float64", chunks=(chunk, width),
                       shards=(shard_images, width), fill_value=0.0, **codecs_for(RECORD_FIELDS[0]))
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
    if attrs.get("format") == FORMAT and attrs.get("version") not in READABLE_VERSIONS:
        raise StoreError(f"{url}: image store layout {attrs.get('version')!r}; this hpc_popgen reads layouts "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
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

    @property
    def legacy(self) -> bool:
        """Layout 2 or 3: one array per field and a ``shard_written`` array (read only)."""
        return int(self.meta["version"]) < 4

    @property
    def packed(self) -> bool:
        """Layout 5 on: the images array holds rows bit-packed by ``pack_images`` (spec codecs only)."""
        return int(self.meta["version"]) >= PACKED_VERSION

    def _check_shapes(self, arrays: dict) -> None:
        n, k = self.n_images, self.shard_images
        info = arrays[IMAGES.name]
        h, w = self.image_shape
        want_images = [n, h, packed_width(w) if self.packed else w]
        if info["shape"] != want_images:
            raise StoreError(f"{self.url}: array images has shape {info['shape']}, expected {want_images}")
        if not info["shards"] or info["shards"][0] != k:
            raise StoreError(f"{self.url}: array images is not sharded by {k} images")
        if not self.legacy:
            want = [n, RECORDS_WIDTH]
            shards = arrays[RECORDS]["shards"]
            if arrays[RECORDS]["shape"] != want or not shards or shards[0] != k:
                raise StoreError(f"{self.url}: array {RECORDS} has shape {arrays[RECORDS]['shape']} and shards "
                                 f"{shards}, expected {want} in shards of {k} images")
            return
        for spec in RECORD_FIELDS:
            if spec.name in arrays and arrays[spec.name]["shape"] != [n]:
                raise StoreError(f"{self.url}: array {spec.name} has shape {arrays[spec.name]['shape']}, expected [{n}]")
        if arrays[SHARD_FLAG]["shape"] != [self.n_shards]:
            raise StoreError(f"{self.url}: {SHARD_FLAG} has shape {arrays[SHARD_FLAG]['shape']}, expected [{self.n_shards}]")

    def shard_range(self, i: int) -> tuple[int, int]:
        """Image indices [start, stop) of shard ``i``."""
        if not 0 <= i < self.n_shards:
            raise StoreError(f"{self.url}: shard {i} out of range (0..{self.n_shards - 1})")
        return shard_bounds(i, self.n_images, self.shard_images)

    @_quiet
    def array(self, name: str) -> zarr.Array | PackedImages:
        """One of the store's arrays (``images``, ``records``), opened once per ImageStore; ``images`` reads
        as (N, H, W) 0/1 uint8 in every layout (layout 5 through a ``PackedImages`` view)."""
        if name not in self._arrays:
            with warnings.catch_warnings():  # layouts 2-4: numcodecs' PackBits "not in the Zarr v3 spec"
                warnings.simplefilter("ignore")
                # a shard is written whole, so skip zarr's per-chunk "all fill value?" scan (a third of a write)
                arr = self.group[name].with_config({"write_empty_chunks": True})
            self._arrays[name] = PackedImages(arr, self.image_shape[1]) if name == IMAGES.name and self.packed else arr
        return self._arrays[name]

    @_quiet
    def read_shard(self, i: int) -> dict[str, np.ndarray]:
        """Every per-image array for shard ``i`` (written or not: unwritten shards read as zeros)."""
        start, stop = self.shard_range(i)
        out = {IMAGES.name: self.array(IMAGES.name)[start:stop]}
        out.update(self._fields(start, stop))
        return out

    def _fields(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if self.legacy:
            names = set(self.group.array_keys())
            return {spec.name: (self.array(spec.name)[start:stop] if spec.name in names
                                else np.zeros(stop - start, dtype=spec.dtype)) for spec in RECORD_FIELDS}
        rec = self.array(RECORDS)[start:stop]
        return {spec.name: rec[:, j].astype(spec.dtype) for j, spec in enumerate(RECORD_FIELDS)}

    @_quiet
    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One per-image array over an index range (e.g. all labels: ``store.read('s')``)."""
        stop = self.n_images if stop is None else stop
        if name == IMAGES.name:
            return self.array(name)[start:stop]
        j = next((j for j, spec in enumerate(RECORD_FIELDS) if spec.name == name), None)
        if j is None:
            raise StoreError(f"{self.url}: no per-image array {name!r}")
        if self.legacy:
            return self._fields(start, stop)[name]
        return self.array(RECORDS)[start:stop, j].astype(RECORD_FIELDS[j].dtype)

    @_quiet
    def written_shards(self) -> np.ndarray:
        """Indices of shards whose data is completely written."""
        if self.legacy:
            return np.flatnonzero(self.array(SHARD_FLAG)[:] == 1)
        firsts = np.arange(0, self.n_images, self.shard_images)  # one small inner chunk per shard is read
        flags = self.array(RECORDS).get_orthogonal_selection((firsts, [WRITTEN_COLUMN]))[:, 0]
        return np.flatnonzero(flags == 1)

    @_quiet
    def is_written(self, i: int) -> bool:
        """Whether shard ``i`` is completely written (reads that shard's records only)."""
        start, _stop = self.shard_range(i)
        if self.legacy:
            return bool(self.array(SHARD_FLAG)[i] == 1)
        return bool(self.array(RECORDS)[start, WRITTEN_COLUMN] == 1)

    @_quiet
    def write_shard(self, i: int, data: dict[str, np.ndarray]) -> None:
        """Write shard ``i`` whole (one assignment per array), then mark it written.

        Only one task may write a given shard; a rewrite with the same data is idempotent.
        """
        if self.legacy:
            raise StoreError(f"{self.url}: image store layout {self.meta['version']} (an older hpc_popgen) is read "
                             f"only; simulate into a new store (layout {VERSION})")
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
        self.array(IMAGES.name)[start:stop] = np.asarray(data[IMAGES.name], dtype=IMAGES.dtype)
        rec = np.empty((n, RECORDS_WIDTH), dtype=np.float64)
        for j, spec in enumerate(RECORD_FIELDS):
            rec[:, j] = np.asarray(data[spec.name], dtype=spec.dtype)
        rec[:, WRITTEN_COLUMN] = 1.0
        self.array(RECORDS)[start:stop] = rec  # one shard object: after the images, and it marks the shard whole

    @_quiet
    def disk_bytes(self, name: str = "images") -> int:
        """Stored (compressed) bytes of one array, as reported by zarr."""
        return int(self.array(name).nbytes_stored())


class PackedImages:
    """A layout-5 images array seen as (N, H, W) 0/1 uint8: reads unpack each row, writes pack it, so the
    stored array keeps spec codecs while callers see images as in every other layout."""

    dtype = np.dtype(np.uint8)

    def __init__(self, packed: zarr.Array, width: int):
        self.packed = packed
        self.width = int(width)
        self.shape = (*packed.shape[:2], self.width)

    def __repr__(self) -> str:
        return f"PackedImages(shape={self.shape}, stored={self.packed.shape})"

    @staticmethod
    def _split(key: Any) -> tuple[Any, Any]:
        """A selection over (image, haplotype) for the packed array, and one over sites for the unpacked rows."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key) or len(key) > 3:
            raise IndexError(f"PackedImages takes up to 3 indices, no Ellipsis (got {key!r})")
        return key[:2], (key[2] if len(key) == 3 else None)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, sites = self._split(key)
        out = unpack_images(np.asarray(self.packed[rows]), self.width)
        return out if sites is None else out[..., sites]

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        rows, sites = self._split(key)
        if sites is not None:
            raise IndexError("PackedImages writes whole rows (every site) only")
        self.packed[rows] = pack_images(value)

    def nbytes_stored(self) -> int:
        return int(self.packed.nbytes_stored())
