"""service-list: NodePort and ClusterIP frontends must exist with usable backends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verification.expectations import CHECKS, ExpectationError, JsonValue, Verdict
from verification.parsers import Backend, parse_service_list

FIXTURES = Path(__file__).parent / "fixtures"
NODE = "agent-1"
OLD = "service_list_1.13.txt"
NEW = "service_list_1.19.txt"
DOC = "service_list_kubeproxy_free_doc.txt"
# `cilium-dbg service list` of a real 1.19.6 agent with kube-proxy replacement (lab/run datapath, 2026-12-03):
# the NodePort as one wildcard row, no row per node address.
LAB_1_19 = "service_list_1.19_lab.txt"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def run(text: str, expect: dict[str, JsonValue]) -> Verdict:
    return CHECKS["service-list"].run(text, expect)


def messages(verdict: Verdict) -> list[str]:
    return [problem.message(NODE, "service-list") for problem in verdict.problems]


def as_tab_separated(text: str) -> str:
    return "\n".join(re.sub(r" {2,}", "\t", line.rstrip()) for line in text.splitlines()) + "\n"


def test_parses_1_13_rows_without_protocol_with_backend_states() -> None:
    listing = parse_service_list(fixture(OLD))

    assert [s.service_id for s in listing.services] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    dns = listing.services[1]
    assert (dns.frontend.address, dns.frontend.port, dns.frontend.protocol) == ("10.43.0.10", 53, None)
    assert dns.backends == [Backend("10.42.0.93:53", "active"), Backend("10.42.1.104:53", "active")]
    assert listing.services[7].backends == []
    assert listing.services[8].usable_backends == 0
    assert listing.unparsed_lines == []


def test_parses_1_19_rows_with_protocol_and_ipv6_frontend() -> None:
    listing = parse_service_list(fixture(NEW))

    by_id = {s.service_id: s for s in listing.services}
    assert by_id[2].frontend.protocol == "UDP"
    assert (by_id[8].frontend.address, by_id[8].frontend.port) == ("fd00:10:43::5c1", 80)
    assert [b.state for b in by_id[10].backends] == ["terminating", "quarantined"]


def test_parses_documentation_rows_without_backend_state() -> None:
    listing = parse_service_list(fixture(DOC))

    assert [s.frontend.raw for s in listing.services] == [
        "10.104.239.135:80/TCP",
        "0.0.0.0:31940/TCP",
        "192.168.178.29:31940/TCP",
        "172.16.0.29:31940/TCP",
    ]
    assert all(s.usable_backends == 2 for s in listing.services)
    assert listing.unparsed_lines == ["[...]"]


def test_backends_after_an_unreadable_row_are_not_given_to_the_row_above() -> None:
    text = (
        "ID   Frontend          Service Type   Backend\n"
        "1    10.43.0.1:443     ClusterIP      1 => 10.0.0.10:6443 (active)\n"
        "2    <nil>             NodePort       1 => 10.42.1.52:80 (active)\n"
        "                                      2 => 10.42.2.18:80 (active)\n"
        "3    10.43.0.10:53     ClusterIP      1 => 10.42.0.93:53 (active)\n"
        "3    10.43.0.10:53     ClusterIP      1 => 10.42.0.93:53 (active)\n"
    )

    listing = parse_service_list(text)

    assert [len(s.backends) for s in listing.services] == [1, 1, 1]
    assert listing.unparsed_lines == [
        "2    <nil>             NodePort       1 => 10.42.1.52:80 (active)",
        "2 => 10.42.2.18:80 (active)",
    ]


@pytest.mark.parametrize("name", [OLD, NEW, DOC])
def test_tab_separated_listing_parses_like_aligned_listing(name: str) -> None:
    aligned = fixture(name)
    tabbed = as_tab_separated(aligned)

    assert "\t" in tabbed and "  " not in tabbed
    assert parse_service_list(tabbed) == parse_service_list(aligned)


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        (OLD, {"nodePort": 30080, "nodeIPs": ["10.0.0.11"], "clusterIP": "10.43.71.24", "clusterPort": 80}),
        (NEW, {"nodePort": 30080, "nodeIPs": ["10.0.0.11"], "clusterIP": "10.43.71.24", "protocol": "TCP"}),
        (NEW, {"frontends": ["10.43.0.10:53"], "protocol": "udp", "minBackends": 2}),
        (NEW, {"frontends": ["[fd00:10:43:0::5c1]:80"]}),
        (DOC, {"nodePort": 31940, "nodeIPs": ["192.168.178.29", "172.16.0.29"], "clusterIP": "10.104.239.135"}),
        (DOC, {"nodePort": 31940}),
    ],
)
def test_expected_frontends_with_backends_pass(name: str, expect: dict[str, JsonValue]) -> None:
    verdict = run(fixture(name), expect)

    assert messages(verdict) == []


def test_figures_list_each_expected_frontend() -> None:
    verdict = run(fixture(NEW), {"nodePort": 30080, "nodeIPs": ["10.0.0.11"]})

    assert verdict.figures == {
        "services": 10,
        "frontends": {
            "10.0.0.11:30080 (NodePort)": [
                {"id": 7, "frontend": "10.0.0.11:30080/TCP", "type": "NodePort", "backends": 2, "usableBackends": 2}
            ]
        },
    }


def test_missing_node_ip_frontend_is_not_found() -> None:
    verdict = run(fixture(DOC), {"nodePort": 31940, "nodeIPs": ["192.168.178.29", "10.0.0.12"]})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected frontend 10.0.0.12:31940 (NodePort) in service list, "
        "saw nothing (not found in output)"
    ]


def test_wildcard_row_of_cilium_1_19_serves_the_node_ip() -> None:
    verdict = run(fixture(LAB_1_19), {"nodePort": 31108, "nodeIPs": ["10.99.0.12"], "clusterIP": "10.96.82.183",
                                      "clusterPort": 80, "protocol": "TCP", "minBackends": 2})

    assert verdict.problems == []
    assert verdict.figures["frontends"]["10.99.0.12:31108 (NodePort)"] == [  # type: ignore[index]
        {"id": 2, "frontend": "0.0.0.0:31108/TCP", "type": "NodePort", "backends": 2, "usableBackends": 2}
    ]


def test_wildcard_row_does_not_stand_for_another_port_or_family() -> None:
    verdict = run(fixture(LAB_1_19), {"nodePort": 31109, "nodeIPs": ["10.99.0.12", "fd00::12"]})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected frontend 10.99.0.12:31109 (NodePort) in service list, "
        "saw nothing (not found in output)",
        "node agent-1: check service-list: expected frontend [fd00::12]:31109 (NodePort) in service list, "
        "saw nothing (not found in output)",
    ]
    ipv6 = run(fixture(LAB_1_19), {"nodePort": 31108, "nodeIPs": ["fd00::12"]})
    assert len(ipv6.problems) == 1


def test_node_port_anywhere_is_not_found_when_no_node_port_uses_it() -> None:
    verdict = run(fixture(OLD), {"nodePort": 31111})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected frontend *:31111 (NodePort) in service list, "
        "saw nothing (not found in output)"
    ]


def test_frontend_without_usable_backend_fails_with_backend_states() -> None:
    verdict = run(fixture(OLD), {"nodePort": 31999, "nodeIPs": ["10.0.0.11"]})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected frontend 10.0.0.11:31999 (NodePort) usable backends >= 1, "
        "saw 0 (terminating)"
    ]


def test_cluster_ip_without_backends_fails() -> None:
    verdict = run(fixture(OLD), {"clusterIP": "10.43.200.7"})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected frontend 10.43.200.7:* (ClusterIP) usable backends >= 1, "
        "saw 0 (no backends)"
    ]


def test_frontend_of_the_wrong_service_type_fails() -> None:
    verdict = run(fixture(NEW), {"clusterIP": "10.0.0.11", "clusterPort": 30080})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected frontend 10.0.0.11:30080 (ClusterIP) service type ClusterIP, "
        "saw NodePort"
    ]


def test_protocol_filter_excludes_other_protocols() -> None:
    verdict = run(fixture(NEW), {"frontends": ["10.43.0.1:443"], "protocol": "UDP"})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected frontend 10.43.0.1:443 in service list, "
        "saw nothing (not found in output)"
    ]


@pytest.mark.parametrize("text", ["", "Error: cannot get list of services: Get ... connect: connection refused\n"])
def test_output_without_services_is_not_found(text: str) -> None:
    verdict = run(text, {"nodePort": 30080, "nodeIPs": ["10.0.0.11"]})

    assert messages(verdict) == [
        "node agent-1: check service-list: expected service list with at least one service, "
        "saw nothing (not found in output)"
    ]


@pytest.mark.parametrize(
    ("expect", "fragment"),
    [
        ({"nodeIPs": ["10.0.0.11"]}, "expectation nodeIPs needs nodePort"),
        ({"clusterPort": 80}, "expectation clusterPort needs clusterIP"),
        ({"frontends": ["10.0.0.11"]}, 'is not "ip:port"'),
        ({"nodePort": "30080"}, "expectation nodePort must be a port number"),
        ({"protocol": "SCTP"}, "expectation protocol must be"),
    ],
)
def test_invalid_expectations_are_refused(expect: dict[str, JsonValue], fragment: str) -> None:
    with pytest.raises(ExpectationError, match=re.escape(fragment)):
        run(fixture(OLD), expect)
