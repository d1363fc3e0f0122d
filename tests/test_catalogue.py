"""Catalogue entries are data with sources: every entry has an id, a description and a cited DOI."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from hpc_popgen.errors import ParamError
from hpc_popgen.simulate.demographies import MSMS_MODELS, msms_model
from hpc_popgen.train.models import PRESETS

ENTRIES = [(c, e) for c in (MSMS_MODELS, PRESETS) for e in c]


@pytest.mark.parametrize("catalogue, entry", ENTRIES, ids=[f"{c.kind}:{e.id}" for c, e in ENTRIES])
def test_every_entry_is_described_and_cited(catalogue, entry):
    assert entry.id and entry.description and "\n" not in entry.description
    assert entry.citations and all(c.doi.startswith("10.") and c.year > 1900 for c in entry.citations)
    assert catalogue.get(entry.id) is entry


@pytest.mark.parametrize("catalogue", [MSMS_MODELS, PRESETS], ids=lambda c: c.kind)
def test_unknown_id_lists_the_valid_ones(catalogue):
    with pytest.raises(ParamError, match=r"unknown .*'nope' \(known: " + ", ".join(catalogue.ids())) as err:
        catalogue.get("nope")
    assert err.value.key == catalogue.key


def test_named_demographies_build():
    for entry in MSMS_MODELS:
        assert msms_model(entry.id, 10_000).epochs[0].start == 0


def test_cli_lists_both_catalogues_as_json():
    proc = run_cli("catalogue", "--json", check=True)
    got = json.loads(proc.stdout)
    assert [e["id"] for e in got["demography"]] == MSMS_MODELS.ids()
    assert [e["id"] for e in got["preset"]] == PRESETS.ids()
    assert all("doi:10." in c for e in got["preset"] for c in e["citations"])
