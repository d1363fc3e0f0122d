"""The ``#SBATCH`` header shared by every batch script we render (detached driver, Horovod training)."""

from __future__ import annotations


def slurm_mem(mem: str) -> str:
    """'2GB' / '2GiB' / '2000MB' -> SLURM's '2G' / '2000M' (SLURM has no 'B' suffix)."""
    mem = str(mem).replace(" ", "")
    for suf, s in (("TiB", "T"), ("GiB", "G"), ("MiB", "M"), ("KiB", "K"),
                   ("TB", "T"), ("GB", "G"), ("MB", "M"), ("KB", "K")):
        if mem.endswith(suf):
            return mem[: -len(suf)].split(".")[0] + s
    return mem


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
