"""loadbalancer-address, l2-lease, bgp-peers, bgp-routes: through ``main`` (stdin patched) and the parsers.

Inputs are the samples in fixtures/lb (see its README.md for where each came
from); every expected value below is read off those files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.verification.cli import prefix
from verification.__main__ import main
from verification.expectations import CHECKS
from verification.kube_objects import NotFound, parse_address_block
from verification.load_balancer import (
    BgpPeer,
    parse_bgp_peers,
    parse_bgp_routes,
    parse_lease,
    parse_service,
    split_peer_address,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "lb"
SMOKE = "k3s-cilium-verify/smoke-lb"
RED = "example/service-red"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture_json(name: str) -> Any:
    return json.loads(fixture(name))


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


def test_the_four_checks_are_registered() -> None:
    assert {"loadbalancer-address", "l2-lease", "bgp-peers", "bgp-routes"} <= set(CHECKS)


@pytest.mark.parametrize(
    "code",
    [
        "import verification.load_balancer\nfrom verification.expectations import CHECKS",
        "from verification.expectations import CHECKS\nimport verification.load_balancer",
    ],
    ids=["load_balancer-first", "expectations-first"],
)
def test_registration_does_not_depend_on_import_order(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nprint(' '.join(sorted(CHECKS)))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert {"loadbalancer-address", "l2-lease", "bgp-peers", "bgp-routes", "agent-status"} <= set(result.stdout.split())


@pytest.mark.parametrize(
    ("check", "keys"),
    [
        ("loadbalancer-address", ("service", "address", "within", "nodeAddresses")),
        ("l2-lease", ("lease", "holders")),
        ("bgp-peers", ("localASN", "peers")),
        ("bgp-routes", ("prefixes", "peers")),
    ],
)
def test_check_help_lists_its_keys(check: str, keys: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([check, "--help"])

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key in keys:
        assert f"  {key}: " in out


def test_main_help_documents_the_four_checks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])

    out = capsys.readouterr().out
    for check in ("loadbalancer-address", "l2-lease", "bgp-peers", "bgp-routes"):
        assert f"\n{check}\n" in out


# --------------------------------------------------------------------------
# loadbalancer-address: parser
# --------------------------------------------------------------------------


def test_parses_a_satisfied_service_of_1_19() -> None:
    service = parse_service(fixture("service_lb_smoke_satisfied.json"))

    assert not isinstance(service, NotFound)
    assert (service.reference, service.service_type, service.load_balancer_class) == (SMOKE, "LoadBalancer", None)
    assert service.ingress == ("10.0.10.254",)
    assert [(c.type, c.status, c.reason, c.message) for c in service.lb_ipam_conditions] == [
        ("cilium.io/IPAMRequestSatisfied", "True", "satisfied", "")
    ]


def test_parses_the_docs_service_with_both_conditions() -> None:
    service = parse_service(fixture("service_red_assigned_doc.json"))

    assert not isinstance(service, NotFound)
    assert service.ingress == ("20.0.10.163",)
    assert [(c.status, c.reason) for c in service.lb_ipam_conditions] == [("False", "no_pool"), ("True", "satisfied")]


def test_kubectl_error_and_empty_input_are_not_found() -> None:
    error = parse_service(fixture("service_not_found.txt"))
    empty = parse_service("")

    assert error == NotFound('Error from server (NotFound): services "smoke-lb" not found')
    assert empty == NotFound("no output")


def test_a_kubectl_warning_before_the_json_is_skipped() -> None:
    text = "Warning: some deprecation notice\n" + fixture("service_lb_smoke_satisfied.json")

    service = parse_service(text)

    assert not isinstance(service, NotFound)
    assert service.ingress == ("10.0.10.254",)


def test_another_kind_is_not_a_service() -> None:
    assert parse_service(fixture("lease_deathstar_doc.json")) == NotFound("a Lease object instead of a Service")


@pytest.mark.parametrize(
    ("block", "inside", "outside"),
    [
        ("10.0.10.0/24", ["10.0.10.0", "10.0.10.254", "10.0.10.255"], ["10.0.11.0", "2004::1"]),
        ("20.0.20.100-20.0.20.200", ["20.0.20.100", "20.0.20.163", "20.0.20.200"], ["20.0.20.99", "20.0.20.201"]),
        ("2004::0/112", ["2004::1", "2004::ffff"], ["2004::1:0", "10.0.10.1"]),
    ],
)
def test_address_blocks_hold_their_ends(block: str, inside: list[str], outside: list[str]) -> None:
    parsed = parse_address_block(block)

    assert parsed is not None
    assert all(parsed.contains(ip) for ip in inside)
    assert not any(parsed.contains(ip) for ip in outside)


@pytest.mark.parametrize("text", ["10.0.10.1/24", "10.0.10.20-10.0.10.5", "10.0.10.5-2004::1", "pool", "10.0.10.0/33"])
def test_malformed_address_blocks_are_refused(text: str) -> None:
    assert parse_address_block(text) is None


# --------------------------------------------------------------------------
# loadbalancer-address: through main
# --------------------------------------------------------------------------


def test_satisfied_service_passes(cli: Any) -> None:
    run = cli(
        "loadbalancer-address",
        fixture("service_lb_smoke_satisfied.json"),
        {"service": SMOKE, "address": "10.0.10.254", "within": ["10.0.10.0/24"]},
    )

    assert (run.code, run.stderr, run.problems) == (0, [], [])
    assert run.figures == {
        "ingress": ["10.0.10.254"],
        "type": "LoadBalancer",
        "loadBalancerClass": None,
        "conditions": {"cilium.io/IPAMRequestSatisfied": {"status": "True", "reason": "satisfied", "message": ""}},
    }


def test_docs_service_passes_in_its_pool_as_cidr_or_range(cli: Any) -> None:
    # service-red got 20.0.10.163 from the blue-pool of lb-ipam.rst lines 99-102 (20.0.10.0/24).
    text = fixture("service_red_assigned_doc.json")

    assert cli("loadbalancer-address", text, {"service": RED, "within": ["20.0.10.0/24"]}).code == 0
    assert cli("loadbalancer-address", text, {"within": ["20.0.10.100-20.0.10.200"]}).code == 0


def test_node_ipam_service_passes_with_the_nodes_addresses(cli: Any) -> None:
    run = cli(
        "loadbalancer-address",
        fixture("service_lb_smoke_node_ipam.json"),
        {"service": SMOKE, "nodeAddresses": ["10.0.0.10", "10.0.0.11", "10.0.0.12"]},
    )

    assert run.code == 0, run.stderr
    assert run.figures["loadBalancerClass"] == "io.cilium/node"
    assert run.figures["ingress"] == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]


def test_wrong_address_names_service_expected_and_seen(cli: Any) -> None:
    run = cli(
        "loadbalancer-address", fixture("service_lb_smoke_satisfied.json"), {"service": SMOKE, "address": "10.0.10.253"}
    )

    assert run.code == 1
    assert (
        run.stderr
        == run.problems
        == [
            prefix("loadbalancer-address")
            + f"expected service {SMOKE} LoadBalancer address 10.0.10.253, saw 10.0.10.254"
        ]
    )


def test_address_outside_every_pool_block_fails(cli: Any) -> None:
    # The blue-pool of lb-ipam.rst lines 43-49 does not hold 20.0.10.163.
    run = cli(
        "loadbalancer-address",
        fixture("service_red_assigned_doc.json"),
        {"service": RED, "within": ["10.0.10.0/24", "20.0.20.100-20.0.20.200"]},
    )

    assert run.code == 1
    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {RED} LoadBalancer address within 10.0.10.0/24, "
        "20.0.20.100-20.0.20.200, saw 20.0.10.163 (in none of them)"
    ]


def test_pending_service_quotes_lb_ipam_reason_no_pool(cli: Any) -> None:
    text = fixture("service_red_pending_doc.json")
    condition = json.loads(text)["status"]["conditions"][0]

    run = cli("loadbalancer-address", text, {"service": RED, "within": ["20.0.10.0/24"]})

    assert run.code == 1
    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {RED} LoadBalancer address assigned from 20.0.10.0/24, "
        "saw none (status.loadBalancer.ingress is empty); LB-IPAM: io.cilium/lb-ipam-request-satisfied status "
        f"False, reason no_pool: {condition['message']}"
    ]
    assert run.figures["conditions"] == {
        "io.cilium/lb-ipam-request-satisfied": {
            "status": "False",
            "reason": "no_pool",
            "message": "There are no enabled CiliumLoadBalancerIPPools that match this service",
        }
    }


def test_address_taken_by_another_service_quotes_already_allocated(cli: Any) -> None:
    run = cli(
        "loadbalancer-address",
        fixture("service_lb_smoke_already_allocated.json"),
        {"service": SMOKE, "address": "10.0.10.254"},
    )

    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {SMOKE} LoadBalancer address 10.0.10.254, saw none "
        "(status.loadBalancer.ingress is empty); LB-IPAM: cilium.io/IPAMRequestSatisfied status False, reason "
        "already_allocated: The IP '10.0.10.254' is already allocated to another service"
    ]


def test_no_address_without_any_condition_says_so(cli: Any) -> None:
    service = fixture_json("service_lb_smoke_node_ipam.json")
    service["status"] = {"loadBalancer": {}}

    run = cli("loadbalancer-address", json.dumps(service), {"service": SMOKE})

    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {SMOKE} LoadBalancer address assigned, saw none "
        "(status.loadBalancer.ingress is empty); loadBalancerClass io.cilium/node (node IPAM): no node address "
        "was given"
    ]


def test_no_address_and_no_lb_ipam_condition_names_both_condition_types(cli: Any) -> None:
    service = fixture_json("service_red_pending_doc.json")
    del service["status"]["conditions"]

    run = cli("loadbalancer-address", json.dumps(service))

    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {RED} LoadBalancer address assigned, saw none "
        "(status.loadBalancer.ingress is empty); no LB-IPAM condition (cilium.io/IPAMRequestSatisfied or "
        "io.cilium/lb-ipam-request-satisfied) on the Service, no loadBalancerClass"
    ]


def test_ingress_address_that_is_no_node_address_fails(cli: Any) -> None:
    run = cli(
        "loadbalancer-address",
        fixture("service_lb_smoke_node_ipam.json"),
        {"service": SMOKE, "nodeAddresses": ["10.0.0.10", "10.0.0.11"]},
    )

    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {SMOKE} LoadBalancer address one of the node addresses "
        "10.0.0.10, 10.0.0.11, saw 10.0.0.12 (not a node address)"
    ]


def test_missing_service_quotes_kubectl(cli: Any) -> None:
    run = cli("loadbalancer-address", fixture("service_not_found.txt"), {"service": SMOKE})

    assert run.code == 1
    assert run.stderr == [
        prefix("loadbalancer-address") + f"expected service {SMOKE} to exist, saw service {SMOKE} not found: "
        'Error from server (NotFound): services "smoke-lb" not found'
    ]
    assert run.figures == {"ingress": [], "type": None, "loadBalancerClass": None, "conditions": {}}


def test_empty_input_is_a_missing_service(cli: Any) -> None:
    run = cli("loadbalancer-address", "", {"service": SMOKE})

    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {SMOKE} to exist, saw service {SMOKE} not found: no output"
    ]


def test_another_service_in_the_output_fails(cli: Any) -> None:
    run = cli("loadbalancer-address", fixture("service_red_assigned_doc.json"), {"service": SMOKE})

    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {SMOKE} in kubectl's output, saw service {RED}"
    ]


def test_service_of_another_type_fails(cli: Any) -> None:
    service = fixture_json("service_lb_smoke_satisfied.json")
    service["spec"]["type"] = "ClusterIP"
    service["status"] = {"loadBalancer": {}}

    run = cli("loadbalancer-address", json.dumps(service), {"service": SMOKE})

    assert run.problems == [
        prefix("loadbalancer-address") + f"expected service {SMOKE} type LoadBalancer, saw ClusterIP"
    ]


# --------------------------------------------------------------------------
# l2-lease
# --------------------------------------------------------------------------

DEATHSTAR = "cilium-l2announce-default-deathstar"
SMOKE_LEASE = "cilium-l2announce-k3s-cilium-verify-smoke-lb"


def test_parses_the_docs_lease() -> None:
    lease = parse_lease(fixture("lease_deathstar_doc.json"))

    assert not isinstance(lease, NotFound)
    assert (lease.name, lease.holder, lease.lease_duration_seconds, lease.lease_transitions) == (
        DEATHSTAR,
        "worker-node",
        3,
        1,
    )
    assert (lease.acquire_time, lease.renew_time) == ("2023-05-09T15:14:20.108431Z", "2023-05-12T12:15:26.773020Z")


def test_lease_held_by_a_node_passes_with_figures(cli: Any) -> None:
    run = cli(
        "l2-lease",
        fixture("lease_deathstar_doc.json"),
        {"lease": DEATHSTAR, "holders": ["worker-node", "worker-node2"]},
    )

    assert (run.code, run.problems) == (0, [])
    assert run.figures == {
        "holder": "worker-node",
        "leaseDurationSeconds": 3,
        "leaseTransitions": 1,
        "acquireTime": "2023-05-09T15:14:20.108431Z",
        "renewTime": "2023-05-12T12:15:26.773020Z",
    }


def test_lease_holder_that_is_not_a_listed_node_fails(cli: Any) -> None:
    run = cli("l2-lease", fixture("lease_deathstar_doc.json"), {"lease": DEATHSTAR, "holders": ["agent-1", "agent-2"]})

    assert run.code == 1
    assert run.problems == [
        prefix("l2-lease") + f"expected lease {DEATHSTAR} holder (spec.holderIdentity) one of the nodes agent-1, "
        "agent-2, saw worker-node"
    ]


def test_lease_without_holder_fails_even_without_holders(cli: Any) -> None:
    # What a released lease looks like: the holder identity emptied.
    lease = fixture_json("lease_deathstar_doc.json")
    lease["spec"]["holderIdentity"] = ""

    run = cli("l2-lease", json.dumps(lease), {"lease": DEATHSTAR})

    assert run.problems == [
        prefix("l2-lease") + f"expected lease {DEATHSTAR} holder (spec.holderIdentity) a node, saw none: no node "
        "announces the Service's addresses"
    ]


def test_missing_lease_quotes_kubectl_and_says_who_creates_it(cli: Any) -> None:
    run = cli("l2-lease", fixture("lease_not_found.txt"), {"lease": SMOKE_LEASE, "holders": ["agent-1"]})

    assert run.code == 1
    [problem] = run.problems
    assert problem.startswith(
        prefix("l2-lease") + f"expected lease {SMOKE_LEASE} to exist, saw lease {SMOKE_LEASE} not found: "
        f'Error from server (NotFound): leases.coordination.k8s.io "{SMOKE_LEASE}" not found; fix: '
    )
    assert "CiliumL2AnnouncementPolicy" in problem
    assert run.figures["holder"] is None


def test_empty_input_is_a_missing_lease(cli: Any) -> None:
    run = cli("l2-lease", "", {"lease": SMOKE_LEASE})

    assert run.problems[0].startswith(
        prefix("l2-lease") + f"expected lease {SMOKE_LEASE} to exist, saw lease {SMOKE_LEASE} not found: no output"
    )


def test_another_lease_in_the_output_fails(cli: Any) -> None:
    run = cli("l2-lease", fixture("lease_deathstar_doc.json"), {"lease": SMOKE_LEASE})

    assert run.problems == [
        prefix("l2-lease") + f"expected lease {SMOKE_LEASE} in kubectl's output, saw lease {DEATHSTAR}"
    ]


# --------------------------------------------------------------------------
# bgp-peers: parser
# --------------------------------------------------------------------------

MULTI_HOMING_PEERS = [
    ("fd00:10::1", 179, 65001, 65000, "established", "4m45s"),
    ("fd00:11::1", 179, 65001, 65011, "established", "4m47s"),
]


def peer_rows(peers: tuple[BgpPeer, ...]) -> list[tuple[object, ...]]:
    return [(p.address, p.port, p.local_asn, p.peer_asn, p.session, p.uptime) for p in peers]


def test_parses_the_agent_peers_table_with_families() -> None:
    parsed = parse_bgp_peers(fixture("bgp_peers_multi_homing.txt"))

    assert (parsed.disabled, parsed.table) == (False, True)
    assert peer_rows(parsed.peers) == MULTI_HOMING_PEERS
    assert parsed.peers[1].families == {"ipv4/unicast": (0, 2), "ipv6/unicast": (0, 2)}


def test_parses_the_table_without_uptime() -> None:
    parsed = parse_bgp_peers(fixture("bgp_peers_multi_homing_no_uptime.txt"))

    assert peer_rows(parsed.peers) == [(*row[:5], None) for row in MULTI_HOMING_PEERS]
    assert all(peer.families == {"ipv4/unicast": (0, 2), "ipv6/unicast": (0, 2)} for peer in parsed.peers)


def test_tab_separated_table_parses_like_the_aligned_one() -> None:
    # The cells of bgp_peers_multi_homing.txt as PrintBGPPeersTable hands them to the tabwriter.
    tabbed = (
        "Local AS\tPeer AS\tPeer Address\tSession\tUptime\tFamily\tReceived\tAdvertised\n"
        "65001\t65000\tfd00:10::1:179\testablished\t4m45s\tipv4/unicast\t0\t2\n"
        "\t\t\t\t\tipv6/unicast\t0\t2\n"
        "65001\t65011\tfd00:11::1:179\testablished\t4m47s\tipv4/unicast\t0\t2\n"
        "\t\t\t\t\tipv6/unicast\t0\t2\n"
    )

    assert parse_bgp_peers(tabbed) == parse_bgp_peers(fixture("bgp_peers_multi_homing.txt"))


def test_ipv6_peer_address_loses_only_its_port() -> None:
    parsed = parse_bgp_peers(fixture("bgp_peers_auto_discovery_doc.txt"))

    assert peer_rows(parsed.peers) == [("fd00:10:0:1::1", 179, 65001, 65000, "established", "21m55s")]
    assert parsed.peers[0].families == {"ipv4/unicast": (2, 2), "ipv6/unicast": (2, 2)}


@pytest.mark.parametrize(
    ("cell", "has_port", "split"),
    [
        ("10.0.0.1:179", True, ("10.0.0.1", 179)),
        ("fd00:10::1:179", True, ("fd00:10::1", 179)),
        ("fd00:10::1", False, ("fd00:10::1", None)),
        ("10.0.0.1", False, ("10.0.0.1", None)),
        ("[fd00:10::1]:1790", True, ("fd00:10::1", 1790)),
    ],
)
def test_split_peer_address(cell: str, has_port: bool, split: tuple[str, int | None]) -> None:
    assert split_peer_address(cell, has_port=has_port) == split


def test_parses_the_cluster_wide_table_with_nodes() -> None:
    parsed = parse_bgp_peers(fixture("bgp_peers_cluster_wide_doc.txt"))

    assert [(p.node, p.address, p.port, p.session, p.uptime) for p in parsed.peers] == [
        ("bgp-cplane-dev-service-control-plane", "fd00:10::1", None, "established", "33m26s"),
        ("bgp-cplane-dev-service-worker", "fd00:10::1", None, "established", "33m25s"),
    ]


def test_disabled_control_plane_is_no_table() -> None:
    parsed = parse_bgp_peers(fixture("bgp_disabled.txt"))

    assert (parsed.disabled, parsed.table, parsed.peers) == (True, False, ())


# --------------------------------------------------------------------------
# bgp-peers: through main
# --------------------------------------------------------------------------

BOTH_PEERS = [{"address": "fd00:10::1", "asn": 65000}, {"address": "fd00:11::1", "asn": 65011}]


@pytest.mark.parametrize("name", ["bgp_peers_multi_homing.txt", "bgp_peers_multi_homing_no_uptime.txt"])
def test_established_peers_pass(cli: Any, name: str) -> None:
    run = cli("bgp-peers", fixture(name), {"localASN": 65001, "peers": BOTH_PEERS})

    assert (run.code, run.stderr, run.problems) == (0, [], [])
    assert run.figures["disabled"] is False
    assert [peer["address"] for peer in run.figures["peers"]] == ["fd00:10::1", "fd00:11::1"]


def test_peer_figures(cli: Any) -> None:
    run = cli("bgp-peers", fixture("bgp_peers_auto_discovery_doc.txt"))

    assert run.figures == {
        "disabled": False,
        "peers": [
            {
                "localASN": 65001,
                "peerASN": 65000,
                "address": "fd00:10:0:1::1",
                "port": 179,
                "session": "established",
                "uptime": "21m55s",
                "families": {
                    "ipv4/unicast": {"received": 2, "advertised": 2},
                    "ipv6/unicast": {"received": 2, "advertised": 2},
                },
            }
        ],
    }


def test_peer_address_is_compared_as_an_address(cli: Any) -> None:
    run = cli(
        "bgp-peers",
        fixture("bgp_peers_auto_discovery_doc.txt"),
        {"peers": [{"address": "FD00:10:0:1:0:0:0:1", "asn": 65000}]},
    )

    assert run.code == 0, run.stderr


def test_peer_not_established_fails(cli: Any) -> None:
    # Derived fixture: the second multi-homing peer in session active.
    run = cli("bgp-peers", fixture("bgp_peers_multi_homing_active.txt"), {"peers": BOTH_PEERS})

    assert run.code == 1
    assert run.problems == [
        prefix("bgp-peers") + "expected BGP peer fd00:11::1 (AS 65011) session established, saw active (uptime 0s)"
    ]


def test_missing_peer_lists_the_peers_seen(cli: Any) -> None:
    run = cli("bgp-peers", fixture("bgp_peers_multi_homing.txt"), {"peers": [{"address": "10.0.0.1", "asn": 65000}]})

    assert run.problems == [
        prefix("bgp-peers") + "expected BGP peer 10.0.0.1 (AS 65000) listed, saw only fd00:10::1 (AS 65000, "
        "established), fd00:11::1 (AS 65011, established)"
    ]


def test_wrong_peer_asn_fails(cli: Any) -> None:
    run = cli("bgp-peers", fixture("bgp_peers_multi_homing.txt"), {"peers": [{"address": "fd00:11::1", "asn": 65000}]})

    assert run.problems == [prefix("bgp-peers") + "expected BGP peer fd00:11::1 Peer AS 65000, saw 65011"]


def test_wrong_local_asn_fails_per_peer(cli: Any) -> None:
    run = cli(
        "bgp-peers",
        fixture("bgp_peers_multi_homing.txt"),
        {"localASN": 64512, "peers": [{"address": "fd00:10::1", "asn": 65000}]},
    )

    assert run.problems == [prefix("bgp-peers") + "expected BGP peer fd00:10::1 (AS 65000) Local AS 64512, saw 65001"]


def test_local_asn_without_peers_applies_to_every_row(cli: Any) -> None:
    run = cli("bgp-peers", fixture("bgp_peers_multi_homing.txt"), {"localASN": 64512})

    assert run.problems == [
        prefix("bgp-peers") + "expected BGP peer fd00:10::1 Local AS 64512, saw 65001",
        prefix("bgp-peers") + "expected BGP peer fd00:11::1 Local AS 64512, saw 65001",
    ]


def test_cluster_wide_table_is_asserted_too(cli: Any) -> None:
    run = cli(
        "bgp-peers",
        fixture("bgp_peers_cluster_wide_doc.txt"),
        {"localASN": 65001, "peers": [{"address": "fd00:10::1", "asn": 65000}]},
    )

    assert run.code == 0, run.stderr
    assert [peer["node"] for peer in run.figures["peers"]] == [
        "bgp-cplane-dev-service-control-plane",
        "bgp-cplane-dev-service-worker",
    ]


@pytest.mark.parametrize("check", ["bgp-peers", "bgp-routes"])
def test_disabled_control_plane_fails(cli: Any, check: str) -> None:
    run = cli(check, fixture("bgp_disabled.txt"), {"peers": BOTH_PEERS} if check == "bgp-peers" else {})

    assert run.code == 1
    assert run.problems == [
        prefix(check) + 'expected BGP control plane enabled, saw disabled on the node (cilium-dbg: "BGP Control '
        'Plane is disabled"); fix: set the Helm value bgpControlPlane.enabled=true (the agents pick it up when '
        "they restart)"
    ]
    assert run.figures["disabled"] is True


def test_error_instead_of_a_peers_table_fails(cli: Any) -> None:
    # cilium-dbg's Fatalf (cilium-dbg/cmd/helpers.go) with bgp_peer_get.go's "cannot get peers list: %s".
    text = 'Error: cannot get peers list: Get "http://localhost/v1/bgp/peers": dial unix: connection refused\n'

    run = cli("bgp-peers", text)

    assert run.problems == [
        prefix("bgp-peers") + "expected cilium-dbg bgp peers table with a 'Local AS  Peer AS  Peer Address' header, "
        f"saw {text.strip()}"
    ]


def test_empty_peers_table_has_no_peer(cli: Any) -> None:
    header = fixture("bgp_peers_multi_homing.txt").splitlines()[0] + "\n"

    run = cli("bgp-peers", header, {"peers": [{"address": "fd00:10::1", "asn": 65000}]})

    assert run.problems == [
        prefix("bgp-peers") + "expected BGP peer fd00:10::1 (AS 65000) listed, saw no peers (the table is empty)"
    ]


# --------------------------------------------------------------------------
# bgp-routes
# --------------------------------------------------------------------------


def test_parses_the_agent_routes_table() -> None:
    parsed = parse_bgp_routes(fixture("bgp_routes_multi_homing.txt"))

    assert parsed.columns == ("VRouter", "Peer", "Prefix", "NextHop", "Age", "Attrs")
    assert [(r.vrouter, r.peer, r.prefix, r.next_hop, r.age) for r in parsed.routes] == [
        ("65001", "fd00:10::1", "10.1.1.0/24", "fd00:10:0:2::2", "5m35s"),
        ("65001", "fd00:11::1", "10.1.1.0/24", "fd00:11:0:2::2", "5m35s"),
    ]
    assert parsed.routes[0].attrs == (
        "[{Origin: i} {AsPath: 65001} {Communities: no-export} {MpReach(ipv4-unicast): {Nexthop: fd00:10:0:2::2, "
        "NLRIs: [10.1.1.0/24]}}]"
    )


def test_parses_the_cluster_wide_routes_table_by_its_header() -> None:
    parsed = parse_bgp_routes(fixture("bgp_routes_cluster_wide_doc.txt"))

    assert [(r.node, r.vrouter, r.peer, r.prefix, r.next_hop, r.age) for r in parsed.routes] == [
        ("bgp-cplane-dev-service-control-plane", "65001", "fd00:10::1", "10.1.0.0/24", "fd00:10:0:1::2", "47m0s"),
        ("bgp-cplane-dev-service-worker", "65001", "fd00:10::1", "10.1.1.0/24", "fd00:10:0:2::2", "47m0s"),
    ]


def test_defaulting_notice_before_the_header_is_skipped() -> None:
    # cilium-dbg/cmd/bgp_route_get.go prints this when the table type is left out.
    notice = "(Defaulting to `available ipv4 unicast` routes, please see help for more options)\n\n"

    parsed = parse_bgp_routes(notice + fixture("bgp_routes_available_cluster_wide_doc.txt"))

    assert [(r.prefix, r.peer, r.next_hop) for r in parsed.routes] == [
        ("10.1.0.0/24", None, "0.0.0.0"),
        ("10.1.1.0/24", None, "0.0.0.0"),
    ]


def test_prefix_advertised_to_every_peer_passes(cli: Any) -> None:
    run = cli(
        "bgp-routes",
        fixture("bgp_routes_multi_homing.txt"),
        {"prefixes": ["10.1.1.0/24"], "peers": ["fd00:10::1", "fd00:11::1"]},
    )

    assert (run.code, run.problems) == (0, [])
    assert run.figures == {
        "disabled": False,
        "count": 2,
        "routes": [
            {
                "vrouter": 65001,
                "peer": "fd00:10::1",
                "prefix": "10.1.1.0/24",
                "nextHop": "fd00:10:0:2::2",
                "age": "5m35s",
            },
            {
                "vrouter": 65001,
                "peer": "fd00:11::1",
                "prefix": "10.1.1.0/24",
                "nextHop": "fd00:11:0:2::2",
                "age": "5m35s",
            },
        ],
    }


def test_cluster_wide_routes_pass(cli: Any) -> None:
    run = cli(
        "bgp-routes",
        fixture("bgp_routes_cluster_wide_doc.txt"),
        {"prefixes": ["10.1.0.0/24", "10.1.1.0/24"], "peers": ["fd00:10::1"]},
    )

    assert run.code == 0, run.stderr


def test_prefix_not_advertised_to_a_peer_fails(cli: Any) -> None:
    run = cli(
        "bgp-routes",
        fixture("bgp_routes_pod_ip_pool.txt"),
        {"prefixes": ["10.100.1.0/24", "10.200.0.0/24"], "peers": ["fd00:10::1", "fd00:11::1"]},
    )

    assert run.code == 1
    assert run.problems == [
        prefix("bgp-routes") + "expected prefix 10.100.1.0/24 advertised to peer fd00:11::1, saw advertised to "
        "fd00:10::1 only",
        prefix("bgp-routes") + "expected prefix 10.200.0.0/24 advertised to peer fd00:11::1, saw advertised to "
        "fd00:10::1 only",
    ]


def test_prefix_advertised_to_no_peer_fails(cli: Any) -> None:
    run = cli(
        "bgp-routes", fixture("bgp_routes_multi_homing.txt"), {"prefixes": ["10.0.10.254/32"], "peers": ["fd00:10::1"]}
    )

    assert run.problems == [
        prefix("bgp-routes") + "expected prefix 10.0.10.254/32 advertised to peer fd00:10::1, saw not advertised "
        "to any peer"
    ]


def test_prefix_missing_without_peers_lists_the_table(cli: Any) -> None:
    run = cli("bgp-routes", fixture("bgp_routes_pod_ip_pool.txt"), {"prefixes": ["10.100.0.0/24"]})

    assert run.problems == [
        prefix("bgp-routes") + "expected prefix 10.100.0.0/24 advertised, saw not in the table (it has "
        "10.100.1.0/24, 10.200.0.0/24)"
    ]


def test_peer_without_any_route_fails(cli: Any) -> None:
    run = cli("bgp-routes", fixture("bgp_routes_pod_ip_pool.txt"), {"peers": ["fd00:11::1"]})

    assert run.problems == [
        prefix("bgp-routes") + "expected routes advertised to peer fd00:11::1 at least one, saw none (routes go to "
        "fd00:10::1 only)"
    ]


def test_peers_asserted_on_a_table_without_peer_column_fails(cli: Any) -> None:
    run = cli(
        "bgp-routes",
        fixture("bgp_routes_available_cluster_wide_doc.txt"),
        {"prefixes": ["10.1.1.0/24"], "peers": ["fd00:10::1"]},
    )

    assert run.problems == [
        prefix("bgp-routes") + "expected Peer column of the routes table present (cilium-dbg bgp routes advertised "
        "<afi> <safi>, without `peer <address>`), saw columns Node, VRouter, Prefix, NextHop, Age, Attrs"
    ]


# --------------------------------------------------------------------------
# invalid --expect
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "expect", "message"),
    [
        ("loadbalancer-address", {"address": "10.0.10.300"}, "expectation address must be"),
        ("loadbalancer-address", {"service": "smoke-lb"}, "expectation service must be"),
        ("loadbalancer-address", {"within": ["10.0.10.20-10.0.10.5"]}, "expectation within must be"),
        ("loadbalancer-address", {"within": "10.0.10.0/24"}, "expectation within must be"),
        ("loadbalancer-address", {"nodeAddresses": ["agent-1"]}, "expectation nodeAddresses must be"),
        ("loadbalancer-address", {"pool": "blue"}, "unknown expectation key 'pool'"),
        ("l2-lease", {"holders": "agent-1"}, "expectation holders must be"),
        ("l2-lease", {"lease": ""}, "expectation lease must be"),
        ("bgp-peers", {"peers": [{"address": "fd00:10::1"}]}, "expectation peers must be"),
        ("bgp-peers", {"peers": [{"address": "10.0.0.1:179", "asn": 65000}]}, "expectation peers must be"),
        ("bgp-peers", {"peers": [{"address": "fd00:10::1", "asn": "65000"}]}, "expectation peers must be"),
        ("bgp-peers", {"peers": [{"address": "fd00:10::1", "asn": 65000, "port": 179}]}, "expectation peers must be"),
        ("bgp-peers", {"localASN": -1}, "expectation localASN must be"),
        ("bgp-routes", {"prefixes": ["10.1.1.1/24"]}, "expectation prefixes must be"),
        ("bgp-routes", {"peers": ["router-1"]}, "expectation peers must be"),
    ],
)
def test_invalid_expectations_exit_2(cli: Any, check: str, expect: dict[str, Any], message: str) -> None:
    run = cli(check, "", expect)

    assert (run.code, run.document) == (2, None)
    assert run.stderr[0].startswith(prefix(check) + "invalid --expect: " + message)


def test_expect_that_is_not_json_exits_2(cli: Any) -> None:
    run = cli("bgp-routes", fixture("bgp_routes_multi_homing.txt"), "{prefixes")

    assert run.code == 2
    assert run.stderr[0].startswith(prefix("bgp-routes") + "invalid --expect: not valid JSON")
