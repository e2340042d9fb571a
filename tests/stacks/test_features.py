from __future__ import annotations

import itertools

import pytest

from stacks.config import ConfigError, parse
from stacks.features import CATALOGUE, TIER_FEATURES, resolve


def resolved(raw, **changes):
    for section, values in changes.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return resolve(parse(raw))


def conflicts(raw, **changes) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        resolved(raw, **changes)
    return caught.value.problems


def test_tiers_are_cumulative():
    order = ["baseline", "kpr", "performance", "extreme"]
    for lower, higher in itertools.pairwise(order):
        assert set(TIER_FEATURES[lower]) < set(TIER_FEATURES[higher])


def test_opt_in_features_are_in_no_tier():
    for feature in ("jumboMtu", "netkit", "hubble"):
        assert all(feature not in preset for preset in TIER_FEATURES.values())


def test_baseline_keeps_kube_proxy(raw):
    assert resolved(raw, tier="baseline").enabled == ()


def test_every_tier_resolves_on_its_own_for_every_supported_minor(raw):
    for version in ("1.13.18", "1.14.19", "1.15.19", "1.16.19", "1.17.18", "1.18.12", "1.19.6", "1.20.0"):
        for tier in TIER_FEATURES:
            features = resolved(dict(raw, cilium={"version": version}), tier=tier)
            skipped = {name for name in features.skipped if name in CATALOGUE}
            assert set(features.enabled) | skipped == set(TIER_FEATURES[tier]), (tier, version)


def test_tier_feature_missing_in_version_is_skipped_with_reason(raw):
    features = resolved(raw, tier="extreme", cilium={"version": "1.13.18"})
    assert "bigTcp" not in features
    assert "needs Cilium >= 1.14" in features.skipped["bigTcp"]
    # best-effort XDP only exists from 1.15, and a tier never forces native XDP
    assert "xdp" not in features and "1.15" in features.skipped["xdp"]


def test_explicit_feature_missing_in_version_is_an_error(raw):
    problems = conflicts(raw, tier="extreme", cilium={"version": "1.15.19"}, features={"netkit": True})
    assert problems == [
        "k3s-cilium:features.netkit: needs Cilium >= 1.16, but cilium.version is 1.15.19; "
        "raise cilium.version or set features.netkit: false"
    ]


def test_required_feature_switched_off_is_an_error_naming_both(raw):
    problems = conflicts(raw, tier="performance", features={"bpfMasquerade": False})
    assert any(
        p.startswith("k3s-cilium:features.bpfHostRouting: on (from tier performance) but requires bpfMasquerade")
        and "features.bpfMasquerade is false" in p
        for p in problems
    ), problems


def test_bbr_needs_bandwidth_manager(raw):
    problems = conflicts(raw, tier="performance", features={"bbr": True})
    assert any("features.bbr" in p and "requires bandwidthManager" in p for p in problems), problems


def test_dsr_without_native_routing_is_an_error(raw):
    problems = conflicts(raw, tier="performance", features={"nativeRouting": False, "bypassConntrack": False})
    assert any("features.dsr: DSR with 'opt' dispatch needs native routing" in p for p in problems), problems


def test_dsr_geneve_dispatch_works_in_tunnel_mode(raw):
    features = resolved(
        raw,
        tier="kpr",
        features={"nativeRouting": False, "dsr": True},
        cilium={"version": "1.16.19", "dsrDispatch": "geneve"},
    )
    assert "dsr" in features and features.dsr_dispatch == "geneve"


def test_dsr_geneve_dispatch_rejected_with_native_routing(raw):
    problems = conflicts(raw, tier="kpr", features={"dsr": True}, cilium={"dsrDispatch": "geneve"})
    assert any("'geneve' works only in tunnel mode" in p for p in problems)


def test_xdp_best_effort_needs_cilium_1_15(raw):
    problems = conflicts(
        raw, tier="kpr", features={"xdp": True}, cilium={"version": "1.14.19", "xdpMode": "best-effort"}
    )
    assert any(p.startswith("k3s-cilium:cilium.xdpMode: 'best-effort' needs Cilium >= 1.15") for p in problems)


def test_explicit_xdp_on_old_cilium_uses_native_mode(raw):
    assert resolved(raw, tier="kpr", features={"xdp": True}, cilium={"version": "1.14.19"}).xdp_mode == "native"


