"""Hubble: the agents' Hubble server and metrics, the relay, the UI.

Four checks on the machinery of :mod:`verification.expectations` (they join
its ``CHECKS`` when this module is imported):

- ``hubble-server`` (per node): the ``Hubble:`` line of the agent's
  ``cilium-dbg status`` (``cilium status`` up to 1.14), or ``hubble status``
  run in the agent container against its local socket;
- ``hubble-metrics`` (per node): ``ss -ltnp``: the agent holds the Hubble
  metrics port (9965);
- ``hubble-relay`` (cluster): ``hubble status --server <relay>:80``, optionally
  followed by ``hubble observe --server <relay>:80 --last 1 -o jsonpb``: the
  relay answers, reaches every node and serves flows;
- ``hubble-ui`` (cluster): ``kubectl -n kube-system get deployment hubble-ui -o json``:
  every replica ready.

Formats, from the Cilium sources:

- ``pkg/client/client.go`` ``FormatStatusResponse`` (1.13.18 to 1.20.0) writes
  ``Hubble:\\t<state>[ <msg>]\\t<Current/Max Flows: c/m (p%), Flows/s: r>\\tMetrics: <state>``
  through a tabwriter; the state is ``Ok``, ``Warning``, ``Failure`` or ``Disabled``
  (``Disabled`` alone when the agent runs without Hubble). From 1.18 the metrics
  part is ``Metrics: <state>[ (<msg>)]`` and reports the metrics server's own state;
  before, ``Ok`` means a metrics server address is configured.
- ``hubble status`` (``hubble/cmd/status/status.go`` and ``hubble/pkg/printer``,
  1.19.6; the same lines in the hubble CLI the 1.13-1.15 agent images download):
  ``Healthcheck (via <target>): Ok``, ``Current/Max Flows: c/m (p%)`` (numbers
  grouped by ``,`` from 1.16's CLI), ``Flows/s: r``, through the relay also
  ``Connected Nodes: n/total`` and ``Unavailable Nodes: k`` with ``  - <node>`` lines.
- ``hubble observe -o jsonpb``: one ``GetFlowsResponse`` a line, ``{"flow": {...},
  "node_name": ..., "time": ...}``.

Every agent image carries the hubble CLI (``/usr/bin/hubble``, with
``HUBBLE_SERVER=unix:///var/run/cilium/hubble.sock``): downloaded by
``images/cilium/download-hubble.sh`` in 1.13-1.15, built from the in-tree
``hubble/`` in 1.16 and later (``images/cilium/Dockerfile``, ``Makefile``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from verification import parsers
from verification.expectations import (
    CHECKS,
    NODE,
    Check,
    Expectations,
    Figures,
    JsonValue,
    KeySpec,
    Problem,
    Verdict,
    _bool,
    _int,
    _is_bool,
    _is_int,
    _str,
)
from verification.kube_objects import NotFound, as_number, as_object, as_objects, as_text, quote, read_kube_object

HUBBLE_STATES = ("Ok", "Warning", "Failure", "Disabled")
METRICS_PORT = 9965
CILIUM_AGENT = "cilium-agent"

_FIELD_SEPARATOR = re.compile(r"\t+| {2,}")
_FLOWS = re.compile(r"Current/Max Flows:\s*(?P<current>[\d,]+)/(?P<max>[\d,]+)")
_RATE = re.compile(r"Flows/s:\s*(?P<rate>[\d.]+|N/A)")
_METRICS = re.compile(r"Metrics:\s*(?P<state>\w+)(?:\s*\((?P<msg>.*)\))?")
_HEALTHCHECK = re.compile(r"^Healthcheck \(via (?P<target>.*)\):\s*(?P<status>.*?)\s*$")
_CONNECTED = re.compile(r"^Connected Nodes:\s*(?P<connected>\d+)(?:/(?P<total>\d+))?\s*$")
_UNAVAILABLE = re.compile(r"^Unavailable Nodes:\s*(?P<count>\d+)\s*$")
_UNAVAILABLE_NODE = re.compile(r"^\s+-\s+(?P<node>\S.*?)\s*$")


def _count(text: str | None) -> int | None:
    """``"16,380"`` -> 16380 (hubble groups digits by commas)."""
    return int(text.replace(",", "")) if text else None


def _rate(text: str | None) -> float | None:
    if not text or text == "N/A":
        return None
    return float(text)


# --------------------------------------------------------------------------
# hubble-server
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class HubbleServer:
    """The agent's Hubble server, from its ``Hubble:`` status line or from ``hubble status`` on its socket."""

    source: str | None  # "cilium status", "hubble status" or None (neither found)
    state: str | None  # Ok, Warning, Failure, Disabled (the healthcheck's status for hubble status)
    message: str | None
    current_flows: int | None
    max_flows: int | None
    flows_per_second: float | None
    metrics: str | None  # Ok, Warning, Failure, Disabled; None when not printed
    metrics_message: str | None
    first_line: str | None


