"""``hpcpop predict MODEL``: the posterior of S for a region (ms file, VCF region, or a saved image)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ..errors import InputDataError
from ..manifest import schema_default


@click.command()
@click.argument("model", type=click.Path(exists=True))
@click.option("--ms", "ms_file", type=click.Path(dir_okay=False), help="ms/msms output; every replicate is a region.")
@click.option("--vcf", "vcf_file", type=click.Path(dir_okay=False),
              help="Phased VCF/BCF, bgzipped with a tabix/CSI index (others get an indexed copy in "
                   "$HPCPOP_CACHE_DIR/vcf or ~/.cache/hpcpop/vcf). A model trained with derived "
                   "polarisation needs INFO/AA.")
@click.option("--region", help="With --vcf: CHROM:START-END (1-based, inclusive).")
@click.option("--samples", help="With --vcf: comma-separated sample names, or a file with one per line.")
@click.option("--mask", "mask_file", type=click.Path(dir_okay=False),
              help="With --vcf: BED of accessible sequence; sites outside it are dropped.")
@click.option("--min-accessible", default=schema_default("stages/scan.schema.json", "min_accessible"), show_default=True,
              type=click.FloatRange(0, 1),
              help="With --mask: refuse a region with a smaller accessible share.")
@click.option("--image", "image_file", type=click.Path(dir_okay=False), help="A .npy image (H, W) or stack (n, H, W).")
@click.option("--level", default=schema_default("stages/scan.schema.json", "hpdi_level"), show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="HPDI level.")
@click.option("--mc-samples", default=schema_default("predict.schema.json", "mc_samples"), show_default=True,
              type=click.IntRange(min=0), help="Monte Carlo samples for the sampled HPDI (0: none).")
@click.option("--seed", default=schema_default("predict.schema.json", "seed"), show_default=True,
              type=click.IntRange(min=0), help="Seed of the Monte Carlo sampling.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), help="Write a PNG of the (first) posterior.")
def predict(model: str, ms_file: str | None, vcf_file: str | None, region: str | None, samples: str | None,
            mask_file: str | None, min_accessible: float, image_file: str | None, level: float, mc_samples: int,
            seed: int, plot_file: str | None) -> None:
    """Print the posterior (MAP, mean, HPDI, Bayes factor) of S for each region as JSON."""
    given = [x for x in (ms_file, vcf_file, image_file) if x]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --ms, --vcf (with --region) or --image")
    if vcf_file and not region:
        raise click.UsageError("--vcf needs --region CHROM:START-END")
    if mask_file and not vcf_file:
        raise click.UsageError("--mask applies to --vcf input only")
    from ..infer.posterior import plot_posterior
    from ..infer.regions import images_from_haplotypes, summarize_images
    from ..train.saved import check_pixels, load_bundle

    # the input is read and checked before the model loads (TensorFlow): a bad file is refused at once
    names: list[str]
    if image_file:
        images = check_pixels(_load_npy(image_file), source=image_file)
        bundle = load_bundle(model)
        images = bundle.check_images(images, source=image_file)
        if len(images) == 0:
            raise InputDataError(f"{image_file}: holds no images (shape {list(np.shape(images))})")
        names = [f"{image_file}[{i}]" for i in range(len(images))]
    elif ms_file:
        from ..readers import read_ms

        regions = read_ms(ms_file)
        bundle = load_bundle(model)
        images = images_from_haplotypes(bundle, regions)
        names = [f"{ms_file} replicate {i + 1}" for i in range(len(regions))]
    else:
        from ..readers import read_vcf

        bundle = load_bundle(model)
        sample_arg: str | list[str] | None = samples
        if samples and not Path(samples).exists():
            sample_arg = [s.strip() for s in samples.split(",") if s.strip()]
        derived = bundle.image_config().polarisation == "derived"  # 1 must mean what it meant in training
        haps = read_vcf(vcf_file, region=region, samples=sample_arg, derived=derived, mask=mask_file,
                        min_accessible=min_accessible)
        images = images_from_haplotypes(bundle, [haps])
        names = [f"{vcf_file}:{region}"]
    results = summarize_images(bundle, images, level=level, mc_samples=mc_samples, seed=seed)
    for name, r in zip(names, results, strict=True):
        r["region"] = name
    if plot_file and results and "hpdi" in results[0]:
        plot_posterior(results[0], plot_file, title=names[0])
    click.echo(json.dumps({"model": bundle.path, "labels": bundle.labels.mode, "image": bundle.image,
                           "results": results}, indent=2))


def _load_npy(path: str) -> np.ndarray:
    """One array from a .npy file (no pickles); anything else (a .npz archive, text, an empty or truncated
    file) is one line naming the file."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file (click would print "Aborted!")
        raise InputDataError(f"{path}: not a readable .npy array: {exc or 'empty file'}") from None
    if not isinstance(data, np.ndarray):  # a .npz archive opens as a mapping of arrays
        data.close()
        raise InputDataError(f"{path}: not a readable .npy array: a .npz archive (save one array with numpy.save)")
    return data
