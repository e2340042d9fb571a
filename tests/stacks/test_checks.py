"""The planned checks: one per node and check, with the exact --expect the verification CLI accepts."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks import checks, stackfile
from stacks.checks import PlannedCheck, planned_checks
from stacks.config import ConfigError, StackConfig, parse
from stacks.features import TIER_FEATURES, resolve
from tests.stacks.conftest import LAB
from verification.expectations import CHECKS

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "verification" / "fixtures"
VERSIONS = ["1.13.18", "1.14.19", "1.15.19", "1.16.17", "1.19.6"]


def cfg_of(
    tier: str = "kpr", version: str = "1.19.6", cilium: dict[str, Any] | None = None, **extra: Any
) -> StackConfig:
    raw = copy.deepcopy(LAB)
    raw["tier"] = tier
    raw["cilium"] = {"version": version, **(cilium or {})}
    raw.update(extra)
    return parse(raw)


def plan_of(cfg: StackConfig) -> list[PlannedCheck]:
    return planned_checks(cfg, resolve(cfg))


def by_key(planned: list[PlannedCheck]) -> dict[str, PlannedCheck]:
    return {check.key: check for check in planned}


def verify_cli(check: PlannedCheck, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "verification",
            check.check,
            "--node",
            check.node or "cluster",
            "--expect",
            json.dumps(check.expect),
        ],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


# --- which checks --------------------------------------------------------------------------------


def test_kpr_lab_checks_every_node_in_order() -> None:
    planned = plan_of(cfg_of("kpr"))
    per_node = ["agent-status", "no-kube-proxy-rules", "kpr-integrity", "service-list", "probes"]
    assert [(c.check, c.node) for c in planned] == [
        (check, node) for node in ("server-1", "agent-1", "agent-2") for check in per_node
    ]
    assert len({c.key for c in planned}) == len(planned)


def test_baseline_keeps_kube_proxy_so_has_no_rules_check() -> None:
    planned = plan_of(cfg_of("baseline"))
    assert {c.check for c in planned} == {"agent-status", "service-list", "probes"}


def test_cluster_checks_follow_verify_switches() -> None:
    planned = plan_of(cfg_of("kpr", verify={"smoke": False, "connectivityTest": True, "benchmark": True}))
    assert {c.check for c in planned} == {
        "agent-status",
        "no-kube-proxy-rules",
        "kpr-integrity",
        "connectivity-test",
        "benchmark",
    }
    keyed = by_key(planned)
    assert keyed["connectivity-test/server-1"].expect == {"minTests": 1}
    assert keyed["benchmark"].node is None
    assert keyed["benchmark"].expect == {
        "figures": ["meanLatencyUs", "p99LatencyUs", "transactionsPerSec", "throughputMbps"]
    }


def test_planning_is_deterministic() -> None:
    assert plan_of(cfg_of("extreme")) == plan_of(cfg_of("extreme"))


# --- agent-status, version- and tier-aware ---------------------------------------------------------


def test_kpr_on_1_19_expects_exactly_the_tier() -> None:
    expect = by_key(plan_of(cfg_of("kpr")))["agent-status/agent-1"].expect
    assert expect == {
        "version": "1.19.6",
        "healthy": True,
        "kubeProxyReplacement": True,
        "socketLB": True,
        "nativeRouting": True,
        "bpfHostRouting": False,
        "bpfMasquerade": False,
        "bandwidthManager": False,
        "bigTcp": False,
        "netkit": False,
        "dsr": False,
        "maglev": False,
        "xdp": "disabled",
    }


def test_extreme_expects_every_feature_as_the_agent_reports_it() -> None:
    cfg = cfg_of("extreme", cilium={"maglevTableSize": 65521}, features={"netkit": True})
    expect = by_key(plan_of(cfg))["agent-status/server-1"].expect
    assert expect["dsr"] is True and expect["dsrDispatch"] == "opt"
    assert expect["maglev"] == 65521
    assert expect["bpfHostRouting"] is True and expect["bpfMasquerade"] is True
    assert expect["bandwidthManager"] is True and expect["bbr"] is True
    assert expect["bigTcp"] == ["ipv4"]
    assert expect["xdp"] == "best-effort"
    assert expect["netkit"] is True and expect["socketLB"] is True


@pytest.mark.parametrize("version", VERSIONS)
def test_lines_a_release_does_not_print_are_not_asserted(version: str) -> None:
    expect = by_key(plan_of(cfg_of("performance", version)))["agent-status/agent-1"].expect
    minor = tuple(int(part) for part in version.split(".")[:2])
    assert ("nativeRouting" in expect) == (minor >= (1, 16))
    assert ("netkit" in expect) == (minor >= (1, 16))
    assert ("dsrDispatch" in expect) == (minor >= (1, 15))
    assert ("bigTcp" in expect) == (minor >= (1, 14))
    assert expect["kubeProxyReplacement"] is True  # the CLI reads Strict for it on 1.13


@pytest.mark.parametrize("tier", ["baseline", "kpr"])
def test_no_kpr_lines_without_kube_proxy_replacement(tier: str) -> None:
    cfg = cfg_of(tier) if tier == "baseline" else cfg_of("kpr", features={"kubeProxyReplacement": False})
    expect = by_key(plan_of(cfg))["agent-status/agent-1"].expect
    assert expect["kubeProxyReplacement"] is False
    assert not {"dsr", "dsrDispatch", "maglev", "xdp", "socketLB"} & set(expect)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("tier", sorted(TIER_FEATURES))
@pytest.mark.parametrize("verify", [{"smoke": True, "connectivityTest": True, "benchmark": True}])
def test_every_expectation_is_accepted_by_the_cli(tier: str, version: str, verify: dict[str, bool]) -> None:
    cfg = cfg_of(tier, version, verify=verify)
    for check in plan_of(cfg):
        # Raises ExpectationError (the CLI's exit 2) for an unknown key or a wrong type.
        CHECKS[check.check].run("", check.expect)


@pytest.mark.parametrize("stack", ["dev", "ha-performance", "extreme"])
def test_example_stacks_expectations_are_accepted(stack: str) -> None:
    cfg = stackfile.load(stackfile.locate(stack))
    for check in plan_of(cfg):
        CHECKS[check.check].run("", check.expect)


# --- the planned expectations against real agent output (the CLI for real) --------------------------


def test_extreme_plan_passes_on_a_1_19_extreme_agent() -> None:
    cfg = cfg_of("extreme", cilium={"maglevTableSize": 65521, "xdpMode": "native"}, features={"netkit": True})
    check = by_key(plan_of(cfg))["agent-status/agent-1"]
    result = verify_cli(check, (FIXTURES / "agent_status_1.19_extreme.txt").read_text())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "pass"


def test_kpr_plan_fails_on_an_agent_running_more_than_promised() -> None:
    check = by_key(plan_of(cfg_of("kpr")))["agent-status/agent-1"]
    result = verify_cli(check, (FIXTURES / "agent_status_1.19_extreme.txt").read_text())
    assert result.returncode == 1
    assert "node agent-1: check agent-status: expected Mode SNAT, saw DSR" in result.stderr
    assert "node agent-1: check agent-status: expected Device Mode veth, saw netkit" in result.stderr


@pytest.mark.parametrize(
    ("cfg", "fixture"),
    [
        (lambda: cfg_of("baseline", "1.13.18"), "agent_status_1.13_kpr_disabled.txt"),
        (
            lambda: cfg_of(
                "performance",
                "1.13.18",
                cilium={"xdpMode": "native"},
                features={"bandwidthManager": True, "bbr": True, "xdp": True},
            ),
            "agent_status_1.13_kpr_strict_dsr.txt",
        ),
        (lambda: cfg_of("kpr", "1.16.17", features={"nativeRouting": False}), "agent_status_1.16_kpr_tunnel.txt"),
    ],
    ids=["1.13-baseline", "1.13-strict-dsr", "1.16-kpr-tunnel"],
)
def test_version_aware_plans_pass_on_matching_agents(cfg: Any, fixture: str) -> None:
    check = by_key(plan_of(cfg()))["agent-status/agent-1"]
    result = verify_cli(check, (FIXTURES / fixture).read_text())
    assert result.returncode == 0, (check.expect, result.stderr)


def test_1_13_kpr_plan_fails_on_a_disabled_agent_with_the_1_13_words() -> None:
    check = by_key(plan_of(cfg_of("kpr", "1.13.18")))["agent-status/server-1"]
    result = verify_cli(check, (FIXTURES / "agent_status_1.13_kpr_disabled.txt").read_text())
    assert result.returncode == 1
    assert "node server-1: check agent-status: expected KubeProxyReplacement Strict, saw Disabled" in result.stderr


# --- smoke: fixed addresses, service list and probes ----------------------------------------------------


def test_static_node_port_and_cluster_ips() -> None:
    cfg = cfg_of("kpr")
    placed = checks.workloads(cfg)
    assert placed.node_port == 30085  # last port of 30000-32767's static band (86 ports)
    assert (placed.smoke_cluster_ip, placed.benchmark_cluster_ip) == ("10.43.0.253", "10.43.0.254")
    small = cfg_of("kpr", cilium={"nodePortRange": "31000-31010"}, k3s={"serviceCidr": "10.96.0.0/24"})
    placed = checks.workloads(small)
    assert placed.node_port == 31010  # a range smaller than the band: its last port
    assert (placed.smoke_cluster_ip, placed.benchmark_cluster_ip) == ("10.96.0.13", "10.96.0.14")


def test_a_service_cidr_too_small_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"k3s.serviceCidr: 10.96.0.0/29 is too small"):
        checks.workloads(cfg_of("kpr", k3s={"serviceCidr": "10.96.0.0/29"}))


def test_service_list_expects_node_port_frontends_only_with_kpr() -> None:
    kpr = by_key(plan_of(cfg_of("kpr")))["service-list/agent-2"].expect
    assert kpr == {
        "clusterIP": "10.43.0.253",
        "clusterPort": 80,
        "protocol": "TCP",
        "minBackends": 2,
        "nodePort": 30085,
        "nodeIPs": ["192.168.56.12"],
    }
    baseline = by_key(plan_of(cfg_of("baseline")))["service-list/agent-2"].expect
    assert "nodePort" not in baseline and "nodeIPs" not in baseline


def test_node_ip_is_asserted_only_when_known() -> None:
    raw = copy.deepcopy(LAB)
    raw["nodes"][1]["host"] = "agent-1.example.com"
    expect = by_key(plan_of(parse(raw)))["service-list/agent-1"].expect
    assert expect["nodePort"] == 30085 and "nodeIPs" not in expect


def test_every_node_probes_a_pod_on_another_node_when_two_nodes_take_pods() -> None:
    cfg = stackfile.load(stackfile.locate("ha-performance"))  # servers and an edge node tainted
    assert checks.schedulable_nodes(cfg) == ("agent-1", "agent-2", "agent-3")
    for check in plan_of(cfg):
        if check.check == "probes":
            all_four = ["localhost-nodeport", "nodeip-nodeport", "clusterip", "remote-pod"]
            assert check.expect == {"probes": all_four, "minProbes": 4}


def test_a_single_schedulable_node_has_no_remote_pod_to_probe() -> None:
    raw = copy.deepcopy(LAB)
    raw["nodes"][0]["taints"] = ["dedicated=control:NoSchedule"]
    raw["nodes"][2]["taints"] = ["dedicated=edge:NoExecute"]
    raw["nodes"][1]["taints"] = ["soft=yes:PreferNoSchedule"]  # does not keep pods away
    keyed = by_key(plan_of(parse(raw)))
    assert "remote-pod" not in keyed["probes/agent-1"].expect["probes"]
    assert keyed["probes/agent-1"].expect["minProbes"] == 3
    assert "remote-pod" in keyed["probes/server-1"].expect["probes"]
    assert keyed["service-list/server-1"].expect["minBackends"] == 1


def test_no_schedulable_node_is_a_config_error_naming_the_switches() -> None:
    raw = copy.deepcopy(LAB)
    for node in raw["nodes"]:
        node["taints"] = ["dedicated=x:NoSchedule"]
    raw["verify"] = {"smoke": True, "benchmark": True}
    with pytest.raises(ConfigError) as caught:
        plan_of(parse(raw))
    assert [p.split(":")[1] for p in caught.value.problems] == ["verify.smoke", "verify.benchmark"]
    raw["verify"] = {"smoke": False}
    assert {c.check for c in plan_of(parse(raw))} == {"agent-status", "no-kube-proxy-rules", "kpr-integrity"}


def test_probes_plan_against_probe_output() -> None:
    check = by_key(plan_of(cfg_of("kpr")))["probes/agent-1"]
    ok = "".join(f"probe={name} target=10.0.0.1:80 result=ok code=200 attempts=1\n" for name in check.expect["probes"])
    assert verify_cli(check, ok).returncode == 0
    missing = ok.replace("probe=remote-pod", "probe=other")
    result = verify_cli(check, missing)
    assert result.returncode == 1
    assert "node agent-1: check probes: expected probe remote-pod reported, saw nothing" in result.stderr


def test_nic_dependent_expectations_are_skippable_per_node(raw):
    from stacks.checks import planned_checks
    from stacks.config import parse
    from stacks.features import resolve

    cfg = parse(dict(raw, tier="extreme"))
    agent = [c for c in planned_checks(cfg, resolve(cfg)) if c.check == "agent-status"]
    assert agent and all(c.skippable == ("bigTcp", "xdp") for c in agent)
    assert agent[0].expect["bigTcp"] == ["ipv4"] and agent[0].expect["xdp"] == "best-effort"
    # forced: preflight fails on such a node instead, so the expectation always holds
    forced = parse(dict(raw, tier="extreme", features={"bigTcp": True}))
    assert all(c.skippable == ("xdp",) for c in planned_checks(forced, resolve(forced)) if c.check == "agent-status")
    kpr = parse(dict(raw, tier="kpr"))
    assert all(c.skippable == () for c in planned_checks(kpr, resolve(kpr)))


# --- kpr-integrity: what kube-proxy replacement rests on, per node --------------------------------------


def test_kpr_integrity_on_every_node_only_with_kube_proxy_replacement() -> None:
    kpr = by_key(plan_of(cfg_of("kpr")))
    assert kpr["kpr-integrity/server-1"].expect == {
        "role": "server",
        "kubeProxyHealthzPort": 10256,
        "apiServer": "127.0.0.1:6444",
        "apiServerIsK3s": True,
    }
    assert kpr["kpr-integrity/agent-2"].expect["role"] == "agent"
    for cfg in (cfg_of("baseline"), cfg_of("kpr", features={"kubeProxyReplacement": False})):
        assert not [c for c in plan_of(cfg) if c.check == "kpr-integrity"]


def test_a_configured_api_endpoint_is_probed_instead_of_k3s_load_balancer() -> None:
    custom = cfg_of("kpr", cilium={"k8sServiceHost": "10.0.0.5", "k8sServicePort": 6443})
    expect = by_key(plan_of(custom))["kpr-integrity/agent-1"].expect
    assert (expect["apiServer"], expect["apiServerIsK3s"]) == ("10.0.0.5:6443", False)
    # The same endpoint through raw values, an IPv6 address in brackets.
    raw = cfg_of("kpr", cilium={"values": {"k8sServiceHost": "fd00::5", "k8sServicePort": "6443"}})
    expect = by_key(plan_of(raw))["kpr-integrity/agent-1"].expect
    assert (expect["apiServer"], expect["apiServerIsK3s"]) == ("[fd00::5]:6443", False)
    # The default, spelt out: still K3s' load balancer.
    spelt = cfg_of("kpr", cilium={"k8sServiceHost": "127.0.0.1", "k8sServicePort": 6444})
    assert by_key(plan_of(spelt))["kpr-integrity/agent-1"].expect["apiServerIsK3s"] is True
    # "auto" is resolved by the agent at run time: nothing to probe from here.
    auto = cfg_of("kpr", cilium={"values": {"k8sServiceHost": "auto"}})
    assert "apiServer" not in by_key(plan_of(auto))["kpr-integrity/agent-1"].expect


def test_cilium_serving_kube_proxy_health_checks_is_expected_only_when_switched_on() -> None:
    assert "ciliumHealthz" not in by_key(plan_of(cfg_of("kpr")))["kpr-integrity/agent-1"].expect
    on = cfg_of("kpr", cilium={"values": {"kubeProxyReplacementHealthzBindAddr": "0.0.0.0:10256"}})
    assert by_key(plan_of(on))["kpr-integrity/agent-1"].expect["ciliumHealthz"] == "0.0.0.0:10256"


def test_kpr_integrity_plan_against_real_ss_samples() -> None:
    def node_output(ss_fixture: str) -> str:
        lines = (FIXTURES / ss_fixture).read_text().splitlines(keepends=True)
        ss = "".join(line for line in lines if not line.startswith("# "))
        return (
            f"### ss\n{ss}### k3s unit=k3s-agent pid=11095 started=1796248160\n### cmdline\n"
            "/usr/local/bin/k3s agent\n### execstart\n/usr/local/bin/k3s\nagent\n"
            "### config path=/etc/rancher/k3s/config.yaml source=default\n### api-server\n"
            "probe=api-server target=127.0.0.1:6444 result=ok code=401 attempts=1\n"
        )

    check = by_key(plan_of(cfg_of("kpr")))["kpr-integrity/agent-1"]
    assert verify_cli(check, node_output("ss_kpr_agent_clean.txt")).returncode == 0
    failed = verify_cli(check, node_output("ss_kpr_agent_embedded_kube_proxy.txt"))
    assert failed.returncode == 1
    assert "node agent-1: check kpr-integrity: expected K3s' embedded kube-proxy not running" in failed.stderr
