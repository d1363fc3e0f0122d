"""One driver per run directory, and a status that never lies: a second driver on a live run is refused with
one line naming the holder; a gone holder's lock is taken over; after SIGKILL of the driver ``hpcpop status``
says "interrupted: driver gone" and exits 4; its counts are the ledger's."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import HPCPOP
from test_platform_runs import done_units, manifest, read_json, wait_for

from hpc_popgen.errors import RunDirError
from hpc_popgen.runlock import LOCK_FILE, RECORD_FILE, STALE_S, RunLock, pid_start, read_holder
from hpc_popgen.runs import RunDir


def cli(*args) -> tuple[int, str, str]:
    """``hpcpop ARGS`` in this process (click's runner): exit code, stdout, stderr."""
    from hpc_popgen.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def one_error_line(stderr: str) -> str:
    """The single ``Error:`` line of a refused command; no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def dead_pid() -> int:
    """The pid of a process that has ended (reaped) on this host."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def record(run: Path, *, host: str | None = None, pid: int, heartbeat_age: float = 0.0,
           start: str | None = None) -> bytes:
    """Write a driver record as a driver would (no lock held); returns its bytes."""
    now = time.time()
    data = {"host": host or socket.gethostname(), "pid": pid, "started_at": now - heartbeat_age - 60,
            "heartbeat_at": now - heartbeat_age, "pid_start": start, "command": "hpcpop rerun"}
    (run / RECORD_FILE).write_text(json.dumps(data))
    return (run / RECORD_FILE).read_bytes()


def listing(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory) -> Path:
    """A recorded run (create_run: manifest, profile, provenance, report; nothing ran), copied per test."""
    from hpc_popgen.pipeline import create_run

    base = tmp_path_factory.mktemp("lockrun")
    profile = base / "local.yaml"
    profile.write_text("kind: local\ncluster: {n_workers: 1, threads_per_worker: 1}\n"
                       "dashboard_address: 127.0.0.1:0\n")
    return create_run(manifest(base, profile), run_dir=base / "run").path


