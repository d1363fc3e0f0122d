"""TLS on SLURM profiles: certificates made for the run, kept where only the user can read them, and a
client without them refused by the live scheduler."""

from __future__ import annotations

import socket
import ssl
import stat

import pytest
from helpers import profile_of, slurm_profile_data

from hpc_popgen.cluster.clusters import run_security, start_cluster

pytestmark = pytest.mark.slurm


def test_client_without_the_runs_certificate_is_refused(tmp_path, slurm, slurm_cleanup):
    from distributed import Client

    security = tmp_path / "run" / "security"
    profile = profile_of({**slurm_profile_data(), "name": "test-slurm"})
    handle = start_cluster(profile, None, name="tls", log_directory=str(tmp_path / "run" / "slurm-logs"),
                           security_directory=security)
    try:
        address = handle.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:"), address
        assert stat.S_IMODE(security.stat().st_mode) == 0o700
        files = list(security.iterdir())
        assert files and all(stat.S_IMODE(f.stat().st_mode) & 0o077 == 0 for f in files), "worker keys: user only"
        assert "--tls-key" in handle.cluster.job_script() and str(security) in handle.cluster.job_script()

        # a worker job joins over TLS and computes
        assert handle.client.submit(lambda: 6 * 7, pure=False).result(timeout=120) == 42
        # another user: plain TCP, TLS without a certificate, TLS with a certificate of their own
        with pytest.raises((OSError, TimeoutError)):
            Client(address.replace("tls://", "tcp://"), timeout=3)
        host, port = address.removeprefix("tls://").rsplit(":", 1)
        assert not _tls_handshake_without_certificate(host, int(port))
        other = run_security(tmp_path / "other-user")
        with pytest.raises((OSError, TimeoutError)):
            Client(address, security=other, timeout=3)
    finally:
        handle.close()


def _tls_handshake_without_certificate(host: str, port: int) -> bool:
    """Whether the scheduler talks to a TLS client that shows no certificate (it must not)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(b"\0" * 8)
            return bool(tls.recv(1))  # TLS 1.3 reports a missing client certificate on the first read
    except (ssl.SSLError, OSError):
        return False
