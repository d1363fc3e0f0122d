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
from hpc_popgen.cluster.forkserver import fork_local_workers
if sys.argv[1] != "default":
    dask.config.set({"distributed.worker.multiprocessing-method": sys.argv[1]})
first = fork_local_workers(tensorflow=sys.argv[2] == "tf")
again = fork_local_workers(tensorflow=False)
method = dask.config.get("distributed.worker.multiprocessing-method")
with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
    loaded = next(iter(c.run(lambda: sorted(m for m in ("tensorflow", "msprime") if m in sys.modules)).values()))
print(json.dumps({"first": first, "again": again, "method": method, "loaded": loaded}))
"""


def _run(method: str, tf: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, method, tf], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_that_trains_forks_workers_with_tensorflow_already_imported():
    out = _run("default", "tf")
    assert out == {"first": True, "again": False, "method": "forkserver", "loaded": ["msprime", "tensorflow"]}


def test_a_users_own_start_method_is_kept():
    out = _run("fork", "no")
    assert out["first"] is False and out["method"] == "fork"
