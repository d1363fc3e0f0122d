"""Starting Horovod ranks: Gloo on this machine (loopback only), or inside a SLURM job for GPU nodes.

On one machine the ranks are started the way ``horovodrun --gloo -np N -H localhost:N`` starts them
(Horovod's own rendezvous server and slot plan, the same HOROVOD_* environment), except that the
rendezvous server listens on 127.0.0.1 only and Gloo uses the loopback interface, so nothing is
reachable from outside the machine. On SLURM the train stage renders an sbatch script
(:func:`hpc_popgen.cluster.sbatch.train_script`) that starts one rank per GPU across the allocation's
nodes, by one of three launchers:

- ``srun_gloo``: the batch step runs Horovod's rendezvous server on the profile's network interface
  (``cluster.interface``) and ``srun`` starts the ranks, each taking its HOROVOD_* rank variables from
  SLURM's (:func:`rank_main`). No ssh and no MPI: what a Gloo-only Horovod needs across nodes.
- ``horovodrun``: ``horovodrun --gloo`` over the nodes SLURM lists; needs ssh between nodes.
- ``srun``: ``srun --mpi=pmi2``, for Horovod built with MPI.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

WORKER = ["-m", "hpc_popgen.train.worker"]


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a training process: Keras 2 for Horovod, quiet TensorFlow."""
    env = dict(os.environ)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def gloo_env(*, hostname: str, rank: int, size: int, local_rank: int, local_size: int, cross_rank: int,
             cross_size: int, addr: str, port: int, iface: str) -> dict[str, str]:
    """The HOROVOD_* variables of one Gloo rank (as ``horovodrun --gloo`` sets them)."""
    return {"HOROVOD_HOSTNAME": hostname, "HOROVOD_RANK": str(rank), "HOROVOD_SIZE": str(size),
            "HOROVOD_LOCAL_RANK": str(local_rank), "HOROVOD_LOCAL_SIZE": str(local_size),
            "HOROVOD_CROSS_RANK": str(cross_rank), "HOROVOD_CROSS_SIZE": str(cross_size),
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr, "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
            "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
            **({"HOROVOD_GLOO_IFACE": iface} if iface else {})}


def _rendezvous(hosts: str, ranks: int, addr: str):
    """Horovod's rendezvous HTTP server on ``addr`` (a free port), serving the slot plan of ``hosts``."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    httpd = RendezvousHTTPServer((addr, 0), RendezvousHandler, 0)
    plan = get_host_assignments(parse_hosts(hosts), ranks)
    httpd.init(plan)
    threading.Thread(target=httpd.serve_forever, name="hpcpop-gloo-rendezvous", daemon=True).start()
    return httpd, plan


def interface_address(iface: str) -> str:
    """The IPv4 address of network interface ``iface`` on this host (127.0.0.1 for ``lo``); with no
    interface named, the address this host's name resolves to."""
    import socket

    import psutil

    if not iface:
        return socket.gethostbyname(socket.gethostname())
    for a in psutil.net_if_addrs().get(iface, []):
        if a.family == socket.AF_INET:
            return a.address
    raise OSError(f"network interface {iface!r} has no IPv4 address on {socket.gethostname()}")


def _tasks_per_node() -> int:
    """SLURM's tasks per node (``SLURM_NTASKS_PER_NODE`` reads e.g. ``2(x3)`` for 2 on each of 3 nodes)."""
    return int(os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])


def run_srun_gloo(job_file: str | Path, iface: str) -> int:
    """Inside a SLURM batch step: the rendezvous server on ``iface``, then ``srun`` one Gloo rank per task
    (:func:`rank_main`); returns srun's exit code (``--kill-on-bad-exit``: one failing rank stops all)."""
    nodes = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True,
                           text=True, check=True).stdout.split()
    per_node = _tasks_per_node()
    addr = interface_address(iface)
    httpd, _plan = _rendezvous(",".join(f"{n}:{per_node}" for n in nodes), per_node * len(nodes), addr)
    env = worker_env({"HPCPOP_GLOO_ADDR": addr, "HPCPOP_GLOO_PORT": str(httpd.server_address[1]),
                      "HPCPOP_GLOO_IFACE": iface})
    log.info("rendezvous on %s:%d for %d ranks on %s", addr, httpd.server_address[1], per_node * len(nodes), nodes)
    try:
        return subprocess.run(["srun", "--kill-on-bad-exit=1", sys.executable, "-m", "hpc_popgen.cluster.horovod",
                               "--rank", str(job_file)], env=env).returncode
    finally:
        httpd.shutdown()
        httpd.server_close()


