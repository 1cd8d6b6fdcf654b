"""deploy/healthcheck.py, the images' `onnxplain-healthcheck`: run as Docker and the kubelet run it, against real
servers, in plain text and over TLS (where it stands in for the kubelet's gRPC probe, which cannot speak TLS)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certificates import CertificateAuthority
from support.servers import RunningServer, start_server

from onnxplain.server.demo import REPOSITORY


def healthcheck(deploy_dir: Path, address: str, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(deploy_dir / "healthcheck.py"), "--address", address, *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def plain_server() -> Iterator[RunningServer]:
    server = start_server(REPOSITORY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[RunningServer, Path]]:
    """A TLS server whose certificate names localhost and 127.0.0.1, and the CA file that verifies it."""
    folder = tmp_path_factory.mktemp("tls")
    authority = CertificateAuthority("onnxplain test CA")
    certificate, key = authority.server().write(folder, "server")
    (folder / "ca.crt").write_bytes(authority.certificate)
    server = start_server(REPOSITORY, "--tls-cert", str(certificate), "--tls-key", str(key))
    yield server, folder / "ca.crt"
    server.stop()


def test_a_ready_server_is_healthy(plain_server, deploy_dir):
    result = healthcheck(deploy_dir, plain_server.target)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SERVING"


def test_no_server_is_unhealthy(deploy_dir):
    stopped = start_server(REPOSITORY)
    address = stopped.target
    assert stopped.stop() == 0
    result = healthcheck(deploy_dir, address, "--timeout", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


def test_an_unknown_service_is_unhealthy(plain_server, deploy_dir):
    result = healthcheck(deploy_dir, plain_server.target, "--service", "no.such.Service")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr


def test_over_tls_with_the_ca(tls_server, deploy_dir):
    server, ca_file = tls_server
    assert healthcheck(deploy_dir, server.target, "--ca-file", str(ca_file)).returncode == 0
    by_name = healthcheck(deploy_dir, server.target, "--ca-file", str(ca_file), "--server-name", "localhost")
    assert by_name.returncode == 0, by_name.stderr


def test_over_tls_the_certificate_is_verified(tls_server, deploy_dir):
    server, ca_file = tls_server
    plain_text = healthcheck(deploy_dir, server.target, "--timeout", "2")
    assert plain_text.returncode == 1
    wrong_name = healthcheck(deploy_dir, server.target, "--ca-file", str(ca_file), "--server-name", "elsewhere")
    assert wrong_name.returncode == 1
    other_authority = ca_file.with_name("other.crt")
    other_authority.write_bytes(CertificateAuthority("another CA").certificate)
    untrusted = healthcheck(deploy_dir, server.target, "--ca-file", str(other_authority), "--timeout", "2")
    assert untrusted.returncode == 1
