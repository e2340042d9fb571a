"""loadBalancer: the refusals, the values and objects per Cilium minor, the rate limits and the plan.

Facts the expectations below rest on, each looked up (not read off stacks/load_balancer.py):
- CRDs (pkg/k8s/apis/cilium.io/client/crds/ of each release tag): CiliumLoadBalancerIPPool is
  v2alpha1 with `cidrs` in 1.13 and 1.14, gains `blocks` (CIDR or start/stop) in 1.15, is served as
  cilium.io/v2 from 1.18; CiliumL2AnnouncementPolicy is v2alpha1 in 1.14-1.20; CiliumBGPClusterConfig,
  CiliumBGPPeerConfig and CiliumBGPAdvertisement work from 1.16 (v2alpha1) and are cilium.io/v2 from 1.18;
  CiliumBGPPeeringPolicy is gone in 1.19.
- docs.cilium.io network/l2-announcements "Sizing client rate limit": QPS = #services / leaseRenewDeadline,
  e.g. 65 services and a 2 s deadline make 32.5 QPS.
- The ConfigMap keys the chart writes (cilium-config): enable-l2-announcements, k8s-client-qps,
  k8s-client-burst, enable-bgp-control-plane, enable-node-ipam.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from stacks import cilium_values, load_balancer, plan, stackfile
from stacks.config import ConfigError, StackConfig, parse
from stacks.features import resolve
from tests.chart import chart_dirs, config_map, render_chart, unknown_paths

NODES = [
    {"name": "server-1", "host": "192.168.56.10", "role": "server"},
    {"name": "agent-1", "host": "192.168.56.11", "role": "agent"},
]
L2 = {
    "mode": "l2",
    "pools": [{"name": "lan", "blocks": ["192.168.56.240/29"]}],
    "l2": {"interfaces": ["^eth0$"]},
}
BGP = {
    "mode": "bgp",
    "pools": [{"name": "routed", "blocks": ["203.0.113.0/28"]}],
    "bgp": {
        "localASN": 64512,
        "peers": [{"name": "tor-1", "address": "192.168.56.1", "asn": 64513, "holdTime": 9, "keepAlive": 3}],
    },
}
NODEIPAM = {"mode": "nodeipam"}


def stack(lb: dict[str, Any], version: str = "1.19.6", tier: str = "kpr", **more: Any) -> dict[str, Any]:
    return {"tier": tier, "nodes": NODES, "cilium": {"version": version}, "loadBalancer": lb, **more}


def cfg(lb: dict[str, Any], version: str = "1.19.6", tier: str = "kpr", **more: Any) -> StackConfig:
    return parse(stack(lb, version, tier, **more))


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        resolve(parse(raw))
    return caught.value.problems


def with_l2(**changes: Any) -> dict[str, Any]:
    lb = copy.deepcopy(L2)
    lb.update(changes)
    return lb


# --- refusals ---------------------------------------------------------------------------------------


def test_overlapping_pools_are_refused_naming_both_blocks():
    lb = with_l2(pools=[{"name": "a", "blocks": ["192.168.56.240/29"]},
                        {"name": "b", "blocks": [{"start": "192.168.56.246", "stop": "192.168.56.250"}]}])
    (problem,) = problems(stack(lb))
    assert problem.startswith("k3s-cilium:loadBalancer.pools:")
    assert "a block 192.168.56.240/29 overlaps b block 192.168.56.246-192.168.56.250" in problem


@pytest.mark.parametrize(("block", "key"), [("10.43.200.0/24", "k3s.serviceCidr"), ("10.42.7.0/24", "k3s.clusterCidr")])
def test_a_pool_inside_the_cluster_networks_is_refused(block, key):
    (problem,) = problems(stack(with_l2(pools=[{"name": "lan", "blocks": [block]}])))
    assert problem.startswith("k3s-cilium:loadBalancer.pools: lan block")
    assert key in problem


def test_a_pool_holding_a_node_address_is_refused_naming_the_node():
    found = problems(stack(with_l2(pools=[{"name": "lan", "blocks": ["192.168.56.8/29"]}])))
    seen = [p.split("contains ")[1].split(";")[0] for p in found]
    assert seen == ["192.168.56.10 (server-1)", "192.168.56.11 (agent-1)"]


@pytest.mark.parametrize(
    ("lb", "version", "since"),
    [(L2, "1.13.18", "1.14"), (BGP, "1.15.19", "1.16"), (NODEIPAM, "1.15.19", "1.16")],
)
def test_a_mode_the_pinned_cilium_lacks_is_refused(lb, version, since):
    found = problems(stack(lb, version))
    assert any(p.startswith("k3s-cilium:loadBalancer.mode:") and f"from {since}" in p for p in found), found


def test_bgp_without_peers_is_refused():
    lb = copy.deepcopy(BGP)
    lb["bgp"]["peers"] = []
    assert problems(stack(lb)) == [
        "k3s-cilium:loadBalancer.bgp.peers: BGP needs at least one peer ({name, address, asn}), or choose mode "
        "l2/nodeipam"
    ]


@pytest.mark.parametrize(("where", "asn"), [("localASN", 0), ("peers[0].asn", 4294967296)])
def test_an_asn_out_of_range_is_refused(where, asn):
    lb = copy.deepcopy(BGP)
    if where == "localASN":
        lb["bgp"]["localASN"] = asn
    else:
        lb["bgp"]["peers"][0]["asn"] = asn
    (problem,) = problems(stack(lb))
    assert problem.startswith(f"k3s-cilium:loadBalancer.bgp.{where}: {asn}")
    assert "1-4294967295" in problem


@pytest.mark.parametrize(
    ("l2", "expected"),
    [
        ({}, "k3s-cilium:loadBalancer.l2.interfaces: is required but not set"),
        ({"interfaces": []}, "k3s-cilium:loadBalancer.l2.interfaces: List should have at least 1 item"),
        ({"interfaces": ["eth[0"]}, "is not a regular expression"),
        ({"interfaces": ["^(?!lo)"]}, "lookaround or backreferences"),
    ],
)
def test_l2_without_a_usable_interface_pattern_is_refused(l2, expected):
    found = problems(stack(with_l2(l2=l2)))
    assert any(expected in p for p in found), found


def test_l2_needs_kube_proxy_replacement():
    (problem,) = problems(stack(L2, tier="baseline"))
    assert problem.startswith("k3s-cilium:loadBalancer.mode: 'l2' needs kube-proxy replacement")


def test_node_ipam_and_bgp_run_without_kube_proxy_replacement():
    for lb in (NODEIPAM, BGP):
        resolve(cfg(lb, tier="baseline"))


def test_servicelb_left_on_is_refused():
    found = problems(stack(L2, k3s={"disable": ["traefik"]}))
    assert any("keep 'servicelb' in k3s.disable" in p for p in found), found


def test_ranges_before_cilium_1_15_are_refused():
    lb = with_l2(pools=[{"name": "lan", "blocks": [{"start": "192.168.56.240", "stop": "192.168.56.250"}]}])
    found = problems(stack(lb, "1.14.19"))
    assert any("{start, stop} ranges" in p and "write the blocks as CIDRs" in p for p in found), found


def test_lease_timings_follow_ciliums_rules():
    too_short = problems(stack(with_l2(l2={"interfaces": ["^eth0$"], "leaseDuration": "4s"})))
    assert too_short == [
        "k3s-cilium:loadBalancer.l2: leaseDuration 4s must be above 1s and above leaseRenewDeadline 5s"
    ]
    close = problems(stack(with_l2(l2={"interfaces": ["^eth0$"], "leaseRenewDeadline": "2s"})))
    assert any("at least 20% above leaseRetryPeriod 2s" in p for p in close), close


def test_a_pool_setting_in_a_mode_without_pools_is_refused():
    found = problems(stack({"mode": "nodeipam", "pools": L2["pools"]}))
    assert found == ["k3s-cilium:loadBalancer.pools: mode nodeipam uses no pool; remove pools or choose l2/bgp"]


# --- values and objects per minor -------------------------------------------------------------------

# (minor, pool apiVersion, pool field, BGP apiVersion) as the releases' CRDs have them.
CRD_FACTS = [
    ("1.13.18", "cilium.io/v2alpha1", "cidrs", None),
    ("1.14.19", "cilium.io/v2alpha1", "cidrs", None),
    ("1.15.19", "cilium.io/v2alpha1", "blocks", None),
    ("1.16.19", "cilium.io/v2alpha1", "blocks", "cilium.io/v2alpha1"),
    ("1.17.18", "cilium.io/v2alpha1", "blocks", "cilium.io/v2alpha1"),
    ("1.18.12", "cilium.io/v2", "blocks", "cilium.io/v2"),
    ("1.19.6", "cilium.io/v2", "blocks", "cilium.io/v2"),
    ("1.20.0", "cilium.io/v2", "blocks", "cilium.io/v2"),
]


@pytest.mark.parametrize(("version", "pool_api", "pool_field", "bgp_api"), CRD_FACTS)
def test_objects_use_the_api_each_release_serves(version, pool_api, pool_field, bgp_api):
    minor = cfg({"mode": "none"}, version).cilium.parsed_version
    pools = cfg(L2).load_balancer
    (made,) = [o for o in load_balancer.objects(pools, minor) if o["kind"] == "CiliumLoadBalancerIPPool"]
    assert made["apiVersion"] == pool_api
    assert made["spec"] == {pool_field: [{"cidr": "192.168.56.240/29"}]}
    if bgp_api:
        kinds = {o["kind"]: o["apiVersion"] for o in load_balancer.objects(cfg(BGP, version).load_balancer, minor)}
        assert kinds == {
            "CiliumLoadBalancerIPPool": pool_api,
            "CiliumBGPClusterConfig": bgp_api,
            "CiliumBGPPeerConfig": bgp_api,
            "CiliumBGPAdvertisement": bgp_api,
        }


def test_l2_objects_are_a_pool_and_a_policy_that_announces_load_balancer_ips():
    made = load_balancer.objects(cfg(L2).load_balancer, cfg(L2).cilium.parsed_version)
    policy = made[-1]
    assert (policy["apiVersion"], policy["kind"]) == ("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy")
    assert policy["spec"] == {"interfaces": ["^eth0$"], "loadBalancerIPs": True, "externalIPs": False}
    assert "CiliumBGPPeeringPolicy" not in json.dumps(made)


def test_bgp_peers_reference_their_config_and_the_advertisement_selects_every_service():
    lb = copy.deepcopy(BGP)
    lb["bgp"]["peers"][0]["password"] = "s3cr3t-md5"
    made = load_balancer.objects(cfg(lb).load_balancer, cfg(lb).cilium.parsed_version)
    by_kind = {o["kind"]: o for o in made}
    (instance,) = by_kind["CiliumBGPClusterConfig"]["spec"]["bgpInstances"]
    assert instance["localASN"] == 64512
    (peer,) = instance["peers"]
    assert peer == {"name": "tor-1", "peerASN": 64513, "peerAddress": "192.168.56.1",
                    "peerConfigRef": {"name": by_kind["CiliumBGPPeerConfig"]["metadata"]["name"]}}
    peer_spec = by_kind["CiliumBGPPeerConfig"]["spec"]
    assert peer_spec["timers"] == {"holdTimeSeconds": 9, "keepAliveTimeSeconds": 3}
    labels = peer_spec["families"][0]["advertisements"]["matchLabels"]
    advertisement = by_kind["CiliumBGPAdvertisement"]
    assert labels.items() <= advertisement["metadata"]["labels"].items()
    (service,) = advertisement["spec"]["advertisements"]
    assert service["service"] == {"addresses": ["LoadBalancerIP"]}
    (expression,) = service["selector"]["matchExpressions"]
    assert expression["operator"] == "NotIn"
    # The password is only named.
    assert "s3cr3t-md5" not in json.dumps(made)
    assert isinstance(peer_spec["authSecretRef"], str)


# The first minor of each mode: L2 announcements 1.14, the BGP v2 API and node IPAM 1.16.
MODES = {"l2": (L2, (1, 14)), "bgp": (BGP, (1, 16)), "nodeipam": (NODEIPAM, (1, 16))}
SUPPORTED = [
    (mode, minor)
    for mode, (_, since) in MODES.items()
    for minor in sorted(chart_dirs())
    if tuple(int(part) for part in minor.split(".")) >= since
]


@pytest.mark.parametrize(("mode", "minor"), SUPPORTED)
def test_rendered_values_exist_in_every_chart_that_has_the_mode(mode, minor):
    chart = chart_dirs()[minor]
    config = cfg(MODES[mode][0], chart.name)
    assert unknown_paths(cilium_values.render(config, resolve(config)), chart) == []


def cilium_config(version: str, config: StackConfig) -> dict[str, str]:
    return config_map(render_chart(version, cilium_values.render(config, resolve(config))))


@pytest.mark.parametrize("version", ["1.14.19", "1.16.19", "1.19.6"])
def test_the_real_chart_turns_l2_announcements_on_with_the_sized_rate_limit(version):
    lb = with_l2(l2={"interfaces": ["^eth0$"], "expectedServices": 65, "leaseRenewDeadline": "2s",
                     "leaseRetryPeriod": "1s", "leaseDuration": "6s"})
    data = cilium_config(version, cfg(lb, version))
    assert data["enable-l2-announcements"] == "true"
    assert data["l2-announcements-renew-deadline"] == "2s"
    # 65 services / 2 s = 32.5 QPS (the docs' example), rounded up; burst twice that.
    assert (data["k8s-client-qps"], data["k8s-client-burst"]) == ("33", "66")
    assert data.get("enable-bgp-control-plane", "false") == "false"


@pytest.mark.parametrize("version", ["1.16.19", "1.19.6"])
def test_the_real_chart_turns_on_bgp_or_node_ipam(version):
    assert cilium_config(version, cfg(BGP, version))["enable-bgp-control-plane"] == "true"
    node_ipam = cilium_config(version, cfg(NODEIPAM, version))
    assert node_ipam["enable-node-ipam"] == "true"
    assert node_ipam.get("enable-l2-announcements", "false") == "false"


def test_mode_none_leaves_the_values_as_they_were():
    plain = parse({"nodes": NODES})
    explicit = cfg({"mode": "none"})
    assert cilium_values.render(plain, resolve(plain)) == cilium_values.render(explicit, resolve(explicit))


def test_the_rate_limit_never_drops_below_the_chart_default():
    limit = load_balancer.rate_limit(cfg(L2).load_balancer, cfg(L2).cilium.parsed_version)
    assert limit is not None
    # 10 services / 5 s = 2 QPS, below the agent's default of 10 (burst 20) and the operator's 100/200.
    assert (limit.qps, limit.burst, limit.operator_qps, limit.operator_burst) == (10, 20, 100, 200)
    old = load_balancer.rate_limit(cfg(L2, "1.15.19").load_balancer, cfg(L2, "1.15.19").cilium.parsed_version)
    assert old is not None
    assert (old.qps, old.burst, old.operator_qps) == (5, 10, None)


# --- the verification's address ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocks", "address"),
    [
        (["192.168.56.240/29"], "192.168.56.246"),
        ([{"start": "192.168.56.240", "stop": "192.168.56.250"}], "192.168.56.249"),
        (["192.168.56.250/32"], "192.168.56.250"),
    ],
)
def test_the_verification_asks_for_a_known_address_that_is_not_a_blocks_first_or_last(blocks, address):
    lb = cfg(with_l2(pools=[{"name": "lan", "blocks": blocks}])).load_balancer
    assert load_balancer.verify_address(lb) == address


# --- plan and stack files ----------------------------------------------------------------------------


def test_the_plan_shows_mode_pools_objects_and_rate_limits():
    built = plan.build("test", cfg(L2))
    entry = built["loadBalancer"]
    assert entry["mode"] == "l2"
    assert entry["pools"] == {"lan": ["192.168.56.240/29"]}
    assert "CiliumL2AnnouncementPolicy/k3s-cilium-l2 (cilium.io/v2alpha1)" in entry["objects"]
    assert entry["rateLimit"]["agent"] == {"qps": 10, "burst": 20}
    text = plan.to_text(built)
    assert "load balancer: mode l2" in text
    assert "API client rate limit: agent 10 QPS / burst 20, operator 100 / 200" in text
    checks = {(c["check"], c["node"]) for c in built["checks"]}
    assert {("loadbalancer-address", None), ("l2-lease", None)} <= checks


def test_a_plan_with_no_load_balancer_has_none():
    assert plan.build("test", parse({"nodes": NODES}))["loadBalancer"] is None


def test_an_encrypted_bgp_password_reads_as_a_placeholder_and_never_reaches_the_plan(tmp_path):
    lb = copy.deepcopy(BGP)
    lb["bgp"]["peers"][0]["password"] = {"secure": "v1:AAAABBBBCCCC"}
    document = {"config": {f"k3s-cilium:{k}": v for k, v in stack(lb).items()}}
    path = tmp_path / "Pulumi.bgp.yaml"
    path.write_text(yaml.safe_dump(document))
    loaded = stackfile.load(path)
    password = loaded.load_balancer.bgp.peers[0].password  # type: ignore[union-attr]
    assert password is not None and password.get_secret_value() == stackfile.SECRET_PLACEHOLDER
    text = plan.to_json(plan.build("bgp", loaded))
    assert "v1:AAAABBBBCCCC" not in text and "[secret]" not in text
    assert "Secret kube-system/k3s-cilium-bgp-tor-1 (password of peer tor-1)" in text
