"""agent-status: cilium-dbg status --verbose across Cilium 1.13 to 1.19."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verification.expectations import CHECKS, ExpectationError, JsonValue, Verdict, version_matches
from verification.parsers import parse_agent_status

FIXTURES = Path(__file__).parent / "fixtures"
NODE = "agent-1"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def run(text: str, expect: dict[str, JsonValue]) -> Verdict:
    return CHECKS["agent-status"].run(text, expect)


def messages(verdict: Verdict) -> list[str]:
    return [problem.message(NODE, "agent-status") for problem in verdict.problems]


def as_tab_separated(text: str) -> str:
    """What the same status looks like before Go's tabwriter aligns it."""
    keyed = re.sub(r"^([ \t]*(?:- )?[^:\n]+?:) +", "\\1\t", text, flags=re.MULTILINE)
    return re.sub(r" {2,}", "\t", keyed)


# --- parser ------------------------------------------------------------------


def test_parses_1_13_strict_dsr_maglev_status() -> None:
    status = parse_agent_status(fixture("agent_status_1.13_kpr_strict_dsr.txt"))

    assert status.version == "1.13.18"
    assert status.cilium_state == "Ok"
    assert status.kube_proxy_replacement == "Strict"
    assert status.socket_lb == "Enabled"
    assert status.lb_mode == "DSR"
    assert status.dsr_dispatch is None  # 1.13 does not print the dispatch mode
    assert status.backend_selection == "Maglev (Table Size: 16381)"
    assert status.maglev_table_size == 16381
    assert status.host_routing == "BPF"
    assert status.network_routing is None  # no "Routing:" line before 1.16
    assert status.masquerading == "BPF"
    assert status.bandwidth_manager == "EDT with BPF [BBR] [eth0]"
    assert status.congestion_control == "BBR"
    assert (status.ipv4_big_tcp, status.ipv6_big_tcp) == (None, "Disabled")
    assert status.xdp_acceleration == "Native"
    assert status.device_mode is None


def test_parses_1_19_netkit_big_tcp_dsr_dispatch_status() -> None:
    status = parse_agent_status(fixture("agent_status_1.19_extreme.txt"))

    assert status.version == "1.19.6"
    assert status.kube_proxy_replacement == "True"
    assert status.lb_mode == "DSR"
    assert status.dsr_dispatch == "IP Option/Extension"
    assert status.maglev_table_size == 65521
    assert (status.network_routing, status.host_routing, status.tunnel_protocol) == ("Native", "BPF", None)
    assert status.device_mode == "netkit"
    assert (status.ipv4_big_tcp, status.ipv6_big_tcp) == ("Enabled", "Disabled")
    assert status.xdp_acceleration == "Native"


def test_parses_1_16_tunnel_legacy_routing_status() -> None:
    status = parse_agent_status(fixture("agent_status_1.16_kpr_tunnel.txt"))

    assert (status.network_routing, status.tunnel_protocol, status.host_routing) == ("Tunnel", "vxlan", "Legacy")
    assert (status.lb_mode, status.backend_selection, status.maglev_table_size) == ("SNAT", "Random", None)
    assert status.xdp_acceleration == "Disabled"
    assert status.device_mode == "veth"
    assert status.masquerading == "IPTables"
    assert (status.bandwidth_manager, status.congestion_control) == ("Disabled", None)


def test_kpr_disabled_status_has_no_nodeport_lines() -> None:
    status = parse_agent_status(fixture("agent_status_1.13_kpr_disabled.txt"))

    assert status.kube_proxy_replacement == "Disabled"
    assert status.socket_lb == "Disabled"
    assert (status.lb_mode, status.backend_selection, status.xdp_acceleration) == (None, None, None)


@pytest.mark.parametrize(
    "name",
    [
        "agent_status_1.13_kpr_strict_dsr.txt",
        "agent_status_1.13_kpr_disabled.txt",
        "agent_status_1.16_kpr_tunnel.txt",
        "agent_status_1.19_extreme.txt",
    ],
)
def test_tab_separated_status_parses_like_aligned_status(name: str) -> None:
    aligned = fixture(name)
    tabbed = as_tab_separated(aligned)

    assert "\t" in tabbed and "   " not in tabbed
    assert parse_agent_status(tabbed) == parse_agent_status(aligned)


def test_kpr_mode_falls_back_to_the_details_block() -> None:
    aligned = fixture("agent_status_1.19_extreme.txt")
    without_summary_line = "\n".join(
        line for line in aligned.splitlines() if not line.startswith("KubeProxyReplacement:")
    )

    assert parse_agent_status(without_summary_line).kube_proxy_replacement == "True"


@pytest.mark.parametrize("next_line", ["Encryption:   IPsec", "command terminated with exit code 137"])
def test_details_block_ends_at_the_next_unindented_line(next_line: str) -> None:
    text = (
        "Cilium:   Ok   1.19.6 (v1.19.6-0e2b6f0c)\n"
        "KubeProxyReplacement Details:\n"
        "  Status:   True\n"
        f"{next_line}\n"
        "  Mode:   DSR\n"
    )

    assert parse_agent_status(text).lb_mode is None


