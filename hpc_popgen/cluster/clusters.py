"""Start a Dask cluster for a stage: LocalCluster (default) or dask_jobqueue.SLURMCluster.

Stage ``resources`` override the profile: cores, memory and walltime go to the worker jobs, gpus
become ``--gres=gpu:N``; on a LocalCluster cores caps the worker count and memory is per worker.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ProfileError

if TYPE_CHECKING:
    from ..job import Resources
    from .profiles import Profile, WorkerLifetime

log = logging.getLogger(__name__)


@dataclass
class ClusterHandle:
    """A running cluster and its client; ``job_ids`` collects SLURM worker job ids seen."""

    cluster: Any
    client: Any
    kind: str
    key: str
    dashboard: str | None
    job_ids: set[str] = field(default_factory=set)

    def poll_job_ids(self) -> set[str]:
        """SLURM job ids of the current worker jobs (dask-jobqueue keeps them on its Job objects)."""
        if self.kind == "slurm":
            for job in list(getattr(self.cluster, "workers", {}).values()):
                jid = getattr(job, "job_id", None)
                if jid:
                    self.job_ids.add(str(jid))
        return self.job_ids

    def close(self) -> None:
        self.poll_job_ids()
        try:
            self.client.close()
        finally:
            self.cluster.close()


def _clean(d: dict) -> dict:
    """Drop null values so dask's own configuration supplies them."""
    return {k: v for k, v in d.items() if v is not None}


def cluster_kwargs(profile: Profile, resources: Resources | None, *, one_process: bool = False) -> dict:
    """The keyword arguments for the cluster class: profile ``cluster`` with stage resources applied.

    ``one_process``: a SLURM worker job runs one worker process, so a training or evaluation task gets the
    job's whole memory (and GPUs) instead of a share of them.
    """
    kind = profile.kind
    kw = _clean(copy.deepcopy(dict(profile.cluster)))
    dash = profile.dashboard_address
    if kind == "local":
        n_cpu = os.cpu_count() or 1
        cores = resources.cores if resources else None
        if "n_workers" not in kw:
            kw["n_workers"] = min(cores, n_cpu) if cores else n_cpu
        if resources and resources.max_workers:
            kw["n_workers"] = min(kw["n_workers"], resources.max_workers)
        kw.setdefault("threads_per_worker", 1)  # simulations hold the GIL: processes, not threads
        kw.setdefault("processes", True)
        if resources and resources.memory:
            kw["memory_limit"] = resources.memory
        kw["dashboard_address"] = dash
        return kw
    if kind == "slurm":
        if resources:
            for key in ("cores", "memory", "walltime"):
                if getattr(resources, key):
                    kw[key] = getattr(resources, key)
        if one_process:
            kw["processes"] = 1
        extra = list(kw.get("job_extra_directives", ()))
        if resources and resources.gpus:
            extra = [d for d in extra if not d.startswith("--gres=gpu")] + [f"--gres=gpu:{resources.gpus}"]
        if resources and resources.nodes:
            extra.append(f"--nodes={resources.nodes}")
        if extra:
            kw["job_extra_directives"] = extra
        args = list(kw.get("worker_extra_args", ()))
        lifetime = lifetime_args(kw.get("walltime"), profile.worker_lifetime)
        if lifetime:
            args = [a for a in args if not a.startswith("--lifetime")] + lifetime
        if not any(a.startswith(("--dashboard", "--no-dashboard")) for a in args):
            # no page server on every compute node (unauthenticated, on the job's interface); the scheduler's
            # dashboard shows the workers, and a worker starts ~1 s sooner without importing bokeh
            args.append("--no-dashboard")
        kw["worker_extra_args"] = args
        sched = dict(kw.get("scheduler_options", {}))
        sched.setdefault("dashboard_address", dash)
        if kw.get("interface") == "lo":
            sched.setdefault("host", "127.0.0.1")
        kw["scheduler_options"] = sched
        return kw
    raise ProfileError(f"profile {profile.name}: unknown kind {kind!r}")


