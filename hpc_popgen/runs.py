"""Run directories: the resolved manifest and profile, provenance, the ledger and report.json.

Layout of ``RUN_DIR``::

    manifest.yaml            the manifest as the user wrote it
    manifest.resolved.yaml   every default filled in; what ``hpcpop rerun`` runs
    profile.resolved.yaml    the cluster profile, resolved
    provenance.json          package versions, git commit, host, start time, seeds
    report.json              run status, then per stage: status, units, failures, timings, metrics
    driver.lock, driver.json the live driver's lock and its host, pid and heartbeat (runlock.py)
    ledger/<stage>/records.jsonl  the stage's completion and failure records, appended one per line
    slurm_jobs.json          SLURM job ids (driver and workers), when on SLURM
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__, atomic
from .errors import RunDirError
from .ledger import Ledger
from .manifest import Manifest, dump_yaml, parse_manifest, read_yaml
from .paths import REPO_ROOT, is_remote, local_path

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ("numpy", "scipy", "msprime", "tskit", "demes", "moments-popgen", "dadi", "zarr",
                    "numcodecs", "dask", "distributed", "dask-jobqueue", "tensorflow-cpu", "tensorflow",
                    "tf-keras", "horovod", "click", "jsonschema")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour the outputs depend on."""
    out = {"python": platform.python_version(), "hpc_popgen": __version__}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty`` when modified), or None outside a git checkout."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).astimezone().isoformat(timespec="seconds")


class RunDir:
    """One run's directory: records written at submit, the ledger, and report.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()

    # --- creation and loading -------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, manifest: Manifest, profile: dict, raw_manifest_text: str,
               stage_seeds: dict[str, int]) -> RunDir:
        """Make a new run directory and write what reproduces the run; refuses to reuse one."""
        rd = cls(path)
        if (rd.path / "manifest.resolved.yaml").exists():
            raise RunDirError(f"{rd.path}: already holds a run; use `hpcpop rerun {rd.path}` or another --run-dir")
        rd.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(rd.path / "manifest.yaml", raw_manifest_text)
        atomic.write_text(rd.path / "manifest.resolved.yaml", dump_yaml(manifest.to_dict()))
        atomic.write_text(rd.path / "profile.resolved.yaml", dump_yaml(profile))
        atomic.write_json(rd.path / "provenance.json", {
            "hpc_popgen": __version__,
            "git_commit": git_commit(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "python_executable": sys.executable,
            "command": sys.argv,
            "started_at": now_iso(),
            "source_manifest": manifest.source,
            "seeds": {"manifest": manifest.seed, "stages": stage_seeds},
            "versions": package_versions(),
        })
        rd.write_report(rd.initial_report(manifest))
        return rd

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        rd = cls(path)
        if not rd.path.is_dir():
            raise RunDirError(f"{rd.path}: no such run directory")
        if not (rd.path / "manifest.resolved.yaml").exists():
            raise RunDirError(f"{rd.path}: not a run directory (no manifest.resolved.yaml)")
        return rd

    def manifest(self) -> Manifest:
        """The recorded, resolved manifest (what a rerun runs), validated again."""
        src = self.path / "manifest.resolved.yaml"
        return parse_manifest(read_yaml(src), source=str(src), base_dir=self.base_dir())

    def base_dir(self) -> str:
        prov = self.provenance()
        src = prov.get("source_manifest")
        return str(Path(src).resolve().parent) if src else str(self.path)

    def profile(self) -> dict:
        return read_yaml(self.path / "profile.resolved.yaml", what="profile") or {}

    def provenance(self) -> dict:
        try:
            return json.loads((self.path / "provenance.json").read_text())
        except FileNotFoundError:
            return {}

    # --- ledger ----------------------------------------------------------------------------
    def ledger(self, stage_name: str) -> Ledger:
        return Ledger(self.path / "ledger" / stage_name)

    # --- report ----------------------------------------------------------------------------
    @staticmethod
    def initial_report(manifest: Manifest) -> dict:
        return {
            "run": manifest.name,
            "status": "created",
            "dashboard": None,
            "updated_at": now_iso(),
            "stages": [{"name": s.name, "kind": s.kind, "status": "pending", "units_done": 0,
                        "units_total": None, "failures": 0} for s in manifest.stages],
        }

    def report(self) -> dict:
        """report.json as written ({} before the first); a damaged one is a one-line RunDirError."""
        path = self.path / "report.json"
        try:
            rep = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunDirError(f"{path}: not a readable report ({exc}); `hpcpop rerun {self.path}` writes it anew "
                              "from the ledger") from None
        if not isinstance(rep, dict):
            raise RunDirError(f"{path}: not a readable report (a JSON object is expected)")
        return rep

    def with_ledger_counts(self, report: dict) -> dict:
        """``report`` with every stage's ``units_done`` and ``failures`` counted in its ledger, the record
        that is written first: after a signal the two agree whatever report.json last saw."""
        rep = json.loads(json.dumps(report))
        for st in rep.get("stages", []):
            ledger = self.ledger(st["name"])
            done = len(ledger.done())
            total = st.get("units_total")
            st["units_done"] = min(done, total) if isinstance(total, int) else done
            st["failures"] = len(ledger.failures())
        return rep

    def finish(self, status: str) -> dict:
        """Write the run's final ``status`` with every stage's counts from its ledger."""
        rep = self.with_ledger_counts(self._editable_report())
        rep.update(status=status, finished_at=now_iso())
        self.write_report(rep)
        return rep

    def write_report(self, report: dict) -> None:
        report["updated_at"] = now_iso()
        atomic.write_json(self.path / "report.json", report)

    def _editable_report(self) -> dict:
        """report.json to update; a damaged one is started again (the ledger keeps what is done)."""
        try:
            return self.report()
        except RunDirError as exc:
            log.warning("%s", exc)
            return self.initial_report(self.manifest())

    def update_report(self, **fields: Any) -> dict:
        rep = self._editable_report()
        rep.update(fields)
        self.write_report(rep)
        return rep

    def update_stage(self, name: str, **fields: Any) -> dict:
        rep = self._editable_report()
        for st in rep.get("stages", []):
            if st["name"] == name:
                metrics = fields.pop("metrics", None)
                st.update(fields)
                if metrics:
                    st.setdefault("metrics", {}).update(metrics)
                break
        self.write_report(rep)
        return rep

    # --- SLURM job ids ----------------------------------------------------------------------
    def slurm_jobs(self) -> dict:
        try:
            return json.loads((self.path / "slurm_jobs.json").read_text())
        except FileNotFoundError:
            return {}

    def add_slurm_jobs(self, role: str, job_ids: list[str] | set[str]) -> None:
        """Remember SLURM job ids (``driver`` or ``workers:<stage>``) for ``hpcpop status``."""
        jobs = self.slurm_jobs()
        known = list(jobs.get(role, []))
        new = [j for j in sorted(job_ids) if j and j not in known]
        if new:
            jobs[role] = known + new
            atomic.write_json(self.path / "slurm_jobs.json", jobs)

    def log_path(self) -> Path:
        return self.path / "hpcpop.log"


def default_run_dir(manifest: Manifest) -> Path:
    """``<storage>/<name>-<YYYYmmdd-HHMMSS>`` for a local storage (relative to the manifest's folder)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    storage = manifest.storage
    if is_remote(storage):
        base = Path("hpcpop-runs")  # remote storage holds stores; the run directory stays local
    else:
        storage = local_path(storage)
        base = Path(storage) if Path(storage).is_absolute() else Path(manifest.base_dir) / storage
    path = base / f"{manifest.name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{manifest.name}-{stamp}-{n}"
    return path
