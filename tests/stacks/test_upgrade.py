"""The upgrade rules' offline side: the tested Kubernetes minors per Cilium minor, the gate's targets, the plan.

Tested minors as each release's docs list them (Documentation/network/kubernetes/compatibility.rst):
Cilium 1.13: 1.16-1.26, 1.17: 1.29-1.32, 1.19: 1.32-1.35, 1.20: 1.33-1.36.
"""

from __future__ import annotations

import pytest
from packaging.version import Version

from stacks import plan, stackfile, upgrade
from stacks.config import parse
from stacks.features import resolve
from tests.chart import ARCHIVES

NODES = [{"name": "server-1", "host": "10.0.0.10", "role": "server"}]


@pytest.mark.parametrize(
    ("cilium", "tested"),
    [
        ("1.13.18", ("1.16", "1.26")),
        ("1.17.18", ("1.29", "1.32")),
        ("1.19.6", ("1.32", "1.35")),
        ("1.20.0", ("1.33", "1.36")),
    ],
)
def test_the_tested_minors_are_those_of_each_releases_docs(cilium, tested):
    assert upgrade.tested(parse({"nodes": NODES, "cilium": {"version": cilium}})) == tested


def test_a_pair_outside_the_table_shows_as_not_tested_in_the_plan():
    cfg = parse({"nodes": NODES, "cilium": {"version": "1.17.18"}, "k3s": {"version": "v1.33.3+k3s1"}})
    entry = plan.build("test", cfg)["upgrade"]
    assert entry["tested"] is False
    assert "(tested with Kubernetes 1.29-1.32): NOT TESTED" in plan.to_text(plan.build("test", cfg))


def test_the_gate_gets_the_targets_and_the_tested_range():
    cfg = parse({"nodes": NODES, "k3s": {"version": "v1.34.1+k3s1", "upgrade": {"allowDowngrade": True}}})
    # The newest patch of each minor: the official charts this program is tested against.
    packaged = sorted((p.name.removeprefix("cilium-").removesuffix(".tgz") for p in ARCHIVES.glob("cilium-*.tgz")),
                      key=Version)
    assert upgrade.gate_expect(cfg, resolve(cfg)) == {
        "k3sVersion": "v1.34.1+k3s1",
        "ciliumVersion": "1.19.6",
        "ciliumValues": upgrade.release_stamp(cfg, resolve(cfg))["valuesDigest"],
        "allowDowngrade": True,
        "testedKubernetes": ["1.32", "1.35"],
        "latestPatches": packaged,
        "removals": [
            {"minor": "1.19", "kind": kind, "what": removal.what, "fix": removal.fix}
            for kind, removal in zip(
                ("CiliumBGPPeeringPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"),
                upgrade.REMOVALS,
                strict=True,
            )
        ],
    }
    relaxed = parse({"nodes": NODES, "cilium": {"upgrade": {"latestPatchFirst": False}}})
    assert "latestPatches" not in upgrade.gate_expect(relaxed, resolve(relaxed))


def test_the_release_stamp_changes_with_the_cilium_version_and_values_only():
    def stamp(**stack: object) -> dict[str, str]:
        cfg = parse({"nodes": NODES, **stack})
        return upgrade.release_stamp(cfg, resolve(cfg))

    base = stamp()
    assert base["ciliumVersion"] == "1.19.6" and len(base["valuesDigest"]) == 64
    assert stamp() == base
    assert stamp(k3s={"version": "v1.34.1+k3s1"}) == base
    for other in ({"tier": "baseline"}, {"cilium": {"version": "1.18.12"}}, {"features": {"maglev": True}}):
        assert stamp(**other)["valuesDigest"] != base["valuesDigest"], other


def test_the_plan_shows_the_order_a_k3s_version_change_takes():
    cfg = stackfile.load(stackfile.locate("ha-performance"))
    steps = plan.build("ha-performance", cfg)["upgrade"]["k3sOrder"]
    assert steps[:2] == ["read the running versions on server-1 and judge them (upgrade gate)",
                         "etcd snapshot on server-1"]
    assert steps[2:5] == ["server server-1", "server server-2", "server server-3"]
    assert steps[5:] == ["agent agent-1", "agent agent-2", "agent agent-3", "agent agent-4"]
    batched = parse({"nodes": [*NODES, *({"name": f"agent-{i}", "host": f"10.0.0.{20 + i}", "role": "agent"}
                                         for i in range(1, 4))], "k3s": {"upgrade": {"maxUnavailable": 2}}})
    assert upgrade.order(batched)[3:] == ["agents agent-1, agent-2 together", "agent agent-3"]


def test_the_plan_shows_what_each_node_must_show_before_the_next_one_goes():
    cfg = stackfile.load(stackfile.locate("ha-performance"))
    text = plan.to_text(plan.build("ha-performance", cfg))
    between = next(line for line in text.splitlines() if "before the next one:" in line)
    assert between.endswith("uncordoned; its checks pass again: agent-status, no-kube-proxy-rules, kpr-integrity")
    assert "the smoke Service on its NodePort" in between
    assert "K3s and Cilium (its version or its values) not both in one `pulumi up`" in text
    baseline = parse({"nodes": NODES, "tier": "baseline"})
    steps = upgrade.between_nodes(baseline, resolve(baseline))
    assert steps[-1] == "its checks pass again: agent-status"
    assert not any("NodePort" in step for step in steps)


def test_the_gate_reads_the_objects_of_the_removals_up_to_the_target_minor_only():
    def removals(version: str) -> list[str]:
        cfg = parse({"nodes": NODES, "cilium": {"version": version}})
        return [removal.kind for removal in upgrade.removals_up_to(cfg)]

    assert removals("1.17.18") == removals("1.18.12") == []
    assert removals("1.19.6") == removals("1.20.0") == [
        "CiliumBGPPeeringPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"
    ]
    params = upgrade.removal_params(parse({"nodes": NODES}))
    assert params["REMOVED_COUNT"] == 3
    assert params["REMOVED_0_RESOURCE"] == "ciliumbgppeeringpolicies.cilium.io"
    assert "fromRequires" in str(params["REMOVED_1_EVIDENCE"]) and "toRequires" in str(params["REMOVED_2_EVIDENCE"])
