"""The example stacks: valid, planned offline, and planned the way their comments promise."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stacks import cilium_values, stackfile
from stacks.config import NAMESPACE, SECRET_KEYS, StackConfig
from stacks.features import CATALOGUE, TIER_FEATURES, kernel_text, resolve
from tests.chart import chart_dirs, schema, unknown_paths
from verification import api_reachable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.stem for p in (ROOT / "stacks" / "examples").glob("*.yaml"))
STACKS = ["dev", *EXAMPLES]


def plan_json(stack: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "stacks", "plan", stack, "--json"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def load(stack: str) -> StackConfig:
    return stackfile.load(stackfile.locate(stack))


def nodes_by_name(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["name"]: node for node in plan["nodes"]}


def enabled(plan: dict[str, Any]) -> set[str]:
    return {row["name"] for row in plan["features"] if row["enabled"]}


def test_the_examples_the_readme_describes_exist():
    assert {"ha-performance", "extreme"} <= set(EXAMPLES)


@pytest.mark.parametrize("stack", STACKS)
def test_stack_file_has_the_format_of_pulumi_dev_yaml(stack):
    document = yaml.safe_load(stackfile.locate(stack).read_text())
    assert set(document) <= {"config", "encryptionsalt", "secretsprovider"}
    for key, value in document["config"].items():
        namespace, _, name = key.partition(":")
        assert namespace == NAMESPACE, f"{key}: every key is namespaced {NAMESPACE}:"
        if name in SECRET_KEYS:
            assert isinstance(value, dict) and set(value) == {"secure"}, f"{key} must never be plaintext"


@pytest.mark.parametrize("stack", STACKS)
def test_plan_succeeds_and_is_deterministic(stack):
    first = plan_json(stack)
    assert first == plan_json(stack)
    assert first["stack"] == stack
    assert [n["name"] for n in first["nodes"]] == [n.name for n in load(stack).nodes]


@pytest.mark.parametrize("stack", EXAMPLES)
def test_every_host_key_is_pinned_and_distinct(stack):
    cfg = load(stack)
    keys = [node.host_key for node in cfg.nodes]
    if cfg.ssh.bastion:
        keys.append(cfg.ssh.bastion.host_key)
    assert all(keys), "every node (and the bastion) pins its host key"
    assert len(set(keys)) == len(keys), "each host has its own key"
    assert all(re.fullmatch(r"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}", k or "") for k in keys)


@pytest.mark.parametrize("stack", STACKS)
def test_rendered_values_exist_in_the_pinned_chart(stack):
    cfg = load(stack)
    version = cfg.cilium.parsed_version
    charts = chart_dirs()
    minor = f"{version.major}.{version.minor}"
    if minor not in charts:
        pytest.skip(f"official chart values for Cilium {minor} not present")
    values = cilium_values.render(cfg, resolve(cfg))
    assert unknown_paths(values, charts[minor]) == []
    chart_schema = schema(charts[minor])
    if chart_schema:
        jsonschema.validate(json.loads(json.dumps(values)), chart_schema)


# --- ha-performance ---------------------------------------------------------------------------


def test_ha_performance_is_an_etcd_cluster_of_three_servers():
    plan = plan_json("ha-performance")
    nodes = nodes_by_name(plan)
    servers = [n for n in plan["nodes"] if n["role"] == "server"]
    agents = [n for n in plan["nodes"] if n["role"] == "agent"]
    assert len(servers) == 3 and len(agents) >= 2
    first, *others = servers
    assert first["k3sConfig"]["cluster-init"] is True
    assert "server" not in first["k3sConfig"]
    join = f"https://{first['host']}:6443"
    for node in [*others, *agents]:
        assert node["k3sConfig"]["server"] == join
        assert "cluster-init" not in node["k3sConfig"]
    for server in servers:
        assert "127.0.0.1" in server["k3sConfig"]["tls-san"]
        assert "CriticalAddonsOnly=true:NoExecute" in server["k3sConfig"]["node-taint"]
    assert "example.com/dedicated=ingress:NoSchedule" in nodes["agent-4"]["k3sConfig"]["node-taint"]
    assert "example.com/role=ingress" in nodes["agent-4"]["k3sConfig"]["node-label"]
    assert plan["apiEndpoint"] == "127.0.0.1"


def test_ha_performance_gets_the_performance_datapath():
    plan = plan_json("ha-performance")
    assert plan["tier"] == "performance"
    assert enabled(plan) == set(TIER_FEATURES["performance"])
    assert plan["kernelRequired"] == "5.10"
    values = plan["ciliumValues"]
    assert values["kubeProxyReplacement"] == "true"
    assert values["loadBalancer"] == {
        "mode": "dsr",
        "algorithm": "maglev",
        "acceleration": "disabled",
        "dsrDispatch": "opt",
    }
    assert values["maglev"] == {"tableSize": 65521}
    assert values["bpf"]["masquerade"] is True and values["bpf"]["hostLegacyRouting"] is False
    assert values["installNoConntrackIptablesRules"] is True
    assert values["routingMode"] == "native" and values["ipv4NativeRoutingCIDR"] == "10.42.0.0/16"
    for node in plan["nodes"]:
        if node["role"] == "server":
            assert node["k3sConfig"]["disable-kube-proxy"] is True


def test_ha_performance_connects_through_a_pinned_bastion_and_verifies_connectivity():
    cfg = load("ha-performance")
    assert cfg.ssh.bastion is not None and cfg.ssh.bastion.host_key
    assert cfg.ssh.user != "root", "the example shows the passwordless-sudo user"
    checks = {(c["check"], c["node"]) for c in plan_json("ha-performance")["checks"]}
    assert ("connectivity-test", "server-1") in checks
    assert {("no-kube-proxy-rules", n.name) for n in cfg.nodes} <= checks


def test_ha_performance_reaches_the_api_through_an_ssh_forward_via_the_bastion():
    # The Kubernetes provider dials apiEndpoint:6443 from where Pulumi runs; behind the bastion that
    # is a local forward to the first server, and the example's comment shows the very command the
    # API check prints as the fix.
    cfg = load("ha-performance")
    assert cfg.api_endpoint == "127.0.0.1"
    bastion = cfg.ssh.bastion
    assert bastion is not None
    forward = api_reachable.forward_command(
        cfg.servers[0].host, 6443, f"{bastion.user}@{bastion.host}:{bastion.port}"
    )
    assert forward == "ssh -N -L 6443:10.20.0.11:6443 -p 22 ops@bastion.example.com"
    assert forward in stackfile.locate("ha-performance").read_text()


# --- extreme ------------------------------------------------------------------------------------


def test_extreme_turns_on_the_tier_and_the_overrides():
    plan = plan_json("extreme")
    assert plan["tier"] == "extreme"
    assert enabled(plan) == {*TIER_FEATURES["extreme"], "hubble", "netkit", "jumboMtu"}
    assert not any(row.get("skipped") for row in plan["features"])
    values = plan["ciliumValues"]
    assert values["enableIPv4BIGTCP"] is True
    assert values["bandwidthManager"] == {"enabled": True, "bbr": True}
    assert values["loadBalancer"]["acceleration"] == "best-effort"
    assert values["bpf"]["datapathMode"] == "netkit"
    assert values["bpf"]["mapDynamicSizeRatio"] == cilium_values.TUNED_MAP_RATIO
    assert values["hubble"]["enabled"] is True
    assert values["MTU"] == 9000
    assert {c["check"] for c in plan["checks"]} >= {"benchmark", "connectivity-test"}


def test_extreme_needs_a_6_8_kernel_because_of_netkit():
    plan = plan_json("extreme")
    assert plan["kernelRequired"] == "6.8"
    assert kernel_text(CATALOGUE["netkit"].min_kernel or (0, 0)) == "6.8"


def test_extreme_comment_lists_the_catalogue_kernel_floors():
    """The header comment's kernel table matches the catalogue and covers every enabled floor."""
    text = (ROOT / "stacks" / "examples" / "extreme.yaml").read_text()
    commented = dict(re.findall(r"^#\s+(\w+)\s+>= (\d+\.\d+)", text, flags=re.MULTILINE))
    cfg = load("extreme")
    needs = {name: kernel_text(kernel) for name, kernel in resolve(cfg).kernel_needs().items()}
    assert commented == needs


def test_extreme_uses_a_separate_data_network():
    plan = plan_json("extreme")
    for node in plan["nodes"]:
        assert node["k3sConfig"]["node-ip"].startswith("10.100.0.")
        assert node["host"].startswith("192.168.100.")
    assert plan["nodes"][1]["k3sConfig"]["server"] == "https://10.100.0.10:6443"


# --- airgap -----------------------------------------------------------------------------------


def test_airgap_closes_the_fallback_to_the_public_registries_on_every_node():
    plan = plan_json("airgap")
    assert plan["airgap"]["registries"]["mirrors"], "the fallback is closed for mirrored registries only"
    for node in plan["nodes"]:
        assert node["k3sConfig"]["disable-default-registry-endpoint"] is True, node["name"]