def _first_line(text: str) -> str | None:
    return next((quote(line) for line in text.splitlines() if line.strip()), None)


def parse_hubble_line(value: str) -> tuple[str | None, str | None, str, str | None, str | None]:
    """The value of ``Hubble:`` -> (state, message, observer text, metrics state, metrics message)."""
    fields = [part.strip() for part in _FIELD_SEPARATOR.split(value.strip()) if part.strip()]
    if not fields:
        return None, None, "", None, None
    state, _, message = fields[0].partition(" ")
    observer = " ".join(part for part in fields[1:] if not part.startswith("Metrics:"))
    metrics = _METRICS.search(value)
    return (
        state,
        message.strip() or None,
        observer,
        metrics["state"] if metrics else None,
        metrics["msg"] if metrics and metrics["msg"] else None,
    )


def parse_hubble_server(text: str) -> HubbleServer:
    """``cilium-dbg status`` (any verbosity, 1.13-1.20) or ``hubble status`` against the agent's socket."""
    top, _ = parsers._status_sections(text)
    line = top.get("Hubble")
    if line is not None:
        state, message, observer, metrics, metrics_message = parse_hubble_line(line)
        flows, rate = _FLOWS.search(observer), _RATE.search(observer)
        return HubbleServer(
            source="cilium status",
            state=state,
            message=message,
            current_flows=_count(flows["current"]) if flows else None,
            max_flows=_count(flows["max"]) if flows else None,
            flows_per_second=_rate(rate["rate"]) if rate else None,
            metrics=metrics,
            metrics_message=metrics_message,
            first_line=_first_line(text),
        )
    status = parse_hubble_status(text)
    if status.healthcheck is not None:
        return HubbleServer(
            source="hubble status",
            state=status.healthcheck,
            message=None,
            current_flows=status.current_flows,
            max_flows=status.max_flows,
            flows_per_second=status.flows_per_second,
            metrics=None,
            metrics_message=None,
            first_line=status.first_line,
        )
    return HubbleServer(None, None, None, None, None, None, None, None, _first_line(text))


HUBBLE_SERVER_KEYS: dict[str, KeySpec] = {
    "enabled": KeySpec("true (Hubble: Ok) | false (Hubble: Disabled)", _is_bool),
    "metrics": KeySpec(
        "true (Metrics: Ok) | false (Metrics: Disabled or not printed); cilium status output only", _is_bool
    ),
}

_SERVER_FIX = (
    f"the agent says why in its log (its pod: `k3s kubectl -n kube-system get pod -l k8s-app=cilium "
    f"--field-selector spec.nodeName={NODE}`; `k3s kubectl -n kube-system logs -c cilium-agent <pod> | grep -i "
    "hubble`); the Hubble server starts with the agent when hubble.enabled=true (features.hubble): delete that "
    "pod once the cause is fixed"
)
_SERVER_OFF_FIX = (
    "the rendered values turn Hubble off (hubble.enabled=false): the agents pick it up when they restart "
    "(rollOutCiliumPods restarts them on a ConfigMap change); restart the agent pod on {node}"
)
_METRICS_FIX = (
    "the chart sets hubble-metrics-server only when hubble.metrics.enabled is a non-empty list (stack key "
    "hubble.metrics); a Failure names its cause, e.g. the port held by another process: free port "
    f"{METRICS_PORT} and restart the agent pod on {NODE}"
)


