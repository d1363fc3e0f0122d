"""``hpcpop bench scale`` runs a small real job and prints one JSON object with the agreed keys."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hpc_popgen.cli import main


def test_bench_scale_prints_one_json_object():
    res = CliRunner().invoke(main, ["bench", "scale", "--images", "512", "--compare", "256", "--workers", "2",
                                    "--plain-images", "256", "--own-shards", "1"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["images"] == 512 and out["workers"] == 2 and out["plain_images"] == 256
    for key in ("images_per_s", "engine_ratio", "plain_msprime_images_per_s", "driver_peak_rss_mb",
                "wall_ratio_per_image"):
        assert out[key] > 0, key
    assert out["files"]["store"] > 0 and 1 <= out["files"]["ledger"] <= 2  # two shards: a record each, or one file
    files = out["files_per_1e5_images"]
    assert files["store"] == round(out["files"]["store"] * 1e5 / 512) and files["total"] == files["store"] + files["ledger"]
    assert out["compare"]["images"] == 256 and out["compare"]["files"]["ledger"] == 1  # one shard
    assert 10 < out["driver_peak_rss_mb"] < 4096
    own = out["own_cost"]
    assert own["images"] == 256 and own["pipeline_ms_per_image"] > 0 and own["msprime_bare_ms_per_image"] > 0
    assert out["own_ms_per_image"] == own["own_ms_per_image"]
