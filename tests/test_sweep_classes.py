"""Classes that name their own sweep (issue 27, item 1): hard, soft and partial sweeps beside neutral images in
one store, each image's sweep recorded and re-simulated exactly; one engine for every class; bad classes
refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from helpers import YRI_CEU
from test_simulate_stage import run_job, write_job

from hpc_popgen.cli import main
from hpc_popgen.config import config_with_defaults
from hpc_popgen.errors import LabelStoreError, ManifestError, ParamError
from hpc_popgen.pipeline import prepare
from hpc_popgen.simulate import Plan
from hpc_popgen.simulate.config import SimulateConfig
from hpc_popgen.simulate.trajectory import frequency_after
from hpc_popgen.store import open_store
from hpc_popgen.train.labels import LabelParams, labels_for_store

ONE_COPY = 5e-5  # 1/(2N) of the constant model's 10,000 diploids: a new allele
HARD = {"name": "hard", "S": 200}
SOFT = {"name": "soft", "S": 200, "start_frequency": 0.05}
PARTIAL = {"name": "partial", "S": 200, "end_frequency": 0.6}
BASE = {"demography": "constant", "n_haplotypes": 32, "sequence_length": 20_000, "n_per_class": 3,
        "shard_images": 6, "chunk_images": 3, "sweep": {"start_frequency": ONE_COPY, "onset": 2000},
        "image": {"size": [32, 32], "sort": "rows"}}


def config(classes: list, **kw) -> SimulateConfig:
    return config_with_defaults(SimulateConfig, "stages/simulate.schema.json",
                                {"store": "x", **BASE, "classes": classes, **kw})


def test_numbers_and_mappings_become_named_classes_and_bad_ones_name_their_item():
    specs = config([0, HARD, SOFT]).class_specs()
    assert [(c.name, c.S, c.own_sweep) for c in specs] == [("S=0", 0, False), ("hard", 200, False), ("soft", 200, True)]
    assert specs[2].start_frequency == 0.05 and specs[2].onset is None
    for classes, key, words in [
        ([0, 0.0], "classes[1]", "the name 'S=0' is already a class's"),
        ([HARD, {**SOFT, "name": "hard"}], "classes[1]", "already a class's"),
        ([0, {"name": "n", "S": 0, "onset": 10}], "classes[1]", "neutral (S = 0): it takes no sweep settings"),
        ([{**PARTIAL, "onset": 300}], "classes[0].onset", "give one of onset and end_frequency"),
    ]:
        with pytest.raises(ParamError) as err:
            config(classes)
        assert err.value.key == key and words in err.value.reason


def test_each_class_gets_its_sweep_and_one_engine_makes_them_all():
    # msprime where every class allows it: a partial sweep's onset is when the trajectory reaches 0.6
    plan = Plan.from_config(config([0, HARD, PARTIAL]), 1)
    assert plan.engine == "msprime" and plan.classes == (0, 200, 200) and plan.class_names == ("S=0", "hard", "partial")
    hard, partial = plan.part(1), plan.part(2)
    assert hard.sim.onset == 2000 and partial.sim.onset < 2000
    assert frequency_after(200 / 10_000, ONE_COPY, partial.sim.onset) == pytest.approx(0.6)
    assert partial.sim.timing(200).end_frequency == pytest.approx(0.6) and partial.sim.timing(200).end_time == 0
    assert plan.part(-1) is plan and Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    # a soft sweep needs the forward engine: then every class runs on it, with one scaling factor
    both = Plan.from_config(config([0, HARD, SOFT]), 1)
    assert both.engine == "fwdpy11" and {p.engine for p in both.parts} == {"fwdpy11"}
    assert len({p.forward.scaling for p in both.parts}) == 1
    assert both.part(2).forward.start_frequency == 0.05 and both.part(1).forward.start_frequency == ONE_COPY
    record = both.engine_record()["classes"]
    assert record["soft"]["start_frequency"] == 0.05 and record["hard"]["end_frequency"] == 1.0
    # a de novo partial sweep cannot be conditioned on the forward engine: refused, naming the class
    with pytest.raises(ParamError) as err:
        Plan.from_config(config([0, SOFT, PARTIAL]), 1)
    assert err.value.key == "classes[2].end_frequency" and "standing variation" in err.value.reason
    with pytest.raises(ParamError) as err:  # explicitly msprime: the soft class names why not
        Plan.from_config(config([0, SOFT], engine="msprime"), 1)
    assert err.value.key == "classes[1].start_frequency" and "class 'soft'" in err.value.reason


def test_validate_names_the_class_at_fault_before_any_work(tmp_path):
    job = write_job(tmp_path, "bad", {**BASE, "store": "x.zarr", "classes": [0, {**PARTIAL, "onset": 5}]})
    with pytest.raises(ManifestError, match=r"stages\[0\]\.simulate\.classes\[1\]\.onset: a partial sweep's onset"):
        prepare(job)
    job = write_job(tmp_path, "late", {**BASE, "store": "x.zarr", "classes": [0, {**HARD, "end_frequency": 0.00001}]})
    with pytest.raises(ManifestError, match=r"classes\[1\]\.end_frequency: class 'hard': 1e-05 must be above"):
        prepare(job)
    assert not (tmp_path / "stores").exists()


def test_a_store_of_neutral_hard_soft_and_partial_sweeps_records_and_redraws_each(tmp_path):
    partial = {**PARTIAL, "start_frequency": 0.05}  # from standing variation: the forward engine conditions it
    small = {**BASE, "n_per_class": 2, "shard_images": 4, "chunk_images": 2}
    _, report = run_job(tmp_path, "kinds", {**small, "store": "kinds.zarr", "classes": [0, HARD, SOFT, partial]})
    assert report["stages"][0]["status"] == "completed"
    url = tmp_path / "stores" / "kinds.zarr"
    st = open_store(url)
    assert st.meta["class_names"] == ["S=0", "hard", "soft", "partial"] and st.classes == [0, 200, 200, 200]
    assert st.meta["engine"]["name"] == "fwdpy11" and len(st.meta["class_plans"]) == 4
    ci, onset, start, end = (st.read(k) for k in ("class_index", "onset", "start_freq", "end_freq"))
    assert np.bincount(ci).tolist() == [2, 2, 2, 2]
    assert (end[ci == 1] == 1).all() and (end[ci == 2] == 1).all()  # complete sweeps
    assert np.all(np.abs(start[ci == 2] - 0.05) <= 0.05 * 0.1 + 1e-9)  # soft: near 5% at the onset
    assert np.all(np.abs(end[ci == 3] - 0.6) <= 0.05 + 1e-9) and (onset[ci == 3] < 2000).all()  # partial today
    assert (onset[ci == 1] == 2000).all()
    for index in (1, 2, 3):  # one image of each sweep, re-simulated from its class's settings
        res = CliRunner().invoke(main, ["show", str(url), "--png", str(tmp_path / f"{index}.png"), "--index", str(index)])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout.strip().splitlines()[-1])
        assert out["remade_equals_stored"] is True and out["class"] == st.meta["class_names"][index]
    # classes of S cannot tell hard from soft: refused, naming both; binary labels train as before
    with pytest.raises(LabelStoreError, match=r"classes 'hard' and 'soft' share S = 200"):
        labels_for_store(LabelParams(mode="classes", n_classes=None, range=None, encoding="categorical", sd=1.0,
                                     k=1), st, stream=False)
    binary = labels_for_store(LabelParams(mode="binary", n_classes=None, range=None, encoding="categorical",
                                          sd=1.0, k=1), st, stream=False)
    assert binary.mode == "binary"


def test_classes_are_checked_at_validate_when_the_history_comes_from_a_demography_stage(tmp_path):
    """A history inferred by an earlier stage does not exist at validate: the classes' own settings are
    checked all the same."""
    job = write_job(tmp_path, "later", {**BASE, "store": "x.zarr", "demography": {
        "from_stage": "demography", "structure": "best", "population": "CEU"},
        "classes": [0, {**HARD, "end_frequency": 0.00001}]})
    data = yaml.safe_load(job.read_text())
    data["stages"].insert(0, {"name": "demography", "demography": {
        "input": {"afs": str(YRI_CEU), "populations": ["YRI", "CEU"]}, "initial_structure": [1, 1],
        "final_structure": [1, 1]}})
    job.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ManifestError, match=r"stages\[1\]\.simulate\.classes\[1\]\.end_frequency: class 'hard'"):
        prepare(job)


def test_classes_of_s_on_classes_that_share_s_are_refused_at_validate(tmp_path):
    job = write_job(tmp_path, "shared", {**BASE, "store": "k.zarr", "classes": [0, HARD, SOFT]})
    data = yaml.safe_load(job.read_text())
    train = {"store": "k.zarr", "model": {"preset": "multiclass"}, "labels": {"mode": "classes"}}
    data["stages"].append({"name": "train", "train": train})
    job.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ManifestError, match=r"stages\[1\]\.train\.labels\.mode: classes 'hard' and 'soft' share "
                                            r"S = 200.*\(stage 'simulate' writes 'k.zarr'\)"):
        prepare(job)
    data["stages"][1]["train"] = {**train, "model": {"preset": "binary"}, "labels": {"mode": "binary"}}
    job.write_text(yaml.safe_dump(data, sort_keys=False))
    prepare(job)  # binary labels: sweep or not
