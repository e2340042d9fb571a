"""The namespace cluster's parts that need no cluster: certificates, kubeconfigs, images, its stack, the shims."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from lab.cluster import coredns, images, oci, pki
from lab.cluster.chart import CHART_VALUES, HUBBLE, TIERS, hubble_tls, program_plan, stack_config, write_stack
from lab.cluster.cluster import CLUSTER_DNS, is_relay_image
from lab.cluster.control_plane import kubeconfig_text, write_kubeconfig
from lab.cluster.datapath import flows_of, metric_families
from lab.cluster.node import API_FORWARD, Node, install_k3s_shim


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


def test_the_program_kubeconfig_holds_what_the_product_reads_from_it(tmp_path: Path) -> None:
    from components.cilium import cluster_ca

    authority = pki.ca(tmp_path)
    admin = pki.signed(authority, tmp_path, "admin", "/CN=lab-admin/O=system:masters")
    text = kubeconfig_text("https://10.99.0.10:6443", authority.cert, admin, embedded=True)
    # The product's API check verifies the server against this CA (stdin of verification.api_reachable).
    assert cluster_ca(text) == authority.cert.read_text().strip()
    user = yaml.safe_load(text)["users"][0]["user"]
    assert base64.b64decode(user["client-key-data"]) == admin.key.read_bytes()
    assert yaml.safe_load(text)["clusters"][0]["cluster"]["server"] == "https://10.99.0.10:6443"


@pytest.mark.parametrize("tier", TIERS)
def test_the_lab_stack_is_planned_by_the_program_at_every_tier(tier: str, tmp_path: Path) -> None:
    nodes = [("server-1", "10.99.0.10"), ("agent-1", "10.99.0.11")]
    keys = {name: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{'A' * 42}{i} {name}" for i, (name, _) in enumerate(nodes)}
    config = stack_config(tier, nodes, keys)
    assert [n["hostKey"] for n in config["k3s-cilium:nodes"]] == [" ".join(k.split()[:2]) for k in keys.values()]
    plan = program_plan(write_stack(tmp_path / f"Pulumi.{tier}.yaml", config))
    assert plan["tier"] == tier
    capabilities = plan["ciliumValues"]["securityContext"]["capabilities"]
    assert capabilities and all("SYS_RESOURCE" not in caps for caps in capabilities.values())
    # No k8sServiceHost of its own: the program's default, K3s' 127.0.0.1:6444, which the lab forwards.
    assert plan["ciliumValues"].get("k8sServiceHost") in (None, "127.0.0.1")


def test_the_api_forward_carries_bytes_both_ways() -> None:
    with socket.create_server(("127.0.0.1", 0)) as target:
        target_port = target.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            listen_port = probe.getsockname()[1]
        forward = subprocess.Popen(
            [sys.executable, str(API_FORWARD), f"127.0.0.1:{listen_port}", f"127.0.0.1:{target_port}"]
        )
        try:
            client = connect_when_listening(listen_port)
            with client:
                client.sendall(b"ping")
                accepted, _ = target.accept()
                with accepted:
                    assert accepted.recv(4) == b"ping"
                    accepted.sendall(b"pong")
                    assert client.recv(4) == b"pong"
        finally:
            forward.terminate()
            forward.wait(timeout=10)


def connect_when_listening(port: int) -> socket.socket:
    for _ in range(100):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_the_k3s_shim_hands_kubectl_on_with_the_admin_kubeconfig_and_refuses_the_rest(tmp_path: Path) -> None:
    binaries = tmp_path / "bin"
    binaries.mkdir()
    (binaries / "kubectl").write_text('#!/bin/sh\necho "kubectl $*"\n')
    (binaries / "kubectl").chmod(0o755)
    server = Node("server-1", "unused", "10.99.0.10", tmp_path / "server-1")
    agent = Node("agent-1", "unused", "10.99.0.11", tmp_path / "agent-1")
    install_k3s_shim(server, binaries, Path("/etc/rancher/k3s/k3s.yaml"))
    install_k3s_shim(agent, binaries, None)

    def shim(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
        path = node.directory / "root" / "usr" / "local" / "bin" / "k3s"
        return subprocess.run([str(path), *args], capture_output=True, text=True)

    said = shim(server, "kubectl", "get", "nodes")
    assert said.returncode == 0 and said.stdout == "kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml get nodes\n"
    refused = shim(agent, "kubectl", "get", "nodes")
    assert refused.returncode == 1 and "no admin kubeconfig" in refused.stderr
    other = shim(server, "server", "--disable-kube-proxy")
    assert other.returncode == 1 and "'server' is not K3s here" in other.stderr


def test_the_hubble_certificates_chain_to_one_ca_with_the_names_the_relay_and_agents_use(tmp_path: Path) -> None:
    values = hubble_tls(tmp_path)
    assert values["hubble"]["tls"]["auto"] == {"enabled": False}
    files = {
        "ca": values["tls"]["ca"]["cert"],
        "server": values["hubble"]["tls"]["server"]["cert"],
        "client": values["hubble"]["relay"]["tls"]["client"]["cert"],
    }
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(base64.b64decode(data))
    ca = str(tmp_path / "ca.pem")
    server, client = str(tmp_path / "server.pem"), str(tmp_path / "client.pem")
    assert openssl("verify", "-CAfile", ca, "-purpose", "sslserver", server).endswith("OK\n")
    assert openssl("verify", "-CAfile", ca, "-purpose", "sslclient", client).endswith("OK\n")
    # The relay asks every agent for <node>.<cluster>.hubble-grpc.cilium.io (cluster "default").
    assert openssl(
        "verify", "-CAfile", ca, "-verify_hostname", "agent-1.default.hubble-grpc.cilium.io", server
    ).endswith("OK\n")
    # Made once per run directory: the values (and so a no-op `up`) stay the same.
    assert hubble_tls(tmp_path) == values


def test_the_hubble_stack_is_planned_with_the_programs_hubble_checks(tmp_path: Path) -> None:
    nodes = [("server-1", "10.99.0.10"), ("agent-1", "10.99.0.11")]
    config = stack_config("kpr", nodes, hubble=hubble_tls(tmp_path))
    assert config["k3s-cilium:features"] == {"hubble": True} and config["k3s-cilium:hubble"] == HUBBLE
    plan = program_plan(write_stack(tmp_path / "Pulumi.hubble.yaml", config))
    checks = sorted((c["check"], c["node"]) for c in plan["checks"] if c["check"].startswith("hubble"))
    assert checks == sorted(
        [("hubble-relay", None)] + [(c, n) for n, _ in nodes for c in ("hubble-server", "hubble-metrics")]
    )
    assert plan["ciliumValues"]["hubble"]["tls"]["auto"]["enabled"] is False
    # The extreme tier's overrides and Hubble together.
    assert stack_config("extreme", nodes, hubble={})["k3s-cilium:features"]["hubble"] is True
    # The chart's default cluster name, part of the agents' TLS names.
    assert yaml.safe_load(CHART_VALUES.read_text())["cluster"]["name"] == "default"
    assert "cluster" not in plan["ciliumValues"]


def test_the_relay_image_is_its_own_with_the_binary_where_the_chart_runs_it(tmp_path: Path) -> None:
    assert is_relay_image("lab.local/cilium/hubble-relay:v1.19.6")
    assert not is_relay_image("lab.local/cilium/cilium:v1.19.6") and not is_relay_image("x/hubble-relay-x:v1")
    binaries = tmp_path / "bin"
    binaries.mkdir()
    (binaries / "hubble-relay").write_bytes(b"#!/bin/true\n")
    (binaries / "hubble-relay").chmod(0o755)
    archive = images.build_relay(binaries, tmp_path / "images", ["lab.local/cilium/hubble-relay:v1.19.6"])
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
        layers = [m for m in outer.getmembers() if m.size > 2048]
        content = outer.extractfile(max(layers, key=lambda m: m.size))
        with tarfile.open(fileobj=content) as layer:
            members = {m.name: m for m in layer.getmembers()}
            passwd = layer.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert names == ["lab.local/cilium/hubble-relay:v1.19.6"]
    assert members["usr/local/bin/hubble-relay"].mode & 0o111
    assert members["tmp"].mode & 0o7777 == 0o1777
    assert "nonroot:x:65532:65532:nonroot:/home/nonroot:" in passwd
    # Its home belongs to it (the relay's gops agent writes there), everything else to root.
    home = members["home/nonroot"]
    assert (home.uid, home.gid, home.mode & 0o7777) == (65532, 65532, 0o700)
    assert {(m.uid, m.gid) for name, m in members.items() if name != "home/nonroot"} == {(0, 0)}


def test_coredns_is_deployed_as_k3s_names_it_at_the_clusters_dns_address() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in coredns.manifests(CLUSTER_DNS)}
    service = objects[("Service", "kube-dns")]
    assert service["spec"]["clusterIP"] == CLUSTER_DNS and service["metadata"]["namespace"] == "kube-system"
    deployment = objects[("Deployment", "coredns")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == coredns.IMAGE
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"] == coredns.LABELS
    assert "kubernetes cluster.local" in objects[("ConfigMap", "coredns")]["data"]["Corefile"]
    assert "SYS_RESOURCE" not in json.dumps(deployment)


def test_the_labs_reads_of_flows_and_metrics() -> None:
    flows = flows_of(
        '{"flow":{"verdict":"FORWARDED","node_name":"agent-1"},"node_name":"agent-1"}\n'
        'not json\n{"verdict":"DROPPED"}\n'
    )
    assert [f["verdict"] for f in flows] == ["FORWARDED", "DROPPED"]
    text = (
        "# HELP hubble_flows_processed_total x\n"
        'hubble_flows_processed_total{type="L3_L4",verdict="FORWARDED"} 12\n'
        'hubble_flows_processed_total{type="Trace",verdict="FORWARDED"} 3\n'
        "hubble_lost_events_total 0\n"
        "cilium_other 5\n"
    )
    assert metric_families(text) == {
        "hubble_flows_processed_total": {"samples": 2, "sum": 15.0},
        "hubble_lost_events_total": {"samples": 1, "sum": 0.0},
    }
