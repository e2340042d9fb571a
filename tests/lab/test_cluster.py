"""The namespace cluster's certificates and kubeconfigs, checked with openssl and YAML (no cluster needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from lab.cluster import pki
from lab.cluster.control_plane import write_kubeconfig


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_the_serving_certificate_chains_to_the_ca_and_names_every_address(tmp_path: Path) -> None:
    authority = pki.ca(tmp_path)
    serving = pki.signed(
        authority, tmp_path, "apiserver", "/CN=kube-apiserver", server=True, sans=["IP:10.99.0.1", "DNS:kubernetes"]
    )
    assert openssl("verify", "-CAfile", str(authority.cert), "-purpose", "sslserver", str(serving.cert)).strip() == (
        f"{serving.cert}: OK"
    )
    text = openssl("x509", "-in", str(serving.cert), "-noout", "-ext", "subjectAltName,extendedKeyUsage")
    assert "IP Address:10.99.0.1" in text and "DNS:kubernetes" in text
    assert "TLS Web Server Authentication" in text and "Client" not in text


def test_a_client_certificate_carries_the_kubernetes_user_and_group(tmp_path: Path) -> None:
    authority = pki.ca(tmp_path)
    admin = pki.signed(authority, tmp_path, "admin", "/CN=lab-admin/O=system:masters")
    assert openssl("verify", "-CAfile", str(authority.cert), "-purpose", "sslclient", str(admin.cert)).endswith("OK\n")
    subject = openssl("x509", "-in", str(admin.cert), "-noout", "-subject", "-nameopt", "RFC2253")
    assert subject.strip() == "subject=O=system:masters,CN=lab-admin"
    # Not a server: a stolen client certificate cannot serve as the API server.
    refused = subprocess.run(
        ["openssl", "verify", "-CAfile", str(authority.cert), "-purpose", "sslserver", str(admin.cert)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0


def test_service_account_keys_are_a_pair(tmp_path: Path) -> None:
    keys = pki.service_account_keys(tmp_path)
    derived = openssl("pkey", "-in", str(keys.key), "-pubout")
    assert derived == keys.cert.read_text()


def test_a_kubeconfig_points_kubectl_at_the_server_with_the_client_pair(tmp_path: Path) -> None:
    client = pki.Pair(tmp_path / "admin.crt", tmp_path / "admin.key")
    path = tmp_path / "admin.kubeconfig"
    write_kubeconfig(path, "https://127.0.0.1:6443", tmp_path / "ca.crt", client)
    config = yaml.safe_load(path.read_text())
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    assert cluster == {"server": "https://127.0.0.1:6443", "certificate-authority": str(tmp_path / "ca.crt")}
    assert user == {"client-certificate": str(client.cert), "client-key": str(client.key)}
