"""Encryption, Hubble and Gateway API in the whole program (``__main__.py``) under the mock engine: what the
release gets before it, which checks are built, and what is refused before any resource."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pulumi
import pytest

from tests.main_program import RELEASE, run_stack, with_changes
from tests.mocks import Recorded
from tests.stacks.test_gateway_api import STANDARD, bundle
from tests.test_main import registered_names

SECRET_HEX = "5f2c9a7e13b48d06fa5c8e21b7409dd3ac61e5f8"
IPSEC_KEY = f"3+ rfc4106(gcm(aes)) {SECRET_HEX} 128"
L2 = {"mode": "l2", "pools": [{"name": "lab", "blocks": ["192.168.56.200/29"]}], "l2": {"interfaces": ["^eth0$"]}}
SECRET = "kubernetes:core/v1:Secret"
CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def release(rec: Recorded) -> Any:
    (found,) = rec.of_type(RELEASE)
    return found


def refused(changes: dict[str, Any], secrets: dict[str, str] | None = None) -> str:
    """The program's error for the dev stack with ``changes``; asserts nothing was registered."""
    caught: list[str] = []

    def run() -> None:
        with pytest.raises(pulumi.RunError) as error:
            run_stack(with_changes(**changes), secrets=secrets)
        caught.append(str(error.value))

    assert registered_names(run) == []
    return caught[0]


# --- IPsec: the key as a Secret the release mounts, and only as a secret --------------------------------


def test_the_ipsec_key_becomes_the_secret_the_release_mounts_and_appears_nowhere_in_plaintext():
    rec = run_stack(with_changes(features={"encryption": "ipsec"}), secrets={"ipsecKey": IPSEC_KEY + "\n"})
    secret = rec.named("cilium-ipsec-keys")
    assert secret.type == SECRET
    assert secret.inputs["metadata"] == {
        "name": "cilium-ipsec-keys",
        "namespace": "kube-system",
        "labels": {"app.kubernetes.io/part-of": "k3s-cilium"},
    }
    # The chart's default key name (encryption.ipsec.keyFile) holds the key, stripped, sent as a secret.
    assert secret.inputs["stringData"] == {"keys": IPSEC_KEY}
    assert secret.is_secret("stringData")
    assert {"data", "stringData"} <= set(secret.options["additional_secret_outputs"])
    assert rec.depends_on(release(rec), secret)
    values = release(rec).inputs["values"]["encryption"]
    assert values["type"] == "ipsec" and values["ipsec"]["secretName"] == "cilium-ipsec-keys"
    for resource in rec.resources:
        for path, text in resource.plain_strings():
            assert SECRET_HEX not in text, f"{resource.name}.{path} holds the IPsec key in plaintext"
    assert len(rec.matching(r"^verify-collect-")) == 3
    assert {"encryption-status"} <= set(rec.exports["verification"]["nodes"]["agent-1"])


def test_ipsec_without_its_key_or_with_a_malformed_one_is_refused_before_any_resource():
    missing = refused({"features": {"encryption": "ipsec"}})
    assert "k3s-cilium:ipsecKey: features.encryption 'ipsec' needs the pre-shared key" in missing
    malformed = refused({"features": {"encryption": "ipsec"}}, {"ipsecKey": IPSEC_KEY.replace("3+", "3")})
    assert "k3s-cilium:ipsecKey: the key id must end in '+'" in malformed and SECRET_HEX not in malformed


def test_wireguard_with_big_tcp_is_refused_before_any_resource():
    message = refused({"tier": "extreme", "features": {"encryption": "wireguard"}})
    assert "k3s-cilium:features.bigTcp: BIG TCP needs encryption off" in message


def test_wireguard_renders_no_secret_and_checks_every_node():
    rec = run_stack(with_changes(features={"encryption": "wireguard"}))
    assert rec.of_type(SECRET) == []
    wireguard = {"enabled": True, "type": "wireguard", "nodeEncryption": False}
    assert release(rec).inputs["values"]["encryption"] == wireguard
    collect = rec.named("verify-collect-agent-2").script()
    assert "encrypt status" in collect and "Number of peers: 2$" in collect


# --- Hubble: relay and UI checked through the cluster ----------------------------------------------------


