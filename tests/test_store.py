"""Image store: create, schema-checked open, whole-shard writes, packed size, refusals."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import zarr

from hpc_popgen.errors import StoreError
from hpc_popgen.store import create_store, empty_shard, open_store
from hpc_popgen.store.layout import FORMAT, RECORD_FIELDS, RECORDS, RECORDS_WIDTH, SHARD_FLAG, WRITTEN_COLUMN

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
    del g[RECORDS]
    with pytest.raises(StoreError, match="records"):
        open_store(tmp_path / "s.zarr")


def test_memory_url(tmp_path):
    st = make("memory://test_store_memory.zarr", n=8, k=8)
    st.write_shard(0, empty_shard(8, (16, 16)))
    assert open_store("memory://test_store_memory.zarr").written_shards().tolist() == [0]


def test_a_shard_is_two_files_whatever_the_fields(tmp_path):
    """Parallel file systems count files: a written shard adds its images and its records, nothing else."""
    st = make(tmp_path / "f.zarr", n=24, k=8)
    before = sum(1 for p in (tmp_path / "f.zarr").rglob("*") if p.is_file())
    for i in range(3):
        data = empty_shard(8, (16, 16))
        data["images"][:, ::2] = 1
        st.write_shard(i, data)
    after = sum(1 for p in (tmp_path / "f.zarr").rglob("*") if p.is_file())
    assert after - before == 2 * 3 and len(RECORD_FIELDS) > 10
    assert open_store(tmp_path / "f.zarr").written_shards().tolist() == [0, 1, 2]


def test_stores_of_layout_3_are_read_not_written(tmp_path):
    """A store an earlier hpc_popgen wrote (one array per field, a shard_written array) still trains and
    evaluates; new shards go to new stores only."""
    url = tmp_path / "old.zarr"
    g = write_layout_4(url, 16, 8, (16, 16), chunk=4)  # its images array is as layout 3 had it
    del g[RECORDS]
    for spec in RECORD_FIELDS:
        g.create_array(spec.name, shape=(16,), dtype=spec.dtype, chunks=(4,), shards=(8,), fill_value=0)
    g.create_array(SHARD_FLAG, shape=(2,), dtype="uint8", chunks=(1,), fill_value=0)
    g["s"][8:16] = np.arange(8) * 50.0
    g["seed"][8:16] = 2**32 - 1
    g[SHARD_FLAG][1] = 1
    attrs = json.loads(json.dumps(g.attrs["hpc_popgen"]))
    attrs["version"] = 3
    g.attrs["hpc_popgen"] = attrs
    old = open_store(url, mode="r+")
    assert old.legacy and old.written_shards().tolist() == [1] and old.is_written(1) and not old.is_written(0)
    assert old.read("s", 8, 16).tolist() == [0, 50, 100, 150, 200, 250, 300, 350]
    assert old.read_shard(1)["seed"].tolist() == [2**32 - 1] * 8 and old.read_shard(1)["seed"].dtype == np.uint32
    with pytest.raises(StoreError, match="layout 3 .* read only"):
        old.write_shard(0, empty_shard(8, (16, 16)))
    attrs["version"] = 1
    g.attrs["hpc_popgen"] = attrs
    with pytest.raises(StoreError, match="layout 1; this hpc_popgen reads layouts 2, 3, 4"):
        open_store(url)


# codecs of the Zarr v3 core specification, and zstd (a registered extension every v3 reader we know has)
SPEC_CODECS = {"bytes", "transpose", "sharding_indexed", "crc32c", "gzip", "blosc", "zstd"}


def codec_names(meta: dict | list) -> set[str]:
    """Every codec name in an array's zarr.json, nested ones (inside sharding) included."""
    found = set()
    items = meta if isinstance(meta, list) else meta.get("codecs", [])
    for codec in items:
        found.add(codec["name"])
        conf = codec.get("configuration", {})
        found |= codec_names(conf.get("codecs", [])) | codec_names(conf.get("index_codecs", []))
    return found


def haplotype_like(n: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, *shape)) < rng.random(shape[1])).astype(np.uint8)


