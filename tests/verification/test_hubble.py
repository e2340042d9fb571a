"""hubble-server, hubble-metrics, hubble-relay, hubble-ui: the parsers on every sample and a failing case per problem.

Inputs are the samples in fixtures/hubble (its README.md says where each came from) and a few of
fixtures/ (agent status, ss listings); every expected value below is read off those files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from verification.expectations import CHECKS, ExpectationError, Verdict
from verification.hubble import (
    HUBBLE_CHECKS,
    parse_deployment,
    parse_hubble_line,
    parse_hubble_server,
    parse_hubble_status,
)
from verification.kube_objects import NotFound

FIXTURES = Path(__file__).parent / "fixtures"
HUBBLE = FIXTURES / "hubble"
NODE = "agent-1"


def sample(name: str) -> str:
    return (HUBBLE / name).read_text()


def shared(name: str) -> str:
    """A fixture of fixtures/ without its header (the leading ``# `` lines)."""
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def run(check: str, text: str, expect: dict[str, Any]) -> Verdict:
    return CHECKS[check].run(text, expect)


def messages(verdict: Verdict, check: str) -> list[str]:
    return [problem.message(NODE, check) for problem in verdict.problems]


def test_the_checks_are_registered() -> None:
    assert {check.name for check in HUBBLE_CHECKS} == {"hubble-server", "hubble-metrics", "hubble-relay", "hubble-ui"}
    assert all(CHECKS[check.name] is check for check in HUBBLE_CHECKS)


# --- hubble-server ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "state", "current", "maximum", "rate", "metrics"),
    [
        ("hubble/cilium_dbg_status_1.19_doc.txt", "Ok", 2542, 4096, 164.21, "Disabled"),
        ("hubble/cilium_status_1.13_doc.txt", "Ok", 2542, 4096, 164.21, "Disabled"),
        ("hubble/cilium_status_hubble_line_doc.txt", "Ok", 4095, 4095, 164.21, "Disabled"),
        ("hubble/cilium_status_metrics_ok_issue.txt", "Ok", 4096, 4096, 21.16, "Ok"),
        ("hubble/cilium_dbg_status_metrics_failure_constructed.txt", "Ok", 4095, 4095, 41.07, "Failure"),
        ("hubble/cilium_dbg_status_hubble_disabled_gke_doc.txt", "Disabled", None, None, None, None),
        ("hubble/cilium_status_hubble_warning_issue.txt", "Warning", None, None, None, None),
        ("agent_status_1.13_kpr_strict_dsr.txt", "Ok", 4095, 4095, 12.34, "Disabled"),
        ("agent_status_1.13_kpr_disabled.txt", "Ok", 1874, 4095, 3.11, "Disabled"),
        ("agent_status_1.16_kpr_tunnel.txt", "Ok", 4095, 4095, 5.62, "Disabled"),
        ("agent_status_1.19_extreme.txt", "Ok", 4095, 4095, 41.07, "Disabled"),
    ],
)
def test_the_hubble_line_of_every_status_sample(
    name: str, state: str, current: int | None, maximum: int | None, rate: float | None, metrics: str | None
) -> None:
    server = parse_hubble_server(shared(name))
    assert server.source == "cilium status"
    assert (server.state, server.current_flows, server.max_flows, server.flows_per_second, server.metrics) == (
        state, current, maximum, rate, metrics
    )


def test_state_and_metrics_messages_are_kept() -> None:
    warning = parse_hubble_server(sample("cilium_status_hubble_warning_issue.txt"))
    assert warning.message == "Server not initialized"
    failure = parse_hubble_server(sample("cilium_dbg_status_metrics_failure_constructed.txt"))
    assert failure.metrics_message == (
        "Failed serving HTTP metrics: listen tcp :9965: bind: address already in use"
    )


def test_a_tab_separated_hubble_line_parses_like_the_aligned_one() -> None:
    """FormatStatusResponse writes the fields tab-separated before the tabwriter aligns them."""
    assert parse_hubble_line("Ok\tCurrent/Max Flows: 1/4095 (0.02%), Flows/s: 0.50\tMetrics: Ok") == (
        "Ok", None, "Current/Max Flows: 1/4095 (0.02%), Flows/s: 0.50", "Ok", None
    )


