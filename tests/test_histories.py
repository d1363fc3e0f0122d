"""Histories for the simulate stage: catalogue, demes files, stdpopsim models, a demography stage's output."""

from __future__ import annotations

import json

import demes
import pytest
from helpers import THREE_DEMES

from hpc_popgen.errors import ParamError
from hpc_popgen.simulate.demographies import graph_from_model, linear_as_exponential, msms_model, msprime_demography
from hpc_popgen.simulate.histories import (
    History,
    demes_history,
    stage_history,
    stdpopsim_history,
)


def test_catalogue_models_as_graphs_keep_their_epochs():
    g = graph_from_model(msms_model("marth3", 10_000))
    sizes = [(e.start_time, e.end_time, e.start_size) for e in g.demes[0].epochs]
    assert sizes == [(float("inf"), 3500, 10_000), (3500, 3000, 2000), (3000, 0, 20_000)]


def test_demes_file_with_several_populations_needs_one_named(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(THREE_DEMES)
    h = demes_history(path, "B")
    assert h.population == "B" and h.n_populations == 3 and h.present_size() == 6000
    assert h.size_at(2000) == pytest.approx(1000) and h.min_size_within(600) == pytest.approx(3000)
    events = h.events_in(0, 600)
    assert any("exponential" in e for e in events) and any("migration B -> C" in e or "migration C -> B" in e
                                                           for e in events)
    assert "C: founded at 2000 generations" in demes_history(path, "C").events_in(1900, 3000)
    assert demes_history(path, "C").events_in(2000, 3000) == []  # (t0, t1]: the founding is at t0


@pytest.mark.parametrize("population, key, reason", [
    (None, "population", r"3 populations \(A, B, C\): name the one"),
    ("Z", "population", r"'Z' is not a population of .* \(populations: A, B, C\)"),
    ("A", "population", r"'A' in .* ends 2000 generations ago"),
])
def test_bad_population_names_the_key(tmp_path, population, key, reason):
    path = tmp_path / "two.yaml"
    path.write_text(THREE_DEMES)
    with pytest.raises(ParamError, match=reason) as err:
        demes_history(path, population)
    assert err.value.key == key


def test_stdpopsim_model_from_the_catalogue():
    h = stdpopsim_history("HomSap/OutOfAfrica_3G09", "CEU")
    assert h.population == "CEU" and {d.name for d in h.graph.demes} == {"YRI", "CEU", "CHB"}
    assert h.graph.time_units == "generations" and h.source == "stdpopsim:HomSap/OutOfAfrica_3G09"
    with pytest.raises(ParamError, match=r"HomSap has no demographic model 'Nope' \(known: .*OutOfAfrica_3G09"):
        stdpopsim_history("HomSap/Nope", "CEU")


def test_history_from_a_demography_stage(tmp_path):
    stage = tmp_path / "demography"
    for name in ("structure-1-1", "structure-2-1"):
        (stage / name).mkdir(parents=True)
        g = demes.loads(THREE_DEMES.replace("B", "YRI").replace("C", "CEU"))
        demes.dump(g, stage / name / "model.demes.yaml")
    (stage / "results.json").write_text(json.dumps({"structures": [
        {"structure": [1, 1], "loglik": -1100.0, "aic": 2210.0, "dir": "structure-1-1"},
        {"structure": [2, 1], "loglik": -1066.0, "aic": 2150.0, "dir": "structure-2-1"}]}))
    h = stage_history(stage, "best", "CEU", "demography")
    assert h.source == "stage:demography/structure-2-1" and h.population == "CEU"
    assert stage_history(stage, "1-1", "YRI", "demography").source.endswith("structure-1-1")
    with pytest.raises(ParamError, match=r"'3-1' was not inferred by that stage \(structures: 1-1, 2-1\)"):
        stage_history(stage, "3-1", "CEU", "demography")


LINEAR = """
time_units: generations
demes:
- name: A
  epochs:
  - {end_time: 0, start_size: 10000}
- name: B
  start_time: 1500
  ancestors: [A]
  epochs:
  - {end_time: 200, start_size: 80, end_size: 7000, size_function: linear}
  - {end_time: 0, start_size: 7000}
migrations:
- demes: [A, B]
  rate: 1e-4
"""


def test_linear_growth_becomes_exponential_pieces_on_the_line(tmp_path):
    """GADMA's linear dynamic: the history keeps it (fwdpy11 runs it); msprime gets exponential pieces that
    meet the line at their ends and stay within 1e-4 of it in between."""
    path = tmp_path / "linear.yaml"
    path.write_text(LINEAR)
    h = demes_history(path, "B")
    pieces = linear_as_exponential(h.graph)["B"].epochs[:-1]
    assert {e.size_function for e in pieces} == {"exponential"} and len(pieces) == 226
    assert (pieces[0].start_time, pieces[0].start_size, pieces[-1].end_time, pieces[-1].end_size) == (1500, 80, 200, 7000)
    line = lambda t: 80 + (7000 - 80) * (1500 - t) / 1300  # noqa: E731
    for t in (1499.0, 1234.5, 801.0, 333.3, 200.5):
        assert h.size_at(t) == pytest.approx(line(t), rel=1e-12)
        assert History(graph=linear_as_exponential(h.graph), population="B", source="x").size_at(t) == pytest.approx(line(t), rel=1e-4)
    for e in pieces:
        assert e.end_size == pytest.approx(line(e.end_time), rel=1e-12)
    assert h.graph["B"].epochs[0].size_function == "linear"  # the history keeps it (fwdpy11 runs it as is)
    assert msprime_demography(h.graph).num_populations == 2  # msprime takes the pieces