def test_old_bandwidth_manager_line_does_not_show_congestion_control() -> None:
    status = parse_agent_status("Cilium:   Ok   1.11.20 (v1.11.20-abc)\nBandwidthManager:   EDT with BPF   [eth0]\n")

    assert status.bandwidth_manager == "EDT with BPF   [eth0]"
    assert status.congestion_control is None


# --- expectations: passing tiers ---------------------------------------------

TIERS: dict[str, tuple[str, dict[str, JsonValue]]] = {
    "baseline 1.13": (
        "agent_status_1.13_kpr_disabled.txt",
        {
            "version": "1.13.18",
            "healthy": True,
            "kubeProxyReplacement": False,
            "socketLB": False,
            "bpfHostRouting": False,
            "bpfMasquerade": False,
            "bandwidthManager": False,
            "bbr": False,
            "bigTcp": False,
        },
    ),
    "extreme 1.13": (
        "agent_status_1.13_kpr_strict_dsr.txt",
        {
            "version": "1.13",
            "kubeProxyReplacement": True,
            "socketLB": True,
            "dsr": True,
            "maglev": 16381,
            "bpfHostRouting": True,
            "bpfMasquerade": True,
            "bandwidthManager": True,
            "bbr": True,
            "xdp": "native",
        },
    ),
    "kpr 1.16": (
        "agent_status_1.16_kpr_tunnel.txt",
        {
            "version": "1.16.17",
            "kubeProxyReplacement": True,
            "dsr": False,
            "maglev": False,
            "xdp": False,
            "nativeRouting": False,
            "bpfHostRouting": False,
            "netkit": False,
            "bigTcp": False,
        },
    ),
    "extreme 1.19": (
        "agent_status_1.19_extreme.txt",
        {
            "version": "1.19.6",
            "healthy": True,
            "kubeProxyReplacement": True,
            "socketLB": True,
            "dsr": True,
            "dsrDispatch": "opt",
            "maglev": 65521,
            "bpfHostRouting": True,
            "nativeRouting": True,
            "bpfMasquerade": True,
            "bandwidthManager": True,
            "bbr": True,
            "bigTcp": ["ipv4"],
            "xdp": True,
            "netkit": True,
        },
    ),
}


@pytest.mark.parametrize("tier", TIERS)
def test_status_meeting_its_tier_passes(tier: str) -> None:
    name, expect = TIERS[tier]

    verdict = run(fixture(name), expect)

    assert messages(verdict) == []
    assert verdict.passed


def test_figures_report_features_that_were_not_asserted() -> None:
    verdict = run(fixture("agent_status_1.19_extreme.txt"), {})

    assert verdict.passed
    assert verdict.figures["deviceMode"] == "netkit"
    assert verdict.figures["maglevTableSize"] == 65521
    assert verdict.figures["congestionControl"] == "BBR"
    assert verdict.figures["networkRouting"] == "Native"


# --- expectations: failures ----------------------------------------------------


def test_kpr_expected_off_but_on_names_node_check_expected_and_seen() -> None:
    verdict = run(fixture("agent_status_1.19_extreme.txt"), {"kubeProxyReplacement": False})

    assert messages(verdict) == ["node agent-1: check agent-status: expected KubeProxyReplacement False, saw True"]


def test_kpr_expected_on_uses_the_1_13_spelling() -> None:
    verdict = run(fixture("agent_status_1.13_kpr_disabled.txt"), {"kubeProxyReplacement": True})

    assert messages(verdict) == ["node agent-1: check agent-status: expected KubeProxyReplacement Strict, saw Disabled"]


def test_partial_kpr_is_neither_on_nor_off() -> None:
    text = "Cilium:   Ok   1.13.18 (v1.13.18-abc)\nKubeProxyReplacement:   Partial   [eth0 10.0.0.11]\n"

    assert not run(text, {"kubeProxyReplacement": True}).passed
    assert not run(text, {"kubeProxyReplacement": False}).passed


def test_every_unmet_feature_is_reported_on_a_tier_mismatch() -> None:
    _, extreme = TIERS["extreme 1.13"]

    verdict = run(fixture("agent_status_1.13_kpr_disabled.txt"), extreme)

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected KubeProxyReplacement Strict, saw Disabled",
        "node agent-1: check agent-status: expected Socket LB Enabled, saw Disabled",
        "node agent-1: check agent-status: expected Mode DSR, saw nothing (not found in output)",
        "node agent-1: check agent-status: expected Host Routing BPF, saw Legacy",
        "node agent-1: check agent-status: expected Masquerading BPF, saw IPTables",
        "node agent-1: check agent-status: expected BandwidthManager EDT with BPF, saw Disabled",
        "node agent-1: check agent-status: expected BandwidthManager congestion control BBR, "
        "saw none (BandwidthManager Disabled)",
        "node agent-1: check agent-status: expected Backend Selection Maglev (Table Size: 16381), "
        "saw nothing (not found in output)",
        "node agent-1: check agent-status: expected XDP Acceleration Native, saw nothing (not found in output)",
    ]


