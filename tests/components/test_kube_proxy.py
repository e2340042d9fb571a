"""KubeProxyRemoval under the mock engine, built after a CiliumRelease as in the program."""

from __future__ import annotations

from typing import Any

import pytest

from components import kube_proxy
from components.scripts import render
from stacks.config import StackConfig
from stacks.features import resolve
from tests.lab import LAB, RELEASE_TYPE, cilium_then_removal, config, stand_in_cluster
from tests.mocks import ProgramMocks, Recorded, run_program

NAME = "kube-proxy"
COMPONENT_TYPE = "k3s-cilium:index:KubeProxyRemoval"
NODES = [node["name"] for node in LAB["nodes"]]


def cleanup_stdout(args: Any) -> str:
    node = args.name.removeprefix(f"{NAME}-cleanup-")
    return f"backend=nft family=ipv4 chains_removed=3 rules_removed=9 node={node}\n"


def deploy(cfg: StackConfig) -> Recorded:
    features = resolve(cfg)

    def program() -> dict[str, Any]:
        connections, ready = stand_in_cluster(cfg)
        _, removal = cilium_then_removal(cfg, features, connections, ready, removal_name=NAME)
        return {"summaries": removal.summaries, "kubernetes": removal.kubernetes_cleanup, "enabled": removal.enabled}

    mocks = ProgramMocks(
        command_stdout=(
            (rf"^{NAME}-cleanup-", cleanup_stdout),
            (rf"^{NAME}-kubernetes$", 'daemonset.apps "kube-proxy" deleted\n'),
        )
    )
    return run_program(program, mocks)


def component(rec: Recorded) -> Any:
    (found,) = rec.of_type(COMPONENT_TYPE)
    return found


@pytest.mark.parametrize(
    "cfg",
    [config("baseline"), config("kpr", kubeProxyReplacement=False, nativeRouting=True)],
    ids=["baseline", "kpr-off-by-feature"],
)
def test_without_kube_proxy_replacement_nothing_is_removed(cfg: StackConfig) -> None:
    rec = deploy(cfg)
    assert rec.children_of(component(rec)) == []
    assert not rec.matching(rf"^{NAME}-")
    assert rec.outputs == {"summaries": {}, "kubernetes": "", "enabled": False}


@pytest.mark.parametrize("tier", ["kpr", "performance", "extreme"])
def test_every_node_is_cleaned_after_the_cilium_release(tier: str) -> None:
    cfg = config(tier)
    rec = deploy(cfg)
    (release,) = rec.of_type(RELEASE_TYPE)
    # Wired as in __main__.py: after the release and the pod restarts that follow it.
    cilium_done = rec.named("cilium-restart-pods")
    assert rec.depends_on(cilium_done, release)
    objects = rec.named(f"{NAME}-kubernetes")
    assert rec.depends_on(objects, cilium_done)
    for node in cfg.nodes:
        cleanup = rec.named(f"{NAME}-cleanup-{node.name}")
        assert cleanup.parent == component(rec).urn
        # kube-proxy pods of a kubeadm-style DaemonSet are gone before their rules are removed, and
        # that waits for Cilium: one dependency, as the SDK's cycle check walks upstream of each.
        assert cleanup.dependencies == (objects.urn,)
        assert cleanup.script() == render("kube-proxy-cleanup")
        assert cleanup.inputs["connection"]["host"] == node.host
        # Deleting the resource (going back to baseline) must do nothing on the node.
        assert "delete" not in cleanup.inputs
    # The cleanups run side by side: none waits for another.
    cleanups = rec.matching(rf"^{NAME}-cleanup-")
    assert len(cleanups) == len(NODES)
    assert not [a for a in cleanups for b in cleanups if rec.depends_on(a, b)]
    assert rec.outputs["summaries"] == {
        name: f"backend=nft family=ipv4 chains_removed=3 rules_removed=9 node={name}" for name in NODES
    }
    assert rec.outputs["enabled"] is True


def test_kubernetes_side_cleanup_deletes_kube_proxy_objects_if_present() -> None:
    cfg = config("kpr")
    rec = deploy(cfg)
    objects = rec.named(f"{NAME}-kubernetes")
    assert objects.inputs["connection"]["host"] == cfg.servers[0].host
    assert objects.script() == kube_proxy.K8S_CLEANUP + "\n"
    command = kube_proxy.K8S_CLEANUP
    assert "k3s kubectl -n kube-system delete daemonset,configmap kube-proxy --ignore-not-found" in command
    assert "--cascade=foreground --wait=true --timeout=" in command
    assert "delete" not in objects.inputs
    assert rec.outputs["kubernetes"] == 'daemonset.apps "kube-proxy" deleted\n'


def test_non_root_users_go_through_sudo() -> None:
    raw_cfg = config("kpr")
    cfg = raw_cfg.model_copy(update={"ssh": raw_cfg.ssh.model_copy(update={"user": "ubuntu"})})
    rec = deploy(cfg)
    assert rec.named(f"{NAME}-kubernetes").inputs["create"] == "sudo -n bash -s -- kube-proxy-kubernetes-cleanup"
    assert rec.named(f"{NAME}-cleanup-agent-1").inputs["create"] == "sudo -n bash -s -- kube-proxy-cleanup"


def triggers(cfg: StackConfig) -> list[Any]:
    rec = deploy(cfg)
    found = {r.inputs["triggers"][0] for r in rec.matching(rf"^{NAME}-") if r.type == "command:remote:Command"}
    assert len(found) == 1
    assert "triggers[*]" in rec.named(f"{NAME}-kubernetes").options["replace_on_changes"]
    return sorted(found)


def test_trigger_is_stable_when_nothing_changes() -> None:
    assert triggers(config("kpr")) == triggers(config("kpr"))
    cfg = config("kpr")
    assert triggers(cfg) == [kube_proxy.cleanup_trigger(cfg, resolve(cfg))]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (config("kpr"), config("kpr", hubble=True)),
        (config("kpr"), config("performance")),
        (config("kpr"), config("kpr", cilium_extra={"nodePortRange": "30000-32000"})),
        (config("kpr"), config("kpr", cilium_extra={"values": {"debug": {"enabled": True}}})),
    ],
    ids=["hubble", "tier", "nodePortRange", "raw-values"],
)
def test_cleanup_reruns_when_cilium_values_change(before: StackConfig, after: StackConfig) -> None:
    assert triggers(before) != triggers(after)


def test_cleanup_reruns_when_k3s_flags_change() -> None:
    before = config("kpr")
    after = before.model_copy(update={"k3s": before.k3s.model_copy(update={"disable": ["traefik"]})})
    assert kube_proxy.cleanup_trigger(before, resolve(before)) != kube_proxy.cleanup_trigger(after, resolve(after))
    assert triggers(before) != triggers(after)


def test_one_barrier_after_every_cleanup_and_none_without_kpr() -> None:
    """What must follow every cleanup depends on one resource, not on one per node."""
    rec = deploy(config("kpr"))
    done = rec.named(f"{NAME}-done")
    assert done.type == "command:local:Command" and "create" not in done.inputs  # runs nothing, no SSH
    cleanups = rec.matching(rf"^{NAME}-cleanup-")
    assert cleanups and all(rec.depends_on(done, cleanup) for cleanup in cleanups)
    assert not deploy(config("baseline")).matching(rf"^{NAME}-done$")
