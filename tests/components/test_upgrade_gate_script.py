"""upgrade-gate.sh run for real against a fake kubectl, its output judged by the real assertion CLI."""

from __future__ import annotations

from typing import Any

from components.scripts import render
from stacks.checks import PlannedCheck
from stacks.config import parse
from stacks.features import resolve
from stacks.upgrade import RELEASE_STAMP, gate_expect, release_stamp, removal_params
from tests.components.test_verify_scripts import assert_cli
from tests.shell import executable, lint, run_script

# `get nodes` prints FAKE_NODES (or fails with FAKE_NODES_ERROR), `get daemonset` prints FAKE_IMAGE, `get
# configmap k3s-cilium-release` FAKE_STAMP (the Cilium component's record of what it deployed); the Cilium objects
# FAKE_BGP, FAKE_CNP and FAKE_CCNP, as the gate's jsonpath prints them ("<namespace>/<name> <evidence>"; without
# FAKE_BGP the CRD is not there).
FAKE_KUBECTL = r"""#!/usr/bin/env bash
case " $* " in
  *" get nodes "*)
    if [[ -n ${FAKE_NODES_ERROR:-} ]]; then echo "$FAKE_NODES_ERROR" >&2; exit 1; fi
    printf '%b' "$FAKE_NODES" ;;
  *" get daemonset cilium "*) [[ -n ${FAKE_IMAGE:-} ]] || exit 1; printf '%s' "$FAKE_IMAGE" ;;
  *" get ciliumbgppeeringpolicies.cilium.io --all-namespaces "*)
    [[ -n ${FAKE_BGP:-} ]] || exit 1; printf '%b' "$FAKE_BGP" ;;
  *" get ciliumnetworkpolicies.cilium.io --all-namespaces "*) printf '%b' "${FAKE_CNP:-}" ;;
  *" get ciliumclusterwidenetworkpolicies.cilium.io --all-namespaces "*) printf '%b' "${FAKE_CCNP:-}" ;;
  *" get configmap k3s-cilium-release "*)
    [[ -n ${FAKE_STAMP:-} ]] || { echo 'configmaps "k3s-cilium-release" not found' >&2; exit 1; }
    printf '%s' "$FAKE_STAMP" ;;
  *) echo "fake kubectl: unexpected $*" >&2; exit 9 ;;
esac
"""
STACK = {"nodes": [{"name": "server-1", "host": "10.0.0.10", "role": "server"}]}


def check(**stack: Any) -> PlannedCheck:
    cfg = parse(STACK | stack)
    return PlannedCheck("upgrade-gate", "server-1", gate_expect(cfg, resolve(cfg)))


def stamp(**stack: Any) -> str:
    """The values digest the Cilium component records for this stack."""
    cfg = parse(STACK | stack)
    return release_stamp(cfg, resolve(cfg))["valuesDigest"]


def gate(tmp_path, **env: str):
    (tmp_path / "bin").mkdir(exist_ok=True)
    kubectl = executable(tmp_path / "bin" / "kubectl", FAKE_KUBECTL)
    params = {"KUBECTL": str(kubectl), "RELEASE_STAMP": RELEASE_STAMP, **removal_params(parse(STACK))}
    return run_script(tmp_path, "upgrade-gate", params, env)


def test_the_script_passes_lint(tmp_path):
    lint(render("upgrade-gate", {}), tmp_path, "upgrade-gate.sh")


def test_no_k3s_yet_is_a_first_install(tmp_path):
    read = run_script(tmp_path, "upgrade-gate", {"KUBECTL": "k3s kubectl"}, {}, path="/usr/bin:/bin")
    assert read.returncode == 0 and read.stdout == "cluster=absent\n"
    assert assert_cli(check(), read.stdout).returncode == 0


