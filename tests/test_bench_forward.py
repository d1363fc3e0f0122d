"""``hpcpop bench forward`` at a tiny size (2 images per case through the simulate stage's plan and image code):
one JSON object, the target first, each case on the forward engine and conditioned."""

from __future__ import annotations

import json

from helpers import run_cli

KEYS = ["seconds_per_image", "target_seconds_per_image", "target_met", "genome_scan", "onset_1200", "store"]


def test_bench_forward_prints_one_json_object_with_seconds_per_image():
    proc = run_cli("bench", "forward", "--images", "2", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert list(out) == KEYS
    assert out["target_seconds_per_image"] == 0.5
    for name in ("genome_scan", "onset_1200"):
        case = out[name]
        assert case["engine"] == "fwdpy11" and case["scaling"] == 10.0 and case["all_conditioned"] is True, case
        assert case["images"] == 2 and case["attempts_per_image"] >= 1 and case["seconds_per_image"] > 0
    assert out["seconds_per_image"] == out["genome_scan"]["seconds_per_image"]
    assert out["genome_scan"]["mean_end_frequency"] == 1.0  # onset 2,200: the sweep completes, so it fixed
    assert out["onset_1200"]["mean_end_frequency"] >= 0.6  # under way today: at least the trajectory's 0.77 less 0.05
    assert out["store"]["images"] == 4 and out["store"]["engine"] == "fwdpy11"
