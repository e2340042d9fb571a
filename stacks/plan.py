"""The effective plan of a stack: what `pulumi up` would build, computed offline.

The plan is deterministic (sorted keys, no timestamps) so CI can diff it
between a pull request and its base branch.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import yaml

from stacks import (
    airgap,
    checks,
    cilium_values,
    encryption,
    gateway_api,
    hubble,
    k3s_flags,
    load_balancer,
    preflight,
    upgrade,
)
from stacks.config import StackConfig
from stacks.features import CATALOGUE, TIER_FEATURES, Resolved, kernel_text, resolve, tunnel_protocol


def _feature_rows(cfg: StackConfig, features: Resolved) -> list[dict[str, Any]]:
    rows = []
    nic_notes = preflight.plan_notes(cfg, features)
    for name, feature in CATALOGUE.items():
        row: dict[str, Any] = {"name": name, "enabled": name in features}
        if name in features:
            row["from"] = features.origin[name]
        if name in features.skipped:
            row["skipped"] = features.skipped[name]
        # A part of an enabled feature that this Cilium version cannot take (e.g. mapSizing.distributedLRU).
        parts = {key: why for key, why in features.skipped.items() if key.startswith(f"{name}.")}
        if parts:
            row["partlySkipped"] = parts
        if name in nic_notes:
            row["perNode"] = nic_notes[name]
        if feature.min_kernel:
            row["minKernel"] = kernel_text(feature.min_kernel)
        if feature.requires:
            row["requires"] = list(feature.requires)
        rows.append(row)
    return rows


def _check_row(check: checks.PlannedCheck) -> dict[str, Any]:
    row: dict[str, Any] = {"check": check.check, "node": check.node, "expect": check.expect}
    if check.skippable:
        # Not asserted on a node whose preflight left the feature off (its NIC cannot carry it).
        row["unlessSkippedOnNode"] = list(check.skippable)
    return row


def kernel_reason(features: Resolved) -> str:
    """What sets the stack's kernel floor: the features at it, else the pinned Cilium minor."""
    floor = features.min_kernel()
    at_floor = [name for name, kernel in features.kernel_needs().items() if kernel == floor]
    return ", ".join(at_floor) if at_floor else features.min_kernel_reason()


def _encryption(cfg: StackConfig, features: Resolved, secrets: Collection[str]) -> dict[str, Any] | None:
    mode, version = cfg.features.encryption, cfg.cilium.parsed_version
    tunnel = tunnel_protocol("nativeRouting" in features, features.dsr_dispatch)
    notes = encryption.caveats(mode, cfg.encryption, version, features.enabled, tunnel)
    return encryption.plan(mode, cfg.encryption, version, encryption.IPSEC_KEY_CONFIG in secrets, notes)


def build(stack: str, cfg: StackConfig, secrets: Collection[str] = ()) -> dict[str, Any]:
    """The plan; ``secrets`` are the secret keys the stack file sets (the plan says whether, never what)."""
    features = resolve(cfg)
    version = cfg.cilium.parsed_version
    gateway_on, ingress_on = "gatewayApi" in features, "ingress" in features
    return {
        "stack": stack,
        "tier": cfg.tier,
        "tierPreset": list(TIER_FEATURES[cfg.tier]),
        "k3sVersion": cfg.k3s.version,
        "ciliumVersion": cfg.cilium.version,
        "apiEndpoint": cfg.api_endpoint,
        "kernelRequired": kernel_text(features.min_kernel()),
        "kernelRequiredBy": kernel_reason(features),
        "features": _feature_rows(cfg, features),
        "nodes": [
            {
                "name": node.name,
                "host": node.host,
                "role": node.role,
                "k3sConfig": k3s_flags.node_config(cfg, features, node),
            }
            for node in cfg.nodes
        ],
        "ciliumValues": cilium_values.render(cfg, features),
        "checks": [
            _check_row(c) for c in checks.planned_checks(cfg, features)
        ],
        # What a version change may do; the gate judges it against what runs (stacks/upgrade.py).
        "upgrade": upgrade.plan(cfg, features),
        # LoadBalancer Services (stacks/load_balancer.py); None for mode none.
        "loadBalancer": load_balancer.plan(cfg.load_balancer, cfg.cilium.parsed_version),
        # Transparent encryption, Hubble, Gateway API / Ingress; None when off.
        "encryption": _encryption(cfg, features, secrets),
        "hubble": hubble.plan(cfg.hubble, "hubble" in features, version),
        "gatewayApi": gateway_api.plan(
            gateway_on, ingress_on, cfg.gateway_api, version, cfg.k3s.version, cfg.k3s.disable
        ),
        # Air-gapped sources (stacks/airgap.py); None when everything comes from the internet.
        "airgap": airgap.plan(cfg.airgap, cfg.cilium.version),
    }


def to_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, sort_keys=True) + "\n"


def to_text(plan: dict[str, Any]) -> str:
    lines = [
        f"stack {plan['stack']}: tier {plan['tier']}, K3s {plan['k3sVersion']}, Cilium {plan['ciliumVersion']}",
        f"API endpoint: {plan['apiEndpoint']}; every node needs kernel >= {plan['kernelRequired']} "
        f"({plan['kernelRequiredBy']})",
        "",
        "features:",
    ]
    for row in plan["features"]:
        mark = "on " if row["enabled"] else "off"
        detail = []
        if row.get("from"):
            detail.append(f"from {row['from']}")
        if row.get("minKernel"):
            detail.append(f"kernel >= {row['minKernel']}")
        if row.get("skipped"):
            detail.append(f"SKIPPED: {row['skipped']}")
        for why in (row.get("partlySkipped") or {}).values():
            detail.append(f"PARTLY SKIPPED: {why}")
        if row.get("perNode"):
            detail.append(f"per node: {row['perNode']}")
        lines.append(f"  [{mark}] {row['name']:<21} {'; '.join(detail)}".rstrip())
    lines += ["", "nodes:"]
    for node in plan["nodes"]:
        lines.append(f"  {node['name']} ({node['role']}) at {node['host']}")
        body = yaml.safe_dump(node["k3sConfig"], sort_keys=True, default_flow_style=False)
        lines += [f"      {line}" for line in body.splitlines()]
    lines += ["", "cilium helm values:"]
    body = yaml.safe_dump(plan["ciliumValues"], sort_keys=True, default_flow_style=False)
    lines += [f"  {line}" for line in body.splitlines()]
    lines += ["", "verification checks:"]
    for check in plan["checks"]:
        line = f"  {check['check']}" + (f" on {check['node']}" if check["node"] else "")
        if check["check"] == "probes" and not check["node"]:
            line += " from where Pulumi runs"
        if check.get("unlessSkippedOnNode"):
            line += f" ({', '.join(check['unlessSkippedOnNode'])} not asserted where preflight skips them)"
        lines.append(line)
    lines += ["", *upgrade.plan_text(plan["upgrade"])]
    if plan.get("loadBalancer"):
        lines += ["", *load_balancer.plan_text(plan["loadBalancer"])]
    for key, text in (
        ("encryption", encryption.plan_text),
        ("hubble", hubble.plan_text),
        ("gatewayApi", gateway_api.plan_text),
        ("airgap", airgap.plan_text),
    ):
        if plan.get(key):
            lines += ["", *text(plan[key])]
    return "\n".join(lines) + "\n"
