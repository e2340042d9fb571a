"""The Hubble Relay collector and the ``gateway`` probe, run for real against fake kubectl/curl.

As in ``test_verify_scripts.py``, each collector's output is piped into the
real ``python -m verification`` (``hubble-relay``, ``probes``): good output
passes (exit 0), and what is missing (the relay Service, a node, a flow, the
Gateway's answer) fails naming it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.scripts import ScriptValue, render
from stacks.gateway_api import GATEWAY_PROBE, GatewayApi, probe_target
from tests.components.test_verify_scripts import FAKE_CURL
from tests.shell import executable, lint, run_script

ROOT = Path(__file__).resolve().parents[2]
HUBBLE_FIXTURES = ROOT / "tests" / "verification" / "fixtures" / "hubble"
RELAY = "verify-hubble-relay"
RELAY_IP = "10.43.87.12"
RELAY_EXPECT = {"connectedNodes": 3, "flows": True}
GATEWAY_EXPECT = {"probes": [GATEWAY_PROBE], "minProbes": 1}

# kubectl for the relay collector: `get service` prints FAKE_SERVICE_IP (kubectl's NotFound error when
# unset); `exec ... -- hubble status|observe` prints FAKE_STATUS_<n> / FAKE_OBSERVE_<n> on its n-th call
# (FAKE_*_LAST when there is no n-th), exits FAKE_STATUS_RC / FAKE_OBSERVE_RC, and sleeps FAKE_SLEEP
# first. Every call goes to FAKE_LOG.
FAKE_KUBECTL = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
case " $* " in
  *" get service "*)
    if [[ -n ${FAKE_SERVICE_IP:-} ]]; then printf '%s' "$FAKE_SERVICE_IP"; exit 0; fi
    echo 'Error from server (NotFound): services "hubble-relay" not found' >&2
    exit 1
    ;;
  *" -- hubble status "*) kind=STATUS ;;
  *" -- hubble observe "*) kind=OBSERVE ;;
  *) echo "fake kubectl: unexpected $*" >&2; exit 9 ;;
esac
[[ -z ${FAKE_SLEEP:-} ]] || sleep "$FAKE_SLEEP"
count=$(( $(cat "$FAKE_STATE/$kind" 2>/dev/null || echo 0) + 1 ))
echo "$count" >"$FAKE_STATE/$kind"
file=FAKE_${kind}_$count
[[ -n ${!file:-} ]] || file=FAKE_${kind}_LAST
[[ -n ${!file:-} ]] && cat "${!file}"
rc=FAKE_${kind}_RC
exit "${!rc:-0}"
"""

STATUS_OK = (
    f"Healthcheck (via {RELAY_IP}:80): Ok\n"
    "Current/Max Flows: 12,285/12,285 (100.00%)\n"
    "Flows/s: 41.04\n"
    "Connected Nodes: 3/3\n"
)
FLOWS = HUBBLE_FIXTURES / "hubble_flows_jsonpb_export_doc.txt"
UNAVAILABLE = HUBBLE_FIXTURES / "hubble_status_relay_unavailable_constructed.txt"
UNHEALTHY = HUBBLE_FIXTURES / "hubble_status_relay_unhealthy_constructed.txt"


