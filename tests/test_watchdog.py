"""The watchdog (issue 25, point 7): a stage where no unit finishes and no task runs for the profile's
``stall_timeout_s`` fails with one line instead of waiting forever; a task that runs, however long, is progress.

Real LocalClusters (threads, loopback), real ledgers; each case waits a few seconds at most.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import write_yaml

from hpc_popgen.errors import StageFailed

STALL_S = 1.5
MANIFEST = {"name": "dog", "seed": 1, "storage": "st", "stages": [
    {"name": "simulate", "simulate": {"store": "@run/s.zarr", "classes": [0, 200], "n_per_class": 4,
                                      "n_haplotypes": 16, "sequence_length": 5000, "image": {"size": [32, 32]}}}]}


@pytest.fixture
def stage(tmp_path):
    """``make(n_workers)``: a StageContext of a recorded run whose profile's stall timeout is 1.5 s, on its own
    LocalCluster (threads) of ``n_workers`` workers; clusters are closed afterwards."""
    from hpc_popgen.cluster.clusters import start_cluster
    from hpc_popgen.pipeline import create_run, recorded_job
    from hpc_popgen.stages.base import StageContext

    handles = []

    def make(n_workers: int = 1):
        prof = write_yaml(tmp_path / "profile.yaml", {
            "kind": "local", "dashboard_address": "127.0.0.1:0", "stall_timeout_s": STALL_S,
            "cluster": {"n_workers": n_workers, "threads_per_worker": 1, "processes": False}})
        rd = create_run(write_yaml(tmp_path / "job.yaml", {**MANIFEST, "profile": str(prof)}),
                        run_dir=tmp_path / f"run{len(handles)}")
        job = recorded_job(rd)
        assert job.profile.stall_timeout_s == STALL_S
        handle = start_cluster(job.profile, None, name="dog")
        handles.append(handle)
        return StageContext(rd, job, job.stages[0], cluster_factory=lambda _s: handle, show_progress=False), handle

    yield make
    for h in handles:
        h.close()


def nap(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def test_all_workers_gone_fails_the_stage_in_one_line_and_a_rerun_goes_on(stage):
    from hpc_popgen.stages.base import Unit

    ctx, handle = stage(1)
    units = [Unit(id=f"u-{i}", args=(i, 0.4)) for i in range(8)]

    def lose_workers() -> None:  # every worker leaves once two units are recorded (as SLURM jobs that end)
        deadline = time.monotonic() + 20
        while len(ctx.ledger.done()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        handle.cluster.scale(0)

    thread = threading.Thread(target=lose_workers, daemon=True)
    thread.start()
    start = time.monotonic()
    with pytest.raises(StageFailed) as info:
        ctx.run_units(units, nap)
    waited = time.monotonic() - start
    thread.join()
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("stage simulate: stalled: no unit finished and no task ran for ")
    assert "no Dask worker left" in line and "stall_timeout_s is 1.5" in line
    assert f"`hpcpop rerun {ctx.run_dir}` goes on from there" in line
    done = set(ctx.ledger.done())
    assert 2 <= len(done) < 8, done
    assert waited < 15, waited

    handle.cluster.scale(1)  # workers come back: the units without a record are done, nothing twice
    handle.client.wait_for_workers(1, timeout=20)
    result = ctx.run_units(units, nap)
    assert (result.units_done, result.failures) == (8, 0)


def test_tasks_no_worker_can_take_fail_the_stage(stage):
    """Workers are connected but none has the resource the tasks ask for: nothing ever runs."""
    from hpc_popgen.stages.base import Unit

    ctx, _ = stage(1)
    start = time.monotonic()
    with pytest.raises(StageFailed, match=r"stalled: .*\(1 worker\(s\) connected, none running a task; "
                                          r"the profile's stall_timeout_s is 1\.5\); 0/2 units finished"):
        ctx.run_units([Unit(id=f"u-{i}", args=(i, 0)) for i in range(2)], nap, resources={"GPU": 1})
    assert STALL_S <= time.monotonic() - start < 10
    assert not ctx.ledger.done()


def test_a_task_that_runs_longer_than_the_stall_timeout_is_progress(stage):
    from hpc_popgen.stages.base import Unit

    ctx, _ = stage(1)
    result = ctx.run_units([Unit(id="slow", args=(0, STALL_S + 1.0))], nap)
    assert (result.units_done, result.failures) == (1, 0)
    value, _where = ctx.run_task(nap, 1, STALL_S + 1.0, key="slow-task")
    assert value == 1


def test_a_single_task_with_no_worker_fails_too(stage):
    ctx, _ = stage(0)
    with pytest.raises(StageFailed, match=r"^stage simulate: stalled: .*no Dask worker left"):
        ctx.run_task(nap, 1, 0, key="lonely")


def test_demography_evaluations_with_no_worker_fail_too(stage):
    """The GA's evaluations wait in their own loop: the same watchdog guards it."""
    from hpc_popgen.demography.config import EvalTimeoutConfig
    from hpc_popgen.stages.base import Watchdog
    from hpc_popgen.stages.demography import DaskEvaluations

    def fitness(space, x, data, ev):
        return {"loglik": -float(x[0]), "theta": 1.0, "error": None, "job": None}

    ctx, _ = stage(0)
    evals = DaskEvaluations(lambda: ctx.client, "demography", None, None, 0,
                            EvalTimeoutConfig(multiple=5, floor_seconds=3), fn=fitness,
                            watchdog=Watchdog(ctx, ctx.profile.stall_timeout_s))
    evals.submit("island-00-eval-00000-000", None, [1.0])
    start = time.monotonic()
    with pytest.raises(StageFailed, match=r"^stage simulate: stalled: .*no Dask worker left"):
        list(evals.completed())
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("value,says", [
    (-1, "stall_timeout_s: -1 is less than the minimum of 0"),
    ("1h", "stall_timeout_s: '1h' is not of type 'number'"),
    (float("nan"), "stall_timeout_s: nan is not a finite number"),
    (10 ** 9, "stall_timeout_s: 1000000000 is greater than the maximum of 2592000"),
], ids=["negative", "text", "nan", "huge"])
def test_the_profile_key_is_checked(tmp_path, value, says):
    from click.testing import CliRunner

    from hpc_popgen.cli import main

    prof = write_yaml(tmp_path / "p.yaml", {"kind": "local", "stall_timeout_s": value})
    job = write_yaml(tmp_path / "job.yaml", {**MANIFEST, "profile": str(prof)})
    res = CliRunner().invoke(main, ["validate", str(job)])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("Error: ") and f"{prof}: {says}" in lines[0], lines[0]


def test_the_default_lives_in_the_schema():
    from hpc_popgen.cluster.profiles import resolve_profile
    from hpc_popgen.manifest import load_schema

    default = load_schema("profile.schema.json")["properties"]["stall_timeout_s"]["default"]
    assert default == 3600 and resolve_profile("local").stall_timeout_s == default
