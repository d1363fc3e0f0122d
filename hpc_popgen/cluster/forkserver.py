"""Local workers forked from one server process that has imported what tasks need, instead of each spawning
a fresh interpreter that imports distributed, numpy, msprime, zarr (and TensorFlow) again.

A LocalCluster's workers start with Dask's ``distributed.worker.multiprocessing-method`` (``spawn`` by
default). Under ``forkserver`` Python starts one server process per driver, imports the preload list there
once, and forks each worker from it, so a worker no longer pays those imports itself (TensorFlow's alone
took 6-8 s a process on our 2-core test machine; training, evaluation and scans import it). Dask supports
the method; its own test suite preloads the same way. A user's explicit ``fork`` or ``forkserver`` setting is left as it is.
"""

from __future__ import annotations

import logging
import multiprocessing

log = logging.getLogger(__name__)

BASE = ["distributed", "numpy", "pandas", "scipy", "msprime", "tskit", "zarr", "hpc_popgen.simulate",
        "hpc_popgen.simulate.genotypes", "hpc_popgen.images.kernels",
        "hpc_popgen.store", "hpc_popgen.stages"]
TENSORFLOW = ["hpc_popgen.train.preimport", "hpc_popgen.train.loop"]


def fork_local_workers(tensorflow: bool) -> bool:
    """Fork this driver's LocalCluster workers from a preloading server (TensorFlow too when ``tensorflow``,
    i.e. a stage of the run trains, evaluates or scans). Returns whether it is set; a no-op when Dask's
    method is not the default ``spawn`` (the user's choice, or already set), or forkserver is unavailable."""
    import dask
    from distributed.utils import get_mp_context

    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") != "spawn":
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    modules = BASE + (TENSORFLOW if tensorflow else [])
    get_mp_context().set_forkserver_preload(modules)
    # start the server now: it imports in its own process while the driver goes on (resolving the job,
    # starting the scheduler), not when the first worker is asked for
    from multiprocessing import forkserver

    forkserver.ensure_running()
    log.debug("local workers fork from a server that imported %s", ", ".join(modules))
    return True
