"""The ``#SBATCH`` header shared by every batch script we render (detached driver, Horovod training)."""

from __future__ import annotations

import math
import re

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
