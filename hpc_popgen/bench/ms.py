"""``hpcpop bench ms``: ms files -> images per second per core, parsing counted (the ms source's reader + image step).

The input is Fig. 3 replicates written as ms text (marth3, S in {0, 200, 300, 400}, 128 haplotypes,
80 kb; tskit's ms writer); images are 128x128, rows sorted. Timed per file: read the bytes, parse them
(:func:`hpc_popgen.readers.msformat.parse_ms`) and image every replicate, as a shard task of a
``source: {ms: ...}`` stage does. Rates are per CPU-second of this process. Prints ONE JSON object.
"""

from __future__ import annotations

import json
import os
import tempfile

import click

from .simulate import Clock, fig3_plan, make_ms_text


def run_bench(n_reps: int = 200, n_files: int = 4, repeats: int = 5) -> dict:
    """Write ``n_files`` ms files of ``n_reps`` replicates, then time parse + image over ``repeats`` passes."""
    from ..images import image_and_sites, make_image
    from ..readers import read_ms
    from ..readers.msformat import parse_ms, read_range

    plan = fig3_plan()
    cfg = plan.image
    with tempfile.TemporaryDirectory(prefix="hpcpop-bench-ms-") as tmp:
        paths = []
        for k in range(n_files):
            path = os.path.join(tmp, f"fig3_{k}.ms")
            with open(path, "w") as fh:
                fh.write(make_ms_text(n_reps, offset=10_000_000 + k * n_reps))
            paths.append(path)
        warm = parse_ms(read_range(paths[0]), 128, paths[0])
        for m, p in zip(warm.matrices[:20], warm.positions[:20], strict=True):  # per-width resize operators
            image_and_sites(m, p, cfg, centre=0.5)
        total, parse_only, old = Clock(), Clock(), Clock()
        n = sites = 0
        for _ in range(repeats):
            for path in paths:
                with total:
                    reps = parse_ms(read_range(path), 128, path)
                    for m, p in zip(reps.matrices, reps.positions, strict=True):
                        image_and_sites(m, p, cfg, centre=0.5)
                with parse_only:
                    parse_ms(read_range(path), 128, path)
                n += len(reps)
                sites += sum(m.shape[1] for m in reps.matrices)
        with old:  # the line-by-line reader (predict --ms) + make_image, one pass, for comparison
            for path in paths:
                for h in read_ms(path):
                    make_image(h.matrix, h.positions, cfg, centre=0.5)
        n_old = n // repeats
    return {"ms_images_per_s": round(n / total.cpu, 1), "ms_images_per_s_wall": round(n / total.wall, 1),
            "ms_parse_replicates_per_s": round(n / parse_only.cpu, 1),
            "ms_parse_us_per_replicate": round(1e6 * parse_only.cpu / n, 1),
            "line_reader_images_per_s": round(n_old / old.cpu, 1),
            "target_ms_images_per_s": 2500, "meets_target": bool(n / total.cpu >= 2500),
            "images": n, "files": n_files, "replicates_per_file": n_reps, "passes": repeats,
            "mean_sites_per_replicate": round(sites / n, 1), "n_haplotypes": 128, "sequence_length": 80_000,
            "image_shape": list(cfg.size), "sort": cfg.sort,
            "timing": "per CPU-second of this process (read + parse + image); *_wall: per wall-clock second",
            "cpu_count": os.cpu_count()}


@click.command("ms")
@click.option("--replicates", "n_reps", default=200, show_default=True, help="Replicates per ms file.")
@click.option("--files", "n_files", default=4, show_default=True, help="ms files.")
@click.option("--repeats", default=5, show_default=True, help="Timed passes over the files.")
def command(n_reps: int, n_files: int, repeats: int) -> None:
    """ms files -> 128x128 images per second per core, parsing counted; target >= 2,500."""
    res = run_bench(n_reps, n_files, repeats)
    click.echo(json.dumps(res))
