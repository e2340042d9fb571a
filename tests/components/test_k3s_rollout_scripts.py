"""The rollout's drain and wait scripts, run for real against a stub `kubectl`.

Among the cases: a PodDisruptionBudget that blocks the drain (kubectl's eviction error), and a node that never
becomes Ready after its upgrade.
"""

from __future__ import annotations

from pathlib import Path

from components.scripts import render
from tests.shell import executable, lint, run_script

# A cluster in FAKE_* variables; every call is logged to FAKE_LOG.
FAKE_KUBECTL = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
count() { local n=$(( $(cat "$FAKE_STATE/$1" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$FAKE_STATE/$1"; echo "$n"; }
case " $* " in
  *" get --raw /readyz/etcd "*) [[ -z ${FAKE_NO_ETCD:-} ]] && echo ok || exit 1 ;;
  *" get --raw /readyz "*) exit "${FAKE_API_RC:-0}" ;;
  *" get node "*"kubeletVersion"*)
    if [[ -n ${FAKE_NOT_REGISTERED:-} ]]; then
      echo 'Error from server (NotFound): nodes "agent-1" not found' >&2
      exit 1
    fi
    if (( $(count version) > ${FAKE_UPGRADED_AFTER:-0} )); then printf '%s' "$FAKE_NEW"
    else printf '%s' "$FAKE_OLD"; fi ;;
  *" get node "*"Ready"*) printf '%s' "${FAKE_READY:-True}" ;;
  *" get daemonset cilium "*) exit "${FAKE_CILIUM_RC:-1}" ;;
  *" get service smoke "*) exit "${FAKE_SMOKE_RC:-1}" ;;
  *" get node "*"InternalIP"*) printf '%s' "${FAKE_NODE_IP:-10.0.0.11}" ;;
  *" get pods -l k8s-app=cilium "*) printf '%s' "${FAKE_AGENT_READY:-True}" ;;
  *" get pods --all-namespaces "*) printf '%s' "${FAKE_LEFT:-}" ;;
  *" drain "*)
    if [[ -n ${FAKE_PDB_BLOCKS:-} ]]; then
      echo 'evicting pod shop/web-1'
      printf '%s %s\n' 'error when evicting pods/"web-1" -n "shop" (will retry after 5s):' \
        "Cannot evict pod as it would violate the pod's disruption budget."
      printf '%s %s\n' 'error: unable to drain node "agent-1" due to error: [error when waiting for pod' \
        '"web-1" in namespace "shop" to terminate: global timeout reached: 30s], continuing command...'
      exit 1
    fi
    echo 'node/agent-1 cordoned'; echo 'node/agent-1 drained' ;;
  *" uncordon "*) echo 'node/agent-1 uncordoned' ;;
  *) echo "fake kubectl: unexpected $*" >&2; exit 9 ;;
