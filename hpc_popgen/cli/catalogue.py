"""``hpcpop catalogue``: the named demographies and network presets, with descriptions and citations."""

from __future__ import annotations

import json

import click

KINDS = ("demographies", "presets")


def _catalogues(kind: str | None) -> list:
    from ..simulate.demographies import MSMS_MODELS
    from ..train.models import PRESETS

    table = {"demographies": MSMS_MODELS, "presets": PRESETS}
    return [table[k] for k in KINDS if kind in (None, k)]


@click.command()
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--json", "as_json", is_flag=True, help="One JSON object: kind -> list of entries.")
def catalogue(kind: str | None, as_json: bool) -> None:
    """List named demographies (simulate's `demography`) and network presets (train's `model.preset`)."""
    cats = _catalogues(kind)
    if as_json:
        click.echo(json.dumps({c.kind: [{"id": e.id, "description": e.description,
                                         "citations": [str(x) for x in e.citations]} for e in c] for c in cats},
                              indent=2))
        return
    for c in cats:
        click.echo(f"{c.kind} (the `{c.key}` key):")
        for e in c:
            click.echo(f"  {e.id:<20} {e.description}")
            for cit in e.citations:
                click.echo(f"  {'':<20}   {cit.authors.split(',')[0]} et al. {cit.year}, doi:{cit.doi}")
