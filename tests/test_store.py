"""Image store: create, schema-checked open, whole-shard writes, packed size, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from hpc_popgen.errors import StoreError
from hpc_popgen.store import SHARD_FLAG, create_store, empty_shard, open_store

META = dict(classes=[0.0, 200.0], prior={"kind": "classes", "n_per_class": 10},
            demography={"name": "constant"},
            image={"polarisation": "major_minor", "maf": 0.0, "sort": "rows", "size": [16, 16],
                   "resize": "resize"},
            split={"train": 0.8, "validation": 0.1, "test": 0.1}, stage_params={"n_per_class": 10},
            versions={"zarr": zarr.__version__}, seed=42)


def make(url, n=20, k=8, shape=(16, 16)):
    return create_store(str(url), META, n_images=n, image_shape=shape, shard_images=k, chunk_images=4)


def test_create_write_read_roundtrip(tmp_path):
    st = make(tmp_path / "s.zarr")
    assert (st.n_images, st.n_shards, st.shard_images, st.image_shape) == (20, 3, 8, (16, 16))
    assert st.written_shards().tolist() == []
    data = empty_shard(4, (16, 16))  # last shard: images 16..19
    data["images"] = (np.arange(4 * 256).reshape(4, 16, 16) % 3 == 0).astype(np.uint8)
    data["s"][:] = [0, 200, 0, 200]
    data["seed"][:] = [1, 2, 3, 2**32 - 1]
    st.write_shard(2, data)
    again = open_store(tmp_path / "s.zarr")
    assert again.written_shards().tolist() == [2]
    got = again.read_shard(2)
    assert np.array_equal(got["images"], data["images"]) and got["images"].shape == (4, 16, 16)
    assert got["seed"].dtype == np.uint32 and got["seed"][-1] == 2**32 - 1
    assert again.read("s")[16:].tolist() == [0, 200, 0, 200]
    assert again.classes == [0.0, 200.0] and again.meta["seed"] == 42
    # a redone shard (same data) is harmless
    again2 = open_store(tmp_path / "s.zarr", mode="r+")
    again2.write_shard(2, data)
    assert np.array_equal(open_store(tmp_path / "s.zarr").read_shard(2)["images"], data["images"])


def test_images_are_packed_small(tmp_path):
    st = create_store(str(tmp_path / "p.zarr"), META, n_images=64, image_shape=(128, 128), shard_images=64,
                      chunk_images=16)
    rng = np.random.default_rng(0)
    data = empty_shard(64, (128, 128))
    # row-sorted-like images: few distinct haplotypes, each repeated
    for i in range(64):
        uniq = (rng.random((12, 128)) < 0.2).astype(np.uint8)
        data["images"][i] = np.repeat(uniq, [40, 20, 12, 10, 8, 8, 6, 6, 6, 6, 4, 2], axis=0)
    st.write_shard(0, data)
    per_image = st.disk_bytes("images") / 64
    assert per_image <= 1024, per_image


def test_refuses_overwrite_and_bad_writes(tmp_path):
    st = make(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="already exists"):
        make(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="shard 3 out of range"):
        st.write_shard(3, empty_shard(8, (16, 16)))
    with pytest.raises(StoreError, match=r"images has shape \(8, 16, 16\), expected \(4, 16, 16\)"):
        st.write_shard(2, empty_shard(8, (16, 16)))
    assert st.written_shards().tolist() == []


def test_open_checks_schema(tmp_path):
    with pytest.raises(StoreError, match="no image store"):
        open_store(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an hpc_popgen image store"):
        open_store(tmp_path / "plain.zarr")
    make(tmp_path / "s.zarr")
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    attrs = json.loads(json.dumps(g.attrs["hpc_popgen"]))
    attrs["image"]["sort"] = "sideways"
    g.attrs["hpc_popgen"] = attrs
    with pytest.raises(StoreError, match=r"image_store.schema.json.*attrs.image.sort"):
        open_store(tmp_path / "s.zarr")
    attrs["image"]["sort"] = "rows"
    g.attrs["hpc_popgen"] = attrs
    del g[SHARD_FLAG]
    with pytest.raises(StoreError, match="shard_written"):
        open_store(tmp_path / "s.zarr")


def test_memory_url(tmp_path):
    st = make("memory://test_store_memory.zarr", n=8, k=8)
    st.write_shard(0, empty_shard(8, (16, 16)))
    assert open_store("memory://test_store_memory.zarr").written_shards().tolist() == [0]
