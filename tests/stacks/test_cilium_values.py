from __future__ import annotations

import json

import jsonschema
import pytest

from stacks import cilium_values, stackfile
from stacks.config import ConfigError, parse
from stacks.features import TIER_FEATURES, resolve
from tests.chart import CHARTS, chart_dirs, known_paths, render_chart, schema, unknown_paths

CHARTED = chart_dirs()
PATCH = {
    "1.13": "1.13.18",
    "1.14": "1.14.19",
    "1.15": "1.15.19",
    "1.16": "1.16.19",
    "1.17": "1.17.18",
    "1.18": "1.18.12",
    "1.19": "1.19.6",
    "1.20": "1.20.0",
}
needs_charts = pytest.mark.skipif(not CHARTED, reason=f"official chart values not present at {CHARTS}")


def values_for(raw, tier, version, **features):
    raw = dict(raw, tier=tier, cilium={"version": version}, features=features)
    cfg = parse(raw)
    return cilium_values.render(cfg, resolve(cfg))


@needs_charts
def test_every_supported_minor_has_a_chart_here():
    assert sorted(CHARTED) == sorted(PATCH)


@needs_charts
@pytest.mark.parametrize("minor", sorted(PATCH))
@pytest.mark.parametrize("tier", sorted(TIER_FEATURES))
def test_rendered_values_exist_in_that_versions_chart(raw, tier, minor):
    values = values_for(raw, tier, PATCH[minor])
    assert unknown_paths(values, CHARTED[minor]) == []
    chart_schema = schema(CHARTED[minor])
    if chart_schema:
        jsonschema.validate(json.loads(json.dumps(values)), chart_schema)


@needs_charts
@pytest.mark.parametrize("minor", sorted(PATCH))
def test_opt_in_features_render_known_values(raw, minor):
    features = {"hubble": True, "jumboMtu": True}
    if minor >= "1.16":
        features["netkit"] = True
    values = values_for(raw, "extreme", PATCH[minor], **features)
    assert unknown_paths(values, CHARTED[minor]) == []


@needs_charts
def test_the_chart_check_catches_a_key_a_version_dropped():
    assert unknown_paths({"tunnel": "disabled"}, CHARTED["1.15"]) == ["tunnel"]
    assert unknown_paths({"tunnel": "disabled"}, CHARTED["1.13"]) == []
    assert unknown_paths({"bpf": {"datapathMode": "netkit"}}, CHARTED["1.15"]) == ["bpf.datapathMode"]
    assert unknown_paths({"loadBalancer": {"mdoe": "dsr"}}, CHARTED["1.19"]) == ["loadBalancer.mdoe"]
    # documented only as comments, read by the templates all the same
    assert ("loadBalancer", "mode") in known_paths(CHARTED["1.19"])
    assert ("maglev", "tableSize") in known_paths(CHARTED["1.19"])


def test_kpr_on_1_13_is_strict_with_tunnel_disabled(raw):
    values = values_for(raw, "kpr", "1.13.18")
    assert values["kubeProxyReplacement"] == "strict"
    assert values["tunnel"] == "disabled"
    assert "routingMode" not in values


def test_kpr_on_1_14_uses_routing_mode_and_true(raw):
    values = values_for(raw, "kpr", "1.14.19")
    assert values["kubeProxyReplacement"] == "true"
    assert values["routingMode"] == "native"
    assert "tunnel" not in values


@pytest.mark.parametrize("version", ["1.15.19", "1.17.18", "1.20.0"])
def test_no_tunnel_key_from_1_15(raw, version):
    for tier in TIER_FEATURES:
        assert "tunnel" not in values_for(raw, tier, version)


def test_baseline_keeps_kube_proxy_and_tunnels(raw):
    old = values_for(raw, "baseline", "1.13.18")
    new = values_for(raw, "baseline", "1.19.6")
    assert old["kubeProxyReplacement"] == "disabled" and old["tunnel"] == "vxlan"
    assert new["kubeProxyReplacement"] == "false" and new["routingMode"] == "tunnel"
    assert "loadBalancer" not in new


def test_k3s_api_load_balancer_is_the_default_endpoint(raw):
    values = values_for(raw, "kpr", "1.19.6")
    assert (values["k8sServiceHost"], values["k8sServicePort"]) == ("127.0.0.1", 6444)


def test_ipam_follows_the_k3s_cluster_cidr(raw):
    raw["k3s"] = {"clusterCidr": "10.100.0.0/16", "serviceCidr": "10.101.0.0/16"}
    values = values_for(raw, "kpr", "1.19.6")
    assert values["ipam"] == {"mode": "kubernetes"}
    assert values["ipv4NativeRoutingCIDR"] == "10.100.0.0/16"


def test_performance_tier_values(raw):
    values = values_for(raw, "performance", "1.19.6")
    assert values["loadBalancer"] == {
        "mode": "dsr",
        "algorithm": "maglev",
        "acceleration": "disabled",
        "dsrDispatch": "opt",
    }
    assert values["maglev"] == {"tableSize": 16381}
    assert values["bpf"]["masquerade"] is True and values["bpf"]["hostLegacyRouting"] is False
    assert values["installNoConntrackIptablesRules"] is True
    assert values["nodePort"] == {"range": "30000,32767"}


