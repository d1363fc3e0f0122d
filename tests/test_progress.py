"""Progress everywhere: training off the driver with epoch/batch bars, status, quiet start-up, the GA bar."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading

from helpers import HPCPOP, run_cli, write_yaml
from test_demography import _search
from test_platform_runs import read_json, wait_for
from test_train_helpers import make_store, write_manifest

from hpc_popgen.ledger import Ledger


class RecordingBar:
    """A tqdm stand-in that keeps what the search last set (n, total) and what it was opened with."""

    def __init__(self, total: int, **kwargs):
        self.n, self.total, self.opened = kwargs.get("initial", 0), total, total

    def update(self, k: int = 1) -> None:
        self.n += k

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_ga_bar_ends_full_at_the_evaluations_spent(tmp_path):
    """Islands stop by stalling or by overshooting ``max_evals`` in their last generation: the bar's total
    follows, so it ends at exactly n == total == the evaluations the islands spent."""
    bars: list[RecordingBar] = []

    def progress(total, **kwargs):
        bars.append(RecordingBar(total, **kwargs))
        return bars[-1]

    search = _search(tmp_path / "ga", [])
    search.hooks = dataclasses.replace(search.hooks, progress=progress)
    state = search.run()
    assert len(bars) == 2  # one per structure
    for bar in bars:
        assert bar.n == bar.total > 0, (bar.n, bar.total)
    spent = [sum(i["n_evals"] for i in (read_json(p) for p in sorted((tmp_path / "ga" / f"s{k}").glob("island-*.json"))))
             for k in (0, 1)]
    assert [b.total for b in bars] == spent
    assert state["results"]["1"]["structure"] == [2]
    assert spent != [2 * 30, 2 * 30], "the old total (islands x max_evals) would not have ended full"


def one_rank_profile(tmp_path) -> str:
    """A loopback LocalCluster profile of one worker, training as one rank."""
    return str(write_yaml(tmp_path / "profiles" / "one.yaml", {
        "kind": "local", "cluster": {"n_workers": 1}, "dashboard_address": "127.0.0.1:0",
        "horovod": {"launcher": "horovodrun", "ranks": 1}}))


def test_training_runs_as_a_dask_task_with_bars_status_and_quiet_start_up(tmp_path):
    """`hpcpop submit` on a terminal: training runs as the task ``train-epochs`` on a LocalCluster worker
    (not in the driver), its epoch and batch bars and evaluate's bar show, ``hpcpop status`` shows the
    epoch and validation loss meanwhile, and neither TensorFlow's nor distributed's start-up and
    shut-down lines reach the terminal."""
    from distributed import Client

    make_store(tmp_path / "storage" / "p.zarr", n_per_class=500, size=32, shard_images=100)
    path = write_manifest(tmp_path, [
        {"name": "train", "resources": {"cores": 1},
         "train": {"store": "p.zarr", "epochs": 4, "batch_size": 16, "tensorboard": False,
                   "early_stopping": {"patience": 0}}},
        {"name": "evaluate", "resources": {"cores": 1}, "evaluate": {"batch_size": 16}},
    ], profile=one_rank_profile(tmp_path))
    run = tmp_path / "run"
    master, slave = pty.openpty()  # a terminal of 40 x 120 characters for stderr: the bars show
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([*HPCPOP, "submit", str(path), "--run-dir", str(run)], stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        rep = wait_for(lambda: (r := read_json(run / "report.json")).get("scheduler") and r, 120,
                       "the cluster to start", proc)
        with Client(rep["scheduler"], timeout=30) as c:
            where = wait_for(lambda: c.run_on_scheduler(lambda dask_scheduler: {
                str(k): ts.processing_on.address for k, ts in dask_scheduler.tasks.items()
                if ts.processing_on is not None}).get("train-epochs"), 120, "train-epochs on a worker", proc)
            workers = c.run(os.getpid)
        assert where in workers and workers[where] != proc.pid, "training runs in a worker process"
        shown = wait_for(lambda: re.search(r"train .*epoch \d/4, val_loss \d", run_cli("status", run).stdout),
                         120, "status to show the epoch and validation loss", proc)
        assert shown
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal[-3000:]
    assert "run completed" in out
    assert re.search(r"train epochs: +\d+%.*\d/4", terminal), terminal[-2000:]  # the epoch bar
    assert re.search(r"epoch \d: +\d+%.*/\d+ \[", terminal) and "loss=" in terminal  # the batch bar
    assert re.search(r"evaluate: +100%.*\d+/\d+", terminal)
    for noise in ("absl::InitializeLog", "Unable to register", "cuInit", "- INFO -", "distributed.nanny"):
        assert noise not in terminal, (noise, terminal[-3000:])
    done = Ledger(run / "ledger" / "train").done()
    assert sorted(done) == [f"epoch-{e:04d}" for e in range(1, 5)] and all(r["worker_host"] for r in done.values())
    assert Ledger(run / "ledger" / "evaluate").done()["evaluate"]["worker_host"]
    log = (run / "hpcpop.log").read_text()
    assert "stage train: epoch 4/4: loss" in log, "the driver logs each finished epoch"


def test_a_lost_worker_resumes_the_training_from_its_last_checkpoint(tmp_path):
    """Training is a task: when its worker process dies, Dask reschedules it on the restarted worker and
    it resumes from the last recorded epoch; the run completes without a rerun."""
    import signal

    from distributed import Client

    make_store(tmp_path / "storage" / "w.zarr", n_per_class=300, size=32, shard_images=100)
    path = write_manifest(tmp_path, [{"name": "train", "resources": {"cores": 1}, "train": {
        "store": "w.zarr", "epochs": 4, "batch_size": 16, "tensorboard": False, "early_stopping": {"patience": 0}}}],
        profile=one_rank_profile(tmp_path))
    run = tmp_path / "run"
    proc = subprocess.Popen([*HPCPOP, "submit", str(path), "--run-dir", str(run), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rep = wait_for(lambda: (r := read_json(run / "report.json")).get("scheduler") and r, 120,
                       "the cluster to start", proc)
        with Client(rep["scheduler"], timeout=30) as c:  # the worker's pid first: killed as soon as epoch 1 is in
            (pid,) = wait_for(lambda: c.run(os.getpid).values(), 60, "the worker", proc)
        wait_for(lambda: Ledger(run / "ledger" / "train").is_done("epoch-0001"), 120, "epoch 1", proc)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    st = read_json(run / "report.json")["stages"][0]
    assert st["status"] == "completed" and st["metrics"]["epochs_run"] == 4
    assert 1 <= st["metrics"]["resumed_from_epoch"] < 4
    hist = read_json(run / "train" / "result.json")["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]


def test_closing_two_local_clusters_is_quiet_unless_v(tmp_path):
    """Two stages with other resources (memory) make two LocalClusters; closing the first gave distributed its INFO
    level back while the second closed (nanny and scheduler lines at the end of every run). Quiet now,
    and one -v away (in our format: distributed's records pass through the CLI's handlers)."""
    from test_platform_runs import sim_stage

    stages = [{**sim_stage(n_per_class=4, name=name), "resources": {"cores": 1, "memory": memory}}
              for name, memory in (("a", "1GB"), ("b", "2GB"))]
    stages[1]["simulate"] = {**stages[1]["simulate"], "store": "@run/b.zarr"}
    profile = write_yaml(tmp_path / "profiles" / "cores.yaml", {"kind": "local", "dashboard_address": "127.0.0.1:0"})
    job = write_yaml(tmp_path / "two.yaml", {"name": "two", "seed": 3, "profile": str(profile),
                                            "storage": str(tmp_path / "s"), "stages": stages})
    quiet = run_cli("submit", job, "--run-dir", tmp_path / "q", check=True)
    loud = run_cli("-v", "submit", job, "--run-dir", tmp_path / "v", check=True)
    for noise in (" - INFO - ", "INFO distributed.", "still alive"):
        assert noise not in quiet.stderr, quiet.stderr[-2000:]
    assert "INFO distributed.nanny:" in loud.stderr or "INFO distributed.scheduler:" in loud.stderr, loud.stderr[-2000:]
    assert "INFO distributed.scheduler:" not in (tmp_path / "q" / "hpcpop.log").read_text(), "INFO only with -v"
