"""The four rollback procedures of README.md, as config changes under the mock engine.

Each test runs the whole program before and after the change and checks what
Pulumi would change, and what it must leave alone.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.main_program import run_stack, stack_config
from tests.mocks import Recorded, Registration

RELEASE = "cilium-release"


def with_tier(tier: str) -> dict[str, Any]:
    return {**stack_config(), "k3s-cilium:tier": tier}


def by_name(rec: Recorded) -> dict[str, Registration]:
    return {r.name: r for r in rec.resources}


def changes(before: Recorded, after: Recorded) -> tuple[set[str], set[str], set[str]]:
    """(added, removed, changed inputs) by resource name."""
    old, new = by_name(before), by_name(after)
    changed = {name for name in old.keys() & new.keys() if old[name].inputs != new[name].inputs}
    return set(new) - set(old), set(old) - set(new), changed


def installs(rec: Recorded) -> dict[str, Registration]:
    return {r.name: r for r in rec.resources if r.name.startswith(("k3s-server-", "k3s-agent-"))}


def test_performance_to_kpr_switches_datapath_features_off_and_keeps_kube_proxy_away():
    performance, kpr = run_stack(with_tier("performance")), run_stack(with_tier("kpr"))
    added, removed, changed = changes(performance, kpr)
    assert not added and not removed
    assert RELEASE in changed and "cilium-restart-pods" in changed  # host routing off: pods restart
    values = kpr.named(RELEASE).inputs["values"]
    assert values["loadBalancer"]["mode"] == "snat" and values["loadBalancer"]["algorithm"] == "random"
    assert values["bpf"]["masquerade"] is False and values["bpf"]["hostLegacyRouting"] is True
    assert values["kubeProxyReplacement"] == "true"
    # K3s keeps kube-proxy disabled: no install changes at all.
    assert installs(performance).keys() == installs(kpr).keys()
    assert not changed & set(installs(kpr))


def test_kpr_to_baseline_brings_kube_proxy_back_in_place():
    kpr, baseline = run_stack(with_tier("kpr")), run_stack(with_tier("baseline"))
    added, removed, changed = changes(kpr, baseline)
    assert not added
    assert {r for r in removed if r.startswith("kube-proxy-")} == {
        "kube-proxy-kubernetes",
        "kube-proxy-cleanup-server-1",
        "kube-proxy-cleanup-agent-1",
        "kube-proxy-cleanup-agent-2",
        "kube-proxy-done",
    }
    server = baseline.named("k3s-server-server-1")
    assert "disable-kube-proxy: false" in server.script("update")
    assert "disable-kube-proxy: true" in kpr.named("k3s-server-server-1").script("update")
    # Agents read disable-kube-proxy from the servers at start: their update restarts them.
    assert {"k3s-server-server-1", "k3s-agent-agent-1", "k3s-agent-agent-2"} <= changed
    # In place: same resources, no trigger change that would replace (= uninstall) them.
    for name, install in installs(baseline).items():
        assert install.inputs["triggers"] == installs(kpr)[name].inputs["triggers"], name
    assert baseline.named(RELEASE).inputs["values"]["kubeProxyReplacement"] == "false"


def test_baseline_to_kpr_is_the_same_path_forward():
    baseline, kpr = run_stack(with_tier("baseline")), run_stack(with_tier("kpr"))
    added, removed, _ = changes(baseline, kpr)
    assert {"kube-proxy-kubernetes", "kube-proxy-cleanup-agent-1"} <= added
    assert not {r for r in removed if r.startswith(("k3s-", "cilium-"))}


def test_cilium_version_rollback_touches_only_the_release():
    newer = stack_config()
    older = copy.deepcopy(newer)
    older["k3s-cilium:cilium"] = {**older["k3s-cilium:cilium"], "version": "1.18.12"}
    before, after = run_stack(newer), run_stack(older)
    added, removed, changed = changes(before, after)
    assert not added and not removed
    assert RELEASE in changed
    assert after.named(RELEASE).inputs["version"] == "1.18.12"
    assert not changed & set(installs(after)), "a Cilium rollback must not touch K3s"


def test_destroy_and_recreate_rebuilds_the_same_stack_and_every_install_uninstalls():
    first, second = run_stack(stack_config()), run_stack(stack_config())
    assert first.snapshot() == second.snapshot()
    for install in installs(first).values():
        assert "uninstall" in install.script("delete"), install.name


def replaced(before: Registration, after: Registration) -> bool:
    """pulumi-command replaces a Command only when its triggers change; any other change is an update."""
    return before.inputs.get("triggers") != after.inputs.get("triggers")


@pytest.mark.parametrize(
    ("field", "value"), [("host", "192.168.56.22"), ("port", 2222)], ids=["new-host", "new-ssh-port"]
)
def test_moving_a_node_replaces_its_resources_uninstalling_the_old_host_first(field, value):
    """A new address is a replacement (delete on the old host, then create), never an update on the new host."""
    extreme = {**stack_config(), "k3s-cilium:tier": "extreme"}
    moved = copy.deepcopy(extreme)
    moved["k3s-cilium:nodes"][2][field] = value
    before, after = by_name(run_stack(extreme)), by_name(run_stack(moved))
    assert before.keys() == after.keys()
    node_resources = {
        "k3s-preflight-agent-2",
        "k3s-agent-agent-2",
        "k3s-deregister-agent-2",
        "k3s-retire-agent-2",
        "host-tuning-agent-2",
        "kube-proxy-cleanup-agent-2",
    }
    assert {name for name in before if replaced(before[name], after[name])} >= node_resources
    # What undoes something on the old host runs first: uninstall, revert, deregistration.
    for name in ("k3s-agent-agent-2", "host-tuning-agent-2", "k3s-deregister-agent-2"):
        assert after[name].options["delete_before_replace"], name
        assert before[name].inputs["delete"], name
    # The other nodes' K3s, tuning and the release stay as they are.
    for name in ("k3s-server-server-1", "k3s-agent-agent-1", "k3s-preflight-agent-1", "host-tuning-agent-1", RELEASE):
        assert before[name].inputs == after[name].inputs, name


def test_a_k3s_version_change_is_gated_snapshotted_and_drained_first_and_adds_no_resource():
    newer = stack_config()
    newer["k3s-cilium:k3s"] = {**newer["k3s-cilium:k3s"], "version": "v1.34.1+k3s1"}
    before, after = run_stack(stack_config()), run_stack(newer)
    added, removed, changed = changes(before, after)
    assert not added and not removed
    gate, snapshot = "k3s-upgrade-gate-server-1", "k3s-snapshot-server-1"
    # Both run again (a new trigger replaces them) before any install changes.
    for name in (gate, snapshot):
        assert replaced(before.named(name), after.named(name)), name
    assert "k3s-upgrade-gate-assert" in changed
    assert set(installs(after)) <= changed
    # Every node is drained before and waited for after its upgrade: those run again too.
    for node in ("server-1", "agent-1", "agent-2"):
        for role in ("drain", "ready"):
            assert replaced(before.named(f"k3s-{role}-{node}"), after.named(f"k3s-{role}-{node}")), (role, node)
    first_drain = after.named("k3s-drain-server-1")
    assert after.named(snapshot).urn in first_drain.dependencies
    assert first_drain.urn in after.named("k3s-server-server-1").dependencies


def test_adding_an_agent_changes_no_other_nodes_k3s_resources():
    bigger = stack_config()
    bigger["k3s-cilium:nodes"] = [*bigger["k3s-cilium:nodes"], {"name": "agent-3", "host": "192.168.56.13",
                                                                 "role": "agent"}]
    before, after = run_stack(stack_config()), run_stack(bigger)
    added, removed, changed = changes(before, after)
    assert not removed
    assert {"k3s-preflight-agent-3", "k3s-agent-agent-3", "k3s-deregister-agent-3", "k3s-retire-agent-3"} <= added
    k3s_of_others = {name for name in changed if name.startswith("k3s-") and "agent-3" not in name}
    # The barrier waits for one more preflight; nothing of the other nodes is touched.
    assert k3s_of_others <= {"k3s-preflight-passed"}, k3s_of_others
    assert RELEASE not in changed