def test_extreme_tier_values(raw):
    values = values_for(raw, "extreme", "1.19.6")
    assert values["enableIPv4BIGTCP"] is True
    assert values["bandwidthManager"] == {"enabled": True, "bbr": True}
    assert values["loadBalancer"]["acceleration"] == "best-effort"
    assert values["bpf"]["mapDynamicSizeRatio"] == 0.08 and values["bpf"]["distributedLRU"] == {"enabled": True}


def test_switching_down_renders_features_off_explicitly(raw):
    values = values_for(raw, "kpr", "1.19.6")
    assert values["bpf"]["masquerade"] is False and values["bpf"]["hostLegacyRouting"] is True
    assert values["bandwidthManager"] == {"enabled": False, "bbr": False}
    assert values["enableIPv4BIGTCP"] is False and values["bpf"]["datapathMode"] == "veth"


def test_hubble_certificates_come_from_a_cronjob_not_from_helm(raw):
    values = values_for(raw, "kpr", "1.19.6", hubble=True)
    assert values["hubble"]["tls"]["auto"]["method"] == "cronJob"


def test_jumbo_mtu_and_explicit_mtu(raw):
    assert values_for(raw, "kpr", "1.19.6", jumboMtu=True)["MTU"] == 9000
    raw["cilium"] = {"mtu": 8950}
    cfg = parse(dict(raw, features={"jumboMtu": True}))
    assert cilium_values.render(cfg, resolve(cfg))["MTU"] == 8950
    assert "MTU" not in values_for(raw, "kpr", "1.19.6")


def test_user_values_are_deep_merged_last(raw):
    raw["cilium"] = {"values": {"bpf": {"masquerade": True}, "hubble": {"ui": {"enabled": True}}, "extra": [1]}}
    cfg = parse(dict(raw, tier="kpr"))
    values = cilium_values.render(cfg, resolve(cfg))
    assert values["bpf"]["masquerade"] is True
    assert values["bpf"]["hostLegacyRouting"] is True  # siblings survive the merge
    assert values["hubble"] == {"enabled": False, "ui": {"enabled": True}}
    assert values["extra"] == [1]


def test_single_node_cluster_gets_one_operator(raw):
    raw["nodes"] = raw["nodes"][:1]
    assert values_for(raw, "kpr", "1.19.6")["operator"]["replicas"] == 1


def test_rendering_is_deterministic(raw):
    first = json.dumps(values_for(raw, "extreme", "1.19.6"), sort_keys=True)
    assert first == json.dumps(values_for(raw, "extreme", "1.19.6"), sort_keys=True)


def test_upgrade_compatibility_is_rendered_only_when_set(raw):
    assert "upgradeCompatibility" not in values_for(raw, "kpr", "1.19.6")
    cfg = parse(dict(raw, cilium={"version": "1.19.6", "upgradeCompatibility": "1.15"}))
    assert cilium_values.render(cfg, resolve(cfg))["upgradeCompatibility"] == "1.15"


@pytest.mark.parametrize("value", ["1.20", "v1.15", "1.15.3", "2.0"])
def test_upgrade_compatibility_must_be_a_minor_not_newer_than_the_running_one(raw, value):
    with pytest.raises(ConfigError) as error:
        parse(dict(raw, cilium={"version": "1.19.6", "upgradeCompatibility": value}))
    assert "k3s-cilium:cilium" in str(error.value) and "first installed with" in str(error.value)


def test_the_real_chart_keeps_a_1_15_clusters_envoy_inside_the_agent(raw):
    """The 1.19 chart's _helpers.tpl: Envoy runs as its own DaemonSet by default only when
    upgradeCompatibility (default "1.16") is 1.16 or later, so a cluster first installed with 1.15 keeps it
    in the agent through the upgrade."""
    def envoy_daemonset(values):
        return any(d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium-envoy"
                   for d in render_chart("1.19.6", values))

    assert envoy_daemonset(values_for(raw, "kpr", "1.19.6"))
    cfg = parse(dict(raw, cilium={"version": "1.19.6", "upgradeCompatibility": "1.15"}))
    assert not envoy_daemonset(cilium_values.render(cfg, resolve(cfg)))


@pytest.mark.parametrize("stack", ["dev", "extreme", "ha-performance"])
def test_the_off_states_of_encryption_gateway_api_and_ingress_change_no_manifest(stack):
    """Stacks that leave the three switches off get explicit off values, and the chart renders exactly what it did
    without them: an existing cluster sees a values diff and nothing else."""
    cfg = stackfile.load(stackfile.locate(stack))
    values = cilium_values.render(cfg, resolve(cfg))
    assert values["encryption"]["enabled"] is False and values["gatewayAPI"]["enabled"] is False
    new_keys = ("encryption", "gatewayAPI", "ingressController")
    before = {key: value for key, value in values.items() if key not in new_keys}
    assert render_chart(cfg.cilium.version, values) == render_chart(cfg.cilium.version, before)