def rank_main(job_file: str) -> None:
    """One srun task: HOROVOD_* from SLURM's task variables, then the training worker (exec)."""
    e = os.environ
    env = worker_env(gloo_env(hostname=e["SLURMD_NODENAME"], rank=int(e["SLURM_PROCID"]), size=int(e["SLURM_NTASKS"]),
                              local_rank=int(e["SLURM_LOCALID"]),
                              local_size=_tasks_per_node(),
                              cross_rank=int(e["SLURM_NODEID"]), cross_size=int(e["SLURM_NNODES"]),
                              addr=e["HPCPOP_GLOO_ADDR"], port=int(e["HPCPOP_GLOO_PORT"]), iface=e["HPCPOP_GLOO_IFACE"]))
    os.execve(sys.executable, [sys.executable, *WORKER, job_file], env)


def run_local_gloo(job_file: str | Path, ranks: int, log_path: str | Path, *, threads: int | None = None,
                   poll_s: float = 0.5, on_poll: Callable[[], None] | None = None) -> int:
    """Run ``ranks`` Gloo ranks of the worker on this machine; returns 0, or the first failing exit code.

    If one rank fails, the others are terminated (an allreduce would otherwise wait forever).
    ``on_poll`` is called while waiting (the driver's progress bars).
    """
    httpd, plan = _rendezvous(f"localhost:{ranks}", ranks, "127.0.0.1")
    port = httpd.server_address[1]
    procs: list[subprocess.Popen] = []
    code = 0
    with open(log_path, "ab") as logf:
        try:
            for slot in plan:
                env = worker_env(gloo_env(hostname=str(slot.hostname), rank=slot.rank, size=slot.size,
                                          local_rank=slot.local_rank, local_size=slot.local_size,
                                          cross_rank=slot.cross_rank, cross_size=slot.cross_size,
                                          addr="127.0.0.1", port=port, iface="lo"))
                if threads:
                    env["OMP_NUM_THREADS"] = str(threads)
                procs.append(subprocess.Popen([sys.executable, *WORKER, str(job_file)], env=env,
                                              stdout=logf, stderr=subprocess.STDOUT))
            log.info("started %d Gloo ranks (pids %s); log %s", ranks, [p.pid for p in procs], log_path)
            while True:
                codes = [p.poll() for p in procs]
                failed = [c for c in codes if c not in (None, 0)]
                if failed:
                    code = failed[0]
                    break
                if all(c == 0 for c in codes):
                    break
                if on_poll is not None:
                    on_poll()
                time.sleep(poll_s)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            httpd.shutdown()
            httpd.server_close()
    return code


def main(argv: list[str] | None = None) -> int:
    """``python -m hpc_popgen.cluster.horovod JOB.json RANKS LOG [THREADS]``: Gloo ranks on this node;
    ``--srun JOB.json IFACE`` (batch step) and ``--rank JOB.json`` (one srun task): :func:`run_srun_gloo`."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--rank"] and len(args) == 2:
        rank_main(args[1])
    if args[:1] == ["--srun"] and len(args) == 3:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run_srun_gloo(args[1], args[2])
    if len(args) not in (3, 4):
        sys.stderr.write("usage: python -m hpc_popgen.cluster.horovod JOB.json RANKS LOG [THREADS]\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_local_gloo(args[0], int(args[1]), args[2], threads=int(args[3]) if len(args) == 4 else None)


if __name__ == "__main__":
    sys.exit(main())
