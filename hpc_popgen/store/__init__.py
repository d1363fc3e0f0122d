"""The image store (Zarr v3): layout, whole-shard writer, schema-checked open. No Dask here."""

from .imagestore import ImageStore, create_store, open_store, store_exists
from .layout import FORMAT, PER_IMAGE_ARRAYS, SHARD_FLAG, SPLIT_CODES, VERSION, empty_shard, shard_bounds

__all__ = ["FORMAT", "PER_IMAGE_ARRAYS", "SHARD_FLAG", "SPLIT_CODES", "VERSION", "ImageStore", "create_store",
           "empty_shard", "open_store", "shard_bounds", "store_exists"]
