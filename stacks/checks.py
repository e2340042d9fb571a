"""The verification checks a stack will run after deploying, and what each expects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stacks.config import StackConfig
from stacks.features import Resolved

# Features the Cilium agent reports in `cilium-dbg status --verbose`.
AGENT_REPORTED = (
    "kubeProxyReplacement",
    "nativeRouting",
    "bpfMasquerade",
    "dsr",
    "maglev",
    "bpfHostRouting",
    "bandwidthManager",
    "bbr",
    "bigTcp",
    "xdp",
    "netkit",
)


@dataclass(frozen=True)
class PlannedCheck:
    check: str
    node: str | None
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.check}/{self.node}" if self.node else self.check


def agent_expectations(cfg: StackConfig, features: Resolved) -> dict[str, Any]:
    expect: dict[str, Any] = {
        "ciliumVersion": cfg.cilium.version,
        "features": {name: name in features for name in AGENT_REPORTED},
    }
    if "maglev" in features:
        expect["maglevTableSize"] = cfg.cilium.maglev_table_size
    if features.dsr_dispatch:
        expect["dsrDispatch"] = features.dsr_dispatch
    if features.xdp_mode:
        expect["xdpMode"] = features.xdp_mode
    return expect


def planned_checks(cfg: StackConfig, features: Resolved) -> list[PlannedCheck]:
    agent = agent_expectations(cfg, features)
    checks: list[PlannedCheck] = []
    for node in cfg.nodes:
        checks.append(PlannedCheck("agent-status", node.name, agent))
        if "kubeProxyReplacement" in features:
            checks.append(PlannedCheck("no-kube-proxy-rules", node.name, {"maxRules": 0}))
        if cfg.verify.smoke:
            checks.append(
                PlannedCheck(
                    "smoke",
                    node.name,
                    {"targets": ["localhost-nodeport", "nodeip-nodeport", "clusterip", "remote-pod"]},
                )
            )
    if cfg.verify.connectivity_test:
        checks.append(PlannedCheck("connectivity-test", cfg.servers[0].name, {"failures": 0}))
    if cfg.verify.benchmark:
        checks.append(PlannedCheck("benchmark", None, {"tests": ["TCP_RR", "TCP_STREAM"]}))
    return checks
