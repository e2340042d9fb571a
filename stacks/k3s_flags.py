"""K3s configuration (``/etc/rancher/k3s/config.yaml``) for each node of a stack.

Servers and agents get a config file rather than a flag string: it is easier
to diff, and a changed file is applied in place by a restart.
"""

from __future__ import annotations

from typing import Any

from stacks.config import Node, StackConfig
from stacks.features import Resolved

CONFIG_PATH = "/etc/rancher/k3s/config.yaml"
TOKEN_PATH = "/etc/rancher/k3s/cluster-token"
# Where the official install script puts the binary (its default on a writable /usr/local).
K3S_BIN_DIR = "/usr/local/bin"
# A server's API server normally answers within a minute; etcd joins and slow disks take longer.
API_READY_TIMEOUT_SECONDS = 300
SUPERVISOR_PORT = 6443
# Removed by the Cilium operator once the node's agent is ready, so workloads
# do not start on a node before Cilium can give them a network.
CILIUM_NOT_READY_TAINT = "node.cilium.io/agent-not-ready=true:NoExecute"


def join_url(cfg: StackConfig) -> str:
    """Where joining servers and agents find the cluster: the first server."""
    first = cfg.servers[0]
    return f"https://{first.internal_ip or first.host}:{SUPERVISOR_PORT}"


def _node_common(node: Node, token_file: bool = True) -> dict[str, Any]:
    common: dict[str, Any] = {"node-name": node.name}
    if node.internal_ip:
        common["node-ip"] = node.internal_ip
    if node.labels:
        common["node-label"] = [f"{key}={value}" for key, value in sorted(node.labels.items())]
    common["node-taint"] = [*node.taints, CILIUM_NOT_READY_TAINT]
    if token_file:
        common["token-file"] = TOKEN_PATH
    return common


def _registry_flags(cfg: StackConfig) -> dict[str, Any]:
    """Air-gapped with ``airgap.registries.disableDefaultEndpoint``: containerd never falls back from a mirrored
    registry's endpoints to the registry itself (K3s applies it to the registries ``registries.yaml`` mirrors)."""
    registries = cfg.airgap.registries
    if registries is not None and registries.disable_default_endpoint:
        return {"disable-default-registry-endpoint": True}
    return {}


def _tls_sans(cfg: StackConfig) -> list[str]:
    names = {cfg.api_endpoint}
    for server in cfg.servers:
        names.add(server.host)
        if server.internal_ip:
            names.add(server.internal_ip)
    return sorted(names)


def server_config(cfg: StackConfig, features: Resolved, node: Node, token_configured: bool = True) -> dict[str, Any]:
    """``token_configured=False``: the first server generates the cluster token itself."""
    first = node == cfg.servers[0]
    config: dict[str, Any] = {
        **_node_common(node, token_file=token_configured or not first),
        "flannel-backend": "none",
        "disable-network-policy": True,
        "disable-kube-proxy": "kubeProxyReplacement" in features,
        "cluster-cidr": cfg.k3s.cluster_cidr,
        "service-cidr": cfg.k3s.service_cidr,
        "service-node-port-range": cfg.cilium.node_port_range,
        "tls-san": _tls_sans(cfg),
        "write-kubeconfig-mode": "0600",
        **_registry_flags(cfg),
    }
    if cfg.k3s.disable:
        config["disable"] = list(cfg.k3s.disable)
    if first:
        if len(cfg.servers) > 1:
            config["cluster-init"] = True
    else:
        config["server"] = join_url(cfg)
    return config


def agent_config(cfg: StackConfig, node: Node) -> dict[str, Any]:
    # Agents take disable-kube-proxy and the CIDRs from the servers when they start.
    return {**_node_common(node), "server": join_url(cfg), **_registry_flags(cfg)}


def node_config(cfg: StackConfig, features: Resolved, node: Node, token_configured: bool = True) -> dict[str, Any]:
    if node.role == "server":
        return server_config(cfg, features, node, token_configured)
    return agent_config(cfg, node)
