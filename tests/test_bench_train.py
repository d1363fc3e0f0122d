"""``hpcpop bench train``: one JSON object with the device and each preset's training rate."""

from __future__ import annotations

import json

from helpers import run_cli


def test_bench_train_prints_device_and_rates():
    proc = run_cli("bench", "train", "--size", "32", "--steps", "2", "--batch-size", "16", "--preset", "binary",
                   "--preset", "continuous", check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["device"] == "CPU" and out["gpus"] == 0 and out["timed_images"] == 32
    assert out["binary_images_per_s"] > 0 and out["continuous_images_per_s"] > 0
    assert out["continuous_parameters"] > out["binary_parameters"] > 0  # 11-way softmax network is the larger
    assert "multiclass_images_per_s" not in out