def test_what_runs_is_read_and_one_minor_up_passes(tmp_path):
    # From the newest 1.18 patch (cilium.upgrade.latestPatchFirst, on by default).
    read = gate(tmp_path, FAKE_NODES="node=server-1 kubelet=v1.33.3+k3s1\\n",
                FAKE_IMAGE="quay.io/cilium/cilium:v1.18.12@sha256:" + "a" * 64)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == [
        "node=server-1 kubelet=v1.33.3+k3s1",
        "cilium=quay.io/cilium/cilium:v1.18.12@sha256:" + "a" * 64,
        "release=absent",
    ]
    verdict = assert_cli(check(), read.stdout)
    assert verdict.returncode == 0, verdict.stderr


def test_a_skipped_minor_read_from_the_cluster_is_refused(tmp_path):
    read = gate(tmp_path, FAKE_NODES="node=server-1 kubelet=v1.31.2+k3s1\\n", FAKE_IMAGE="")
    assert read.stdout.splitlines()[-2:] == ["cilium=absent", "release=absent"]
    verdict = assert_cli(check(), read.stdout)
    assert verdict.returncode == 1
    assert "to v1.32.x" in verdict.stderr


def test_an_api_that_does_not_answer_is_reported_and_refused(tmp_path):
    read = gate(tmp_path, FAKE_NODES_ERROR="The connection to the server 127.0.0.1:6443 was refused")
    assert read.returncode == 0, read.stderr
    assert read.stdout.startswith("cluster=unreadable detail=")
    verdict = assert_cli(check(), read.stdout)
    assert verdict.returncode == 1
    assert "was refused" in verdict.stderr


def test_a_k3s_upgrade_is_refused_while_the_deployed_cilium_settings_differ_from_the_stacks(tmp_path):
    # Cilium 1.19.6 deployed with the baseline tier's values; K3s moves from v1.32 to the stack's v1.33.
    running = {"FAKE_NODES": "node=server-1 kubelet=v1.32.7+k3s1\\n",
               "FAKE_IMAGE": "quay.io/cilium/cilium:v1.19.6@sha256:" + "a" * 64}
    read = gate(tmp_path, **running, FAKE_STAMP=stamp(tier="baseline"))
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines()[-1] == f"release={stamp(tier='baseline')}"
    verdict = assert_cli(check(tier="performance"), read.stdout)
    assert verdict.returncode == 1
    assert "to change K3s or Cilium, not both, saw Cilium's settings (the release's values) changing too" in (
        verdict.stderr
    )
    assert assert_cli(check(tier="baseline"), read.stdout).returncode == 0


def test_objects_cilium_1_19_refuses_are_read_from_the_cluster_and_stop_the_step_to_it(tmp_path):
    running = {"FAKE_NODES": "node=server-1 kubelet=v1.33.3+k3s1\\n",
               "FAKE_IMAGE": "quay.io/cilium/cilium:v1.18.12@sha256:" + "a" * 64}
    read = gate(
        tmp_path,
        **running,
        FAKE_BGP="/rack-1 5c1d7e2a-0f00-4d6e-9a52-3b1f0c2d9e11\\n",
        FAKE_CNP="shop/allow-web \\nshop/legacy-db [{\"matchLabels\":{\"env\":\"prod\"}}]\\n",
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines()[-2:] == [
        "removed=CiliumBGPPeeringPolicy object=rack-1",
        "removed=CiliumNetworkPolicy object=shop/legacy-db",
    ]
    verdict = assert_cli(check(), read.stdout)
    assert verdict.returncode == 1
    assert ("expected CiliumBGPPeeringPolicy rack-1 changed or gone before Cilium 1.19: it uses the BGPv1 API, which "
            "Cilium 1.19 removed, saw it in the cluster; fix: migrate it to the cilium.io/v2 CRDs") in verdict.stderr
    assert "CiliumNetworkPolicy shop/legacy-db" in verdict.stderr and "allow-web" not in verdict.stderr
    # Cilium 1.18 as the target reads none of them.
    on_1_18 = parse(STACK | {"cilium": {"version": "1.18.12"}})
    assert "REMOVED_COUNT=0" in render("upgrade-gate", removal_params(on_1_18))
