"""Simulation on the fly: the train stage trains on shards as they are written, each image once."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from helpers import write_yaml
from test_train_helpers import make_store, write_fake_shard, write_manifest

from hpc_popgen.ledger import Ledger
from hpc_popgen.pipeline import create_run, execute


def test_stream_training_follows_the_writer(tmp_path):
    url = tmp_path / "storage" / "live.zarr"
    n_per_class, size, seed = 200, 32, 7
    # the same arrays make_store used (its rng draws S/split first), to write shards later
    rng = np.random.default_rng(seed)
    n = 2 * n_per_class
    s = np.array([(0.0, 200.0)[i % 2] for i in range(n)])
    cidx = np.arange(n) % 2
    u = rng.random(n)
    sp = np.where(u < 0.8, 0, np.where(u < 0.9, 1, 2)).astype(np.uint8)
    written_at: dict[int, float] = {}
    waited: list[bool] = []
    train_ledger = Ledger(tmp_path / "run" / "ledger" / "train")

    def writer():
        """Create the store after training started, write the first half of the shards, then (like a
        slow simulation) the rest only after epoch 1."""
        time.sleep(1.0)
        st = make_store(url, n_per_class=n_per_class, size=size, shard_images=50, written=[], seed=seed)
        assert st.n_shards == 8 and len(st.written_shards()) == 0
        for i in range(st.n_shards):
            if i == st.n_shards // 2:
                deadline = time.time() + 180
                while not train_ledger.is_done("epoch-0001") and time.time() < deadline:
                    time.sleep(0.05)
                waited.append(train_ledger.is_done("epoch-0001"))
            time.sleep(0.2)
            write_fake_shard(st, i, s, cidx, sp, size, seed, 200.0)
            written_at[i] = time.time()

    prof = write_yaml(tmp_path / "prof.yaml", {"kind": "local", "cluster": {"n_workers": 1},
                                               "dashboard_address": "127.0.0.1:0",
                                               "horovod": {"launcher": "none", "ranks": 1}})
    man = write_manifest(tmp_path, [{"name": "train", "train": {
        "store": "live.zarr", "epochs": 2, "batch_size": 16, "tensorboard": False, "early_stopping": {"patience": 0},
        "stream": {"enabled": True, "poll_s": 0.1, "timeout_s": 120}}}], name="live", seed=9, profile=prof)
    rd = create_run(man, run_dir=tmp_path / "run")
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    report = execute(rd, progress=False)
    t.join()
    assert report["status"] == "completed"
    done = rd.ledger("train").done()
    assert sorted(done) == ["epoch-0001", "epoch-0002"]
    # epoch 1 (shards 0-3) finished while shards 4-7 did not exist yet
    assert waited == [True]
    assert done["epoch-0001"]["finished_at"] < written_at[4]
    assert done["epoch-0002"]["finished_at"] > written_at[7]
    rank0 = json.loads((tmp_path / "run" / "train" / "ranks" / "rank-0.json").read_text())
    assert rank0["train_shards"] == list(range(8))
    # about one pass over the training images, not several
    n_train = int((sp == 0).sum())
    assert 0.8 * n_train <= rank0["images_trained"] <= 1.1 * n_train