def test_override_can_switch_a_tier_feature_off(raw):
    features = resolved(raw, tier="extreme", features={"xdp": False, "hostTuning": False})
    assert "xdp" not in features and "hostTuning" not in features and "bbr" in features
    assert features.origin["bbr"] == "tier extreme"


def test_kernel_floor_is_the_highest_of_enabled_features(raw):
    assert resolved(raw, tier="performance").min_kernel() == (5, 10)
    assert resolved(raw, tier="extreme").min_kernel() == (6, 3)
    assert resolved(raw, tier="extreme", features={"netkit": True}).min_kernel() == (6, 8)
    # KPR's own floor counts where Cilium's is lower
    assert resolved(raw, tier="kpr", features={"netkit": False}, cilium={"version": "1.15.19"}).min_kernel() == (
        4, 19, 57)


def test_kernel_needs_lists_each_feature_with_a_floor(raw):
    needs = resolved(raw, tier="extreme").kernel_needs()
    assert needs["bpfHostRouting"] == (5, 10) and needs["bbr"] == (5, 18) and needs["bandwidthManager"] == (5, 1)
    assert "maglev" not in needs


def test_every_requirement_names_a_catalogued_feature():
    for feature in CATALOGUE.values():
        assert set(feature.requires) <= set(CATALOGUE), feature.name
        assert feature.name not in feature.requires


# Cilium's own floor per minor, from each release's Documentation/operations/system_requirements.rst.
@pytest.mark.parametrize(
    ("version", "kernel", "rhel"),
    [
        ("1.13.18", (4, 19, 57), (8, 0)),
        ("1.14.19", (4, 19, 57), (8, 0)),
        ("1.15.19", (4, 19, 57), (8, 0)),
        ("1.16.19", (5, 4), (8, 6)),
        ("1.17.18", (5, 4), (8, 6)),
        ("1.18.12", (5, 10), (8, 6)),
        ("1.19.6", (5, 10), (8, 10)),
        ("1.20.0", (5, 10), (8, 10)),
    ],
)
def test_kernel_floor_follows_the_cilium_minor(raw, version, kernel, rhel):
    features = resolved(raw, tier="baseline", cilium={"version": version})
    assert features.base_kernel() == kernel
    assert features.min_kernel() == kernel
    assert features.rhel_equivalent() == rhel
    assert f"Cilium {version.rsplit('.', 1)[0]}" in features.min_kernel_reason()


def test_every_supported_minor_has_a_kernel_floor():
    from stacks.features import CILIUM_KERNEL_FLOORS

    assert sorted(CILIUM_KERNEL_FLOORS) == [(1, minor) for minor in range(13, 21)]


def test_feature_floor_above_the_cilium_floor_wins(raw):
    features = resolved(raw, tier="extreme", cilium={"version": "1.16.19"})
    assert features.base_kernel() == (5, 4) and features.min_kernel() == (6, 3)


def test_map_sizing_keeps_distributed_lru_off_where_cilium_loops_recreating_maps(raw):
    from stacks import cilium_values
    from stacks.config import parse as parse_config

    cases = (("1.16.19", None), ("1.17.4", False), ("1.17.5", False), ("1.18.12", False), ("1.19.0", True),
             ("1.19.6", True), ("1.20.0", True))
    for version, lru in cases:
        cfg = parse_config(dict(raw, tier="extreme", cilium={"version": version}))
        features = resolve(cfg)
        values = cilium_values.render(cfg, features)
        assert "mapSizing" in features, version  # the rest of mapSizing still applies
        if lru is None:  # the chart has no such value before 1.17
            assert "distributedLRU" not in values["bpf"]
            continue
        assert values["bpf"]["distributedLRU"] == {"enabled": lru}, version
        assert ("mapSizing.distributedLRU" in features.skipped) == (not lru), version
    reasons = {version: resolve(parse_config(dict(raw, tier="extreme", cilium={"version": version})))
               .skipped["mapSizing.distributedLRU"] for version in ("1.17.4", "1.18.12")}
    assert "cilium/cilium#39070" in reasons["1.17.4"] and "1.17.5" in reasons["1.17.4"]
    assert "cilium/cilium#42511" in reasons["1.18.12"] and "1.19.0" in reasons["1.18.12"]


def test_map_sizing_off_renders_distributed_lru_off_without_a_skip(raw):
    features = resolved(raw, tier="performance", cilium={"version": "1.18.12"})
    assert "mapSizing.distributedLRU" not in features.skipped
