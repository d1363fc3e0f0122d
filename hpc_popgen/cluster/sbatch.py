"""Batch scripts for SLURM: the ``#SBATCH`` header every script we render shares (detached driver, Horovod
training) and the Horovod training job's script. Plain values in, text out."""

from __future__ import annotations

import math
import re
import shlex
import sys
from pathlib import Path

from ..errors import ProfileError

_UNITS = {"T": 4, "G": 3, "M": 2, "K": 1}  # powers of 1024 (SLURM's units are binary)


def slurm_mem(mem: str) -> str:
    """'2GB' / '2GiB' -> '2G', '0.5GB' -> '512M' (rounded up to a whole unit SLURM accepts, never 0).

    SLURM takes whole numbers with a K/M/G/T suffix (no 'B'); ``--mem=0`` would mean "all the node's memory".
    """
    text = str(mem).replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([KMGT]?)(?:i?B)?", text, flags=re.IGNORECASE)
    if not m:
        raise ProfileError(f"memory {mem!r}: not a size such as 2GB, 512MB or 0.5GB")
    value, unit = float(m.group(1)), (m.group(2) or "M").upper()
    if value <= 0:
        raise ProfileError(f"memory {mem!r}: must be more than 0")
    power = _UNITS[unit]
    while value != int(value) and power > 1:  # 0.5G -> 512M, 1.5M -> 1536K
        value, power = value * 1024, power - 1
    suffix = next(k for k, v in _UNITS.items() if v == power)
    return f"{math.ceil(value)}{suffix}"


def sbatch_header(*, job_name: str, output: str, cpus_per_task: int, memory: str | None = None,
                  walltime: str | None = None, partition: str | None = None, account: str | None = None,
                  nodes: int | None = None, ntasks_per_node: int | None = None, gpus_per_node: int | None = None,
                  extra: list[str] | None = None) -> list[str]:
    """Shebang and ``#SBATCH`` lines; unset values are left to SLURM's defaults."""
    lines = ["#!/usr/bin/env bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --output={output}"]
    if nodes:
        lines.append(f"#SBATCH --nodes={nodes}")
    if ntasks_per_node:
        lines.append(f"#SBATCH --ntasks-per-node={ntasks_per_node}")
    lines.append(f"#SBATCH --cpus-per-task={int(cpus_per_task)}")
    if gpus_per_node:
        lines.append(f"#SBATCH --gres=gpu:{gpus_per_node}")
    if memory:
        lines.append(f"#SBATCH --mem={slurm_mem(memory)}")
    if walltime:
        lines.append(f"#SBATCH --time={walltime}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    skip_gres = bool(gpus_per_node)
    lines += [f"#SBATCH {d}" for d in (extra or []) if not (skip_gres and d.startswith("--gres=gpu"))]
    return lines


def train_script(*, job_file: str | Path, run_dir: str | Path, name: str, nodes: int, gpus_per_node: int,
                 ranks: int, cores: int, memory: str | None, walltime: str | None,
                 queue: str | None, account: str | None, launcher: str, extra: list[str] | None = None,
                 python: str | None = None, interface: str | None = "lo") -> str:
    """The sbatch script of a Horovod training job: ``nodes`` x ``gpus_per_node`` ranks, one per GPU,
    the node's ``cores`` shared among its ranks.

    ``launcher``: ``srun_gloo``, ``horovodrun`` or ``srun`` (see :mod:`hpc_popgen.cluster.horovod`);
    ``interface``: the network interface ``srun_gloo`` rendezvouses on. On one node ``horovodrun`` ranks
    are started by :func:`hpc_popgen.cluster.horovod.run_local_gloo` instead (no ssh, loopback only).
    """
    python = python or sys.executable
    per_node = max(1, ranks // max(1, nodes))
    cores_per_rank = max(1, int(cores) // per_node)
    lines = sbatch_header(job_name=f"hpcpop-train-{name}", output=f"{run_dir}/train-%j.log", nodes=nodes,
                          ntasks_per_node=per_node, cpus_per_task=cores_per_rank, gpus_per_node=gpus_per_node,
                          memory=memory, walltime=walltime, partition=queue, account=account, extra=extra)
    worker = f"{shlex.quote(python)} -m hpc_popgen.train.worker {shlex.quote(str(job_file))}"
    lines += ["set -euo pipefail",
              "export TF_USE_LEGACY_KERAS=1",
              f"export OMP_NUM_THREADS={cores_per_rank}",
              f"cd {shlex.quote(str(run_dir))}"]
    if launcher == "srun_gloo":
        lines.append(f"{shlex.quote(python)} -m hpc_popgen.cluster.horovod --srun {shlex.quote(str(job_file))} "
                     f"{shlex.quote(interface or '')}")
    elif nodes == 1 and launcher != "srun":
        lines.append(f"{shlex.quote(python)} -m hpc_popgen.cluster.horovod {shlex.quote(str(job_file))} {ranks} "
                     f"{shlex.quote(str(Path(run_dir) / 'train.log'))} {cores_per_rank}")
    elif launcher == "srun":
        lines.append(f"srun --mpi=pmi2 {worker}")
    else:
        horovodrun = shlex.quote(str(Path(python).parent / "horovodrun"))
        lines += [f'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/$/:{per_node}/" | paste -sd, -)',
                  f"{horovodrun} --gloo -np {ranks} -H \"$HOSTS\" {worker}"]
    return "\n".join(lines) + "\n"