def _server_figures(server: HubbleServer) -> Figures:
    return {
        "source": server.source,
        "state": server.state,
        "message": server.message,
        "currentFlows": server.current_flows,
        "maxFlows": server.max_flows,
        "flowsPerSecond": server.flows_per_second,
        "metrics": server.metrics,
        "metricsMessage": server.metrics_message,
    }


def _described(state: str | None, message: str | None) -> str | None:
    if state is None:
        return None
    return f"{state} ({message})" if message else state


def evaluate_hubble_server(text: str, expect: Expectations) -> Verdict:
    server = parse_hubble_server(text)
    verdict = Verdict(figures=_server_figures(server))
    if server.source is None:
        verdict.add(
            Problem(
                "agent status output",
                "with a 'Hubble:' line (cilium-dbg status) or 'Healthcheck (via ...)' (hubble status)",
                server.first_line,
            )
        )
        return verdict
    enabled = _bool(expect, "enabled")
    seen = _described(server.state, server.message)
    if enabled is True and (server.state or "").lower() != "ok":
        fix = _SERVER_FIX
        if (server.state or "").lower() == "disabled":
            fix = (
                "the agent runs without Hubble although the values turn it on: check that the release has "
                "hubble.enabled=true (`k3s kubectl -n kube-system get configmap cilium-config -o "
                "jsonpath='{.data.enable-hubble}'`) and restart the agent pod on {node}"
            )
        verdict.add(Problem("Hubble server", "Ok", seen, fix))
    if enabled is False and (server.state or "").lower() != "disabled":
        verdict.add(Problem("Hubble server", "Disabled", seen, _SERVER_OFF_FIX))
    metrics = _bool(expect, "metrics")
    if metrics is not None and server.source == "cilium status":
        metrics_seen = _described(server.metrics, server.metrics_message)
        if metrics and (server.metrics or "").lower() != "ok":
            verdict.add(Problem("Hubble metrics server", "Ok", metrics_seen, _METRICS_FIX))
        if not metrics and server.metrics is not None and server.metrics.lower() != "disabled":
            verdict.add(
                Problem(
                    "Hubble metrics server",
                    "Disabled",
                    metrics_seen,
                    "the values no longer list metrics: restart the agent pod on {node} so it reads its ConfigMap",
                )
            )
    elif metrics is True:
        verdict.add(
            Problem(
                "Hubble metrics state",
                "reported (the 'Hubble:' line of cilium-dbg status)",
                "hubble status output, which does not report the metrics server",
            )
        )
    return verdict


# --------------------------------------------------------------------------
# hubble-metrics
# --------------------------------------------------------------------------

HUBBLE_METRICS_KEYS: dict[str, KeySpec] = {
    "port": KeySpec(f"the Hubble metrics port the agent must hold (default {METRICS_PORT})", _is_int),
}


def evaluate_hubble_metrics(text: str, expect: Expectations) -> Verdict:
    port = _int(expect, "port") or METRICS_PORT
    listing = parsers.parse_ss_listening(text)
    listeners = listing.on_port(port)
    verdict = Verdict(
        figures={
            "port": port,
            "listeners": [listener.describe() for listener in listeners],
            "listening": len(listing.listeners),
        }
    )
    item = f"Hubble metrics port {port}"
    if not listing.listeners:
        verdict.add(Problem("listening sockets (ss -ltnp)", "listed", _first_line(text)))
        return verdict
    if not listeners:
        verdict.add(
            Problem(
                item,
                f"held by {CILIUM_AGENT}",
                f"nothing listening on port {port}",
                "the agent serves Hubble metrics only with a non-empty hubble.metrics.enabled (stack key "
                "hubble.metrics) and after it restarted with it: restart the agent pod on {node}; its log says "
                "why it could not listen",
            )
        )
        return verdict
    held = [listener for listener in listeners if any(owner.name == CILIUM_AGENT for owner in listener.owners)]
    if not held:
        seen = "; ".join(listener.describe() for listener in listeners)
        verdict.add(
            Problem(
                item,
                f"held by {CILIUM_AGENT}",
                seen,
                f"another process holds port {port} on {NODE}: stop it or move it off the port, then restart "
                "the agent pod there (run ss as root: without it the Process column is empty)",
            )
        )
    return verdict


