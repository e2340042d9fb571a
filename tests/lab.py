"""The three-node lab config and stand-ins shared by the component tests."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
from pulumi_command import remote

from components import cilium, kube_proxy
from components.remote import connection
from stacks.config import StackConfig, parse
from stacks.features import Resolved
from tests.mocks import FAKE_KUBECONFIG

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n"
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"
PROVIDER_TYPE = "pulumi:providers:kubernetes"

LAB: dict[str, Any] = {
    "tier": "kpr",
    "nodes": [
        {"name": "server-1", "host": "192.168.56.10", "role": "server"},
        {"name": "agent-1", "host": "192.168.56.11", "role": "agent"},
        {"name": "agent-2", "host": "192.168.56.12", "role": "agent"},
    ],
    "k3s": {"version": "v1.33.3+k3s1"},
    "cilium": {"version": "1.19.6"},
}


def config(
    tier: str = "kpr", version: str = "1.19.6", cilium_extra: dict[str, Any] | None = None, **features: bool
) -> StackConfig:
    """The lab on ``tier`` and Cilium ``version``, with feature overrides."""
    raw = copy.deepcopy(LAB)
    raw["tier"] = tier
    raw["cilium"] = {"version": version, **(cilium_extra or {})}
    raw["features"] = features
    return parse(raw)


def stand_in_cluster(cfg: StackConfig) -> tuple[dict[str, remote.ConnectionArgs], list[pulumi.Resource]]:
    """Connections and one "K3s is ready" command per node, standing in for K3sCluster (inside a program)."""
    connections = {node.name: connection(cfg, node, pulumi.Output.secret(SSH_KEY)) for node in cfg.nodes}
    ready: list[pulumi.Resource] = [
        remote.Command(f"k3s-ready-{node.name}", connection=connections[node.name], create="true")
        for node in cfg.nodes
    ]
    return connections, ready


def cilium_then_removal(
    cfg: StackConfig,
    features: Resolved,
    connections: dict[str, remote.ConnectionArgs],
    ready: list[pulumi.Resource],
    removal_name: str = "kube-proxy",
) -> tuple[cilium.CiliumRelease, kube_proxy.KubeProxyRemoval]:
    """The Cilium release and the kube-proxy removal after it, wired as ``__main__.py`` does."""
    release = cilium.CiliumRelease(
        "cilium",
        cilium.CiliumReleaseArgs(
            cfg=cfg, features=features, kubeconfig=FAKE_KUBECONFIG, connections=connections, depends_on=ready
        ),
    )
    removal = kube_proxy.KubeProxyRemoval(
        removal_name,
        kube_proxy.KubeProxyRemovalArgs(
            cfg=cfg, features=features, connections=connections, depends_on=[release.restart]
        ),
    )
    return release, removal
