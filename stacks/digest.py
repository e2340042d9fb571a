"""Stable digests of what a stack deploys: the triggers that re-run commands when it changes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stacks import airgap, cilium_values, k3s_flags, load_balancer
from stacks.config import StackConfig
from stacks.features import Resolved


def digest(state: Any) -> str:
    """SHA-256 of ``state`` as canonical JSON: equal inputs, equal digest, on every machine."""
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def deployed_state(cfg: StackConfig, features: Resolved) -> dict[str, Any]:
    """Everything that shapes the running cluster: nodes, K3s version and configs, Cilium version and values,
    and the content of a local Cilium chart (a patched chart of the same version is another deploy)."""
    cilium: dict[str, Any] = {"version": cfg.cilium.version, "values": cilium_values.render(cfg, features)}
    chart = airgap.chart(cfg.airgap, cfg.cilium.version)
    if chart is not None and chart.sha256:
        cilium["chartSha256"] = chart.sha256
    return {
        "nodes": [node.model_dump(mode="json", by_alias=True) for node in cfg.nodes],
        "k3s": {
            "version": cfg.k3s.version,
            "configs": {node.name: k3s_flags.node_config(cfg, features, node) for node in cfg.nodes},
        },
        "cilium": cilium,
        # The LoadBalancer objects (no password: those are only named).
        "loadBalancer": load_balancer.objects(cfg.load_balancer, cfg.cilium.parsed_version),
    }
