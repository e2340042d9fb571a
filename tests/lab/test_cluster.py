"""The namespace cluster's certificates and kubeconfigs, checked with openssl and YAML (no cluster needed)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import yaml

from lab.cluster import oci, pki
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


def read_archive(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_an_image_archive_is_an_oci_layout_whose_digests_hold(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "serve").write_bytes(b"#!/bin/sh\necho hi\n")
    (tree / "bin" / "serve").chmod(0o755)
    archive = tmp_path / "image.tar"
    digest = oci.write_archive(archive, "docker.io/library/nginx:1.28.0-alpine", tree, entrypoint=["/bin/serve"])
    files = read_archive(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, blob in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(blob).hexdigest() == name.rsplit("/", 1)[1]
    [entry] = json.loads(files["index.json"])["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/library/nginx:1.28.0-alpine"
    manifest = json.loads(files["blobs/sha256/" + digest.removeprefix("sha256:")])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].removeprefix("sha256:")])
    assert config["config"]["Entrypoint"] == ["/bin/serve"]
    [layer] = manifest["layers"]
    layer_blob = files["blobs/sha256/" + layer["digest"].removeprefix("sha256:")]
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed: the layer is its own diff
    with tarfile.open(fileobj=io.BytesIO(layer_blob)) as tar:
        serve = tar.getmember("bin/serve")
        assert (serve.mode & 0o777, serve.uid, serve.mtime) == (0o755, 0, 0)
        assert tar.extractfile(serve).read() == b"#!/bin/sh\necho hi\n"  # type: ignore[union-attr]


def test_the_same_tree_gives_the_same_image(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "pause").write_bytes(b"\x7fELF")
    first = oci.write_archive(tmp_path / "a.tar", "registry.k8s.io/pause:3.10", tree, entrypoint=["/pause"])
    os.utime(tree / "pause", (1_000_000_000, 1_000_000_000))  # another modification time changes nothing
    second = oci.write_archive(tmp_path / "b.tar", "registry.k8s.io/pause:3.10", tree, entrypoint=["/pause"])
    assert first == second
