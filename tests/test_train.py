"""Train stage: labels, model presets, the shard loader, real training end to end, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import write_yaml
from test_train_helpers import make_store, train_section, write_manifest

from hpc_popgen.catalogue import TORADA_2019
from hpc_popgen.errors import ManifestError, StoreError
from hpc_popgen.ledger import Ledger
from hpc_popgen.pipeline import create_run, execute
from hpc_popgen.runs import RunDir
from hpc_popgen.store import open_store
from hpc_popgen.train import checkpoint
from hpc_popgen.train.config import EarlyStoppingConfig, ReduceLRConfig
from hpc_popgen.train.data import ShardReader, batches, blocks, rank_shards, to_dataset
from hpc_popgen.train.handlers import EarlyStopping, ReduceLROnPlateau
from hpc_popgen.train.labels import LabelParams, LabelSpec, resolve_labels, with_prior
from hpc_popgen.train.models import PRESETS, ModelConfig, build_model, min_input_size, resolve_model


@pytest.fixture
def single_profile(tmp_path) -> str:
    """A loopback LocalCluster profile with one Horovod rank (training as one task on its one worker)."""
    return str(write_yaml(tmp_path / "profiles" / "one.yaml", {
        "kind": "local", "cluster": {"n_workers": 1}, "dashboard_address": "127.0.0.1:0",
        "horovod": {"launcher": "horovodrun", "ranks": 1}}))


def labels(**params) -> LabelParams:
    """The manifest's ``labels`` of ``params``, the schema's defaults filled in."""
    return train_section("labels", **params)


def network(**params) -> ModelConfig:
    """The network of the manifest's ``model`` of ``params``, the schema's defaults filled in."""
    return resolve_model(train_section("model", **params))


# --- labels -------------------------------------------------------------------------------------

def test_binary_labels_and_prior():
    spec = resolve_labels(labels(mode="binary"), [0.0, 200.0], 0, 200)
    y = spec.encode(np.array([0.0, 200.0, 0.0]))
    assert y[:, 0].tolist() == [0, 1, 0]
    spec = with_prior(spec, np.array([0.0, 0.0, 0.0, 200.0]))
    assert spec.prior == (0.75, 0.25)
    with pytest.raises(StoreError, match="neutral"):
        resolve_labels(labels(mode="binary"), [100.0, 200.0], 100, 200)


def test_class_labels_encodings():
    spec = resolve_labels(labels(mode="classes", n_classes=11), None, 0, 400)
    assert spec.centres[0] == 0 and spec.centres[-1] == 400 and len(spec.centres) == 11
    s = np.array([0.0, 19.0, 21.0, 400.0, 133.0])
    assert spec.class_of(s).tolist() == [0, 0, 1, 10, 3]
    onehot = spec.encode(s)
    assert onehot.shape == (5, 11) and onehot.sum(axis=1).tolist() == [1] * 5
    g = resolve_labels(labels(mode="classes", n_classes=11, encoding="gaussian", sd=1.0), None, 0, 400)
    yg = g.encode(s)
    assert np.allclose(yg.sum(axis=1), 1) and yg[4].argmax() == 3 and 0 < yg[4, 4] < yg[4, 3]
    pt = resolve_labels(labels(mode="classes", n_classes=11, encoding="perturbed", k=2), None, 0, 400)
    many = np.full(2000, 200.0)
    a = pt.encode(many, np.random.default_rng(1)).argmax(axis=1)
    b = pt.encode(many, np.random.default_rng(2)).argmax(axis=1)
    assert set(a.tolist()) == {3, 4, 5, 6, 7} and not np.array_equal(a, b)
    store_classes = resolve_labels(labels(mode="classes"), [400.0, 0.0, 200.0], 0, 400)
    assert store_classes.classes == (0.0, 200.0, 400.0)
    with pytest.raises(ManifestError, match="n_classes"):
        resolve_labels(labels(mode="classes"), None, 0, 400)
    cont = resolve_labels(labels(mode="continuous"), None, 0, 400)
    assert np.allclose(cont.decode_regression(cont.encode(s)), s)
    assert LabelSpec.from_dict(g.to_dict()) == g


# --- models -------------------------------------------------------------------------------------

def test_presets_build_the_papers_networks():
    binary = build_model(network(preset="binary"), (128, 128), 1, "binary")
    convs = [la for la in binary.layers if la.__class__.__name__ == "Conv2D"]
    pools = [la for la in binary.layers if la.__class__.__name__ == "MaxPooling2D"]
    dense = [la for la in binary.layers if la.__class__.__name__ == "Dense"]
    assert [c.filters for c in convs] == [32, 32, 32] and len(pools) == 3
    assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) and c.padding == "valid" for c in convs)
    assert [d.units for d in dense] == [64, 1] and dense[-1].activation.__name__ == "sigmoid"
    assert convs[0].kernel_regularizer is None  # defaults learn: no regularisation, Adam
    cont = build_model(network(preset="continuous"), (128, 128), 11, "classes")
    assert [la.filters for la in cont.layers if la.__class__.__name__ == "Conv2D"] == [32, 64, 128]
    assert [la.units for la in cont.layers if la.__class__.__name__ == "Dense"] == [11]
    multi = network(preset="multiclass")
    assert multi.filters == (32, 64, 64) and multi.dense == ()
    paper = network(preset="binary_paper")
    assert paper.l1 == paper.l2 == 0.005 and paper.optimizer == "rmsprop"
    assert network(preset="binary", paper=True) == paper.__class__(**{**paper.__dict__, "preset": "binary"})
    pm = build_model(paper, (64, 64), 1, "binary")
    assert pm.get_layer("conv0").kernel_regularizer is not None
    custom = network(preset="multiclass", filters=[8, 8], dense=[16], dropout=0.2)
    assert custom.filters == (8, 8) and custom.dense == (16,)
    assert min_input_size(network()) == 22
    with pytest.raises(ManifestError, match="at least 22x22"):
        build_model(network(), (16, 16), 1, "binary")
    with pytest.raises(ManifestError, match="unknown preset"):
        network(preset="resnet")
    assert {"binary", "multiclass", "continuous", "binary_paper"} <= set(PRESETS.ids())


@pytest.mark.parametrize("preset", PRESETS.ids())
def test_every_preset_is_a_cited_catalogue_entry_that_builds(preset):
    entry = PRESETS.get(preset)
    assert entry.id == preset and entry.description and TORADA_2019 in entry.citations
    cfg = network(preset=preset)
    assert cfg.filters == entry.value.filters and cfg.dense == entry.value.dense
    assert (cfg.optimizer, cfg.l1) == (("rmsprop", 0.005) if preset.endswith("_paper") else ("adam", 0.0))
    model = build_model(cfg, (64, 64), 3, entry.value.head)
    assert model.output_shape == (None, 1 if entry.value.head == "binary" else 3)


# --- handlers and checkpoints ---------------------------------------------------------------------

class FakeRate:
    """Stands for the optimizer's learning-rate variable (float32, as the optimizer keeps it)."""

    def __init__(self, value: float):
        self.value = float(np.float32(value))

    def numpy(self) -> float:
        return self.value

    def assign(self, value: float) -> None:
        self.value = float(np.float32(value))