def walltime_seconds(walltime: str) -> int:
    """SLURM's time formats as seconds: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    text = str(walltime).strip()
    days, dash, rest = text.rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        d = int(days) if dash else 0
    except ValueError:
        raise ProfileError(f"walltime {walltime!r}: not a SLURM time such as 01:00:00 or 1-12:00:00") from None
    if dash:  # after days: hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
    else:  # minutes, minutes:seconds, or hours:minutes:seconds
        parts = [0, *parts] if len(parts) == 2 else ([0, parts[0], 0] if len(parts) == 1 else parts)
    if len(parts) != 3:
        raise ProfileError(f"walltime {walltime!r}: not a SLURM time such as 01:00:00 or 1-12:00:00")
    h, m, sec = parts
    return d * 86400 + h * 3600 + m * 60 + sec


def lifetime_args(walltime: str | None, lifetime: WorkerLifetime | None) -> list[str]:
    """``--lifetime`` and ``--lifetime-stagger`` for workers, so they retire (tasks move to other workers)
    before SLURM kills their job at its walltime: dask-jobqueue's documented remedy.

    The lifetime is the walltime less the profile's margin (at least half the walltime); the stagger,
    at most half the margin, spreads the retirements so that not every worker leaves at once.
    """
    if not walltime or not lifetime:
        return []
    wall = walltime_seconds(walltime)
    life = max(wall - lifetime.margin_seconds, wall // 2)
    stagger = min(lifetime.stagger_seconds, (wall - life) // 2)
    return ["--lifetime", f"{life}s", "--lifetime-stagger", f"{stagger}s"]


def run_security(directory: str | Path) -> Any:
    """TLS for this run: a key and self-signed certificate made now with ``openssl`` (as
    ``Security.temporary`` does in memory), in ``directory``, readable by the user only (0700 / 0600).

    Scheduler, workers and client present this certificate and accept only peers that do, so no other
    user of the cluster can connect to the scheduler and run code. Workers read the files (shared
    filesystem), so nothing secret goes into job scripts.
    """
    import subprocess

    from distributed.security import Security

    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    key, cert = path / "run.key", path / "run.pem"
    if not (key.exists() and cert.exists()):
        try:
            out = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                                  "-days", "365", "-subj", "/CN=hpcpop-run", "-keyout", str(key), "-out", str(cert)],
                                 capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise ProfileError("TLS for the run needs `openssl` on PATH (or set `tls: false` in the profile)") from None
        if out.returncode != 0:
            raise ProfileError(f"openssl could not make the run's certificate: {out.stderr.strip().splitlines()[-1:]}")
    for f in (key, cert):
        f.chmod(0o600)
    kw = {f"tls_{role}_{part}": str(f) for role in ("scheduler", "worker", "client")
          for part, f in (("key", key), ("cert", cert))}
    return Security(tls_ca_file=str(cert), require_encryption=True, **kw)


def check_sbatch(cluster: Any, profile: Profile, folder: str | Path) -> None:
    """Ask sbatch (``--test-only``: nothing is queued) whether it takes the worker job script; a refusal
    (unknown partition, account, QOS, limits) fails now, with sbatch's reason, instead of hanging."""
    import subprocess
    import tempfile

    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".sbatch", dir=folder, prefix="worker-test-") as fh:
        fh.write(cluster.job_script())
        fh.flush()
        try:
            out = subprocess.run(["sbatch", "--test-only", fh.name], capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise ProfileError(f"profile {profile.name}: `sbatch` not found; run on a SLURM login node") from None
        except subprocess.TimeoutExpired:
            log.warning("sbatch --test-only did not answer in 60 s; submitting worker jobs anyway")
            return
    if out.returncode != 0:
        reason = "; ".join(line.strip() for line in out.stderr.splitlines() if line.strip()) or f"exit {out.returncode}"
        raise ProfileError(f"profile {profile.name}: sbatch refuses the worker jobs: {reason}")


def start_cluster(profile: Profile, resources: Resources | None, *, name: str, log_directory: str | None = None,
                  security_directory: str | Path | None = None, one_process: bool = False) -> ClusterHandle:
    """Start the profile's cluster for one stage (SLURM worker job logs go to ``log_directory``).

    On SLURM, with the profile's ``tls`` (the default) and a ``security_directory``, scheduler, workers and
    client talk TLS with certificates made for the run.
    """
    import dask
    from distributed import Client

    kind = profile.kind
    kw = cluster_kwargs(profile, resources, one_process=one_process)
    # read by the cluster each time a worker goes away: how long before its job (or nanny) is replaced
    dask.config.set({"distributed.deploy.lost-worker-timeout": f"{profile.lost_worker_timeout_s}s"})
    key = repr(sorted(kw.items()))
    if kind == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(**kw)
    else:
        from dask_jobqueue import SLURMCluster

        kw.setdefault("job_name", f"hpcpop-{name}")
        if log_directory:
            kw.setdefault("log_directory", log_directory)
        if profile.tls and security_directory:
            kw["security"] = run_security(security_directory)
            kw["shared_temp_directory"] = str(security_directory)
        try:
            cluster = SLURMCluster(**kw)
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"profile {profile.name}: cluster settings rejected by SLURMCluster: {exc}") from None
        try:
            check_sbatch(cluster, profile, log_directory or ".")
        except ProfileError:
            cluster.close()
            raise
        mx = profile.adapt.maximum_jobs
        if resources and resources.max_workers:
            mx = min(mx, resources.max_workers)
        cluster.adapt(minimum_jobs=min(profile.adapt.minimum_jobs, mx), maximum_jobs=mx)
    client = Client(cluster)
    from .worker_exit import QuickExit

    client.register_plugin(QuickExit(), name=QuickExit.name)
    handle = ClusterHandle(cluster=cluster, client=client, kind=kind, key=key, dashboard=_dashboard(cluster, client))
    log.info("cluster %s up; dashboard %s", kind, handle.dashboard)
    return handle


def _dashboard(cluster: Any, client: Any) -> str | None:
    """The dashboard's URL from the address its server bound, not the scheduler's (Dask's ``dashboard_link``
    names the scheduler's host, where nothing listens when the dashboard is on loopback, as on SLURM)."""
    try:
        server = getattr(getattr(cluster, "scheduler", None), "http_server", None)
        if server is not None:
            host, port = server.address, server.port
        else:  # a scheduler in another process: ask it
            host, port = client.run_on_scheduler(_bound_dashboard)
    except Exception:  # noqa: BLE001 - no bokeh, or dashboard disabled
        return None
    if host in ("", "0.0.0.0", "::"):  # every interface: the scheduler's own address is one of them
        from distributed.comm import get_address_host

        host = get_address_host(client.scheduler.address)
    from distributed.utils import format_dashboard_link

    return format_dashboard_link(f"[{host}]" if ":" in host else host, port)


def _bound_dashboard(dask_scheduler: Any) -> tuple[str, int]:
    """On the scheduler: the host and port its dashboard's HTTP server listens on."""
    return dask_scheduler.http_server.address, dask_scheduler.http_server.port

