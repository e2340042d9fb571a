"""The LoadBalancer objects and their checks, as the whole program registers them under the mock engine."""

from __future__ import annotations

import copy
import runpy
from typing import Any

import pytest

from tests.main_program import COMMAND, RELEASE, ROOT, SECRETS, SSH_KEY, run_stack, stack_config, with_changes
from tests.mocks import Recorded, depends_transitively, run_program

CUSTOM_POOL = "kubernetes:cilium.io/v2:CiliumLoadBalancerIPPool"
L2_POLICY = "kubernetes:cilium.io/v2alpha1:CiliumL2AnnouncementPolicy"
SERVICE = "kubernetes:core/v1:Service"
ASSERTION = "command:local:Command"
L2 = {
    "mode": "l2",
    "pools": [{"name": "lan", "blocks": ["192.168.56.240/29"]}],
    "l2": {"interfaces": ["^eth0$"]},
}
PASSWORD = "md5-password-5e7a"
BGP = {
    "mode": "bgp",
    "pools": [{"name": "routed", "blocks": ["203.0.113.0/28"]}],
    "bgp": {"localASN": 64512, "peers": [{"name": "tor-1", "address": "192.168.56.1", "asn": 64513}]},
}


@pytest.fixture(scope="module")
def l2() -> Recorded:
    return run_stack(with_changes(loadBalancer=L2, verify={"smoke": True, "fromRunner": True}))


def test_l2_makes_a_pool_and_a_policy_after_the_release_once_their_crds_are_served(l2):
    (pool,) = l2.of_type(CUSTOM_POOL)
    (policy,) = l2.of_type(L2_POLICY)
    assert pool.inputs["metadata"]["name"] == "lan"
    assert pool.inputs["spec"] == {"blocks": [{"cidr": "192.168.56.240/29"}]}
    assert policy.inputs["spec"]["interfaces"] == ["^eth0$"]
    crds = l2.named("loadbalancer-crds")
    assert "ciliuml2announcementpolicies.cilium.io" in crds.script()
    release = l2.of_type(RELEASE)[0]
    provider = release.options["provider"]
    for made in (pool, policy):
        assert made.options["provider"] == provider
        assert l2.depends_on(made, crds)
    assert depends_transitively(l2, crds, release)


def test_the_test_service_asks_the_pool_for_a_known_address_and_is_judged_by_the_checks(l2):
    (service,) = [s for s in l2.of_type(SERVICE) if s.inputs["metadata"]["name"] == "smoke-lb"]
    assert service.inputs["spec"]["type"] == "LoadBalancer"
    annotations = service.inputs["metadata"]["annotations"]
    assert annotations["lbipam.cilium.io/ips"] == "192.168.56.246"
    assert annotations["pulumi.com/skipAwait"] == "true"
    assert depends_transitively(l2, service, l2.of_type(CUSTOM_POOL)[0])
    address = l2.named("verify-loadbalancer-address-assert-cluster")
    assert '"address":"192.168.56.246"' in address.inputs["create"]
    lease = l2.named("verify-l2-lease-assert-cluster")
    assert "cilium-l2announce-k3s-cilium-verify-smoke-lb" in lease.inputs["create"]
    runner = l2.named("verify-probes-runner")
    assert runner.type == ASSERTION
    assert runner.inputs["create"].endswith("--name loadbalancer-from-runner --target 192.168.56.246:80")
    for node in ("server-1", "agent-1", "agent-2"):
        collector = l2.named(f"verify-collect-{node}")
        assert "LB_ADDRESS=192.168.56.246" in collector.script()


def test_without_a_load_balancer_nothing_of_it_is_made():
    rec = run_stack(stack_config())
    assert not rec.matching(r"^loadbalancer")
    assert not [s for s in rec.of_type(SERVICE) if s.inputs["metadata"]["name"] == "smoke-lb"]
    assert not rec.matching(r"^verify-(loadbalancer-address|l2-lease)")


def run_with_secret_load_balancer(lb: dict[str, Any], secret: bool) -> Recorded:
    config = {
        **with_changes(loadBalancer=lb),
        "k3s-cilium:sshPrivateKey": SSH_KEY,
        "k3s-cilium:sshPrivateKeyPassword": "",
        "k3s-cilium:k3sToken": "",
    }
    return run_program(
        lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"),
        config=config,
        secret_config=(*SECRETS, *(("k3s-cilium:loadBalancer",) if secret else ())),
    )


def with_password() -> dict[str, Any]:
    lb = copy.deepcopy(BGP)
    lb["bgp"]["peers"][0]["password"] = PASSWORD
    return lb


def test_a_bgp_password_becomes_a_secret_kubernetes_secret_and_nothing_else():
    rec = run_with_secret_load_balancer(with_password(), secret=True)
    (secret,) = [s for s in rec.of_type("kubernetes:core/v1:Secret") if s.name.startswith("loadbalancer-bgp")]
    assert secret.inputs["metadata"] == {
        "name": "k3s-cilium-bgp-tor-1",
        "namespace": "kube-system",
        "labels": {"app.kubernetes.io/part-of": "k3s-cilium"},
    }
    assert secret.is_secret("stringData")
    for resource in rec.resources:
        for path, text in resource.plain_strings():
            assert PASSWORD not in text, f"{resource.name}.{path}"
    (peer_config,) = rec.of_type("kubernetes:cilium.io/v2:CiliumBGPPeerConfig")
    assert peer_config.inputs["spec"]["authSecretRef"] == "k3s-cilium-bgp-tor-1"
    assert rec.depends_on(peer_config, secret)
    for node in ("server-1", "agent-1", "agent-2"):
        assert rec.named(f"verify-collect-{node}").script().count("bgp peers") == 1
        assert "bgp routes advertised ipv4 unicast" in rec.named(f"verify-collect-{node}").script()


def test_a_bgp_password_in_plaintext_is_refused_naming_the_peer_and_the_fix():
    with pytest.raises(Exception, match=r"loadBalancer\.bgp\.peers\[0\]\.password is stored in plaintext") as caught:
        run_with_secret_load_balancer(with_password(), secret=False)
    assert "pulumi config set --secret --path 'loadBalancer.bgp.peers[0].password'" in str(caught.value)


def test_node_ipam_has_no_object_and_its_service_asks_for_the_node_class():
    rec = run_stack(with_changes(loadBalancer={"mode": "nodeipam"}))
    assert not rec.matching(r"^loadbalancer-(pool|l2|bgp|crds)")
    (service,) = [s for s in rec.of_type(SERVICE) if s.inputs["metadata"]["name"] == "smoke-lb"]
    assert service.inputs["spec"]["loadBalancerClass"] == "io.cilium/node"
    address = rec.named("verify-loadbalancer-address-assert-cluster")
    assert '"nodeAddresses":["192.168.56.10","192.168.56.11","192.168.56.12"]' in address.inputs["create"]
    # Each node probes its own address, which node IPAM hands the Service.
    assert "LB_ADDRESS=192.168.56.11" in rec.named("verify-collect-agent-1").script()
    assert not [r for r in rec.of_type(COMMAND) if r.name.startswith("loadbalancer")]
