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
            assert set(features.enabled) | set(features.skipped) == set(TIER_FEATURES[tier]), (tier, version)


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
    assert resolved(raw, tier="kpr").min_kernel() == (4, 19)
    assert resolved(raw, tier="performance").min_kernel() == (5, 10)
    assert resolved(raw, tier="extreme").min_kernel() == (6, 3)
    assert resolved(raw, tier="extreme", features={"netkit": True}).min_kernel() == (6, 8)


def test_kernel_needs_lists_each_feature_with_a_floor(raw):
    needs = resolved(raw, tier="extreme").kernel_needs()
    assert needs["bpfHostRouting"] == (5, 10) and needs["bbr"] == (5, 18) and needs["bandwidthManager"] == (5, 1)
    assert "maglev" not in needs


def test_every_requirement_names_a_catalogued_feature():
    for feature in CATALOGUE.values():
        assert set(feature.requires) <= set(CATALOGUE), feature.name
        assert feature.name not in feature.requires