def test_hubble_status_on_the_local_socket_counts_as_the_server() -> None:
    server = parse_hubble_server(sample("hubble_status_local_socket_doc.txt"))
    assert (server.source, server.state, server.current_flows, server.max_flows, server.flows_per_second) == (
        "hubble status", "Ok", 4095, 4095, 164.21
    )
    assert run("hubble-server", sample("hubble_status_local_socket_doc.txt"), {"enabled": True}).passed


@pytest.mark.parametrize(
    "name",
    ["hubble/cilium_dbg_status_1.19_doc.txt", "hubble/cilium_status_1.13_doc.txt", "agent_status_1.19_extreme.txt"],
)
def test_hubble_on_without_metrics_passes(name: str) -> None:
    verdict = run("hubble-server", shared(name), {"enabled": True, "metrics": False})
    assert verdict.passed, verdict.problems
    assert verdict.figures["state"] == "Ok" and verdict.figures["metrics"] == "Disabled"


def test_metrics_ok_passes() -> None:
    assert run("hubble-server", sample("cilium_status_metrics_ok_issue.txt"), {"enabled": True, "metrics": True}).passed


def test_hubble_disabled_is_a_problem_when_it_should_run_and_passes_when_it_should_not() -> None:
    text = sample("cilium_dbg_status_hubble_disabled_gke_doc.txt")
    verdict = run("hubble-server", text, {"enabled": True})
    assert messages(verdict, "hubble-server") == [
        f"node {NODE}: check hubble-server: expected Hubble server Ok, saw Disabled; fix: the agent runs without "
        "Hubble although the values turn it on: check that the release has hubble.enabled=true (`k3s kubectl -n "
        "kube-system get configmap cilium-config -o jsonpath='{.data.enable-hubble}'`) and restart the agent pod "
        f"on {NODE}"
    ]
    assert run("hubble-server", text, {"enabled": False}).passed


def test_hubble_running_when_it_should_be_off() -> None:
    verdict = run("hubble-server", sample("cilium_status_hubble_line_doc.txt"), {"enabled": False})
    [problem] = verdict.problems
    assert (problem.item, problem.expected, problem.seen) == ("Hubble server", "Disabled", "Ok")
    assert problem.fix is not None and "hubble.enabled=false" in problem.fix


def test_a_warning_names_its_message_and_the_agents_log() -> None:
    verdict = run("hubble-server", sample("cilium_status_hubble_warning_issue.txt"), {"enabled": True})
    [message] = messages(verdict, "hubble-server")
    assert "expected Hubble server Ok, saw Warning (Server not initialized)" in message
    assert f"--field-selector spec.nodeName={NODE}" in message


def test_metrics_expected_but_disabled() -> None:
    verdict = run("hubble-server", sample("cilium_status_hubble_line_doc.txt"), {"enabled": True, "metrics": True})
    [problem] = verdict.problems
    assert (problem.item, problem.expected, problem.seen) == ("Hubble metrics server", "Ok", "Disabled")


def test_metrics_failure_names_its_cause() -> None:
    text = sample("cilium_dbg_status_metrics_failure_constructed.txt")
    [problem] = run("hubble-server", text, {"enabled": True, "metrics": True}).problems
    assert problem.seen == (
        "Failure (Failed serving HTTP metrics: listen tcp :9965: bind: address already in use)"
    )
    assert problem.fix is not None and "free port 9965" in problem.fix


def test_metrics_still_served_after_they_were_switched_off() -> None:
    text = sample("cilium_status_metrics_ok_issue.txt")
    [problem] = run("hubble-server", text, {"enabled": True, "metrics": False}).problems
    assert (problem.item, problem.expected, problem.seen) == ("Hubble metrics server", "Disabled", "Ok")


def test_metrics_cannot_be_judged_from_hubble_status() -> None:
    [problem] = run("hubble-server", sample("hubble_status_local_socket_doc.txt"), {"metrics": True}).problems
    assert problem.item == "Hubble metrics state"


def test_output_without_a_hubble_line() -> None:
    text = "Error: Get \"http:///var/run/cilium/cilium.sock/v1/healthz\": dial unix: connect: no such file\n"
    verdict = run("hubble-server", text, {"enabled": True})
    [problem] = verdict.problems
    assert problem.seen is not None and problem.seen.startswith("Error: Get")
    assert verdict.figures["source"] is None