def test_hubble_relay_and_ui_are_checked_after_the_node_checks():
    rec = run_stack(with_changes(features={"hubble": True}, hubble={"ui": True, "metrics": ["drop", "tcp"]}))
    hubble = release(rec).inputs["values"]["hubble"]
    assert hubble["ui"] == {"enabled": True} and hubble["metrics"]["enabled"] == ["drop", "tcp"]
    relay = rec.named("verify-hubble-relay-cluster")
    assert "EXPECTED_NODES=3" in relay.script()
    for node in ("server-1", "agent-1", "agent-2"):
        assert rec.depends_on(relay, rec.named(f"verify-agent-status-assert-{node}"))
        collect = rec.named(f"verify-collect-{node}").script()
        assert "hubble-server hubble-metrics" in collect and "PORT=9965" in collect
    assert "deployment/hubble-ui" in rec.named("verify-hubble-ui-cluster").script()


# --- Gateway API: the CRDs before the release, a Gateway and a route to probe ----------------------------


@pytest.fixture
def crd_bundle(tmp_path: Path) -> tuple[Path, str]:
    text = bundle(*STANDARD)
    path = tmp_path / "standard-install.yaml"
    path.write_text(text)
    return path, hashlib.sha256(text.encode()).hexdigest()


def gateway_stack(path: Path, sha256: str) -> dict[str, Any]:
    return with_changes(
        features={"gatewayApi": True},
        loadBalancer=L2,
        gatewayApi={"crds": {"file": str(path), "sha256": sha256}},
    )


def test_the_gateway_api_crds_come_before_the_release_and_outlive_the_stack(crd_bundle):
    rec = run_stack(gateway_stack(*crd_bundle))
    crds = rec.of_type(CRD)
    assert sorted(crd.inputs["metadata"]["name"] for crd in crds) == [
        "gatewayclasses.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
    ]
    # First what the cluster has: none of them may be another owner's.
    checked = rec.named("cilium-gateway-api-crds-assert")
    assert "\"existing\":false" in checked.inputs["create"]
    reader = rec.named("cilium-gateway-api-crds-server-1")
    assert "CRD_NAMES='gatewayclasses.gateway.networking.k8s.io gateways." in reader.script()
    assert "WAIT_FOR_ALL=false" in reader.script()
    for crd in crds:
        assert rec.depends_on(release(rec), crd)
        assert rec.depends_on(crd, checked)
        # Deleting a CRD deletes every object of it: turning the feature off leaves them.
        assert crd.options["retain_on_delete"] is True
    values = release(rec).inputs["values"]
    assert values["gatewayAPI"]["enabled"] is True and values["l7Proxy"] is True


def test_a_gateway_and_route_to_the_smoke_service_are_checked_and_probed_from_every_node(crd_bundle):
    rec = run_stack(gateway_stack(*crd_bundle))
    gateway, route = rec.named("verify-smoke-gateway"), rec.named("verify-smoke-httproute")
    # The pool 192.168.56.200/29: the LoadBalancer test Service asks for .206, the Gateway for .205.
    assert gateway.inputs["spec"]["addresses"] == [{"type": "IPAddress", "value": "192.168.56.205"}]
    assert route.inputs["spec"]["rules"][0]["backendRefs"] == [{"name": "smoke", "port": 80}]
    address = rec.named("verify-gateway-address-cluster")
    assert rec.depends_on(address, gateway)
    assert "gatewayclass/cilium" in rec.named("verify-gatewayclass-accepted-cluster").script()
    for node in ("server-1", "agent-1", "agent-2"):
        assert "GATEWAY_TARGET=192.168.56.205:80" in rec.named(f"verify-collect-{node}").script()


def test_crds_installed_elsewhere_are_waited_for_and_checked_and_none_is_made():
    rec = run_stack(with_changes(features={"gatewayApi": True}, loadBalancer=L2,
                                 gatewayApi={"crds": {"external": True}}))
    assert rec.of_type(CRD) == []
    reader = rec.named("cilium-gateway-api-crds-server-1")
    assert "WAIT_FOR_ALL=true" in reader.script()
    checked = rec.named("cilium-gateway-api-crds-assert")
    assert "\"existing\":true" in checked.inputs["create"]
    assert rec.depends_on(release(rec), checked)


def test_a_bundle_that_is_not_the_pinned_one_is_refused_before_any_resource(crd_bundle):
    path, _ = crd_bundle
    message = refused({"features": {"gatewayApi": True}, "loadBalancer": L2,
                       "gatewayApi": {"crds": {"file": str(path), "sha256": "b" * 64}}})
    assert "k3s-cilium:gatewayApi.crds: the Gateway API CRD bundle's sha256 is" in message


def test_gateway_api_without_a_way_to_reach_it_is_refused_before_any_resource(crd_bundle):
    path, sha256 = crd_bundle
    message = refused({"features": {"gatewayApi": True}, "gatewayApi": {"crds": {"file": str(path), "sha256": sha256}}})
    assert "k3s-cilium:features.gatewayApi: loadBalancer.mode is none" in message
