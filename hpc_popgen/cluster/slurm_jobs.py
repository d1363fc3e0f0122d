"""Submit an sbatch script and follow its job through ``scontrol``: the end of a job is seen within a
second once its output is written, where ``sbatch --wait`` sleeps ever longer between its checks (20 s
lost after a 20 s training job on the test cluster), and slurmctld is asked little while the job runs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import HpcPopError

# States after which a job does not run again (scontrol's JobState); PENDING, RUNNING, COMPLETING,
# CONFIGURING, SUSPENDED, REQUEUED... are not final.
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                   "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"})
FAST_S = 0.5  # between state checks once the job's output exists (it is ending)
START_S = 1.0  # between state checks in a job's first minute (a job that fails at once is seen at once)
SLOW_S = 10.0  # between state checks later on, so a long job costs slurmctld little


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: scontrol's JobState and the exit code of its batch script (None: not known)."""

    state: str
    exit_code: int | None

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code in (0, None)


def submit(script: Path) -> str:
    """``sbatch --parsable script``: the job id; sbatch's refusal is an error with its own words."""
    try:
        proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise HpcPopError(f"`sbatch` not found; {script} is ready to submit by hand") from exc
    if proc.returncode != 0:
        raise HpcPopError(f"sbatch refused {script}: {proc.stderr.strip()[-1000:]}")
    return proc.stdout.strip().split(";")[0]


def job_state(job_id: str) -> JobEnd | None:
    """The job's state and exit code from ``scontrol show job``; None once slurmctld has forgotten it."""
    try:
        proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return JobEnd("UNKNOWN", None)  # slurmctld busy or unreachable: ask again later
    if proc.returncode != 0:
        return None if "Invalid job id" in proc.stderr else JobEnd("UNKNOWN", None)
    fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
    code = fields.get("ExitCode", "")
    return JobEnd(fields.get("JobState", "UNKNOWN"), int(code.split(":")[0]) if code[:1].isdigit() else None)


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """Current SLURM states of jobs still known to squeue (finished jobs drop out)."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def wait_for_job(job_id: str, output: Path, on_poll: Callable[[], None], poll_s: float = 0.5) -> JobEnd:
    """Wait for ``job_id`` to end, calling ``on_poll`` every ``poll_s``. Its state is asked every second in
    its first minute, then every 10 s, and every half second once ``output`` (what the job writes last)
    exists. A job slurmctld has already forgotten ended COMPLETED if ``output`` exists, else FAILED."""
    t0 = last = time.monotonic()
    while True:
        on_poll()
        now = time.monotonic()
        done = output.exists()
        every = FAST_S if done else START_S if now - t0 < 60 else SLOW_S
        if now - last >= every:
            last = now
            end = job_state(job_id)
            if end is None:
                return JobEnd("COMPLETED" if output.exists() else "FAILED", None)
            if end.state in FINAL:
                return end
        time.sleep(poll_s)
