"""Cilium Helm values for a stack, rendered for the chart of its Cilium minor version.

Every datapath feature is rendered explicitly in both states where the chart
knows it, so that switching a feature or tier off shows up in the diff and
really turns it off (the rollback path), instead of falling back to whatever
the chart would auto-detect.
"""

from __future__ import annotations

import copy
from typing import Any

from packaging.version import Version

from stacks import airgap, encryption, gateway_api, hubble, load_balancer
from stacks.config import StackConfig
from stacks.features import Resolved, tunnel_protocol

# K3s runs a client-side load balancer for the API server on every node
# (servers and agents) at 127.0.0.1:6444; without kube-proxy the agent cannot
# reach the kubernetes Service IP before it has programmed it itself.
K3S_API_LB_HOST = "127.0.0.1"
K3S_API_LB_PORT = 6444

JUMBO_MTU = 9000
# Tuning guide's map sizing profile (TUNE: 'increased map size ratio').
TUNED_MAP_RATIO = 0.08
DEFAULT_MAP_RATIO = 0.0025

V1_14, V1_16, V1_17 = (Version(v) for v in ("1.14", "1.16", "1.17"))
# The agent image's repository in every chart 1.13-1.20 (values.yaml `image.repository`).
AGENT_REPOSITORY = "quay.io/cilium/cilium"


def _kpr_value(on: bool, version: Version) -> str:
    # The 1.14-1.17 chart templates compare this value as a string, so it is
    # rendered as "true"/"false" rather than a YAML boolean.
    if version < V1_14:
        return "strict" if on else "disabled"
    return "true" if on else "false"


def _routing(cfg: StackConfig, features: Resolved, version: Version) -> dict[str, Any]:
    native = "nativeRouting" in features
    tunnel = tunnel_protocol(native, features.dsr_dispatch)
    values: dict[str, Any] = {}
    if version < V1_14:
        values["tunnel"] = tunnel or "disabled"
    else:
        values["routingMode"] = "native" if native else "tunnel"
        if tunnel:
            values["tunnelProtocol"] = tunnel
    if native:
        values["autoDirectNodeRoutes"] = True
        values["ipv4NativeRoutingCIDR"] = cfg.native_routing_cidr
    return values


def _load_balancing(cfg: StackConfig, features: Resolved) -> dict[str, Any]:
    low, high = cfg.cilium.node_port_range.split("-")
    lb: dict[str, Any] = {
        "mode": "dsr" if "dsr" in features else "snat",
        "algorithm": "maglev" if "maglev" in features else "random",
        "acceleration": features.xdp_mode or "disabled",
    }
    if features.dsr_dispatch:
        lb["dsrDispatch"] = features.dsr_dispatch
    values: dict[str, Any] = {"loadBalancer": lb, "nodePort": {"range": f"{low},{high}"}}
    if "maglev" in features:
        values["maglev"] = {"tableSize": cfg.cilium.maglev_table_size}
    return values


def _bpf(features: Resolved, version: Version) -> dict[str, Any]:
    bpf: dict[str, Any] = {
        "masquerade": "bpfMasquerade" in features,
        "hostLegacyRouting": "bpfHostRouting" not in features,
        "mapDynamicSizeRatio": TUNED_MAP_RATIO if "mapSizing" in features else DEFAULT_MAP_RATIO,
    }
    if version >= V1_16:
        bpf["datapathMode"] = "netkit" if "netkit" in features else "veth"
    if version >= V1_17:
        bpf["distributedLRU"] = {"enabled": features.distributed_lru}
    return bpf


def agent_image(values: dict[str, Any], version: str) -> str:
    """The agent image the chart runs with these values, as a reference to pull: its ``image.override``,
    else the repository with the digest the values give (``useDigest``), else with the tag (``v<version>``,
    the chart's default tag). The chart's own default digest is not known here: that one is pulled by tag."""
    image = values.get("image") or {}
    if image.get("override"):
        return str(image["override"])
    repository = image.get("repository") or AGENT_REPOSITORY
    if image.get("digest") and image.get("useDigest", True):
        return f"{repository}@{image['digest']}"
    return f"{repository}:{image.get('tag') or f'v{version}'}"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``; nested mappings merge, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render(cfg: StackConfig, features: Resolved) -> dict[str, Any]:
    """The Helm values for the stack's Cilium release, user ``cilium.values`` merged last."""
    version = cfg.cilium.parsed_version
    kpr = "kubeProxyReplacement" in features
    values: dict[str, Any] = {
        "k8sServiceHost": cfg.cilium.k8s_service_host or K3S_API_LB_HOST,
        "k8sServicePort": cfg.cilium.k8s_service_port or K3S_API_LB_PORT,
        "kubeProxyReplacement": _kpr_value(kpr, version),
        # K3s's controller manager hands each node a podCIDR from k3s.clusterCidr.
        "ipam": {"mode": "kubernetes"},
        # An operator replica per node at most: its pods are anti-affine.
        "operator": {"replicas": min(2, len(cfg.nodes))},
        # Restart agents when their ConfigMap changes, so a new tier takes effect.
        "rollOutCiliumPods": True,
        "bandwidthManager": {"enabled": "bandwidthManager" in features, "bbr": "bbr" in features},
        "installNoConntrackIptablesRules": "bypassConntrack" in features,
        "bpf": _bpf(features, version),
        "hubble": hubble.helm_values(cfg.hubble, "hubble" in features, version),
    }
    if cfg.cilium.upgrade_compatibility:
        # Every chart 1.13+ keys version-dependent defaults (Envoy DaemonSet, secret sync, KPR, ...) on it
        # (docs: operations/upgrade, "set to the initial Cilium version which was installed in this cluster").
        values["upgradeCompatibility"] = cfg.cilium.upgrade_compatibility
    values.update(_routing(cfg, features, version))
    if kpr:
        values.update(_load_balancing(cfg, features))
    if version >= V1_14:
        values["enableIPv4BIGTCP"] = "bigTcp" in features
    mtu = cfg.cilium.mtu or (JUMBO_MTU if "jumboMtu" in features else None)
    if mtu:
        values["MTU"] = mtu
    # LoadBalancer Services: L2 announcements, BGP or node IPAM, and the client rate limit they need.
    values.update(load_balancer.helm_values(cfg.load_balancer, version))
    # Transparent encryption (and l7Proxy off for WireGuard on 1.13), Gateway API and Ingress.
    values = deep_merge(values, encryption.helm_values(cfg.features.encryption, cfg.encryption, version))
    values = deep_merge(
        values, gateway_api.helm_values("gatewayApi" in features, "ingress" in features, cfg.gateway_api, version)
    )
    # Air-gapped: every image of the chart from the internal registry (stacks/airgap.py).
    values = deep_merge(values, airgap.image_values(cfg.airgap.cilium, version))
    return deep_merge(values, cfg.cilium.values)