# --- hubble-metrics -----------------------------------------------------------------------------------


def test_the_agent_holding_9965_passes() -> None:
    verdict = run("hubble-metrics", shared("ss_cilium_agent_metrics.txt"), {"port": 9965})
    assert verdict.passed, verdict.problems
    assert verdict.figures["listeners"] == ["*:9965 held by cilium-agent (pid 7689)"]


def test_nothing_on_9965() -> None:
    [problem] = run("hubble-metrics", shared("ss_kpr_agent_clean.txt"), {}).problems
    assert (problem.item, problem.seen) == ("Hubble metrics port 9965", "nothing listening on port 9965")


def test_another_process_on_9965() -> None:
    agent, other = '("cilium-agent",pid=7689,fd=46)', '("node_exporter",pid=512,fd=3)'
    text = shared("ss_cilium_agent_metrics.txt").replace(agent, other)
    [problem] = run("hubble-metrics", text, {}).problems
    assert problem.seen == "*:9965 held by node_exporter (pid 512)"
    assert problem.fix is not None and problem.fix.startswith("another process holds port 9965 on {node}")


def test_an_ss_listing_without_sockets() -> None:
    [problem] = run("hubble-metrics", "ss: command not found\n", {}).problems
    assert (problem.item, problem.seen) == ("listening sockets (ss -ltnp)", "ss: command not found")


# --- hubble-relay -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "target", "current", "maximum", "rate", "connected", "total"),
    [
        ("hubble_status_relay_setup_doc.txt", "127.0.0.1:4245", 11917, 12288, 11.74, 3, 3),
        ("hubble_status_relay_troubleshooting_doc.txt", "127.0.0.1:4245", 16380, 16380, 46.19, 4, 4),
        ("hubble_status_relay_grouped_constructed.txt", "10.43.87.12:80", 2771, 8190, 23.46, 2, 2),
        ("hubble_status_relay_unavailable_constructed.txt", "10.43.87.12:80", 8190, 12285, 31.02, 2, 3),
        ("hubble_status_local_socket_doc.txt", "unix:///var/run/cilium/hubble.sock", 4095, 4095, 164.21, None, None),
    ],
)
def test_hubble_status_samples(
    name: str, target: str, current: int, maximum: int, rate: float, connected: int | None, total: int | None
) -> None:
    status = parse_hubble_status(sample(name))
    assert (status.target, status.healthcheck, status.current_flows, status.max_flows, status.flows_per_second) == (
        target, "Ok", current, maximum, rate
    )
    assert (status.connected_nodes, status.total_nodes) == (connected, total)
    assert status.flows == 0


def test_unavailable_nodes_are_listed() -> None:
    status = parse_hubble_status(sample("hubble_status_relay_unavailable_constructed.txt"))
    assert (status.unavailable_nodes, status.unavailable) == (1, ("default/agent-2",))


def test_flows_following_the_status_are_counted() -> None:
    text = sample("hubble_status_relay_setup_doc.txt") + sample("hubble_flows_jsonpb_export_doc.txt")
    status = parse_hubble_status(text)
    assert (status.flows, status.flow_nodes) == (2, ("kind-kind/kind-worker",))
    verdict = run("hubble-relay", text, {"connectedNodes": 3, "flows": True})
    assert verdict.passed, verdict.problems
    assert verdict.figures["flows"] == 2


def test_a_relay_missing_a_node() -> None:
    text = sample("hubble_status_relay_unavailable_constructed.txt") + sample("hubble_flows_jsonpb_export_doc.txt")
    [problem] = run("hubble-relay", text, {"connectedNodes": 3, "flows": True}).problems
    assert (problem.item, problem.expected, problem.seen) == (
        "Hubble Relay connected nodes", "3/3", "2/3 (unavailable: default/agent-2)"
    )
    assert problem.fix is not None and "4244/tcp" in problem.fix


def test_a_relay_reaching_fewer_nodes_than_the_stack_has() -> None:
    [problem] = run("hubble-relay", sample("hubble_status_relay_setup_doc.txt"), {"connectedNodes": 4}).problems
    assert (problem.expected, problem.seen) == ("4/4", "3/3")