def run_handlers(losses, state=None):
    """Step early stopping and the learning-rate schedule over ``losses`` (from ``state``, if given)."""
    stopper = EarlyStopping(EarlyStoppingConfig(patience=4, min_delta=0.0, restore_best=True))
    schedule = ReduceLROnPlateau(ReduceLRConfig(factor=0.5, patience=1, min_lr=1e-4), FakeRate(1e-3), scale=2,
                                 announce=False)
    first = 0
    if state is not None:
        first = state["epoch"]
        stopper.load_state_dict(state["early_stopping"])
        schedule.load_state_dict(state["reduce_lr"])
    rates = []
    for epoch, loss in enumerate(losses[first:], start=first + 1):
        rates.append(schedule.lr)
        improved = stopper.step(epoch, loss)
        if not stopper.stopped:
            schedule.step(epoch, improved)
        if stopper.stopped:
            break
    state = {"epoch": epoch, "early_stopping": stopper.state_dict(), "reduce_lr": schedule.state_dict()}
    return rates, state


@pytest.mark.parametrize("killed_after", [1, 2, 3, 5])
def test_handlers_resume_from_their_state_as_if_never_stopped(killed_after):
    losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.76, 0.77, 0.78, 0.6]
    straight, end = run_handlers(losses)
    assert end["epoch"] == 9 and end["early_stopping"]["best_epoch"] == 5 and end["early_stopping"]["stopped"]
    assert straight == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4, 2e-4], rel=1e-6)
    before, state = run_handlers(losses[:killed_after])
    state = json.loads(json.dumps(state))  # as a checkpoint keeps it
    after, resumed = run_handlers(losses, state)
    assert before + after == pytest.approx(straight, rel=1e-6)  # the rate is reloaded as float32
    assert resumed["early_stopping"] == end["early_stopping"] and resumed["reduce_lr"] == pytest.approx(end["reduce_lr"])


