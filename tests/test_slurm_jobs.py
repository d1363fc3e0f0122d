"""Following an sbatch job on the real single-node SLURM: its end and state are seen, failures with their
exit code, and a refused script in sbatch's own words."""

from __future__ import annotations

import pytest

from hpc_popgen.cluster.slurm_jobs import JobEnd, job_state, submit, wait_for_job
from hpc_popgen.errors import HpcPopError

pytestmark = pytest.mark.slurm


def _script(tmp_path, body: str, *directives: str) -> object:
    path = tmp_path / "job.sbatch"
    lines = ["#!/bin/bash", "#SBATCH --partition=debug", "#SBATCH --ntasks=1", "#SBATCH --mem=100M",
             f"#SBATCH --output={tmp_path}/job-%j.log", *directives, body]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_job_that_writes_its_output_ends_completed_and_is_polled_meanwhile(tmp_path, slurm_cleanup):
    out = tmp_path / "result.json"
    job = submit(_script(tmp_path, f"sleep 3; echo '{{}}' > {out}"))
    polls = []
    end = wait_for_job(job, out, lambda: polls.append(1))
    assert end.ok and end == JobEnd("COMPLETED", 0), end
    assert out.exists() and len(polls) >= 4  # polled meanwhile, every half second, for the job's 3 s at least
    assert job_state(job) in (JobEnd("COMPLETED", 0), None)


def test_a_failed_job_ends_with_its_exit_code_and_a_refused_script_is_one_error(tmp_path, slurm_cleanup):
    end = wait_for_job(submit(_script(tmp_path, "exit 3")), tmp_path / "never.json", lambda: None)
    assert end.state == "FAILED" and end.exit_code == 3 and not end.ok, end
    with pytest.raises(HpcPopError, match=r"sbatch refused .*job\.sbatch: .*invalid partition"):
        submit(_script(tmp_path, "true", "#SBATCH --partition=nosuchpartition"))
    assert job_state("999999999") is None