@pytest.fixture
def run(recorded_run, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(recorded_run, dest)
    return dest


@pytest.fixture
def sleeper():
    """A live process on this host that holds no lock."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


# --- the lock: refused while its holder lives, taken over when it is gone ---------------------------------

@pytest.mark.parametrize("case", ["other host, fresh heartbeat", "this host, live pid"])
def test_a_live_holder_refuses_a_second_driver_without_touching_anything(run, sleeper, case):
    """Also when flock is free (NFS/Lustre, another host): the record decides."""
    if case == "other host, fresh heartbeat":
        record(run, host="node-elsewhere", pid=4242, heartbeat_age=5)
        host, pid = "node-elsewhere", 4242
    else:
        record(run, pid=sleeper.pid, start=pid_start(sleeper.pid))
        host, pid = socket.gethostname(), sleeper.pid
    before = listing(run)
    with pytest.raises(RunDirError) as err:
        RunLock(run).acquire()
    line = str(err.value)
    assert "\n" not in line and "another driver runs this run" in line, line
    assert f"host {host}, pid {pid}, since " in line and str(run) in line, line
    assert listing(run) == before, "the refused driver wrote nothing"


@pytest.mark.parametrize("case", ["dead pid", "pid reused by another process", "other host, stale heartbeat"])
def test_a_gone_holder_is_taken_over_with_a_log_line(run, sleeper, case, caplog):
    if case == "dead pid":
        record(run, pid=dead_pid())
    elif case == "pid reused by another process":
        record(run, pid=sleeper.pid, start="1")  # same pid, another process start time
    else:
        record(run, host="node-elsewhere", pid=4242, heartbeat_age=STALE_S + 60)
    logger = logging.getLogger("hpc_popgen")  # the CLI stops it propagating; caplog listens here directly
    logger.addHandler(caplog.handler)
    try:
        with RunLock(run, heartbeat_s=0.2):
            holder = read_holder(run)
            assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
            first = holder.heartbeat_at
            wait_for(lambda: read_holder(run).heartbeat_at > first, 10, "a heartbeat")
            with pytest.raises(RunDirError, match=f"pid {os.getpid()}"):
                RunLock(run).acquire()  # the lock is held: a second one is refused
    finally:
        logger.removeHandler(caplog.handler)
    assert "the previous driver is gone" in caplog.text and "taking over the run" in caplog.text
    assert not (run / RECORD_FILE).exists(), "released: the record goes"
    assert (run / LOCK_FILE).exists()
    with RunLock(run):  # free again, no log line
        assert read_holder(run).pid == os.getpid()


# --- status: exit codes, counts from the ledger, a dead driver ---------------------------------------------

def set_report(run: Path, status: str, units_done: int = 0, stage_status: str | None = None) -> None:
    rep = read_json(run / "report.json")
    rep["status"] = status
    rep["stages"][0].update(status=stage_status or status, units_done=units_done, units_total=8)
    (run / "report.json").write_text(json.dumps(rep))


@pytest.mark.parametrize("status,driver,code,needle", [
    ("completed", None, 0, "run plat: completed"),
    ("failed", None, 1, "run plat: failed"),
    ("created", None, 3, "run plat: created"),
    ("queued", None, 3, "run plat: queued"),
    ("running", "self", 3, "run plat: running"),
    ("running", "other host, fresh", 3, "run plat: running"),
    ("interrupted", None, 4, "run plat: interrupted"),
    ("running", "dead pid", 4, "run plat: interrupted: driver gone (last heartbeat "),
    ("running", "other host, stale", 4, "run plat: interrupted: driver gone (last heartbeat "),
    ("running", None, 4, "run plat: interrupted: driver gone (no driver record)"),
    ("interrupted", "self", 3, "run plat: running (driver: host "),
])
def test_status_exit_codes_and_a_dead_driver(run, status, driver, code, needle):
    set_report(run, status, units_done=1)
    if driver == "self":
        record(run, pid=os.getpid(), start=pid_start(os.getpid()))
    elif driver == "dead pid":
        record(run, pid=dead_pid())
    elif driver == "other host, fresh":
        record(run, host="node-elsewhere", pid=1, heartbeat_age=5)
    elif driver == "other host, stale":
        record(run, host="node-elsewhere", pid=1, heartbeat_age=STALE_S + 5)
    led = RunDir(run).ledger("simulate")
    for i in range(3):
        led.record(f"shard-{i:05d}")
    before = listing(run)
    rc, out, err = cli("status", run)
    assert rc == code, (out, err)
    assert needle in out.splitlines()[0], out
    assert "3/8" in out, "units counted in the ledger, not the report's stale 1"
    assert "Traceback" not in out + err
    if code == 4:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "interrupted" in lines[0] and f"hpcpop rerun {run}" in lines[0], err
    rc_json, out_json, _ = cli("status", run, "--json")
    data = json.loads(out_json)
    assert rc_json == code and data["report"]["stages"][0]["units_done"] == 3
    assert listing(run) == before, "status writes nothing"


@pytest.mark.parametrize("text", ['{"run": "plat", "status": "runn', "[1, 2]", "\x00\xff"])
def test_status_of_a_damaged_report_is_one_line(run, text):
    (run / "report.json").write_text(text, errors="surrogateescape")
    rc, _out, err = cli("status", run)
    assert rc == 2
    line = one_error_line(err)
    assert f"{run}/report.json: not a readable report" in line, line
    RunDir(run).finish("interrupted")  # a driver (rerun) writes it anew, counts from the ledger
    assert cli("status", run)[0] == 4


# --- two real drivers, then SIGKILL ----------------------------------------------------------------------

def test_second_driver_refused_then_sigkill_leaves_status_driver_gone(tmp_path, caplog):
    """A real `hpcpop submit` holds the run: `hpcpop rerun` and execute() in this process are refused with one
    line naming it, and write nothing. Then the driver's process group is SIGKILLed (the OOM killer, a node
    lost): status says "interrupted: driver gone", exits 4, counts the ledger; the lock is taken over."""
    from hpc_popgen.pipeline import execute

    profile = tmp_path / "one-worker.yaml"  # one worker starts quickest; 300 small shards outlast the checks
    profile.write_text("kind: local\ncluster: {n_workers: 1, threads_per_worker: 1}\ndashboard_address: 127.0.0.1:0\n")
    job = manifest(tmp_path, profile, n_per_class=300, shard_images=2)
    run = tmp_path / "run"
    with open(tmp_path / "submit.err", "w") as err_file:
        proc = subprocess.Popen([*HPCPOP, "submit", str(job), "--run-dir", str(run), "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True)
    try:
        holder = wait_for(lambda: read_holder(run), 120, "the driver's lock record", proc)
        assert holder.pid == proc.pid and holder.host == socket.gethostname()
        wait_for(lambda: read_json(run / "report.json").get("status") == "running", 60, "the run to start", proc)

        rc, _out, err = cli("rerun", run, "--no-progress")
        assert rc == 2, err
        line = one_error_line(err)
        assert f"another driver runs this run (host {holder.host}, pid {proc.pid}, since " in line, line
        with pytest.raises(RunDirError, match=f"pid {proc.pid}"):
            execute(RunDir.open(run), progress=False)  # the lock itself, past the CLI's early check
        assert read_holder(run).pid == proc.pid

        wait_for(lambda: len(done_units(run)) >= 1, 180, "a finished shard", proc)
        assert proc.poll() is None, "still running when killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its LocalCluster's workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    done = len(done_units(run))
    assert read_json(run / "report.json")["status"] == "running", "SIGKILL: nothing could write the report"
    assert {r["pid"] for r in done_units(run).values()} == {proc.pid}, "one driver wrote the ledger"

    rc, out, err = cli("status", run)
    assert rc == 4, (out, err)
    first = out.splitlines()[0]
    assert "interrupted: driver gone (last heartbeat " in first and f"pid {proc.pid}" in first, first
    assert f"{done}/300" in out
    rc, out, _ = cli("status", run, "--json")
    data = json.loads(out)
    assert rc == 4 and data["report"]["stages"][0]["units_done"] == done and data["driver"]["state"] == "gone"

    logger = logging.getLogger("hpc_popgen")
    logger.addHandler(caplog.handler)
    try:
        with RunLock(run):
            assert read_holder(run).pid == os.getpid()
    finally:
        logger.removeHandler(caplog.handler)
    assert f"the previous driver is gone (host {holder.host}, pid {proc.pid}" in caplog.text