def test_checkpoint_of_the_flat_loop_state_loads_in_todays_form(tmp_path):
    flat = {"epoch": 2, "history": [{"epoch": 1}, {"epoch": 2}], "best": 0.5, "best_epoch": 1, "wait": 1,
            "stopped": False, "lr_wait": 1, "lr": 0.0005}
    checkpoint.save(tmp_path / "epoch-0002.npz", [np.zeros(3)], [np.ones(2)], flat)
    weights, opt_vars, state = checkpoint.load(tmp_path / "epoch-0002.npz")
    assert state == {"epoch": 2, "history": flat["history"],
                     "early_stopping": {"best": 0.5, "best_epoch": 1, "wait": 1, "stopped": False},
                     "reduce_lr": {"lr": 0.0005, "wait": 1}}
    assert np.array_equal(weights[0], np.zeros(3)) and np.array_equal(opt_vars[0], np.ones(2))


# --- loader -------------------------------------------------------------------------------------

def test_loader_disjoint_ranks_each_image_once_and_seeded(tmp_path):
    st = make_store(tmp_path / "s.zarr", n_per_class=90, size=24, shard_images=20, split=(1.0, 0.0, 0.0))
    assert st.n_shards == 9
    spec = LabelSpec(mode="binary")
    reader = ShardReader(st, split=0)
    seen = {}
    for rank in (0, 1):
        mine = rank_shards(range(st.n_shards), rank, 2)
        xs = [x for x, _ in batches(reader, mine, lambda s, r: spec.encode(s, r), batch_size=16, buffer=45,
                                    seed=5, epoch=0, rank=rank, drop_remainder=False)]
        assert all(x.shape[1:] == (24, 24) for x in xs)
        seen[rank] = np.concatenate(xs)
    assert set(rank_shards(range(9), 0, 2)).isdisjoint(rank_shards(range(9), 1, 2))
    # every image exactly once over both ranks: compare as multisets of image bytes
    want = sorted(bytes(im) for im in st.read("images"))
    got = sorted(bytes(im) for im in np.concatenate([seen[0], seen[1]]))
    assert got == want
    # shuffled across shards: the first batch mixes shards (images carry per-shard seeds)
    shard_of = {bytes(im): i // 20 for i, im in enumerate(st.read("images"))}
    first = next(batches(reader, rank_shards(range(9), 0, 2), lambda s, r: spec.encode(s, r), batch_size=16,
                         buffer=60, seed=5, epoch=0))
    assert len({shard_of[bytes(im)] for im in first[0]}) >= 2
    again = next(batches(reader, rank_shards(range(9), 0, 2), lambda s, r: spec.encode(s, r), batch_size=16,
                         buffer=60, seed=5, epoch=0))
    other = next(batches(reader, rank_shards(range(9), 0, 2), lambda s, r: spec.encode(s, r), batch_size=16,
                         buffer=60, seed=5, epoch=1))
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], other[0])