# --------------------------------------------------------------------------
# hubble-relay
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class HubbleStatus:
    """``hubble status`` (compact) and the flows of a following ``hubble observe -o jsonpb``."""

    target: str | None
    healthcheck: str | None
    current_flows: int | None
    max_flows: int | None
    flows_per_second: float | None
    connected_nodes: int | None
    total_nodes: int | None
    unavailable_nodes: int | None
    unavailable: tuple[str, ...]
    flows: int
    flow_nodes: tuple[str, ...]
    first_line: str | None


def _flow_line(line: str) -> dict[str, JsonValue] | None:
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        loaded: JsonValue = json.loads(stripped)
    except json.JSONDecodeError:
        return None
    document = as_object(loaded)
    flow = as_object(document.get("flow"))
    return flow if flow else None


def parse_hubble_status(text: str) -> HubbleStatus:
    target = healthcheck = None
    current = maximum = connected = total = unavailable_count = None
    rate: float | None = None
    unavailable: list[str] = []
    flow_nodes: list[str] = []
    flows = 0
    in_unavailable = False
    for line in text.splitlines():
        flow = _flow_line(line)
        if flow is not None:
            flows += 1
            node = as_text(flow.get("node_name"))
            if node and node not in flow_nodes:
                flow_nodes.append(node)
            in_unavailable = False
            continue
        if in_unavailable and (listed := _UNAVAILABLE_NODE.match(line)):
            unavailable.append(listed["node"])
            continue
        in_unavailable = False
        stripped = line.strip()
        if (match := _HEALTHCHECK.match(stripped)) and healthcheck is None:
            target, healthcheck = match["target"], match["status"]
        elif (match := _FLOWS.match(stripped)) and current is None:
            current, maximum = _count(match["current"]), _count(match["max"])
        elif (match := _RATE.match(stripped)) and rate is None:
            rate = _rate(match["rate"])
        elif (match := _CONNECTED.match(stripped)) and connected is None:
            connected = int(match["connected"])
            total = int(match["total"]) if match["total"] else None
        elif (match := _UNAVAILABLE.match(stripped)) and unavailable_count is None:
            unavailable_count = int(match["count"])
            in_unavailable = True
    return HubbleStatus(
        target=target,
        healthcheck=healthcheck,
        current_flows=current,
        max_flows=maximum,
        flows_per_second=rate,
        connected_nodes=connected,
        total_nodes=total,
        unavailable_nodes=unavailable_count,
        unavailable=tuple(unavailable),
        flows=flows,
        flow_nodes=tuple(flow_nodes),
        first_line=_first_line(text),
    )


HUBBLE_RELAY_KEYS: dict[str, KeySpec] = {
    "connectedNodes": KeySpec("the node count: Connected Nodes must be <n>/<n>", _is_int),
    "flows": KeySpec("true: hubble observe through the relay printed at least one flow", _is_bool),
}

_RELAY_FIX = (
    "the hubble-relay Deployment in kube-system must be ready (`k3s kubectl -n kube-system get pods -l "
    "k8s-app=hubble-relay`; its log names what it cannot reach) and its Service hubble-relay must answer on port 80"
)
_PEERS_FIX = (
    "the relay reaches each agent's Hubble server on port 4244 through the hubble-peer Service, with the TLS "
    "certificates the hubble-generate-certs job made: open 4244/tcp between the nodes, check that the agents of the "
    "unavailable nodes run with Hubble (hubble-server check) and that the secrets hubble-server-certs and "
    "hubble-relay-client-certs exist in kube-system"
)


def _relay_figures(status: HubbleStatus) -> Figures:
    return {
        "target": status.target,
        "healthcheck": status.healthcheck,
        "currentFlows": status.current_flows,
        "maxFlows": status.max_flows,
        "flowsPerSecond": status.flows_per_second,
        "connectedNodes": status.connected_nodes,
        "totalNodes": status.total_nodes,
        "unavailableNodes": list(status.unavailable),
        "flows": status.flows,
        "flowNodes": list(status.flow_nodes),
    }