def test_maglev_table_size_mismatch() -> None:
    verdict = run(fixture("agent_status_1.19_extreme.txt"), {"maglev": 16381})

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected Backend Selection Maglev (Table Size: 16381), "
        "saw Maglev (Table Size: 65521)"
    ]


def test_version_mismatch() -> None:
    verdict = run(fixture("agent_status_1.19_extreme.txt"), {"version": "1.18"})

    assert messages(verdict) == ["node agent-1: check agent-status: expected Cilium version 1.18, saw 1.19.6"]


def test_big_tcp_family_list_checks_each_family() -> None:
    verdict = run(fixture("agent_status_1.19_extreme.txt"), {"bigTcp": ["ipv4", "ipv6"]})

    assert messages(verdict) == ["node agent-1: check agent-status: expected IPv6 BIG TCP Enabled, saw Disabled"]


def test_xdp_mode_mismatch() -> None:
    verdict = run(fixture("agent_status_1.19_extreme.txt"), {"xdp": "best-effort"})

    assert messages(verdict) == ["node agent-1: check agent-status: expected XDP Acceleration Best-Effort, saw Native"]


def test_dsr_dispatch_mismatch() -> None:
    verdict = run(fixture("agent_status_1.19_extreme.txt"), {"dsrDispatch": "geneve"})

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected DSR Dispatch Mode Geneve, saw IP Option/Extension"
    ]


def test_unhealthy_agent_fails_healthy() -> None:
    text = "Cilium:   Failure   Kubernetes: Unable to contact API server\nKubeProxyReplacement:   True\n"

    verdict = run(text, {"healthy": True})

    assert messages(verdict) == ["node agent-1: check agent-status: expected Cilium state Ok, saw Failure"]


def test_big_tcp_expected_but_every_family_disabled() -> None:
    verdict = run(fixture("agent_status_1.16_kpr_tunnel.txt"), {"bigTcp": True})

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected BIG TCP Enabled (IPv4 or IPv6), saw IPv4 Disabled, IPv6 Disabled"
    ]


def test_netkit_expected_but_veth_seen() -> None:
    verdict = run(fixture("agent_status_1.16_kpr_tunnel.txt"), {"netkit": True, "nativeRouting": True})

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected Routing Network Native, saw Tunnel",
        "node agent-1: check agent-status: expected Device Mode netkit, saw veth",
    ]


# --- not found ---------------------------------------------------------------


def test_items_older_releases_do_not_print_are_not_found_rather_than_guessed() -> None:
    verdict = run(
        fixture("agent_status_1.13_kpr_strict_dsr.txt"),
        {"dsrDispatch": "opt", "nativeRouting": True, "netkit": False},
    )

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected Routing Network Native, saw nothing (not found in output)",
        "node agent-1: check agent-status: expected Device Mode veth, saw nothing (not found in output)",
        "node agent-1: check agent-status: expected DSR Dispatch Mode IP Option/Extension, "
        "saw nothing (not found in output)",
    ]


def test_bbr_on_a_release_that_does_not_print_the_algorithm_is_not_found() -> None:
    text = "Cilium:   Ok   1.11.20 (v1.11.20-abc)\nBandwidthManager:   EDT with BPF   [eth0]\n"

    verdict = run(text, {"bbr": True})

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected BandwidthManager congestion control BBR, "
        "saw nothing (not found in output)"
    ]


@pytest.mark.parametrize(
    "text",
    ["", 'error: unable to upgrade connection: container not found ("cilium-agent")\n'],
)
def test_output_that_is_not_a_status_fails_even_without_expectations(text: str) -> None:
    verdict = run(text, {})

    assert messages(verdict) == [
        "node agent-1: check agent-status: expected cilium-dbg status output with a 'Cilium:' line, "
        "saw nothing (not found in output)"
    ]


# --- expectation validation ----------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "fragment"),
    [
        ({"kubeProxyReplacment": True}, "unknown expectation key 'kubeProxyReplacment'"),
        ({"maglev": "yes"}, "expectation maglev must be true|false|<table size>, got 'yes'"),
        ({"dsrDispatch": "dsr"}, "expectation dsrDispatch must be"),
        ({"bigTcp": ["ipv5"]}, "expectation bigTcp must be"),
        ({"healthy": False}, "expectation healthy must be true"),
    ],
)
def test_invalid_expectations_are_refused(expect: dict[str, JsonValue], fragment: str) -> None:
    with pytest.raises(ExpectationError, match=re.escape(fragment)):
        run(fixture("agent_status_1.19_extreme.txt"), expect)


@pytest.mark.parametrize(
    ("expected", "seen", "matches"),
    [
        ("1.19.6", "1.19.6", True),
        ("1.19", "1.19.6", True),
        ("v1.13.18", "1.13.18", True),
        ("1.1", "1.13.18", False),
        ("1.19.6", "1.19.60", False),
        ("1.17.0", "1.17.0-dev", True),
    ],
)
def test_version_prefix_matching(expected: str, seen: str, matches: bool) -> None:
    assert version_matches(expected, seen) is matches
