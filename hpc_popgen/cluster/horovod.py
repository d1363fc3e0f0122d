"""Starting Horovod ranks: Gloo on this machine (loopback only), or an sbatch script for SLURM GPU nodes.

On one machine the ranks are started the way ``horovodrun --gloo -np N -H localhost:N`` starts them
(Horovod's own rendezvous server and slot plan, the same HOROVOD_* environment), except that the
rendezvous server listens on 127.0.0.1 only and Gloo uses the loopback interface, so nothing is
reachable from outside the machine. On SLURM the train stage renders an sbatch script that runs
``horovodrun --gloo`` across the allocation's nodes (one rank per GPU) or ``srun`` for an MPI build.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .sbatch import sbatch_header

log = logging.getLogger(__name__)

WORKER = ["-m", "hpc_popgen.train.worker"]


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a training process: Keras 2 for Horovod, quiet TensorFlow."""
    env = dict(os.environ)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def run_local_gloo(job_file: str | Path, ranks: int, log_path: str | Path, *, threads: int | None = None,
                   poll_s: float = 0.5, on_poll: Callable[[], None] | None = None) -> int:
    """Run ``ranks`` Gloo ranks of the worker on this machine; returns 0, or the first failing exit code.

    If one rank fails, the others are terminated (an allreduce would otherwise wait forever).
    ``on_poll`` is called while waiting (the driver's progress bars).
    """
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    httpd = RendezvousHTTPServer(("127.0.0.1", 0), RendezvousHandler, 0)
    port = httpd.server_address[1]
    plan = get_host_assignments(parse_hosts(f"localhost:{ranks}"), ranks)
    httpd.init(plan)
    server = threading.Thread(target=httpd.serve_forever, name="hpcpop-gloo-rendezvous", daemon=True)
    server.start()
    procs: list[subprocess.Popen] = []
    code = 0
    with open(log_path, "ab") as logf:
        try:
            for slot in plan:
                env = worker_env({
                    "HOROVOD_HOSTNAME": str(slot.hostname), "HOROVOD_RANK": str(slot.rank),
                    "HOROVOD_SIZE": str(slot.size), "HOROVOD_LOCAL_RANK": str(slot.local_rank),
                    "HOROVOD_LOCAL_SIZE": str(slot.local_size), "HOROVOD_CROSS_RANK": str(slot.cross_rank),
                    "HOROVOD_CROSS_SIZE": str(slot.cross_size),
                    "HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1", "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
                    "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo", "HOROVOD_GLOO_IFACE": "lo",
                })
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


def sbatch_script(*, job_file: str | Path, run_dir: str | Path, name: str, nodes: int, gpus_per_node: int,
                  ranks: int, cores_per_rank: int, memory: str | None, walltime: str | None,
                  queue: str | None, account: str | None, launcher: str, extra: list[str] | None = None,
                  python: str | None = None) -> str:
    """The sbatch script of a Horovod training job: ``nodes`` x ``gpus_per_node`` ranks, one per GPU.

    ``launcher``: ``horovodrun`` (Gloo over the nodes listed by SLURM; needs ssh between nodes, as
    horovodrun does) or ``srun`` (``srun --mpi=pmi2``, for Horovod built with MPI). On one node the
    ranks are started by :func:`run_local_gloo` (no ssh, loopback only), whatever the launcher.
    """
    python = python or sys.executable
    per_node = max(1, ranks // max(1, nodes))
    lines = sbatch_header(job_name=f"hpcpop-train-{name}", output=f"{run_dir}/train-%j.log", nodes=nodes,
                          ntasks_per_node=per_node, cpus_per_task=cores_per_rank, gpus_per_node=gpus_per_node,
                          memory=memory, walltime=walltime, partition=queue, account=account, extra=extra)
    worker = f"{shlex.quote(python)} -m hpc_popgen.train.worker {shlex.quote(str(job_file))}"
    lines += ["set -euo pipefail",
              "export TF_USE_LEGACY_KERAS=1",
              f"export OMP_NUM_THREADS={cores_per_rank}",
              f"cd {shlex.quote(str(run_dir))}"]
    if nodes == 1 and launcher != "srun":
        lines.append(f"{shlex.quote(python)} -m hpc_popgen.cluster.horovod {shlex.quote(str(job_file))} {ranks} "
                     f"{shlex.quote(str(Path(run_dir) / 'train.log'))} {cores_per_rank}")
    elif launcher == "srun":
        lines.append(f"srun --mpi=pmi2 {worker}")
    else:
        horovodrun = shlex.quote(str(Path(python).parent / "horovodrun"))
        lines += [f'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/:{per_node}/" | paste -sd, -)',
                  f"{horovodrun} --gloo -np {ranks} -H \"$HOSTS\" {worker}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m hpc_popgen.cluster.horovod JOB.json RANKS LOG [THREADS]``: Gloo ranks on this node."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4):
        sys.stderr.write("usage: python -m hpc_popgen.cluster.horovod JOB.json RANKS LOG [THREADS]\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_local_gloo(args[0], int(args[1]), args[2], threads=int(args[3]) if len(args) == 4 else None)


if __name__ == "__main__":
    sys.exit(main())
