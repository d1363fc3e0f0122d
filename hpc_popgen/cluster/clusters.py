"""Start a Dask cluster for a stage: LocalCluster (default) or dask_jobqueue.SLURMCluster.

Stage ``resources`` override the profile: cores, memory and walltime go to the worker jobs, gpus
become ``--gres=gpu:N``; on a LocalCluster cores caps the worker count and memory is per worker.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProfileError

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


def cluster_kwargs(profile: dict, resources: dict | None) -> dict:
    """The keyword arguments for the cluster class: profile ``cluster`` with stage resources applied."""
    kind = profile["kind"]
    kw = _clean(copy.deepcopy(profile.get("cluster") or {}))
    res = resources or {}
    dash = profile.get("dashboard_address", "127.0.0.1:8787" if kind == "local" else ":8787")
    if kind == "local":
        n_cpu = os.cpu_count() or 1
        cores = res.get("cores")
        if kw.get("n_workers") is None:
            kw["n_workers"] = min(cores, n_cpu) if cores else n_cpu
        if res.get("max_workers"):
            kw["n_workers"] = min(kw["n_workers"], res["max_workers"])
        kw.setdefault("threads_per_worker", 1)
        kw.setdefault("processes", True)
        if res.get("memory"):
            kw["memory_limit"] = res["memory"]
        if dash is not None:
            kw["dashboard_address"] = dash
        return kw
    if kind == "slurm":
        for key in ("cores", "memory", "walltime"):
            if res.get(key):
                kw[key] = res[key]
        extra = list(kw.get("job_extra_directives") or [])
        if res.get("gpus"):
            extra = [d for d in extra if not d.startswith("--gres=gpu")] + [f"--gres=gpu:{res['gpus']}"]
        if res.get("nodes"):
            extra.append(f"--nodes={res['nodes']}")
        if extra:
            kw["job_extra_directives"] = extra
        sched = dict(kw.get("scheduler_options") or {})
        if dash is not None:
            sched.setdefault("dashboard_address", dash)
        if kw.get("interface") == "lo":
            sched.setdefault("host", "127.0.0.1")
        if sched:
            kw["scheduler_options"] = sched
        return kw
    raise ProfileError(f"profile {profile.get('name')}: unknown kind {kind!r}")


def start_cluster(profile: dict, resources: dict | None, *, name: str,
                  log_directory: str | None = None) -> ClusterHandle:
    """Start the profile's cluster for one stage (SLURM worker job logs go to ``log_directory``)."""
    from distributed import Client

    kind = profile["kind"]
    kw = cluster_kwargs(profile, resources)
    key = repr(sorted(kw.items()))
    if kind == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(**kw)
    else:
        from dask_jobqueue import SLURMCluster

        kw.setdefault("job_name", f"hpcpop-{name}")
        if log_directory:
            kw.setdefault("log_directory", log_directory)
        try:
            cluster = SLURMCluster(**kw)
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"profile {profile.get('name')}: cluster settings rejected by SLURMCluster: {exc}") from None
        adapt = profile["adapt"]
        mx = adapt["maximum_jobs"]
        if resources and resources.get("max_workers"):
            mx = min(mx, resources["max_workers"])
        cluster.adapt(minimum_jobs=min(adapt["minimum_jobs"], mx), maximum_jobs=mx)
    client = Client(cluster)
    handle = ClusterHandle(cluster=cluster, client=client, kind=kind, key=key, dashboard=_dashboard(client))
    log.info("cluster %s up; dashboard %s", kind, handle.dashboard)
    return handle


def _dashboard(client: Any) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - no bokeh, or dashboard disabled
        return None