def verification(check: str, node: str, expect: dict[str, Any], stdin: str) -> subprocess.CompletedProcess[str]:
    """What the assertion resource runs, in the project directory, with the collector's stdout on stdin."""
    command = [".venv/bin/python", "-m", "verification", check, "--node", node, "--expect", json.dumps(expect)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def judge_relay(stdout: str) -> subprocess.CompletedProcess[str]:
    return verification("hubble-relay", "cluster", RELAY_EXPECT, stdout)


@pytest.fixture
def kube(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir()
    kubectl = executable(tmp_path / "bin" / "kubectl", FAKE_KUBECTL)
    status = tmp_path / "status-ok.txt"
    status.write_text(STATUS_OK)
    return {
        "KUBECTL": str(kubectl),
        "FAKE_LOG": str(tmp_path / "kubectl.log"),
        "FAKE_STATE": str(tmp_path / "state"),
        "FAKE_SERVICE_IP": RELAY_IP,
        "FAKE_STATUS_LAST": str(status),
        "FAKE_OBSERVE_LAST": str(FLOWS),
    }


def relay_params(kube: dict[str, str], **extra: ScriptValue) -> dict[str, ScriptValue]:
    return {"KUBECTL": kube["KUBECTL"], "EXPECTED_NODES": 3, "WAIT_SECONDS": 30, "RETRY_DELAY_SECONDS": 0, **extra}


def collect_relay(
    tmp_path: Path, kube: dict[str, str], env: dict[str, str] | None = None, **extra: ScriptValue
) -> subprocess.CompletedProcess[str]:
    return run_script(tmp_path, RELAY, relay_params(kube, **extra), {**kube, **(env or {})})


def calls(kube: dict[str, str], kind: str = "") -> list[str]:
    log = Path(kube["FAKE_LOG"])
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if f" -- hubble {kind}" in line] if kind else lines


# --- lint ------------------------------------------------------------------------------------------


def test_rendered_relay_collector_passes_bash_n_and_shellcheck(tmp_path: Path) -> None:
    lint(render(RELAY, {"EXPECTED_NODES": 3, "WAIT_SECONDS": 180}), tmp_path, f"{RELAY}.sh")
    lint(render(RELAY, {}), tmp_path, f"{RELAY}-defaults.sh")


def test_rendered_probes_with_the_gateway_pass_bash_n_and_shellcheck(tmp_path: Path) -> None:
    params: dict[str, ScriptValue] = {
        "PROBES": f"localhost-nodeport clusterip {GATEWAY_PROBE}",
        "NODE_PORT": 30085,
        "CLUSTER_IP": "10.43.0.253",
        "GATEWAY_TARGET": probe_target(GatewayApi(), "192.168.56.238"),
    }
    lint(render("verify-probes", params), tmp_path, "verify-probes.sh")


# --- hubble-relay ----------------------------------------------------------------------------------


def test_relay_status_then_flows_are_printed_and_pass(tmp_path: Path, kube: dict[str, str]) -> None:
    collected = collect_relay(tmp_path, kube)
    assert collected.returncode == 0, collected.stderr
    # The status lines, then the flow lines, nothing between them.
    assert collected.stdout == STATUS_OK + FLOWS.read_text()
    assert calls(kube) == [
        "-n kube-system get service hubble-relay -o jsonpath={.spec.clusterIP}",
        f"-n kube-system exec ds/cilium -c cilium-agent -- hubble status --server {RELAY_IP}:80",
        f"-n kube-system exec ds/cilium -c cilium-agent -- hubble observe --last 1 -o jsonpb --server {RELAY_IP}:80",
    ]
    judged = judge_relay(collected.stdout)
    assert judged.returncode == 0, judged.stderr
    figures = json.loads(judged.stdout)["figures"]
    assert figures["connectedNodes"] == 3 and figures["totalNodes"] == 3
    assert figures["flows"] == 2 and figures["target"] == f"{RELAY_IP}:80"


def test_relay_is_asked_again_until_every_node_is_connected_and_a_flow_is_served(
    tmp_path: Path, kube: dict[str, str]
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    env = {"FAKE_STATUS_1": str(UNAVAILABLE), "FAKE_STATUS_2": str(UNAVAILABLE), "FAKE_OBSERVE_1": str(empty)}
    collected = collect_relay(tmp_path, kube, env)
    assert collected.returncode == 0, collected.stderr
    assert len(calls(kube, "status")) == 3 and len(calls(kube, "observe")) == 3
    # The Service is read once: its ClusterIP does not change.
    assert sum(" get service " in f" {line} " for line in calls(kube)) == 1
    assert "Connected Nodes: 3/3" in collected.stdout
    assert judge_relay(collected.stdout).returncode == 0


def test_absent_relay_service_prints_kubectls_error_and_fails(tmp_path: Path, kube: dict[str, str]) -> None:
    env = {"FAKE_SERVICE_IP": ""}
    collected = collect_relay(tmp_path, kube, env, WAIT_SECONDS=0)
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout == 'Error from server (NotFound): services "hubble-relay" not found\n'
    assert not calls(kube, "status")
    judged = judge_relay(collected.stdout)
    assert judged.returncode == 1
    assert (
        "node cluster: check hubble-relay: expected Hubble Relay health check Ok, "
        'saw Error from server (NotFound): services "hubble-relay" not found; fix: the hubble-relay Deployment'
        in judged.stderr
    )


def test_two_of_three_nodes_connected_within_the_wait_fails_naming_the_missing_node(
    tmp_path: Path, kube: dict[str, str]
) -> None:
    # 3 s: bash's SECONDS counts whole seconds, so a 1 s wait could end before a slow first attempt's retry.
    collected = collect_relay(
        tmp_path, kube, {"FAKE_STATUS_LAST": str(UNAVAILABLE)}, WAIT_SECONDS=3, RETRY_DELAY_SECONDS="0.2"
    )
    assert collected.returncode == 0, collected.stderr
    attempts = len(calls(kube, "status"))
    assert 2 <= attempts <= 3 / 0.2 + 1  # asked again, and only for WAIT_SECONDS
    # The last attempt's answers: the status, then the flows it did get.
    assert collected.stdout == UNAVAILABLE.read_text() + FLOWS.read_text()
    judged = judge_relay(collected.stdout)
    assert judged.returncode == 1
    assert (
        "node cluster: check hubble-relay: expected Hubble Relay connected nodes 3/3, "
        "saw 2/3 (unavailable: default/agent-2); fix: the relay reaches each agent's Hubble server"
    ) in judged.stderr
    assert "flows read through Hubble Relay" not in judged.stderr


def test_no_flow_within_the_wait_fails_saying_none_was_served(tmp_path: Path, kube: dict[str, str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    collected = collect_relay(
        tmp_path, kube, {"FAKE_OBSERVE_LAST": str(empty)}, WAIT_SECONDS=3, RETRY_DELAY_SECONDS="0.2"
    )
    assert collected.returncode == 0, collected.stderr
    assert len(calls(kube, "observe")) >= 2
    assert collected.stdout == STATUS_OK + "verify-hubble-relay: hubble observe printed nothing\n"
    judged = judge_relay(collected.stdout)
    assert judged.returncode == 1
    problems = judged.stderr.strip().splitlines()
    assert len(problems) == 1
    assert problems[0].startswith(
        "node cluster: check hubble-relay: expected flows read through Hubble Relay at least one "
        "(hubble observe --last 1 -o jsonpb), saw none; fix: "
    )


def test_unhealthy_relay_is_not_observed_and_fails_with_its_health(tmp_path: Path, kube: dict[str, str]) -> None:
    collected = collect_relay(
        tmp_path, kube, {"FAKE_STATUS_LAST": str(UNHEALTHY), "FAKE_STATUS_RC": "1"}, WAIT_SECONDS=0
    )
    assert collected.returncode == 0, collected.stderr
    assert not calls(kube, "observe")
    assert collected.stdout == UNHEALTHY.read_text()
    judged = judge_relay(collected.stdout)
    assert judged.returncode == 1
    assert f"expected Hubble Relay health check (via {RELAY_IP}:80) Ok, saw Unavailable: NOT_SERVING" in judged.stderr


def test_relay_that_does_not_answer_is_cut_off_and_said_so(tmp_path: Path, kube: dict[str, str]) -> None:
    collected = collect_relay(tmp_path, kube, {"FAKE_SLEEP": "5"}, WAIT_SECONDS=0, EXEC_TIMEOUT_SECONDS=1)
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout.startswith("verify-hubble-relay: ")
    assert f"hubble status --server {RELAY_IP}:80 did not answer within 1s" in collected.stdout
    judged = judge_relay(collected.stdout)
    assert judged.returncode == 1
    assert "expected Hubble Relay health check Ok, saw verify-hubble-relay: " in judged.stderr


def test_ipv6_cluster_ip_is_bracketed(tmp_path: Path, kube: dict[str, str]) -> None:
    collected = collect_relay(tmp_path, kube, {"FAKE_SERVICE_IP": "fd00:10:43::5c"})
    assert collected.returncode == 0, collected.stderr
    assert calls(kube, "status")[0].endswith(" hubble status --server [fd00:10:43::5c]:80")


def test_progress_lines_say_what_is_still_missing(tmp_path: Path, kube: dict[str, str]) -> None:
    collected = collect_relay(
        tmp_path,
        kube,
        {"FAKE_STATUS_LAST": str(UNAVAILABLE)},
        WAIT_SECONDS=2,
        RETRY_DELAY_SECONDS="0.2",
        PROGRESS_SECONDS="0.5",
    )
    assert collected.returncode == 0, collected.stderr
    progress = [line for line in collected.stderr.splitlines() if "still waiting for" in line]
    assert progress, collected.stderr
    assert progress[-1].startswith(
        "verify-hubble-relay: still waiting for Hubble Relay to reach 3 node(s) and serve a flow, at most 2s: "
        "3 nodes connected (saw 'Connected Nodes: 2/3')"
    )
    # stdout holds only what the verification reads.
    assert "still waiting" not in collected.stdout


def test_relay_collector_fails_only_when_kubectl_cannot_run(tmp_path: Path, kube: dict[str, str]) -> None:
    result = run_script(tmp_path, RELAY, relay_params(kube, KUBECTL="k3s kubectl"), kube)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "verify-hubble-relay: k3s not found" in result.stderr


# --- the gateway probe -----------------------------------------------------------------------------


@pytest.fixture
def curl(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "curl-state").mkdir()
    executable(tmp_path / "bin" / "curl", FAKE_CURL)
    return {"FAKE_ANSWERS": str(tmp_path / "answers"), "FAKE_STATE": str(tmp_path / "curl-state")}


def probe_gateway(tmp_path: Path, curl: dict[str, str], target: str, answers: str) -> subprocess.CompletedProcess[str]:
    Path(curl["FAKE_ANSWERS"]).write_text(answers)
    params: dict[str, ScriptValue] = {
        "PROBES": GATEWAY_PROBE,
        "GATEWAY_TARGET": target,
        "ATTEMPTS": 3,
        "RETRY_DELAY_SECONDS": 0,
    }
    return run_script(tmp_path, "verify-probes", params, curl)


def test_gateway_probe_line_passes_the_probes_check(tmp_path: Path, curl: dict[str, str]) -> None:
    target = probe_target(GatewayApi(), "192.168.56.238")
    collected = probe_gateway(tmp_path, curl, target, f"{target} 200 1\n")
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout == "probe=gateway target=192.168.56.238:80 result=ok code=200 attempts=2\n"
    judged = verification("probes", "agent-1", GATEWAY_EXPECT, collected.stdout)
    assert judged.returncode == 0, judged.stderr
    figures = json.loads(judged.stdout)["figures"]
    assert figures["passed"] == 1 and figures["results"]["gateway"]["target"] == "192.168.56.238:80"


def test_gateway_probe_of_an_ipv6_host_network_listener(tmp_path: Path, curl: dict[str, str]) -> None:
    target = probe_target(GatewayApi(host_network=True), "fd00:56::11")
    assert target == "[fd00:56::11]:8080"
    collected = probe_gateway(tmp_path, curl, target, f"{target} 204\n")
    assert collected.stdout == "probe=gateway target=\\[fd00:56::11\\]:8080 result=ok code=204 attempts=1\n"
    judged = verification("probes", "server-1", GATEWAY_EXPECT, collected.stdout)
    assert judged.returncode == 0, judged.stderr


def test_unreachable_gateway_fails_the_probes_check(tmp_path: Path, curl: dict[str, str]) -> None:
    collected = probe_gateway(tmp_path, curl, "192.168.56.238:80", "")
    assert collected.returncode == 0, collected.stderr
    judged = verification("probes", "agent-1", GATEWAY_EXPECT, collected.stdout)
    assert judged.returncode == 1
    assert (
        "node agent-1: check probes: expected probe gateway result ok, saw fail (target=192.168.56.238:80 "
        "code=000 attempts=3 detail=curl: (7) Failed to connect to 192.168.56.238 port 80 after 2 ms: "
        "Couldn't connect to server)" in judged.stderr
    )


def test_gateway_answering_an_error_fails_with_its_status(tmp_path: Path, curl: dict[str, str]) -> None:
    # Envoy answers 404 when no HTTPRoute is attached to the listener.
    collected = probe_gateway(tmp_path, curl, "192.168.56.238:80", "192.168.56.238:80 404\n")
    judged = verification("probes", "agent-1", GATEWAY_EXPECT, collected.stdout)
    assert judged.returncode == 1
    assert "expected probe gateway result ok, saw fail (" in judged.stderr
    assert "code=404 attempts=3 detail=HTTP status 404)" in judged.stderr


def test_unknown_gateway_address_is_a_failed_probe_not_a_skipped_one(tmp_path: Path, curl: dict[str, str]) -> None:
    collected = probe_gateway(tmp_path, curl, "", "")
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout == (
        "probe=gateway target=none result=fail code=000 attempts=0 detail=Gateway\\ address\\ unknown\n"
    )
    assert not any(Path(curl["FAKE_STATE"]).iterdir())  # nothing was asked
    judged = verification("probes", "agent-1", GATEWAY_EXPECT, collected.stdout)
    assert judged.returncode == 1
    assert (
        "expected probe gateway result ok, saw fail (target=none code=000 attempts=0 detail=Gateway address unknown)"
        in judged.stderr
    )


# --- verify-listening: who listens on the Hubble metrics port ------------------------------------------

SS_FIXTURE = ROOT / "tests" / "verification" / "fixtures" / "ss_cilium_agent_metrics.txt"
# `ss -Hltn "sport = :PORT"` answers after FAKE_LISTEN_AFTER calls (never when unset); `ss -ltnp` prints
# FAKE_SS_OUTPUT.
FAKE_SS = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
if [[ $1 == -Hltn ]]; then
  n=$(( $(cat "$FAKE_STATE/n" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$FAKE_STATE/n"
  if [[ -n ${FAKE_LISTEN_AFTER:-} ]] && (( n >= FAKE_LISTEN_AFTER )); then echo 'LISTEN 0 4096 *:9965 *:*'; fi
  exit 0
fi
grep -v '^#' "$FAKE_SS_OUTPUT"
"""


def listening(tmp_path: Path, wait: int, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "bin").mkdir(parents=True)
    (tmp_path / "state").mkdir()
    executable(tmp_path / "bin" / "ss", FAKE_SS)
    fake = {"FAKE_LOG": str(tmp_path / "log"), "FAKE_STATE": str(tmp_path / "state"), "FAKE_SS_OUTPUT": str(SS_FIXTURE)}
    return run_script(tmp_path, "verify-listening", {"PORT": 9965, "WAIT_SECONDS": wait}, {**fake, **env})


def metrics_verdict(stdout: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [".venv/bin/python", "-m", "verification", "hubble-metrics", "--node", "agent-1", "--expect",
         json.dumps({"port": 9965})],
        input=stdout, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )


def test_the_listening_collector_waits_for_the_port_then_lists_the_sockets(tmp_path: Path) -> None:
    lint(render("verify-listening", {"PORT": 9965}), tmp_path, "verify-listening.sh")
    done = listening(tmp_path / "run", wait=30, FAKE_LISTEN_AFTER="2")
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "log").read_text().splitlines()
    assert log == ["-Hltn sport = :9965", "-Hltn sport = :9965", "-ltnp"]
    assert metrics_verdict(done.stdout).returncode == 0


def test_a_port_nobody_opens_ends_the_wait_and_fails_the_check(tmp_path: Path) -> None:
    clean = ROOT / "tests" / "verification" / "fixtures" / "ss_kpr_agent_clean.txt"
    done = listening(tmp_path, wait=3, FAKE_SS_OUTPUT=str(clean))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "log").read_text().splitlines()[-1] == "-ltnp"
    verdict = metrics_verdict(done.stdout)
    assert verdict.returncode == 1 and "9965" in verdict.stderr


# --- gateway-api-crds: what the cluster has of the Gateway API CRDs ------------------------------------

# kubectl: `get crd ... -o json` prints FAKE_LISTING once FAKE_PRESENT_AFTER calls went by (NotFound before).
FAKE_CRD_KUBECTL = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$FAKE_LOG"
n=$(( $(cat "$FAKE_STATE/n" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$FAKE_STATE/n"
if (( n < ${FAKE_PRESENT_AFTER:-1} )); then
  echo "Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io \"$1\" not found" >&2
  exit 1
fi
cat "$FAKE_LISTING"
"""
CRD_NAMES = "gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io"


def crds(tmp_path: Path, wait_for_all: bool, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "state").mkdir(parents=True)
    kubectl = executable(tmp_path / "kubectl", FAKE_CRD_KUBECTL)
    listing = tmp_path / "listing.json"
    listing.write_text(json.dumps({"kind": "List", "items": []}))
    params: dict[str, ScriptValue] = {"CRD_NAMES": CRD_NAMES, "WAIT_FOR_ALL": str(wait_for_all).lower(),
                                      "WAIT_SECONDS": 30, "KUBECTL": str(kubectl), "PROGRESS_SECONDS": 60}
    fake = {"FAKE_LOG": str(tmp_path / "log"), "FAKE_STATE": str(tmp_path / "state"), "FAKE_LISTING": str(listing)}
    return run_script(tmp_path, "gateway-api-crds", params, {**fake, **env})


def test_the_crd_reader_lints_and_asks_once_when_the_program_makes_them(tmp_path: Path) -> None:
    lint(render("gateway-api-crds", {"CRD_NAMES": CRD_NAMES, "WAIT_FOR_ALL": "true"}), tmp_path, "crds.sh")
    done = crds(tmp_path / "run", wait_for_all=False, FAKE_PRESENT_AFTER="5")
    assert done.returncode == 0, done.stderr
    # Absent CRDs are an answer, not a wait: kubectl's NotFound is printed for the verdict.
    assert "NotFound" in done.stdout
    assert (tmp_path / "run" / "log").read_text().splitlines() == [f"get crd {CRD_NAMES} -o json"]


def test_the_crd_reader_waits_for_crds_another_installer_makes(tmp_path: Path) -> None:
    done = crds(tmp_path, wait_for_all=True, FAKE_PRESENT_AFTER="3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"kind": "List", "items": []}
    calls = (tmp_path / "log").read_text().splitlines()
    assert calls == [f"get crd {CRD_NAMES}"] * 3 + [f"get crd {CRD_NAMES} -o json"]