def test_new_store_has_spec_codecs_only_and_reads_without_warnings(tmp_path):
    """Other v3 readers open a new store: its arrays name spec codecs only, zarr-python reads them with no
    warning at all, and the packed images unpack with one numpy call, as the array's attrs say."""
    url, shape = tmp_path / "n.zarr", (12, 13)  # a width that is not a multiple of 8: rows are padded
    st = create_store(str(url), META, n_images=20, image_shape=shape, shard_images=8, chunk_images=4)
    data = empty_shard(8, shape)
    data["images"] = haplotype_like(8, shape, 1)
    data["s"][:] = np.arange(8) * 25.0
    st.write_shard(1, data)
    for name in ("images", RECORDS):
        names = codec_names(json.loads((url / name / "zarr.json").read_text()))
        assert "sharding_indexed" in names and names <= SPEC_CODECS, (name, names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = zarr.open_group(str(url), mode="r")  # another reader: zarr-python without hpc_popgen's filters
        packed, packing = raw["images"][8:16], raw["images"].attrs["hpc_popgen"]["packing"]
        again = open_store(url)
        got, images = again.read_shard(1), again.read("images")
        assert again.written_shards().tolist() == [1]
    assert packed.shape == (8, 12, 2) and packing["count"] == 13
    assert np.array_equal(np.unpackbits(packed, axis=packing["axis"], count=packing["count"]), data["images"])
    assert np.array_equal(got["images"], data["images"]) and images.shape == (20, 12, 13)
    assert np.array_equal(images[8:16], data["images"]) and not images[:8].any() and not images[16:].any()
    assert got["s"].tolist() == data["s"].tolist()
    view = again.array("images")
    assert view.shape == (20, 12, 13) and np.array_equal(view[9], data["images"][1])
    assert np.array_equal(view[8:16, 3:5, 11:], data["images"][:, 3:5, 11:])


def write_layout_4(url, n: int, k: int, shape: tuple[int, int], chunk: int) -> zarr.Group:
    """An empty store as hpc_popgen wrote it before layout 5: images (N, H, W) through numcodecs' PackBits
    filter then Zstd 5, records through Zstd 3, attrs version 4."""
    from zarr.codecs import ZstdCodec
    from zarr.codecs.numcodecs import PackBits

    g = zarr.open_group(str(url), mode="w-", zarr_format=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Numcodecs codecs are not in the Zarr version 3 specification"
        g.create_array("images", shape=(n, *shape), dtype="uint8", chunks=(chunk, *shape), shards=(k, *shape),
                       fill_value=0, filters=[PackBits()], compressors=[ZstdCodec(level=5)])
    g.create_array(RECORDS, shape=(n, RECORDS_WIDTH), dtype="float64", chunks=(chunk, RECORDS_WIDTH),
                   shards=(k, RECORDS_WIDTH), fill_value=0.0, compressors=[ZstdCodec(level=3)])
    g.attrs["hpc_popgen"] = json.loads(json.dumps(dict(META, format=FORMAT, version=4, n_images=n,
                                                       image_shape=list(shape), shard_images=k, n_shards=-(-n // k))))
    return g


def test_a_layout_4_store_reads_identically_and_is_filled_in_its_own_format(tmp_path):
    """Stores written before layout 5 (numcodecs' PackBits) open quietly and read exactly what a new store
    holding the same images reads; a rerun fills their missing shards without changing their codecs."""
    shape, n, k = (16, 16), 24, 8
    shards = []
    for i in range(3):
        d = empty_shard(k, shape)
        d["images"] = haplotype_like(k, shape, 10 + i)
        d["s"][:] = np.arange(k) * 10.0 + i
        d["seed"][:] = 2**32 - 1 - np.arange(k)
        d["split"][:] = np.arange(k) % 3
        shards.append(d)
    g = write_layout_4(tmp_path / "old.zarr", n, k, shape, chunk=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g["images"][0:8] = shards[0]["images"]  # shard 0 as the old writer left it, without our code
    rec = np.zeros((k, RECORDS_WIDTH))
    for j, spec in enumerate(RECORD_FIELDS):
        rec[:, j] = shards[0][spec.name]
    rec[:, WRITTEN_COLUMN] = 1
    g[RECORDS][0:8] = rec
    old = open_store(tmp_path / "old.zarr", mode="r+")
    assert not old.packed and old.written_shards().tolist() == [0]
    old.write_shard(2, shards[2])  # a rerun fills a missing shard of an old store
    new = make(tmp_path / "new.zarr", n=n, k=k, shape=shape)
    assert new.packed
    for i in (0, 2):
        new.write_shard(i, shards[i])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old store's PackBits warning is ours to silence
        old, new = open_store(tmp_path / "old.zarr"), open_store(tmp_path / "new.zarr")
        assert old.written_shards().tolist() == new.written_shards().tolist() == [0, 2]
        for i in range(3):
            a, b = old.read_shard(i), new.read_shard(i)
            assert sorted(a) == sorted(b)
            for name in a:
                assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), (i, name)
        assert np.array_equal(old.read("images"), new.read("images"))
        assert np.array_equal(old.array("images")[8:24], new.array("images")[8:24])
    assert np.array_equal(old.read_shard(2)["images"], shards[2]["images"])
    old_meta = json.loads((tmp_path / "old.zarr" / "images" / "zarr.json").read_text())
    assert old_meta["shape"] == [n, *shape] and "numcodecs.packbits" in codec_names(old_meta)
    assert old.disk_bytes() > 0 and new.disk_bytes() <= 1.1 * old.disk_bytes()