def test_dataset_cuts_blocks_into_the_same_batches_as_numpy(tmp_path):
    """tf.data slices the generator's blocks of batches; the batches, carry-overs and last partial batch
    are exactly those of the numpy iterator (so a resumed epoch replays the same images)."""
    st = make_store(tmp_path / "s.zarr", n_per_class=50, size=24, shard_images=20, split=(1.0, 0.0, 0.0))
    spec = LabelSpec(mode="binary")
    reader = ShardReader(st, split=0)
    kw = dict(batch_size=8, buffer=30, seed=2, epoch=1, drop_remainder=False)
    want = list(batches(reader, range(st.n_shards), lambda s, r: spec.encode(s, r), block_batches=3, **kw))
    shapes = [xb.shape for xb, _ in blocks(reader, range(st.n_shards), lambda s, r: spec.encode(s, r),
                                           block_batches=3, **kw)]
    assert max(sh[0] for sh in shapes) == 3 and any(sh[0] < 3 for sh in shapes)
    ds = to_dataset(lambda: blocks(reader, range(st.n_shards), lambda s, r: spec.encode(s, r), block_batches=3, **kw),
                    (24, 24), 1)
    got = [(x.numpy(), y.numpy()) for x, y in ds]
    assert len(got) == len(want) == -(-100 // 8)
    assert len(got[-1][0]) == 100 % 8
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert np.array_equal(gx, wx) and np.array_equal(gy, wy)


def test_flip_sites_reverses_a_seeded_half_of_the_images(tmp_path):
    st = make_store(tmp_path / "s.zarr", n_per_class=40, size=24, shard_images=20, split=(1.0, 0.0, 0.0))
    spec = LabelSpec(mode="binary")
    reader = ShardReader(st, split=0)

    def epoch(seed, flip):
        return np.concatenate([x for x, _ in batches(reader, range(st.n_shards), lambda s, r: spec.encode(s, r),
                                                       batch_size=8, buffer=40, seed=seed, epoch=0,
                                                       drop_remainder=False, flip_sites=flip)])

    plain, flipped = epoch(3, False), epoch(3, True)
    stored = {bytes(im) for im in st.read("images")}
    reversed_ = {bytes(np.ascontiguousarray(im[:, ::-1])) for im in st.read("images")}
    same = [bytes(im) in stored for im in flipped]
    rev = [bytes(im) in reversed_ and bytes(im) not in stored for im in flipped]
    assert all(a or b for a, b in zip(same, rev, strict=True)), "every image is stored or site-reversed"
    assert 0.3 < np.mean(rev) < 0.7, "about half are reversed"
    assert np.array_equal(flipped, epoch(3, True)), "seeded"
    assert sorted(bytes(im) for im in plain) == sorted(stored), "no flip without the option"
    assert bytes(st.read("images")[0]) in stored, "the store itself is untouched"


def test_loader_bench_command_prints_json():
    proc = subprocess.run([sys.executable, "-m", "hpc_popgen.cli", "bench", "loader", "--images", "2048",
                           "--size", "64", "--shard-images", "256", "--epochs", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["loader_images_per_s"] > 1000 and res["images_per_epoch"] == 2048
    assert len(res["epoch_images_per_s"]) == 1 and res["epoch_images_per_s"][0] == res["loader_images_per_s"]


def test_packed_blocks_are_the_unpacked_blocks(tmp_path):
    """Layout 5: pooling and cutting the bit-packed rows, then unpacking each block (flips included), gives
    the batches that unpacking each shard first gave."""
    from hpc_popgen.bench.loader import make_bench_store
    from hpc_popgen.train.data import ShardReader, blocks

    st = make_bench_store(str(tmp_path / "b.zarr"), 300, 20, 64)  # 20 sites: packed rows of 3 bytes, 4 bits padding

    class Unpacked(ShardReader):
        def packed_width(self):
            return None

    def run(reader):
        return list(blocks(reader, range(st.n_shards), lambda s, r: s[:, None].astype("float32"), batch_size=16,
                           buffer=100, seed=3, epoch=1, flip_sites=True, drop_remainder=False, block_batches=2))

    packed, unpacked = run(ShardReader(st, split=None)), run(Unpacked(st, split=None))
    assert ShardReader(st, split=None).packed_width() == 20 and len(packed) == len(unpacked) > 5
    for (xp, yp), (xu, yu) in zip(packed, unpacked, strict=True):
        assert xp.shape[-2:] == (20, 20) and np.array_equal(xp, xu) and np.array_equal(yp, yu)


# --- training end to end ------------------------------------------------------------------------

def test_train_and_evaluate_end_to_end(tiny_binary_run):
    """The session's tiny binary run (tests/conftest.py): train, evaluate, evaluate another store, rerun."""
    tmp_path, rd, report = tiny_binary_run.tmp, tiny_binary_run.rd, tiny_binary_run.report
    assert report["status"] == "completed"
    tr, ev, other = report["stages"]
    assert other["metrics"]["n_images"] == 60 and other["metrics"]["store"].endswith("other.zarr")
    assert (tmp_path / "run" / "evaluate-other" / "confusion.png").exists()
    assert tr["units_done"] == tr["units_total"] == tr["metrics"]["epochs_run"] >= 1
    assert ev["metrics"]["test_accuracy"] >= 0.9, ev["metrics"]
    cm = np.array(ev["metrics"]["confusion_matrix"])
    assert cm.sum() == ev["metrics"]["n_images"] > 0
    run = tmp_path / "run"
    assert (run / "evaluate" / "confusion.png").stat().st_size > 1000
    assert json.loads((run / "evaluate" / "confusion.json").read_text())["matrix"] == cm.tolist()
    assert sorted(rd.ledger("train").done())[:1] == ["epoch-0001"]
    assert list((run / "train" / "tensorboard").rglob("events.out.tfevents.*"))
    # the bundle carries the label mapping and the store's image settings
    from hpc_popgen.train.saved import load_bundle

    bundle = load_bundle(run / "train" / "model")
    assert bundle.labels.mode == "binary" and bundle.image == open_store(str(tmp_path / "storage" / "fake.zarr")).meta["image"]
    assert abs(sum(bundle.labels.prior) - 1) < 1e-9
    with pytest.raises(Exception, match="do not match"):
        bundle.posterior(np.zeros((2, 16, 16), dtype=np.uint8))
    # rerun of a finished run trains nothing again: the saved model is not rewritten
    model_file = run / "train" / "model" / "model.keras"
    stamp = model_file.stat().st_mtime_ns
    again = execute(RunDir.open(run), progress=False)
    assert again["status"] == "completed" and model_file.stat().st_mtime_ns == stamp
    assert again["stages"][1]["metrics"]["test_accuracy"] == ev["metrics"]["test_accuracy"]


def test_classes_gaussian_labels_and_quantify_metrics(tmp_path, single_profile):
    make_store(tmp_path / "storage" / "u.zarr", prior={"min": 0, "max": 400, "n": 600, "n_bins": 5}, size=32,
               shard_images=100)
    path = write_manifest(tmp_path, [
        {"name": "train", "train": {"store": "u.zarr", "model": {"preset": "continuous", "filters": [16, 16]},
                                    "labels": {"mode": "classes", "encoding": "gaussian", "sd": 0.5},
                                    "epochs": 4, "batch_size": 32, "tensorboard": False, "flip_sites": True}},
        {"name": "evaluate", "evaluate": {"hpdi_level": 0.9}},
    ], profile=single_profile)
    report = execute(create_run(path, run_dir=tmp_path / "run"), progress=False)
    # trained with flip_sites: prediction averages both site orders, so mirrored images get one answer
    from hpc_popgen.train.saved import load_bundle

    bundle = load_bundle(tmp_path / "run" / "train" / "model")
    x = open_store(str(tmp_path / "storage" / "u.zarr")).read("images")[:20]
    assert bundle.info["flip_sites"] is True
    assert np.allclose(bundle.raw_predict(x), bundle.raw_predict(x[:, :, ::-1]), atol=1e-5)
    one_way = np.asarray(bundle.keras_model(x, training=False))
    assert not np.allclose(one_way, np.asarray(bundle.keras_model(np.ascontiguousarray(x[:, :, ::-1]), training=False)))
    m = report["stages"][1]["metrics"]
    for key in ("rmse_map", "rmse_posterior_mean", "bias_map", "bias_posterior_mean", "hpdi_coverage"):
        assert key in m
    assert len(m["confusion_matrix"]) == 5  # n_bins of the store's prior
    # much better than guessing the prior mean (RMSE of U(0, 400) around 200 is about 115)
    assert m["rmse_posterior_mean"] < 80, m


def test_reduce_lr_cuts_the_learning_rate_on_a_plateau(tmp_path, single_profile):
    """With a min_delta no epoch can meet, every epoch after the first is a plateau: from the third epoch
    on, each epoch runs at the rate before times ``factor``, down to ``min_lr``; early stopping (patience 0)
    stays off."""
    make_store(tmp_path / "storage" / "p.zarr", n_per_class=40, size=24, shard_images=20)
    path = write_manifest(tmp_path, [
        {"name": "train", "train": {"store": "p.zarr", "model": {"preset": "binary", "filters": [8, 8]},
                                    "labels": {"mode": "binary"}, "epochs": 5, "batch_size": 16,
                                    "tensorboard": False,
                                    "early_stopping": {"patience": 0, "min_delta": 100},
                                    "reduce_lr": {"factor": 0.5, "patience": 1, "min_lr": 0.0002}}},
    ], profile=single_profile)
    report = execute(create_run(path, run_dir=tmp_path / "run"), progress=False)
    assert report["status"] == "completed"
    history = json.loads((tmp_path / "run" / "train" / "result.json").read_text())["history"]
    assert [h["learning_rate"] for h in history] == pytest.approx([0.001, 0.001, 0.0005, 0.00025, 0.0002], rel=1e-5)


def test_evaluate_refuses_a_store_with_other_image_settings(tmp_path, single_profile, tiny_binary_run):
    """The session's tiny model (trained on a store of make_store's image settings) on a store sorted otherwise."""
    other = make_store(tmp_path / "storage" / "b.zarr", n_per_class=20, size=32, shard_images=40)
    attrs = other.group.attrs.asdict()["hpc_popgen"]
    attrs["image"]["sort"] = "none"
    other.group.attrs["hpc_popgen"] = attrs
    path = write_manifest(tmp_path, [
        {"name": "evaluate", "evaluate": {"model": str(tiny_binary_run.run / "train" / "model"), "store": "b.zarr"}},
    ], profile=single_profile)
    with pytest.raises(StoreError, match="image settings differ .*sort"):
        execute(create_run(path, run_dir=tmp_path / "run"), progress=False)


@pytest.mark.parametrize("stages, message", [
    ([{"train": {"store": "x.zarr", "labels": {"mode": "classes"}}}], r"stages\[0\]\.train\.model\.preset"),
    ([{"train": {"store": "x.zarr", "epoch": 3}}], "unknown key 'epoch'"),
    ([{"evaluate": {}}], "no train stage"),
    ([{"train": {"store": "x.zarr", "model": {"preset": "multiclass"}}}],
     r"t\.yaml: stages\[0\]\.train\.labels\.mode: 'binary' needs model\.preset binary"),
    ([{"train": {"store": "x.zarr", "model": {"preset": "multiclass"},
                 "labels": {"mode": "classes", "range": [400, 0]}}}],
     r"t\.yaml: stages\[0\]\.train\.labels\.range: low must be below high"),
])
def test_manifest_checks_name_the_key(tmp_path, stages, message):
    path = write_manifest(tmp_path, stages)
    with pytest.raises(ManifestError, match=message):
        create_run(path, run_dir=tmp_path / "run")


@pytest.mark.parametrize("store, train, message", [
    (dict(classes=(100.0, 200.0)), {}, r"stages\[0\]\.train\.labels\.mode: binary labels need neutral images"),
])
def test_errors_found_at_run_time_name_the_file_and_key(tmp_path, single_profile, store, train, message):
    make_store(tmp_path / "storage" / "e.zarr", **{"n_per_class": 20, "shard_images": 20, **store})
    path = write_manifest(tmp_path, [{"name": "train", "train": {"store": "e.zarr", "epochs": 1, **train}}],
                          profile=single_profile)
    with pytest.raises(ManifestError, match=r"manifest\.resolved\.yaml: " + message):
        execute(create_run(path, run_dir=tmp_path / "run"), progress=False)


def test_a_preset_too_deep_for_an_existing_store_is_refused_before_the_run(tmp_path, single_profile):
    make_store(tmp_path / "storage" / "e.zarr", n_per_class=20, shard_images=20, size=16)
    path = write_manifest(tmp_path, [{"name": "train", "train": {"store": "e.zarr", "epochs": 1}}],
                          profile=single_profile)
    with pytest.raises(ManifestError, match=rf"^{path}: stages\[0\]\.train\.model\.preset: preset 'binary': 3 "
                                            r"convolution blocks need images of at least 22x22; the store's images are 16x16"):
        create_run(path, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_killed_training_resumes_from_last_checkpoint(tmp_path, single_profile):
    make_store(tmp_path / "storage" / "k.zarr", n_per_class=600, size=32, shard_images=100)
    path = write_manifest(tmp_path, [
        {"name": "train", "train": {"store": "k.zarr", "epochs": 4, "batch_size": 16, "tensorboard": False,
                                    "early_stopping": {"patience": 0}}},
    ], profile=single_profile)
    run = tmp_path / "run"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    proc = subprocess.Popen([sys.executable, "-m", "hpc_popgen.cli", "submit", str(path), "--run-dir", str(run),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = Ledger(run / "ledger" / "train")
    deadline = time.time() + 240
    while time.time() < deadline and not done.is_done("epoch-0001"):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(done.done())
    assert finished and finished[0] == "epoch-0001" and len(finished) < 4, finished
    report = execute(RunDir.open(run), progress=False)
    m = report["stages"][0]["metrics"]
    assert report["status"] == "completed"
    assert m["resumed_from_epoch"] == len(finished) and m["epochs_run"] == 4
    assert sorted(done.done()) == [f"epoch-{e:04d}" for e in range(1, 5)]
    hist = json.loads((run / "train" / "result.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
