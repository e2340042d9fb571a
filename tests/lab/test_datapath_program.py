"""The lab program (lab/programs/datapath) under the mock engine, with the config lab/run datapath gives it."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import yaml

from lab.cluster.chart import CHART
from lab.cluster.datapath import PROGRAM, engine_config
from tests.mocks import Recorded, run_program

NODES = [("server-1", "10.99.0.10"), ("agent-1", "10.99.0.11"), ("agent-2", "10.99.0.12")]
HOST_KEYS = {name: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{'B' * 42}{i} {name}" for i, (name, _) in enumerate(NODES)}
PROJECT = yaml.safe_load((PROGRAM / "Pulumi.yaml").read_text())["name"]
KUBECONFIG = f"{PROJECT}:kubeconfig"
SSH_KEY = "k3s-cilium:sshPrivateKey"


def run_lab_program(tier: str) -> Recorded:
    config = {
        **engine_config(tier, NODES, HOST_KEYS),
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
