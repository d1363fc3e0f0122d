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
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)

BASE = ["distributed", "numpy", "zarr", "hpc_popgen.store", "hpc_popgen.stages"]
SIMULATE = ["scipy", "msprime", "tskit", "hpc_popgen.simulate", "hpc_popgen.simulate.genotypes",
            "hpc_popgen.images.kernels"]
TENSORFLOW = ["hpc_popgen.train.preimport", "hpc_popgen.train.loop"]
# what each stage kind's tasks import: moments alone takes 4 s (it imports scikit-allel and matplotlib)
PRELOAD = {"simulate": SIMULATE, "demography": ["moments", "hpc_popgen.demography.engine"],
           "train": TENSORFLOW, "evaluate": TENSORFLOW, "scan": TENSORFLOW + SIMULATE}


def preload_for(kinds: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The modules a server should import for tasks of these stage kinds (plus ``extra``), in order, once each."""
    modules = BASE + [m for k in kinds for m in PRELOAD.get(k, [])] + list(extra)
    return list(dict.fromkeys(modules))


def fork_local_workers(modules: Sequence[str]) -> bool:
    """Fork this driver's LocalCluster workers from a server that imported ``modules`` first (see
    :func:`preload_for`). Returns whether it is set; a no-op when Dask's method is not the default ``spawn``
    (the user's choice, or already set), or forkserver is unavailable."""
    import dask
    from distributed.utils import get_mp_context

    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") != "spawn":
        return False
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    get_mp_context().set_forkserver_preload(list(modules))
    # start the server now: it imports in its own process while the driver goes on (resolving the job,
    # starting the scheduler), not when the first worker is asked for
    from multiprocessing import forkserver

    forkserver.ensure_running()
    log.debug("local workers fork from a server that imported %s", ", ".join(modules))
    return True