esac
"""
OLD, NEW = "v1.33.3+k3s1", "v1.34.1+k3s1"


def kubectl(tmp_path: Path, **env: str) -> tuple[str, dict[str, str]]:
    (tmp_path / "bin").mkdir(parents=True, exist_ok=True)
    (tmp_path / "state").mkdir(exist_ok=True)
    path = executable(tmp_path / "bin" / "kubectl", FAKE_KUBECTL)
    return str(path), {"FAKE_LOG": str(tmp_path / "log"), "FAKE_STATE": str(tmp_path / "state"),
                       "FAKE_OLD": OLD, "FAKE_NEW": NEW, **env}


def drain(tmp_path: Path, purpose: str = "upgrade", **env: str):
    # The node runs FAKE_OLD throughout (it is not upgraded while being drained).
    path, environment = kubectl(tmp_path, **{"FAKE_UPGRADED_AFTER": "1000", **env})
    params = {"NODE_NAME": "agent-1", "PURPOSE": purpose, "TARGET_VERSION": NEW, "DRAIN_TIMEOUT_SECONDS": 30,
              "DELETE_EMPTYDIR_DATA": "false", "IGNORE_DAEMONSETS": "true", "KUBECTL": path}
    return run_script(tmp_path, "k3s-drain", params, environment)


# curl for the NodePort probe: answers once FAKE_CURL_OK_AFTER calls went by (never when unset); logs the URL.
FAKE_CURL = r"""#!/usr/bin/env bash
printf 'curl %s\n' "${@: -1}" >>"$FAKE_LOG"
n=$(( $(cat "$FAKE_STATE/curl" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$FAKE_STATE/curl"
[[ -n ${FAKE_CURL_OK_AFTER:-} ]] && (( n >= FAKE_CURL_OK_AFTER )) || { echo 'curl: (7) Failed to connect' >&2; exit 7; }
"""


def ready(tmp_path: Path, role: str = "agent", timeout: int = 20, node_port: str = "", **env: str):
    path, environment = kubectl(tmp_path, **env)
    executable(tmp_path / "bin" / "curl", FAKE_CURL)
    params = {"NODE_NAME": "agent-1", "TARGET_VERSION": NEW, "ROLE": role, "TIMEOUT_SECONDS": timeout,
              "SMOKE_NAMESPACE": "k3s-cilium-verify", "SMOKE_SERVICE": "smoke", "NODE_PORT": node_port,
              "KUBECTL": path, "PROGRESS_SECONDS": 60}
    return run_script(tmp_path, "k3s-node-ready", params, environment)


def log(tmp_path: Path) -> str:
    return (tmp_path / "log").read_text()


def test_the_scripts_pass_lint(tmp_path):
    lint(render("k3s-drain", {}), tmp_path, "k3s-drain.sh")
    lint(render("k3s-node-ready", {}), tmp_path, "k3s-node-ready.sh")


def test_a_node_on_the_old_release_is_drained_through_evictions(tmp_path):
    done = drain(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"drain=done node=agent-1 from={OLD}\n"
    assert "drain agent-1 --timeout=30s --ignore-daemonsets" in log(tmp_path)
    assert "--disable-eviction" not in log(tmp_path)


def test_nothing_is_drained_on_a_first_install_or_when_the_node_is_current(tmp_path):
    assert drain(tmp_path / "a", FAKE_API_RC="1").stdout == "drain=skipped node=agent-1 reason=no-cluster\n"
    assert drain(tmp_path / "b", FAKE_NOT_REGISTERED="1").stdout == "drain=skipped node=agent-1 reason=not-registered\n"
    assert drain(tmp_path / "c", FAKE_OLD=NEW).stdout == "drain=skipped node=agent-1 reason=current\n"
    for case in "abc":
        assert " drain " not in log(tmp_path / case)


def test_a_disruption_budget_that_blocks_the_drain_stops_the_upgrade_naming_the_pods(tmp_path):
    done = drain(tmp_path, FAKE_PDB_BLOCKS="1", FAKE_LEFT="shop/web-1 shop/web-2 ")
    assert done.returncode == 1
    assert "node agent-1 not drained within 30s; the upgrade stops before it" in done.stderr
    assert "pods still on agent-1: shop/web-1 shop/web-2" in done.stderr
    assert "disruption budget" in done.stderr


def test_a_node_that_leaves_is_drained_whatever_release_it_runs_and_a_blocked_drain_stops_the_removal(tmp_path):
    done = drain(tmp_path / "a", "removal", FAKE_OLD=NEW)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"drain=done node=agent-1 from={NEW}\n"
    assert "drain agent-1 --timeout=30s --ignore-daemonsets" in log(tmp_path / "a")
    blocked = drain(tmp_path / "b", "removal", FAKE_PDB_BLOCKS="1", FAKE_LEFT="shop/web-1 ")
    assert blocked.returncode == 1
    assert "node agent-1 not drained within 30s; the removal stops before it" in blocked.stderr
    # Gone already (the cluster is down): nothing to drain, and the removal goes on.
    assert drain(tmp_path / "c", "removal", FAKE_API_RC="1").stdout == "drain=skipped node=agent-1 reason=no-cluster\n"


def test_an_upgraded_node_is_waited_for_until_ready_with_its_agent_then_uncordoned(tmp_path):
    done = ready(tmp_path, FAKE_UPGRADED_AFTER="2", FAKE_CILIUM_RC="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node=agent-1 kubelet={NEW} ready=True cilium=ready etcd=none service=none\n"
    calls = log(tmp_path)
    assert calls.count("kubeletVersion") >= 3
    assert calls.rstrip().splitlines()[-2] == "uncordon agent-1"


def test_a_first_install_waits_only_for_the_release_since_no_cni_runs_yet(tmp_path):
    done = ready(tmp_path, role="server", FAKE_OLD=NEW, FAKE_READY="False")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node=agent-1 kubelet={NEW} ready=skipped cilium=absent etcd=ok service=none\n"


def test_a_node_that_never_becomes_ready_stops_the_upgrade_naming_it(tmp_path):
    done = ready(tmp_path, timeout=3, FAKE_OLD=NEW, FAKE_CILIUM_RC="0", FAKE_READY="False")
    assert done.returncode == 1
    assert "k3s-node-ready: node agent-1: Ready: not reached within 3s; the upgrade stops here" in done.stderr
    assert "uncordon" not in log(tmp_path)


def test_the_smoke_service_must_answer_on_the_upgraded_nodes_own_nodeport_before_it_is_uncordoned(tmp_path):
    done = ready(tmp_path, node_port="30015", FAKE_OLD=NEW, FAKE_CILIUM_RC="0", FAKE_SMOKE_RC="0",
                 FAKE_CURL_OK_AFTER="2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"node=agent-1 kubelet={NEW} ready=True cilium=ready etcd=none service=ok\n"
    calls = log(tmp_path).splitlines()
    assert calls.count("curl http://10.0.0.11:30015/") == 2
    assert calls.index("uncordon agent-1") > max(i for i, call in enumerate(calls) if call.startswith("curl "))


def test_a_node_whose_datapath_does_not_serve_stops_the_upgrade_still_cordoned(tmp_path):
    done = ready(tmp_path, timeout=3, node_port="30015", FAKE_OLD=NEW, FAKE_CILIUM_RC="0", FAKE_SMOKE_RC="0")
    assert done.returncode == 1
    assert ("k3s-node-ready: node agent-1: the smoke Service answering on its NodePort 30015: not reached within 3s; "
            "the upgrade stops here") in done.stderr
    assert "uncordon" not in log(tmp_path)
    # No smoke Service (verify.smoke off, or not deployed yet): nothing to probe.
    unprobed = ready(tmp_path / "none", node_port="30015", FAKE_OLD=NEW, FAKE_CILIUM_RC="0")
    assert unprobed.stdout.endswith("service=none\n")
    assert "curl" not in log(tmp_path / "none")
