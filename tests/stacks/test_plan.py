from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stacks import plan, stackfile
from stacks.config import parse

ROOT = Path(__file__).resolve().parents[2]


def run_plan(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stacks", "plan", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_dev_plan_prints_nodes_features_values_and_checks():
    result = run_plan("dev")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("stack dev: tier kpr, K3s v1.33.3+k3s1, Cilium 1.19.6")
    assert "server-1 (server) at 192.168.56.10" in out and "agent-2 (agent) at 192.168.56.12" in out
    assert "[on ] kubeProxyReplacement  from tier kpr" in out
    assert "disable-kube-proxy: true" in out
    assert "kubeProxyReplacement: 'true'" in out
    assert "no-kube-proxy-rules on agent-1" in out


def test_json_plan_is_deterministic_and_complete():
    first, second = run_plan("dev", "--json"), run_plan("dev", "--json")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    document = json.loads(first.stdout)
    assert [n["role"] for n in document["nodes"]] == ["server", "agent", "agent"]
    assert document["ciliumValues"]["routingMode"] == "native"
    assert {c["check"] for c in document["checks"]} == {
        "agent-status",
        "no-kube-proxy-rules",
        "kpr-integrity",
        "service-list",
        "probes",
    }
    kernel_rows = {row["name"]: row.get("minKernel") for row in document["features"]}
    assert kernel_rows["bpfHostRouting"] == "5.10" and kernel_rows["bigTcp"] == "6.3"


def test_invalid_stack_exits_2_with_every_problem(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(
        "config:\n"
        "  k3s-cilium:tier: turbo\n"
        "  k3s-cilium:nodes:\n"
        "    - {name: a, host: '10.0.0.1;reboot', role: agent}\n"
    )
    result = run_plan(str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "k3s-cilium:tier: 'turbo'" in result.stderr
    assert "k3s-cilium:nodes[0].host: '10.0.0.1;reboot'" in result.stderr
    assert "at least one node needs role 'server'" in result.stderr


def test_unknown_stack_name():
    result = run_plan("no-such-stack")
    assert result.returncode == 2 and "no stack 'no-such-stack'" in result.stderr


def test_secure_values_and_other_namespaces_are_ignored():
    raw = stackfile.raw_config(
        {
            "config": {
                "k3s-cilium:tier": "performance",
                "k3s-cilium:sshPrivateKey": {"secure": "v1:abc"},
                "kubernetes:context": "lab",
                "nodes": [{"name": "s", "host": "10.0.0.1", "role": "server"}],
            }
        }
    )
    assert raw == {"tier": "performance", "nodes": [{"name": "s", "host": "10.0.0.1", "role": "server"}]}


def test_plan_checks_follow_verify_switches(raw):
    raw["verify"] = {"smoke": False, "connectivityTest": True, "benchmark": True}
    document = plan.build("t", parse(dict(raw, tier="baseline")))
    checks = [(c["check"], c["node"]) for c in document["checks"]]
    assert ("no-kube-proxy-rules", "agent-1") not in checks  # baseline keeps kube-proxy
    assert ("service-list", "agent-1") not in checks and ("probes", "agent-1") not in checks
    assert ("connectivity-test", "server-1") in checks and ("benchmark", None) in checks


def test_plan_shows_the_kernel_floor_of_the_pinned_cilium_minor(raw):
    cfg = parse(dict(raw, tier="kpr", cilium={"version": "1.16.19"}))
    document = plan.build("lab", cfg)
    assert document["kernelRequired"] == "5.4"
    assert document["kernelRequiredBy"] == "Cilium 1.16 (Linux >= 5.4, or 4.18 on RHEL >= 8.6)"
    assert "every node needs kernel >= 5.4 (Cilium 1.16 (Linux >= 5.4, or 4.18 on RHEL >= 8.6))" in plan.to_text(
        document)
    older = plan.build("lab", parse(dict(raw, tier="baseline", cilium={"version": "1.13.18"})))
    assert older["kernelRequired"] == "4.19.57"
    # a feature above the Cilium floor names itself
    extreme = plan.build("lab", parse(dict(raw, tier="extreme")))
    assert (extreme["kernelRequired"], extreme["kernelRequiredBy"]) == ("6.3", "bigTcp")


def test_plan_shows_the_nic_dependent_features_preflight_decides_per_node(raw):
    document = plan.build("lab", parse(dict(raw, tier="extreme")))
    rows = {row["name"]: row for row in document["features"]}
    assert "tso_max_size > 65536" in rows["bigTcp"]["perNode"]
    assert "native XDP" in rows["xdp"]["perNode"]
    assert "perNode" not in rows["bbr"]
    text = plan.to_text(document)
    assert "per node: NICs with tso_max_size > 65536 only: preflight leaves it off (and unverified)" in text
    assert "PARTLY SKIPPED" not in text  # 1.19.6 takes distributedLRU


def test_the_plan_shows_the_closed_fallback_to_the_public_registries(tmp_path):
    stack_file = tmp_path / "Pulumi.closed.yaml"
    stack_file.write_text(
        "config:\n"
        "  k3s-cilium:nodes:\n"
        "    - {name: server-1, host: 10.0.0.1, role: server}\n"
        "    - {name: agent-1, host: 10.0.0.2, role: agent}\n"
        "  k3s-cilium:airgap:\n"
        "    registries:\n"
        "      mirrors: {docker.io: {endpoints: ['https://registry.internal:5000']}}\n"
        "      disableDefaultEndpoint: true\n"
    )
    text = run_plan(str(stack_file))
    assert text.returncode == 0, text.stderr
    assert text.stdout.count("disable-default-registry-endpoint: true") == 2
    assert "never fall back to the public registry" in text.stdout
    document = json.loads(run_plan(str(stack_file), "--json").stdout)
    assert [n["k3sConfig"]["disable-default-registry-endpoint"] for n in document["nodes"]] == [True, True]
    assert document["airgap"]["defaultEndpointFallback"] is False


NODES_YAML = (
    "  k3s-cilium:nodes:\n"
    "    - {name: server-1, host: 10.0.0.1, role: server}\n"
    "    - {name: agent-1, host: 10.0.0.2, role: agent}\n"
)


def test_the_plan_says_whether_the_ipsec_key_is_set_and_never_what_it_is(tmp_path):
    base = "config:\n" + NODES_YAML + "  k3s-cilium:features: {encryption: ipsec}\n"
    without = tmp_path / "Pulumi.without.yaml"
    without.write_text(base)
    assert "secret ipsecKey (missing) -> Secret kube-system/cilium-ipsec-keys" in run_plan(str(without)).stdout
    with_key = tmp_path / "Pulumi.with.yaml"
    with_key.write_text(base + "  k3s-cilium:ipsecKey:\n    secure: v1:c2VjcmV0LWJ5dGVz\n")
    text = run_plan(str(with_key)).stdout
    assert "secret ipsecKey (set) -> Secret kube-system/cilium-ipsec-keys" in text
    assert "c2VjcmV0LWJ5dGVz" not in text
    assert "encryption-status on agent-1" in text


def test_the_plan_shows_hubble_and_gateway_api_with_what_they_need(tmp_path):
    stack_file = tmp_path / "Pulumi.gw.yaml"
    stack_file.write_text(
        "config:\n" + NODES_YAML
        + "  k3s-cilium:features: {hubble: true, gatewayApi: true}\n"
        "  k3s-cilium:hubble: {ui: true}\n"
        "  k3s-cilium:gatewayApi: {hostNetwork: true, crds: {sha256: '" + "c" * 64 + "'}}\n"
    )
    result = run_plan(str(stack_file))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "hubble: relay on, UI on" in text and "deployment kube-system/hubble-ui" in text
    assert "gateway api / ingress: Gateway API on (host network)" in text
    assert "  needs Envoy (l7Proxy: true; the cilium-envoy DaemonSet (chart default))" in text
    assert "CRDs: Gateway API v1.4.1 (standard) from https://github.com/kubernetes-sigs/gateway-api/releases/" in text
    for check in ("hubble-server on agent-1", "hubble-relay", "hubble-ui", "gatewayclass-accepted", "gateway-address"):
        assert check in text, check