def _relay_problems(status: HubbleStatus, expect: Expectations) -> Iterable[Problem]:
    if status.healthcheck is None:
        yield Problem("Hubble Relay health check", "Ok", status.first_line, _RELAY_FIX)
        return
    if status.healthcheck.lower() != "ok":
        yield Problem(f"Hubble Relay health check (via {status.target})", "Ok", status.healthcheck, _RELAY_FIX)
        return
    wanted = _int(expect, "connectedNodes")
    if wanted is not None:
        label = f"{wanted}/{wanted}"
        if status.connected_nodes is None:
            yield Problem(
                "Hubble Relay connected nodes",
                label,
                f"no 'Connected Nodes' line (via {status.target}): that is one agent's server, not the relay",
                "ask the relay: hubble status --server <hubble-relay Service address>:80",
            )
        elif status.connected_nodes != wanted or (status.total_nodes not in (None, wanted)):
            seen = (
                f"{status.connected_nodes}/{status.total_nodes}" if status.total_nodes else str(status.connected_nodes)
            )
            if status.unavailable:
                seen += f" (unavailable: {', '.join(status.unavailable)})"
            elif status.unavailable_nodes:
                seen += f" ({status.unavailable_nodes} unavailable)"
            yield Problem("Hubble Relay connected nodes", label, seen, _PEERS_FIX)
    if _bool(expect, "flows") and status.flows == 0:
        yield Problem(
            "flows read through Hubble Relay",
            "at least one (hubble observe --last 1 -o jsonpb)",
            "none",
            "the relay answers but served no flow: the collector must run `hubble observe --server "
            "<relay>:80 --last 1 -o jsonpb` after `hubble status`; if it did, the agents observed no traffic yet "
            "(hubble-server check) or the relay could not read their buffers (its log)",
        )


def evaluate_hubble_relay(text: str, expect: Expectations) -> Verdict:
    status = parse_hubble_status(text)
    verdict = Verdict(figures=_relay_figures(status))
    verdict.problems.extend(_relay_problems(status, expect))
    return verdict


# --------------------------------------------------------------------------
# hubble-ui (any Deployment)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    reference: str | None
    generation: int | None
    replicas: int | None
    observed_generation: int | None
    ready: int
    available: int
    updated: int
    unavailable: int
    conditions: tuple[tuple[str, str | None, str | None, str | None], ...]  # type, status, reason, message


def parse_deployment(text: str) -> Deployment | NotFound:
    """``kubectl get deployment -n NS NAME -o json``; kubectl's error text is a :class:`NotFound`."""
    document = read_kube_object(text, "Deployment")
    if isinstance(document, NotFound):
        return document
    metadata, spec, status = (as_object(document.get(key)) for key in ("metadata", "spec", "status"))
    namespace, name = as_text(metadata.get("namespace")), as_text(metadata.get("name"))
    replicas = as_number(spec.get("replicas"))
    return Deployment(
        reference=f"{namespace}/{name}" if namespace and name else name,
        generation=as_number(metadata.get("generation")),
        # The API server defaults spec.replicas to 1.
        replicas=1 if replicas is None else replicas,
        observed_generation=as_number(status.get("observedGeneration")),
        ready=as_number(status.get("readyReplicas")) or 0,
        available=as_number(status.get("availableReplicas")) or 0,
        updated=as_number(status.get("updatedReplicas")) or 0,
        unavailable=as_number(status.get("unavailableReplicas")) or 0,
        conditions=tuple(
            (
                kind,
                as_text(condition.get("status")),
                as_text(condition.get("reason")),
                as_text(condition.get("message")),
            )
            for condition in as_objects(status.get("conditions"))
            if (kind := as_text(condition.get("type")))
        ),
    )


def is_reference(value: JsonValue) -> bool:
    if not isinstance(value, str):
        return False
    namespace, slash, name = value.partition("/")
    return bool(slash and namespace.strip() and name.strip() and "/" not in name)


