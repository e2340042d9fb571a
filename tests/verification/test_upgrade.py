"""The upgrade gate's verdict (`python -m verification upgrade-gate`), on what upgrade-gate.sh prints.

The rules it must hold (sources in stacks/upgrade.py): K3s moves one Kubernetes minor per run and never
down without allowDowngrade; Cilium moves one minor per run either way; a version change needs a
Kubernetes minor the target Cilium is tested with (Cilium 1.19: 1.32-1.35, its compatibility page); K3s and
Cilium do not both change in one run.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest

from verification.__main__ import main

TESTED_1_19 = ["1.32", "1.35"]
RUNNING = """node=server-1 kubelet=v1.32.7+k3s1
node=agent-1 kubelet=v1.32.7+k3s1
cilium=quay.io/cilium/cilium:v1.18.4@sha256:0d81e8b3f7c0a8f6f2b0c1f8e2d6a1b5c9e7d3f4a2b6c8d0e1f3a5b7c9d1e3f5
"""
# One of them moves towards the targets (K3s v1.33.3+k3s1, Cilium 1.19.6), the other runs its target already.
K3S_MOVES = RUNNING.replace("v1.18.4", "v1.19.6")
CILIUM_MOVES = RUNNING.replace("v1.32.7+k3s1", "v1.33.3+k3s1")


def gate(
    stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **expect: Any
) -> tuple[int, dict[str, Any], str]:
    document = {"k3sVersion": "v1.33.3+k3s1", "ciliumVersion": "1.19.6", "allowDowngrade": False,
                "testedKubernetes": TESTED_1_19} | expect
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    code = main(["upgrade-gate", "--node", "server-1", "--expect", json.dumps(document)])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_a_first_install_passes(monkeypatch, capsys):
    code, result, _ = gate("cluster=absent\n", monkeypatch, capsys)
    assert code == 0 and result["figures"]["fresh"] is True


def test_one_minor_of_either_passes_and_names_what_moves(monkeypatch, capsys):
    code, result, err = gate(K3S_MOVES, monkeypatch, capsys)
    assert code == 0, err
    assert result["figures"]["changes"] == {"k3s": ["agent-1", "server-1"], "cilium": False, "ciliumValues": False}
    code, result, err = gate(CILIUM_MOVES, monkeypatch, capsys)
    assert code == 0, err
    assert result["figures"]["changes"] == {"k3s": [], "cilium": True, "ciliumValues": False}


def test_k3s_and_cilium_versions_in_one_run_are_refused(monkeypatch, capsys):
    code, result, err = gate(RUNNING, monkeypatch, capsys)
    assert result["figures"]["changes"] == {"k3s": ["agent-1", "server-1"], "cilium": True, "ciliumValues": False}
    assert code == 1
    assert err.splitlines() == [
        "node server-1: check upgrade-gate: expected this pulumi up (K3s to v1.33.3+k3s1 on agent-1, server-1) to "
        "change K3s or Cilium, not both, saw Cilium's version changing too; fix: run pulumi up with the cilium "
        "settings as deployed and the new k3s.version first, then change Cilium (or change Cilium first, with "
        "k3s.version as it runs)"
    ]


def test_a_k3s_version_change_with_other_cilium_values_than_deployed_is_refused(monkeypatch, capsys):
    deployed = f"{K3S_MOVES}release=digest-of-the-deployed-values\n"
    code, result, err = gate(deployed, monkeypatch, capsys, ciliumValues="digest-of-other-values")
    assert code == 1
    assert result["figures"]["changes"]["ciliumValues"] is True
    assert "saw Cilium's settings (the release's values) changing too" in err
    # The same values as deployed, or no stamp (a cluster from before it existed): the rollout may go.
    assert gate(deployed, monkeypatch, capsys, ciliumValues="digest-of-the-deployed-values")[0] == 0
    unknown = f"{K3S_MOVES}release=absent\n"
    assert gate(unknown, monkeypatch, capsys, ciliumValues="digest-of-other-values")[0] == 0
    # Other values without a K3s version change are the Cilium step itself.
    only_cilium = f"{CILIUM_MOVES.replace('v1.18.4', 'v1.19.6')}release=digest-of-the-deployed-values\n"
    assert gate(only_cilium, monkeypatch, capsys, ciliumValues="digest-of-other-values")[0] == 0


def test_a_skipped_kubernetes_minor_is_refused_naming_the_step_between(monkeypatch, capsys):
    running = K3S_MOVES.replace("v1.32.7+k3s1", "v1.31.9+k3s1")
    code, _, err = gate(running, monkeypatch, capsys)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("node server-1: check upgrade-gate: expected K3s on agent-1 (v1.31.9+k3s1) to move "
                               "at most one Kubernetes minor, to v1.32.x, saw k3s.version v1.33.3+k3s1")
    assert "set k3s.version to the latest v1.32 release" in lines[0]


def test_a_downgrade_is_refused_unless_allowed(monkeypatch, capsys):
    running = K3S_MOVES.replace("v1.32.7+k3s1", "v1.33.5+k3s1")
    code, _, err = gate(running, monkeypatch, capsys)
    assert code == 1 and "not to be downgraded" in err and "etcd snapshot" in err
    code, _, err = gate(running, monkeypatch, capsys, allowDowngrade=True)
    assert code == 0, err


def test_a_newer_k3s_build_of_the_same_patch_is_an_upgrade(monkeypatch, capsys):
    running = K3S_MOVES.replace("v1.32.7+k3s1", "v1.33.3+k3s1")
    code, _, err = gate(running, monkeypatch, capsys, k3sVersion="v1.33.3+k3s2")
    assert code == 0, err


@pytest.mark.parametrize(("running", "target", "step"), [("v1.17.6", "1.19.6", "1.18"), ("v1.19.6", "1.17.8", "1.18")])
def test_cilium_moves_one_minor_at_a_time_either_way(monkeypatch, capsys, running, target, step):
    stdin = RUNNING.replace("v1.32.7+k3s1", "v1.33.3+k3s1").replace("v1.18.4", running)
    code, _, err = gate(stdin, monkeypatch, capsys, ciliumVersion=target)
    assert code == 1
    assert f"set cilium.version to the latest {step} release" in err


def test_one_cilium_minor_back_is_the_rollback_and_passes(monkeypatch, capsys):
    stdin = RUNNING.replace("v1.32.7+k3s1", "v1.33.3+k3s1").replace("v1.18.4", "v1.19.6")
    code, _, err = gate(stdin, monkeypatch, capsys, ciliumVersion="1.18.7", testedKubernetes=["1.30", "1.33"])
    assert code == 0, err


def test_a_change_to_an_untested_pair_is_refused_but_an_unchanged_one_is_not(monkeypatch, capsys):
    running = RUNNING.replace("v1.18.4", "v1.17.6").replace("v1.32.7+k3s1", "v1.32.7+k3s1")
    # Kubernetes 1.33 with Cilium 1.17 (tested with 1.29-1.32).
    code, _, err = gate(running, monkeypatch, capsys, ciliumVersion="1.17.6", testedKubernetes=["1.29", "1.32"])
    assert code == 1
    assert "expected Kubernetes 1.33 (k3s.version v1.33.3+k3s1) to be one Cilium 1.17 is tested with, 1.29-1.32" in err
    unchanged = running.replace("v1.32.7+k3s1", "v1.33.3+k3s1")
    code, _, err = gate(unchanged, monkeypatch, capsys, ciliumVersion="1.17.6", testedKubernetes=["1.29", "1.32"])
    assert code == 0, err


def test_an_api_that_does_not_answer_stops_the_change(monkeypatch, capsys):
    stdin = "cluster=unreadable detail='The connection to the server 127.0.0.1:6443 was refused'\n"
    code, _, err = gate(stdin, monkeypatch, capsys)
    assert code == 1
    assert "saw The connection to the server 127.0.0.1:6443 was refused" in err
    assert "systemctl status k3s" in err


# The newest patches the program knows (the packaged charts in ../shared/cilium-chart/archives).
LATEST = ["1.17.18", "1.18.12", "1.19.6"]


def test_the_next_minor_is_refused_from_an_older_patch_than_the_newest_known(monkeypatch, capsys):
    # CILIUM_MOVES has 1.18.4; the newest 1.18 is 1.18.12.
    code, _, err = gate(CILIUM_MOVES, monkeypatch, capsys, latestPatches=LATEST)
    assert code == 1
    assert ("expected Cilium 1.18.4 at the newest 1.18 patch (1.18.12) before the next minor, "
            "saw cilium.version 1.19.6") in err
    assert "set cilium.version to 1.18.12 and run pulumi up, then go on to 1.19.6" in err


def test_from_the_newest_patch_or_newer_to_a_patch_of_the_same_minor_or_back_passes(monkeypatch, capsys):
    newest = CILIUM_MOVES.replace("v1.18.4", "v1.18.12")
    assert gate(newest, monkeypatch, capsys, latestPatches=LATEST)[0] == 0
    newer = CILIUM_MOVES.replace("v1.18.4", "v1.18.13")
    assert gate(newer, monkeypatch, capsys, latestPatches=LATEST)[0] == 0
    # The patch step itself (1.18.4 -> 1.18.12) and a step back are never held up by it.
    same_minor = CILIUM_MOVES
    code, _, err = gate(same_minor, monkeypatch, capsys, latestPatches=LATEST, ciliumVersion="1.18.12",
                        testedKubernetes=["1.30", "1.33"])
    assert code == 0, err
    back = CILIUM_MOVES.replace("v1.18.4", "v1.19.2")
    code, _, err = gate(back, monkeypatch, capsys, latestPatches=LATEST, ciliumVersion="1.18.7",
                        testedKubernetes=["1.30", "1.33"])
    assert code == 0, err
    # Without the rule (cilium.upgrade.latestPatchFirst: false) the old patch may move on.
    assert gate(CILIUM_MOVES, monkeypatch, capsys)[0] == 0


REMOVALS_1_19 = [
    {"minor": "1.19", "kind": "CiliumBGPPeeringPolicy", "what": "uses BGPv1", "fix": "migrate it to v2"},
    {"minor": "1.19", "kind": "CiliumNetworkPolicy", "what": "has fromRequires", "fix": "remove them"},
]
IN_THE_CLUSTER = "removed=CiliumBGPPeeringPolicy object=rack-1\nremoved=CiliumNetworkPolicy object=shop/legacy-db\n"


def test_objects_the_next_minor_no_longer_accepts_stop_the_step_to_it_naming_each_and_the_fix(monkeypatch, capsys):
    running = CILIUM_MOVES.replace("v1.18.4", "v1.18.12") + IN_THE_CLUSTER
    code, result, err = gate(running, monkeypatch, capsys, removals=REMOVALS_1_19)
    assert code == 1
    assert result["figures"]["removedObjects"] == [
        "CiliumBGPPeeringPolicy rack-1", "CiliumNetworkPolicy shop/legacy-db"
    ]
    assert err.splitlines() == [
        "node server-1: check upgrade-gate: expected CiliumBGPPeeringPolicy rack-1 changed or gone before Cilium "
        "1.19: it uses BGPv1, saw it in the cluster; fix: migrate it to v2, then run pulumi up again",
        "node server-1: check upgrade-gate: expected CiliumNetworkPolicy shop/legacy-db changed or gone before "
        "Cilium 1.19: it has fromRequires, saw it in the cluster; fix: remove them, then run pulumi up again",
    ]


def test_objects_of_a_removal_not_crossed_by_this_step_do_not_stop_it(monkeypatch, capsys):
    # Already on 1.19 (a patch step), or staying on 1.18 while K3s moves: nothing is crossed.
    on_1_19 = CILIUM_MOVES.replace("v1.18.4", "v1.19.2") + IN_THE_CLUSTER
    assert gate(on_1_19, monkeypatch, capsys, removals=REMOVALS_1_19)[0] == 0
    k3s_only = K3S_MOVES.replace("v1.19.6", "v1.18.12") + IN_THE_CLUSTER
    code, _, err = gate(k3s_only, monkeypatch, capsys, removals=REMOVALS_1_19, ciliumVersion="1.18.12",
                        testedKubernetes=["1.30", "1.33"])
    assert code == 0, err
    # A step back from 1.19 to 1.18 does not cross a removal either.
    back = CILIUM_MOVES.replace("v1.18.4", "v1.19.6") + IN_THE_CLUSTER
    code, _, err = gate(back, monkeypatch, capsys, removals=REMOVALS_1_19, ciliumVersion="1.18.12",
                        testedKubernetes=["1.30", "1.33"])
    assert code == 0, err
