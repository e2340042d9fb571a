"""The lab program (lab/programs/datapath) under the mock engine, with the config lab/run datapath gives it."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.cluster.chart import CHART, L2_ANNOUNCE_LABEL, hubble_tls
from lab.cluster.datapath import PHASES, PROGRAM, engine_config
from tests.mocks import Recorded, depends_transitively, run_program

NODES = [("server-1", "10.99.0.10"), ("agent-1", "10.99.0.11"), ("agent-2", "10.99.0.12")]
HOST_KEYS = {name: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{'B' * 42}{i} {name}" for i, (name, _) in enumerate(NODES)}
PROJECT = yaml.safe_load((PROGRAM / "Pulumi.yaml").read_text())["name"]
KUBECONFIG = f"{PROJECT}:kubeconfig"
SSH_KEY = "k3s-cilium:sshPrivateKey"


def run_lab_program(tier: str, l2: bool = False, hubble: dict[str, Any] | None = None) -> Recorded:
    config = {
        **engine_config(tier, NODES, HOST_KEYS, l2=l2, hubble=hubble),
        SSH_KEY: "-----BEGIN OPENSSH PRIVATE KEY-----\nlab\n-----END OPENSSH PRIVATE KEY-----\n",
        KUBECONFIG: "apiVersion: v1\nkind: Config\nclusters: []\n",
    }
    return run_program(
        lambda: runpy.run_path(str(PROGRAM / "__main__.py"), run_name="__main__"),
        project=PROJECT,
        config=config,
        secret_config=(SSH_KEY, KUBECONFIG),
    )


@pytest.mark.parametrize("tier", ["baseline", "kpr", "performance", "extreme"])
def test_the_lab_program_builds_the_products_cilium_half_without_the_k3s_check(tier: str) -> None:
    rec = run_lab_program(tier)
    for component in ("CiliumRelease", "KubeProxyRemoval", "Verification"):
        assert len(rec.of_type(f"k3s-cilium:index:{component}")) == 1
    assert not rec.of_type("k3s-cilium:index:K3sCluster")
    # The product's own names: the lab exercises the resources `pulumi up` makes on real hosts.
    release = rec.named("cilium-release")
    assert Path(release.inputs["chart"]) == CHART
    assert rec.named("verify-agent-status-assert-agent-2")
    assert not rec.matching("kpr-integrity")
    assert bool(rec.matching("^kube-proxy-cleanup-")) == (tier != "baseline")
    for node, (_, address) in zip(HOST_KEYS, NODES, strict=True):
        connection = rec.named(f"verify-collect-{node}").inputs["connection"]
        assert connection["host"] == address
        assert connection["hostKey"] == " ".join(HOST_KEYS[node].split()[:2])
    assert rec.exports["omittedChecks"] == ["kpr-integrity"]
    assert rec.exports["tier"] == tier
    # Without loadBalancer: nothing of it, as __main__.py exports it.
    assert not rec.of_type("k3s-cilium:index:LoadBalancing")
    assert rec.exports["loadBalancer"] == {"mode": "none", "objects": []}


def test_the_l2_phase_builds_the_products_load_balancing_and_probes_the_address_from_the_runner() -> None:
    rec = run_lab_program("kpr", l2=True)
    assert len(rec.of_type("k3s-cilium:index:LoadBalancing")) == 1
    # The product's names and objects (components/load_balancer.py), through the release's provider.
    pool = rec.named("loadbalancer-pool-lab")
    assert pool.type == "kubernetes:cilium.io/v2:CiliumLoadBalancerIPPool"
    assert pool.inputs["spec"] == {"blocks": [{"cidr": "10.99.0.200/29"}]}
    policy = rec.named("loadbalancer-l2-policy-k3s-cilium-l2")
    assert policy.type == "kubernetes:cilium.io/v2alpha1:CiliumL2AnnouncementPolicy"
    key, value = L2_ANNOUNCE_LABEL
    assert policy.inputs["spec"]["nodeSelector"] == {"matchLabels": {key: value}}
    assert policy.inputs["spec"]["interfaces"] == ["^eth0$"]
    crds = rec.named("loadbalancer-crds")
    assert crds.inputs["connection"]["host"] == "10.99.0.10"
    release = rec.named("cilium-release")
    for made in (pool, policy):
        assert made.options.get("provider", "").startswith(rec.named("cilium-provider").urn)
        assert depends_transitively(rec, made, crds) and depends_transitively(rec, made, release)
    # The release announces with the stack's short leases.
    assert release.inputs["values"]["l2announcements"] == {
        "enabled": True,
        "leaseDuration": "5s",
        "leaseRenewDeadline": "3s",
        "leaseRetryPeriod": "1s",
    }
    # The verification runs after the objects, as in __main__.py: the address asked for, its lease,
    # every node's loadbalancer probe and the probe from where the engine runs (the bridge namespace).
    for node, _ in NODES:
        assert depends_transitively(rec, rec.named(f"verify-collect-{node}"), policy)
    service = rec.named("verify-smoke-loadbalancer")
    assert service.inputs["metadata"]["annotations"]["lbipam.cilium.io/ips"] == "10.99.0.206"
    assert service.inputs["spec"]["type"] == "LoadBalancer"
    runner = rec.named("verify-probes-runner")
    assert "--target 10.99.0.206:80" in runner.inputs["create"]
    assert depends_transitively(rec, runner, pool)
    assert rec.named("verify-loadbalancer-address-assert-cluster")
    assert rec.named("verify-l2-lease-assert-cluster")
    assert rec.exports["loadBalancer"] == {
        "mode": "l2",
        "objects": ["CiliumLoadBalancerIPPool/lab", "CiliumL2AnnouncementPolicy/k3s-cilium-l2"],
    }


def test_the_hubble_phase_turns_hubble_on_with_the_relay_and_metrics_and_the_labs_certificates(tmp_path: Path) -> None:
    names = [phase.name for phase in PHASES]
    hubble = PHASES[names.index("hubble")]
    # After l2, at kpr; the next phase drops it again (the rollback the lab checks).
    assert names.index("hubble") == names.index("l2") + 1 and hubble.tier == "kpr" and not hubble.l2
    assert [phase.name for phase in PHASES if phase.hubble] == ["hubble"]
    rec = run_lab_program("kpr", hubble=hubble_tls(tmp_path))
    values = rec.named("cilium-release").inputs["values"]["hubble"]
    assert values["enabled"] is True and values["relay"]["enabled"] is True
    assert values["metrics"]["enabled"] == ["drop", "tcp", "flow"] and values["metrics"]["port"] == 9965
    assert "ui" not in values or not values["ui"].get("enabled")
    # The lab's one deviation: certificates of its own instead of certgen's CronJob; TLS stays on.
    assert values["tls"]["auto"] == {"enabled": False, "method": "cronJob"}
    assert values["tls"]["server"]["cert"] and values["relay"]["tls"]["client"]["key"]
    # The program's Hubble checks, with the product's names.
    for node, _ in NODES:
        assert rec.named(f"verify-hubble-server-assert-{node}")
        assert rec.named(f"verify-hubble-metrics-assert-{node}")
    assert rec.named("verify-hubble-relay-assert-cluster")
    assert not rec.matching("hubble-ui")