HUBBLE_UI_KEYS: dict[str, KeySpec] = {
    "deployment": KeySpec('"namespace/name" of the Deployment (named in problems)', is_reference),
    "minReady": KeySpec("ready replicas it needs at least (default: all of spec.replicas, at least 1)", _is_int),
}


def _deployment_figures(deployment: Deployment | None) -> Figures:
    if deployment is None:
        return {"replicas": None, "ready": 0, "available": 0, "updated": 0, "conditions": {}}
    return {
        "replicas": deployment.replicas,
        "ready": deployment.ready,
        "available": deployment.available,
        "updated": deployment.updated,
        "unavailable": deployment.unavailable,
        "generation": deployment.generation,
        "observedGeneration": deployment.observed_generation,
        "conditions": {
            kind: {"status": status, "reason": reason, "message": message}
            for kind, status, reason, message in deployment.conditions
        },
    }


def _ui_fix(label: str) -> str:
    name = label.rpartition("/")[2]
    return (
        f"`k3s kubectl -n kube-system describe deployment {name}` and its pods' events say why (an image that "
        "cannot be pulled, e.g. an air-gapped registry without hubble-ui/hubble-ui-backend, or no node with room); "
        "the UI's backend needs Hubble Relay"
    )


def evaluate_hubble_ui(text: str, expect: Expectations) -> Verdict:
    wanted = _str(expect, "deployment")
    parsed = parse_deployment(text)
    label = wanted or "(the one asked for)"
    if isinstance(parsed, NotFound):
        verdict = Verdict(figures=_deployment_figures(None))
        verdict.add(
            Problem(
                f"deployment {label}",
                "to exist",
                f"not found: {parsed.text}",
                "the chart renders it with hubble.ui.enabled=true (stack key hubble.ui) and Hubble on",
            )
        )
        return verdict
    verdict = Verdict(figures=_deployment_figures(parsed))
    label = wanted or parsed.reference or "(unnamed)"
    if wanted is not None and parsed.reference is not None and parsed.reference != wanted:
        verdict.add(Problem(f"deployment {wanted}", "in kubectl's output", f"deployment {parsed.reference}"))
        return verdict
    need = _int(expect, "minReady")
    if need is None:
        need = max(parsed.replicas or 0, 1)
    if parsed.ready < need:
        unavailable = [
            f"{kind} {status}: {reason or '?'}" + (f" ({message})" if message else "")
            for kind, status, reason, message in parsed.conditions
            if status != "True"
        ]
        seen = f"{parsed.ready}/{parsed.replicas} ready"
        if unavailable:
            seen += "; " + "; ".join(unavailable)
        verdict.add(Problem(f"deployment {label} ready replicas", f">= {need}", seen, _ui_fix(label)))
    elif (
        parsed.generation is not None
        and parsed.observed_generation is not None
        and parsed.observed_generation < parsed.generation
    ):
        verdict.add(
            Problem(
                f"deployment {label} rollout",
                f"observed generation {parsed.generation}",
                f"{parsed.observed_generation} (the controller has not seen the latest spec yet)",
                "collect again once the rollout is done (`k3s kubectl -n kube-system rollout status deployment "
                f"{label.rpartition('/')[2]}`)",
            )
        )
    return verdict


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------

HUBBLE_CHECKS = (
    Check(
        "hubble-server",
        "cilium-dbg status (cilium status on <= 1.14), or hubble status in the agent container",
        HUBBLE_SERVER_KEYS,
        evaluate_hubble_server,
    ),
    Check("hubble-metrics", "ss -ltnp (as root)", HUBBLE_METRICS_KEYS, evaluate_hubble_metrics),
    Check(
        "hubble-relay",
        "hubble status --server <relay>:80, then hubble observe --server <relay>:80 --last 1 -o jsonpb",
        HUBBLE_RELAY_KEYS,
        evaluate_hubble_relay,
    ),
    Check(
        "hubble-ui",
        "kubectl -n kube-system get deployment hubble-ui -o json (or kubectl's error)",
        HUBBLE_UI_KEYS,
        evaluate_hubble_ui,
    ),
)

CHECKS.update((check.name, check) for check in HUBBLE_CHECKS)
