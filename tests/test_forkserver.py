"""Local workers fork from a server that imported what tasks need (hpc_popgen/cluster/forkserver.py): checked
in fresh interpreters, since this test process set it up already (conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import dask
from distributed import Client, LocalCluster
from hpc_popgen.cluster.forkserver import fork_local_workers, preload_for
if sys.argv[1] != "default":
    dask.config.set({"distributed.worker.multiprocessing-method": sys.argv[1]})
first = fork_local_workers(preload_for(sys.argv[2].split(",")))
again = fork_local_workers(preload_for([]))
method = dask.config.get("distributed.worker.multiprocessing-method")
with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
    loaded = next(iter(c.run(lambda: sorted(m for m in ("tensorflow", "msprime", "hpc_popgen.simulate.genotypes",
                                                        "moments") if m in sys.modules)).values()))
print(json.dumps({"first": first, "again": again, "method": method, "loaded": loaded}))
"""


def _run(method: str, kinds: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, method, kinds], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_that_trains_forks_workers_with_tensorflow_already_imported():
    out = _run("default", "simulate,train")
    assert out == {"first": True, "again": False, "method": "forkserver",
                   "loaded": ["hpc_popgen.simulate.genotypes", "msprime", "tensorflow"]}  # numba's kernels too


def test_a_demography_run_forks_workers_with_moments_and_nothing_it_does_not_use():
    out = _run("default", "demography")
    assert out["first"] is True and out["loaded"] == ["moments"]  # no TensorFlow, msprime or numba to wait for


def test_each_stage_kind_preloads_its_own_modules_once():
    from hpc_popgen.cluster.forkserver import BASE, preload_for

    assert preload_for([]) == BASE
    both = preload_for(["scan", "simulate", "train"], ["dadi"])
    assert len(both) == len(set(both)) and both[-1] == "dadi"
    assert {"msprime", "hpc_popgen.train.preimport"} <= set(both) and "moments" not in both


def test_a_users_own_start_method_is_kept():
    out = _run("fork", "simulate")
    assert out["first"] is False and out["method"] == "fork"


STARTED = """
import json, sys
import psutil
from hpc_popgen import pipeline
if sys.argv[1] == "validate":
    pipeline.prepare(sys.argv[2])
else:
    pipeline.create_run(sys.argv[2], run_dir=sys.argv[3])
servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
print(json.dumps({"servers": len(servers)}))
"""


def test_a_new_run_starts_the_workers_server_when_it_is_recorded(tmp_path, local_profile):
    """``create_run`` (submit) starts the preloading server once the job is valid and recorded, so that its
    imports overlap the driver's; ``prepare`` alone (``hpcpop validate``, or a job it refuses) starts nothing."""
    from test_platform_runs import manifest

    job = manifest(tmp_path, local_profile, n_per_class=2, shard_images=2)
    got = {}
    for what in ("validate", "create"):
        proc = subprocess.run([sys.executable, "-c", STARTED, what, str(job), str(tmp_path / "run")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got[what] = json.loads(proc.stdout.strip().splitlines()[-1])["servers"]
    assert got == {"validate": 0, "create": 1}