def test_the_agents_socket_is_not_the_relay() -> None:
    [problem] = run("hubble-relay", sample("hubble_status_local_socket_doc.txt"), {"connectedNodes": 3}).problems
    assert problem.seen is not None and "unix:///var/run/cilium/hubble.sock" in problem.seen


def test_a_relay_not_serving() -> None:
    [problem] = run("hubble-relay", sample("hubble_status_relay_unhealthy_constructed.txt"),
                    {"connectedNodes": 3, "flows": True}).problems
    assert (problem.item, problem.seen) == (
        "Hubble Relay health check (via 10.43.87.12:80)", "Unavailable: NOT_SERVING"
    )


def test_no_health_check_line() -> None:
    text = "failed to connect to '10.43.87.12:80': context deadline exceeded\n"
    [problem] = run("hubble-relay", text, {"connectedNodes": 3}).problems
    assert (problem.item, problem.seen) == ("Hubble Relay health check", text.strip())


def test_no_flow_through_the_relay() -> None:
    [problem] = run("hubble-relay", sample("hubble_status_relay_setup_doc.txt"),
                    {"connectedNodes": 3, "flows": True}).problems
    assert (problem.item, problem.seen) == ("flows read through Hubble Relay", "none")


# --- hubble-ui ----------------------------------------------------------------------------------------

UI = "kube-system/hubble-ui"


def test_the_deployment_samples() -> None:
    ready = parse_deployment(sample("deployment_hubble_ui_ready.json"))
    assert not isinstance(ready, NotFound)
    assert (ready.reference, ready.replicas, ready.ready, ready.available, ready.generation) == (UI, 1, 1, 1, 1)
    bad = parse_deployment(sample("deployment_hubble_ui_unavailable.json"))
    assert not isinstance(bad, NotFound)
    assert (bad.ready, bad.unavailable) == (0, 1)
    missing = parse_deployment(sample("kubectl_deployment_not_found.txt"))
    assert isinstance(missing, NotFound)


def test_a_ready_ui_passes() -> None:
    verdict = run("hubble-ui", sample("deployment_hubble_ui_ready.json"), {"deployment": UI})
    assert verdict.passed, verdict.problems
    conditions: Any = verdict.figures["conditions"]
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"


def test_a_ui_not_ready_names_the_conditions() -> None:
    [problem] = run("hubble-ui", sample("deployment_hubble_ui_unavailable.json"), {"deployment": UI}).problems
    assert (problem.item, problem.expected) == (f"deployment {UI} ready replicas", ">= 1")
    assert problem.seen == (
        "0/1 ready; Available False: MinimumReplicasUnavailable (Deployment does not have minimum availability.); "
        'Progressing False: ProgressDeadlineExceeded (ReplicaSet "hubble-ui-6b9f4c7d58" has timed out progressing.)'
    )


def test_a_missing_ui() -> None:
    [problem] = run("hubble-ui", sample("kubectl_deployment_not_found.txt"), {"deployment": UI}).problems
    assert problem.seen == 'not found: Error from server (NotFound): deployments.apps "hubble-ui" not found'
    assert problem.fix is not None and "hubble.ui" in problem.fix


def test_another_deployment_in_the_output() -> None:
    [problem] = run("hubble-ui", sample("deployment_hubble_ui_ready.json"),
                    {"deployment": "kube-system/hubble-relay"}).problems
    assert problem.seen == f"deployment {UI}"


def test_a_rollout_not_yet_observed() -> None:
    document = json.loads(sample("deployment_hubble_ui_ready.json"))
    document["metadata"]["generation"] = 2
    [problem] = run("hubble-ui", json.dumps(document), {"deployment": UI}).problems
    assert problem.item == f"deployment {UI} rollout"


def test_min_ready() -> None:
    assert not run("hubble-ui", sample("deployment_hubble_ui_ready.json"), {"deployment": UI, "minReady": 2}).passed


# --- expectations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "expect"),
    [
        ("hubble-server", {"enabled": "yes"}),
        ("hubble-server", {"relay": True}),
        ("hubble-metrics", {"port": -1}),
        ("hubble-relay", {"connectedNodes": "3"}),
        ("hubble-ui", {"deployment": "hubble-ui"}),
    ],
)
def test_bad_expectations_are_refused(check: str, expect: dict[str, Any]) -> None:
    with pytest.raises(ExpectationError):
        run(check, "", expect)
