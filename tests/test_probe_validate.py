"""Probes of issue 25, points 4 and 5: ``hpcpop validate`` refuses what it can know in one line naming the file
and key (non-finite numbers, sizes past the schema's maxima, stores and models no stage makes, a preset too
deep for its images, storage that cannot be written); a task's own error fails its unit once, by name; a
stage that wrote no shard leaves no store, and a corrected manifest is never refused because of it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import write_yaml

from hpc_popgen.cli import main

# the attrs of a small store made by hand (as test_store.py makes them)
STORE_META = {"classes": [0.0, 200.0], "prior": {"kind": "classes", "n_per_class": 2},
              "demography": {"name": "constant"}, "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
              "image": {"polarisation": "major_minor", "maf": 0.0, "sort": "rows", "size": [16, 16], "resize": "resize"},
              "stage_params": {}, "versions": {}, "seed": 1}
SIM = {"store": "s.zarr", "classes": [0, 200], "n_per_class": 4, "n_haplotypes": 16, "sequence_length": 5000,
       "image": {"size": [32, 32]}, "shard_images": 4}


def manifest(**sim) -> dict:
    """simulate -> train -> evaluate on 32x32 images: valid as it is."""
    return {"name": "probe", "seed": 1, "profile": "local", "storage": "st", "stages": [
        {"name": "simulate", "simulate": {**SIM, **sim}},
        {"name": "train", "train": {"store": "s.zarr", "model": {"preset": "binary"}, "epochs": 1}},
        {"name": "evaluate", "evaluate": {"model": "train"}}]}


def validate(path: Path) -> tuple[int, str]:
    """``hpcpop validate PATH`` in this process: exit code and everything it printed."""
    result = CliRunner().invoke(main, ["validate", str(path)])
    return result.exit_code, result.output


def one_error_line(code: int, output: str) -> str:
    """The one ``Error:`` line of a refused command: exit 2, nothing else printed, no traceback."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), (code, output)
    assert "Traceback" not in output
    return lines[0]


def test_the_probe_manifest_is_valid(tmp_path):
    code, output = validate(write_yaml(tmp_path / "job.yaml", manifest()))
    assert code == 0 and "valid; 3 stage(s)" in output, output


def drop_stage(data: dict, name: str) -> dict:
    return {**data, "stages": [s for s in data["stages"] if s["name"] != name]}


def set_key(data: dict, stage: int, kind: str, **values) -> dict:
    """A copy of ``data`` with keys of one stage set (None: removed)."""
    out = yaml.safe_load(yaml.safe_dump(data))
    params = out["stages"][stage][kind]
    params.update(values)
    for key in [k for k, v in values.items() if v is None]:
        del params[key]
    return out


# (case id, manifest text edit (old, new) or a function of the data, key path in the line, what the line says)
TEXT_CASES = [
    ("mutation_rate_nan", ("sequence_length: 5000", "sequence_length: 5000\n    mutation_rate: .nan"),
     "stages[0].simulate.mutation_rate", "nan is not a finite number"),
    ("class_nan", ("- 200", "- .nan"), "stages[0].simulate.classes[1]", "nan is not a finite number"),
    ("reference_ne_nan", ("sequence_length: 5000", "sequence_length: 5000\n    reference_ne: .nan"),
     "stages[0].simulate.reference_ne", "nan is not a finite number"),
    ("start_frequency_nan", ("sequence_length: 5000", "sequence_length: 5000\n    sweep: {start_frequency: .nan}"),
     "stages[0].simulate.sweep.start_frequency", "nan is not a finite number"),
    ("sequence_length_inf", ("sequence_length: 5000", "sequence_length: .inf"),
     "stages[0].simulate.sequence_length", "inf is not a finite number"),
    ("recombination_minus_inf", ("sequence_length: 5000", "sequence_length: 5000\n    recombination_rate: -.inf"),
     "stages[0].simulate.recombination_rate", "-inf is not a finite number"),
    ("overflowing_float", ("sequence_length: 5000", "sequence_length: 1e400"),
     "stages[0].simulate.sequence_length", "inf is not a finite number"),
    ("n_per_class_huge", ("n_per_class: 4", "n_per_class: 99999999999999999999999"),
     "stages[0].simulate.n_per_class", "is greater than the maximum of 1000000000"),
]


