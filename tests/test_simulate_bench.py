"""``hpcpop bench simulate`` prints one JSON object with the agreed keys (tiny sizes here)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hpc_popgen.cli import main


def test_bench_simulate_prints_one_json_object():
    res = CliRunner().invoke(main, ["bench", "simulate", "--n", "16", "--n-ms", "8", "--repeats", "1",
                                    "--shard-images", "8", "--classes", "0,200"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    out = json.loads(lines[0])
    for key in ("msprime_reps_per_s", "plain_msprime_reps_per_s", "pipeline_images_per_s", "pipeline_to_msprime_ratio",
                "pipeline_to_plain_msprime_ratio", "image_step_images_per_s", "bytes_per_image"):
        assert out[key] > 0, key
    # the ratio is computed from unrounded rates, so it may differ from the rounded rates' ratio in the last digit
    ratio = out["pipeline_images_per_s"] / out["msprime_reps_per_s"]
    assert abs(out["pipeline_to_msprime_ratio"] - ratio) < 2e-3
    plain = out["pipeline_images_per_s"] / out["plain_msprime_reps_per_s"]
    assert abs(out["pipeline_to_plain_msprime_ratio"] - plain) < 2e-3 and out["classes"] == [0, 200]
    assert out["bytes_per_image"] < 1024
    bare = out["pipeline_images_per_s"] / out["msprime_bare_reps_per_s"]
    assert out["msprime_bare_reps_per_s"] > 0 and abs(out["pipeline_to_msprime_bare_ratio"] - bare) < 2e-3
    assert set(out["baselines"]) == {"msprime", "msprime_bare", "plain_msprime"}
