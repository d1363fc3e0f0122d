"""``hpcpop bench forward``: what one forward-engine image costs under an inferred history, through the
simulate stage's own code (plan, replicate, image). Prints ONE JSON object.

Cases (issue 29's genome-scan settings: 198 haplotypes, 80 kb, mu 1.5e-8, r 1e-8, reference Ne 10,000,
``engine: auto``, ``scaling: auto``, de novo sweeps from start frequency 2e-5, 64x64 images):
- ``genome_scan``: the GA's one-epoch history of a held-out chromosome, 9,056 -> 21,053 diploids 1,344
  generations ago; S = 200 from 2,200 generations ago (a sweep that completes before today, so it is
  conditioned on fixation). ``seconds_per_image`` (target <= 0.5 on one core) is this case's sweep images.
- ``onset_1200``: 9,660 -> 22,746 diploids 1,186 generations ago, S = 200 from 1,200 generations ago, a
  sweep still under way today; before ``sweep.end_condition`` every shard of it failed ("not conditioned
  in 100 attempts"). Its images must all be made (``all_conditioned``).
``store``: the genome-scan job's store as the stage makes it (neutral and S = 200 images alternating) on
the first history. One process, one core.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click

CASES = {
    "genome_scan": {"sizes": (9056, 21053), "change": 1344, "onset": 2200},
    "onset_1200": {"sizes": (9660, 22746), "change": 1186, "onset": 1200},
}
TARGET_SECONDS_PER_IMAGE = 0.5


def _plan(folder: Path, case: dict, classes: list[float], n_per_class: int):
    from ..config import config_with_defaults
    from ..simulate import Plan
    from ..simulate.config import SimulateConfig

    old, new = case["sizes"]
    demes_file = folder / "history.yaml"
    demes_file.write_text(
        "time_units: generations\ndemes:\n- name: POP\n  epochs:\n"
        f"  - {{start_size: {old}, end_time: {case['change']}}}\n  - {{start_size: {new}}}\n")
    params = {"store": "bench.zarr", "demography": {"demes": str(demes_file), "population": "POP"},
              "engine": "auto", "reference_ne": 10_000, "n_haplotypes": 198, "sequence_length": 80_000,
              "mutation_rate": 1.5e-8, "recombination_rate": 1e-8, "classes": classes, "n_per_class": n_per_class,
              "sweep": {"onset": case["onset"], "start_frequency": 2.0e-5},
              "image": {"polarisation": "derived", "sort": "rows", "size": [64, 64]}}
    return Plan.from_config(config_with_defaults(SimulateConfig, "stages/simulate.schema.json", params), 2929)


def _time(plan, n: int) -> dict:
    """Make the plan's first n images in this process: seconds per image, attempts per image."""
    from ..simulate.shard import simulate_range

    t0 = time.perf_counter()
    out = simulate_range(plan, 0, n)
    seconds = time.perf_counter() - t0
    return {"images": n, "seconds": round(seconds, 2), "seconds_per_image": round(seconds / n, 4),
            "attempts_per_image": round(float(out["attempts"].mean()), 2),
            "mean_end_frequency": round(float(out["end_freq"].mean()), 3)}


@click.command("forward")
@click.option("--images", default=40, show_default=True, help="Sweep images per case (and neutral images).")
def command(images: int) -> None:
    """Seconds per forward-engine image on an inferred history, on one core; prints one JSON object."""
    from ..simulate.replicate import SimulationRefused

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            plan = _plan(Path(tmp), case, [200], images)
            entry: dict = {"engine": plan.engine, "scaling": plan.forward.scaling if plan.forward else None,
                           "onset": case["onset"], "history": f"{case['sizes'][0]} -> {case['sizes'][1]} diploids "
                                                              f"{case['change']} generations ago"}
            try:
                entry.update(_time(plan, images), all_conditioned=True)
            except SimulationRefused as exc:
                entry.update(all_conditioned=False, error=str(exc))
            out[name] = entry
        store = _plan(Path(tmp), CASES["genome_scan"], [0, 200], images)
        out["store"] = {"engine": store.engine, **_time(store, 2 * images)}
    spi = out["genome_scan"].get("seconds_per_image")
    result = {"seconds_per_image": spi, "target_seconds_per_image": TARGET_SECONDS_PER_IMAGE,
              "target_met": spi is not None and spi <= TARGET_SECONDS_PER_IMAGE
              and out["onset_1200"]["all_conditioned"], **out}
    click.echo(json.dumps(result))