@pytest.mark.parametrize("old,new,key,says", [c[1] + c[2:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_non_finite_and_huge_values_are_one_line_at_validate(tmp_path, old, new, key, says):
    text = yaml.safe_dump(manifest(), sort_keys=False)
    assert old in text
    path = tmp_path / "job.yaml"
    path.write_text(text.replace(old, new, 1))
    line = one_error_line(*validate(path))
    assert line.startswith(f"Error: {path}: {key}: ") and says in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"], "validate wrote nothing"


def demography_stage(**values) -> dict:
    stage = {"input": {"afs": str(Path(__file__).resolve().parent.parent / "hpc_popgen" / "data" / "YRI_CEU.fs")},
             "initial_structure": [1, 1], "final_structure": [1, 1]}
    stage.update(values)
    return {"name": "demography", "demography": stage}


DATA_CASES = [
    ("total_images", lambda d: set_key(d, 0, "simulate", classes=list(range(0, 2000, 10)), n_per_class=10 ** 8),
     "stages[0].simulate.n_per_class", "20,000,000,000 images in all; at most 1,000,000,000"),
    ("too_many_shards", lambda d: set_key(d, 0, "simulate", n_per_class=10 ** 6, shard_images=1, chunk_images=1),
     "stages[0].simulate.n_per_class", "are 2,000,000 shards (Dask tasks); at most 1,000,000"),
    ("prior_n_huge", lambda d: set_key(d, 0, "simulate", classes=None, n_per_class=None, prior={"max": 400, "n": 10 ** 12}),
     "stages[0].simulate.prior.n", "is greater than the maximum of 1000000000"),
    ("epochs_huge", lambda d: set_key(d, 1, "train", epochs=10 ** 9), "stages[1].train.epochs", "maximum of 100000"),
    ("null_chromosomes_huge", lambda d: {**d, "stages": [{"name": "scan", "scan": {
        "vcf": "x.vcf", "model": "m", "null": {"chromosomes": 10 ** 7}}}]},
     "stages[0].scan.null.chromosomes", "maximum of 10000"),
    ("batch_size_huge", lambda d: set_key(d, 2, "evaluate", batch_size=10 ** 7), "stages[2].evaluate.batch_size",
     "maximum of 65536"),
    ("shuffle_buffer_huge", lambda d: set_key(d, 1, "train", shuffle_buffer=10 ** 12), "stages[1].train.shuffle_buffer",
     "maximum of 10000000"),
    ("window_huge", lambda d: {**d, "stages": [{"name": "scan", "scan": {"vcf": "x.vcf", "model": "m",
                                                                          "window": {"size": 10 ** 12}}}]},
     "stages[0].scan.window.size", "maximum of 1000000000"),
    ("max_evals_huge", lambda d: {**d, "stages": [demography_stage(ga={"max_evals": 10 ** 20})]},
     "stages[0].demography.ga.max_evals", "maximum of 100000000"),
    ("ga_size_huge", lambda d: {**d, "stages": [demography_stage(ga={"size": 10 ** 9})]},
     "stages[0].demography.ga.size", "maximum of 10000"),
    ("fixed_parameter_nan", lambda d: {**d, "stages": [demography_stage(fixed={"g1_1": float("nan")})]},
     "stages[0].demography.fixed.g1_1", "nan is not a finite number"),
    ("train_store_no_stage_makes", lambda d: set_key(d, 1, "train", store="other.zarr"),
     "stages[1].train.store", "no image store at "),
    ("train_store_made_later", lambda d: {**d, "stages": [d["stages"][1], d["stages"][0]]},
     "stages[0].train.store", "'s.zarr' is written by stage 'simulate', which runs after this one"),
    ("train_store_in_run_dir_no_stage_makes", lambda d: set_key(d, 1, "train", store="@run/x.zarr"),
     "stages[1].train.store", "no earlier simulate stage of this manifest writes it"),
    ("evaluate_model_no_train_stage", lambda d: drop_stage(d, "train"),
     "stages[1].evaluate.model", "no stage named 'train' (stages: simulate, evaluate) and no model directory at "),
    ("evaluate_store_no_stage_makes", lambda d: set_key(d, 2, "evaluate", store="gone.zarr"),
     "stages[2].evaluate.store", "no image store at "),
    ("binary_preset_on_16x16", lambda d: set_key(d, 0, "simulate", image={"size": [16, 16]}),
     "stages[1].train.model.preset", "preset 'binary': 3 convolution blocks need images of at least"),
    ("explicit_filters_on_16x16", lambda d: set_key(set_key(d, 0, "simulate", image={"size": [16, 16]}), 1, "train",
                                                     model={"filters": [8, 8, 8, 8]}),
     "stages[1].train.model.filters", "4 convolution blocks need images of at least"),
    ("storage_is_a_file", lambda d: {**d, "storage": "job.yaml"}, "storage", "job.yaml is not a folder"),
    ("storage_under_a_file", lambda d: {**d, "storage": "job.yaml/runs"}, "storage",
     "cannot be made: "),
    ("storage_unknown_protocol", lambda d: {**d, "storage": "nosuchproto://bucket/runs"}, "storage",
     "'nosuchproto' is not a protocol fsspec knows"),
]


@pytest.mark.parametrize("edit,key,says", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_what_validate_can_know_is_one_line_naming_the_key(tmp_path, edit, key, says):
    path = write_yaml(tmp_path / "job.yaml", edit(manifest()))
    line = one_error_line(*validate(path))
    assert line.startswith(f"Error: {path}: {key}: ") and says in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml"], "validate wrote nothing"


NAN, INF = float("nan"), float("inf")
SCAN = {"name": "scan", "scan": {"vcf": "x.vcf", "model": "train"}}
# (stage index, kind, values) put into the probe manifest (a scan appended), and the key the line must name
NON_FINITE = [
    (1, "train", {"model": {"learning_rate": NAN}}, "stages[1].train.model.learning_rate", "nan"),
    (1, "train", {"labels": {"mode": "binary", "sd": INF}}, "stages[1].train.labels.sd", "inf"),
    (1, "train", {"early_stopping": {"min_delta": -INF}}, "stages[1].train.early_stopping.min_delta", "-inf"),
    (2, "evaluate", {"hpdi_level": NAN}, "stages[2].evaluate.hpdi_level", "nan"),
    (0, "simulate", {"split": {"validation": NAN}}, "stages[0].simulate.split.validation", "nan"),
    (0, "simulate", {"image": {"size": [32, 32], "maf": NAN}}, "stages[0].simulate.image.maf", "nan"),
    (0, "simulate", {"sweep": {"onset": INF}}, "stages[0].simulate.sweep.onset", "inf"),
    (3, "scan", {"fdr": NAN}, "stages[3].scan.fdr", "nan"),
    (3, "scan", {"null": {"reference_ne": NAN}}, "stages[3].scan.null.reference_ne", "nan"),
    (3, "scan", {"min_accessible": -INF}, "stages[3].scan.min_accessible", "-inf"),
]


@pytest.mark.parametrize("index,kind,values,key,value", NON_FINITE, ids=[c[3] for c in NON_FINITE])
def test_no_stage_takes_a_non_finite_number(tmp_path, index, kind, values, key, value):
    data = manifest()
    data["stages"].append(SCAN)
    path = write_yaml(tmp_path / "job.yaml", set_key(data, index, kind, **values))
    line = one_error_line(*validate(path))
    assert line == f"Error: {path}: {key}: {value} is not a finite number", line


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_s3_storage_without_s3fs_is_one_line(tmp_path):
    path = write_yaml(tmp_path / "job.yaml", {**manifest(), "storage": "s3://bucket/runs"})
    line = one_error_line(*validate(path))
    assert line.startswith(f"Error: {path}: storage: s3://bucket/runs: the s3:// protocol needs a package") \
        and "s3fs" in line, line


def test_read_only_storage_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root: permissions do not bind; a read-only mount would
            pytest.skip("running as root: a 0555 folder is writable")
        path = write_yaml(tmp_path / "job.yaml", {**manifest(), "storage": str(ro / "runs")})
        line = one_error_line(*validate(path))
        assert f"storage: {ro / 'runs'} cannot be made: {ro} is not writable by this user" in line, line
    finally:
        ro.chmod(0o755)


def test_stores_and_models_that_exist_are_checked_too(tmp_path):
    """A train store that is a plain folder, and an evaluate store whose images are not the model's size."""
    from hpc_popgen.store import create_store

    (tmp_path / "st" / "plain").mkdir(parents=True)
    data = set_key(drop_stage(manifest(), "simulate"), 0, "train", store="plain")
    line = one_error_line(*validate(write_yaml(tmp_path / "job.yaml", data)))
    assert "stages[0].train.store: " in line and "plain: no image store here" in line, line

    create_store(str(tmp_path / "st" / "small.zarr"), STORE_META, n_images=4, image_shape=(16, 16), shard_images=4)
    data = set_key(manifest(), 2, "evaluate", store="small.zarr")
    line = one_error_line(*validate(write_yaml(tmp_path / "job2.yaml", data)))
    assert "stages[2].evaluate.store: 'small.zarr' holds 16x16 images; the model of stage 'train' takes 32x32" in line

    model = tmp_path / "model"
    model.mkdir()
    data = set_key(drop_stage(manifest(), "train"), 1, "evaluate", model=str(model))
    line = one_error_line(*validate(write_yaml(tmp_path / "job3.yaml", data)))
    assert f"stages[1].evaluate.model: {model}: not a trained model (no hpcpop_model.json" in line, line


# --- errors once, by name: a real one-worker LocalCluster -------------------------------------------------

@pytest.fixture(scope="module")
def run_and_cluster(tmp_path_factory):
    """A run directory of the probe manifest (nothing run) and one LocalCluster worker on loopback."""
    from hpc_popgen.cluster.clusters import start_cluster
    from hpc_popgen.pipeline import create_run, recorded_job

    tmp = tmp_path_factory.mktemp("units")
    prof = write_yaml(tmp / "profile.yaml", {"kind": "local", "cluster": {"n_workers": 1, "threads_per_worker": 2},
                                             "dashboard_address": "127.0.0.1:0"})
    rd = create_run(write_yaml(tmp / "job.yaml", {**manifest(), "profile": str(prof)}), run_dir=tmp / "run")
    job = recorded_job(rd)
    assert job.profile.task_retries > 0, "retries must be on for the probe to mean anything"
    handle = start_cluster(job.profile, None, name="probe")
    yield rd, job, handle
    handle.close()


def stage_context(run_and_cluster, index: int):
    from hpc_popgen.stages.base import StageContext

    rd, job, handle = run_and_cluster
    return StageContext(rd, job, job.stages[index], cluster_factory=lambda _stage: handle, show_progress=False)


def test_a_task_error_fails_its_unit_once_by_name(run_and_cluster, tmp_path, capfd):
    from hpc_popgen.stages.base import Unit

    calls = tmp_path / "calls"

    def task(i: int) -> int:  # pickled by value: the worker needs no test module
        with open(calls, "a") as fh:
            fh.write(f"{i}\n")
        if i == 1:
            raise ValueError(f"mutation_rate: nan\n   (replicate {i})")
        return i

    ctx = stage_context(run_and_cluster, 1)
    result = ctx.run_units([Unit(id=f"u-{i}", args=(i,)) for i in range(3)], task)
    assert sorted(calls.read_text().split()) == ["0", "1", "2"], "each task ran once: a task's error is not retried"
    assert (result.units_done, result.failures) == (2, 1)
    assert result.error == "u-1: ValueError: mutation_rate: nan (replicate 1)"
    failed = ctx.ledger.failures()
    assert list(failed) == ["u-1"] and failed["u-1"]["attempts"] == 1
    assert failed["u-1"]["error"] == "ValueError: mutation_rate: nan (replicate 1)"
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Compute Failed" not in err, err


def test_run_task_raises_our_errors_as_they_were_and_others_as_one_line(run_and_cluster, tmp_path):
    import math

    from hpc_popgen.errors import ParamError, StageFailed, StoreError
    from hpc_popgen.store import open_store
    from hpc_popgen.train.models import PRESETS

    ctx = stage_context(run_and_cluster, 2)
    missing = tmp_path / "missing.zarr"
    with pytest.raises(StoreError, match=rf"^{missing}: no image store here"):
        ctx.run_task(open_store, str(missing), key="probe-open")
    with pytest.raises(StageFailed, match=r"^task probe-sqrt: ValueError: math domain error$"):
        ctx.run_task(math.sqrt, -1.0, key="probe-sqrt")
    with pytest.raises(ParamError, match=r"^preset: unknown preset 'nope'") as err:  # key and reason pickled
        ctx.run_task(PRESETS.get, "nope", key="probe-preset")
    assert (err.value.key, err.value.within("model").key) == ("preset", "model.preset")
    assert ctx.run_task(math.sqrt, 4.0, key="probe-ok")[0] == 2.0


def test_no_shard_written_leaves_no_store_and_a_corrected_manifest_is_not_refused(run_and_cluster, tmp_path):
    from hpc_popgen.errors import StoreError
    from hpc_popgen.stages.base import Unit
    from hpc_popgen.stages.simulate import open_or_create_store, run_shards
    from hpc_popgen.store import store_exists
    from hpc_popgen.store.layout import empty_shard

    ctx = stage_context(run_and_cluster, 0)
    cfg = ctx.config
    url = str(tmp_path / "s.zarr")
    store = open_or_create_store(url, STORE_META, 8, (32, 32), cfg)

    def fail(url: str, shard: int) -> None:
        raise ValueError(f"shard {shard}: nan")

    result = run_shards(ctx, url, store, [Unit(id=f"shard-{i:05d}", args=(url, i)) for i in range(2)], fail)
    assert (result.units_done, result.failures) == (0, 2)
    assert not store_exists(url), "a stage that wrote no shard leaves no store behind"

    open_or_create_store(url, STORE_META, 8, (32, 32), cfg)  # e.g. a driver killed before its first shard
    corrected = {**STORE_META, "classes": [0.0, 300.0]}
    store = open_or_create_store(url, corrected, 8, (32, 32), cfg)
    assert store.meta["classes"] == [0.0, 300.0], "an empty store of other parameters is replaced"
    store.write_shard(0, empty_shard(4, (32, 32)))
    with pytest.raises(StoreError, match="made with different parameters.*differs in: classes"):
        open_or_create_store(url, STORE_META, 8, (32, 32), cfg)
    assert store_exists(url), "a store with a written shard is never removed"


@pytest.mark.parametrize("store,says", [
    ("job.yaml", "is a file, not an image store"),
    ("notes", "no image store here (not a Zarr v3 group); remove it or choose another `store` path"),
    ("nosuchproto://bucket/s.zarr", "'nosuchproto' is not a protocol fsspec knows"),
])
def test_simulate_store_that_cannot_be_written_is_one_line(tmp_path, store, says):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine\n")
    path = write_yaml(tmp_path / "job.yaml", {**set_key(manifest(), 0, "simulate", store=store), "storage": "."})
    line = one_error_line(*validate(path))
    assert line.startswith(f"Error: {path}: stages[0].simulate.store: ") and says in line, line
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine\n"
