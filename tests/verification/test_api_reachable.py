"""``python -m verification.api_reachable`` run for real against local TLS servers, closed ports and silent ones.

Certificates are made with the ``openssl`` CLI: a CA, and a server certificate
it signed for 127.0.0.1 (what K3s' serving certificate holds too), so the
handshake is verified the way the Kubernetes provider verifies it.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verification import api_reachable

ROOT = Path(__file__).resolve().parents[2]


def check(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verification.api_reachable", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def openssl(*args: str, cwd: Path) -> None:
    tool = shutil.which("openssl")
    assert tool, "openssl is needed to make test certificates"
    subprocess.run([tool, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}", cwd=directory)
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A cluster CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca(directory, "k3s-server-ca")
    _, other_ca = make_ca(directory, "other-ca")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:kubernetes\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=k3s", cwd=directory)
    openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=directory)
    return {"ca": ca_cert, "other_ca": other_ca, "cert": directory / "server.crt", "key": directory / "server.key"}


@pytest.fixture
def tls_server(pki: dict[str, Path]) -> Iterator[int]:
    """A TLS server on 127.0.0.1 (an ephemeral port) that completes handshakes; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["cert"], pki["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word: a handshake hangs."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    yield listener.getsockname()[1]
    listener.close()


def test_answering_api_server_verified_against_the_cluster_ca(tls_server: int, pki: dict[str, Path]) -> None:
    result = check("--endpoint", "127.0.0.1", "--port", str(tls_server), "--timeout", "5",
                   stdin=pki["ca"].read_text())
    assert result.returncode == 0, result.stderr
    assert f"https://127.0.0.1:{tls_server}" in result.stdout
    assert "cluster CA" in result.stdout


def test_answering_api_server_without_a_ca_is_a_plain_handshake(tls_server: int) -> None:
    result = check("--endpoint", "127.0.0.1", "--port", str(tls_server), "--timeout", "5")
    assert result.returncode == 0, result.stderr


def test_refused_connection_fails_naming_the_endpoint_and_the_forward(closed_port: int) -> None:
    result = check("--endpoint", "10.20.0.99", "--port", str(closed_port), "--timeout", "0.5", "--attempts", "1",
                   "--target", "10.20.0.11", "--via", "ops@bastion.example.com:2222")
    assert result.returncode == 1
    assert f"https://10.20.0.99:{closed_port}" in result.stderr
    # The fix: a local forward through the bastion to the first server, and 127.0.0.1 as endpoint.
    assert f"ssh -N -L {closed_port}:10.20.0.11:{closed_port} -p 2222 ops@bastion.example.com" in result.stderr
    assert "k3s.apiEndpoint" in result.stderr and "127.0.0.1" in result.stderr


def test_loopback_endpoint_without_the_forward_says_to_start_it(closed_port: int) -> None:
    result = check("--endpoint", "127.0.0.1", "--port", str(closed_port), "--timeout", "0.5", "--attempts", "1",
                   "--target", "10.20.0.11", "--via", "ops@bastion.example.com:22")
    assert result.returncode == 1
    assert "connection refused" in result.stderr
    assert "start the SSH local forward" in result.stderr
    assert f"ssh -N -L {closed_port}:10.20.0.11:{closed_port} -p 22 ops@bastion.example.com" in result.stderr


def test_silent_endpoint_is_bounded_by_the_timeout(silent_port: int) -> None:
    started = time.monotonic()
    result = check("--endpoint", "127.0.0.1", "--port", str(silent_port), "--timeout", "0.5", "--attempts", "2",
                   "--delay", "0.1", "--target", "127.0.0.1", "--via", "root@10.20.0.11:22")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "no TLS handshake within 0.5s" in result.stderr
    assert "2 attempts" in result.stderr
    assert elapsed < 10
    # Without a bastion the forward goes through the server itself.
    assert f"ssh -N -L {silent_port}:127.0.0.1:{silent_port} -p 22 root@10.20.0.11" in result.stderr


def test_certificate_of_another_ca_is_not_this_cluster(tls_server: int, pki: dict[str, Path]) -> None:
    result = check("--endpoint", "127.0.0.1", "--port", str(tls_server), "--timeout", "5", "--attempts", "3",
                   stdin=pki["other_ca"].read_text())
    assert result.returncode == 1
    assert "not this cluster's API server" in result.stderr
    # Certificate problems are not retried: they do not go away.
    assert "1 attempt" in result.stderr


def test_unresolvable_name_is_named() -> None:
    result = check("--endpoint", "k8s.invalid", "--timeout", "0.5", "--attempts", "1")
    assert result.returncode == 1
    assert "https://k8s.invalid:6443" in result.stderr
    assert "cannot resolve k8s.invalid" in result.stderr


def test_bad_usage_and_bad_ca_exit_2() -> None:
    assert check("--endpoint", "127.0.0.1", "--timeout", "0").returncode == 2
    bad = check("--endpoint", "127.0.0.1", stdin="not a certificate\n")
    assert bad.returncode == 2 and "PEM" in bad.stderr


def test_forward_command() -> None:
    assert api_reachable.forward_command("10.0.0.5", 6443, "ops@jump:22") == (
        "ssh -N -L 6443:10.0.0.5:6443 -p 22 ops@jump"
    )
    assert api_reachable.forward_command("::1", 6443, "ops@[2001:db8::1]:22") == (
        "ssh -N -L 6443:[::1]:6443 -p 22 ops@2001:db8::1"
    )
    assert api_reachable.forward_command(None, 6443, None) == "ssh -N -L 6443:<server>:6443 <bastion>"
