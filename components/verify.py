"""Verification: the checks that prove a deploy, as resources that fail ``pulumi up`` when they do not hold.

Each check of :func:`stacks.checks.planned_checks` is collected, then asserted:

1. the checks of a node (agent status, kube-proxy rules, KPR integrity,
   service list, probes) are collected by one command on the node itself,
   ``<name>-collect-<node>`` (``remote.Command``, ``verify-node.sh``): one SSH
   session per node, whatever the number of checks. It runs each check's own
   collector script in turn (``verify-agent-exec.sh`` asks the local Cilium
   agent container through K3s' crictl, ``verify-iptables.sh``,
   ``verify-kpr-node.sh``, ``verify-probes.sh``) and prints their raw output
   in sections. The
   connectivity test and the benchmark have collectors of their own on the
   first server, ``<name>-<check>-<node>``. A collector fails only when it
   cannot collect anything;
2. an assertion per check, ``<name>-<check>-assert-<node>`` (``local.Command``), that
   runs ``.venv/bin/python -m verification <check> --node <node> --expect '<json>'``
   where Pulumi runs, with the collector's stdout on stdin. Its exit status 1
   fails ``pulumi up`` with one line per unmet expectation naming node,
   check, expected and seen; its stdout (one JSON document) feeds the
   ``verification`` output.

Cluster-wide checks use ``cluster`` for ``<node>`` when they are not about a
node (the benchmark). The smoke workload (nginx, two replicas on two nodes,
and a NodePort Service with a fixed nodePort and ClusterIP) and the
benchmark's netperf client and server live in namespace
``k3s-cilium-verify``, made through the Cilium component's Kubernetes provider.

Re-running: a collector's ``triggers`` hold a hash of the node list, every
node's K3s config and the K3s version, the Cilium version and rendered
values, and its checks' expectations. A change of any of them replaces the
collector (pulumi-command >= 1.0 replaces on a trigger change), so it runs
again. An assertion depends only on its command and its stdin, the section of
the collector's output it judges: it runs again when that output changed
(pulumi-command runs ``create`` again on any input change). A no-op ``pulumi
up`` runs nothing. A failed assertion is not stored, so the
next ``pulumi up`` runs it again, but on the output collected before: after
fixing the cause, re-run the checks by replacing their collector, ``pulumi up
--replace <urn>`` (README "Verification" has the commands).

The assertion runs in the provider's working directory, which Pulumi sets to
the project directory (the one with ``Pulumi.yaml``), so the package is found
there; ``dir`` is the relative ``"."`` and the command holds no absolute path,
so state is the same on every machine. It runs with the project's virtualenv
(``runtime.options.virtualenv`` in Pulumi.yaml), the interpreter that runs
this program, never whatever ``python3`` is first on the PATH (3.9 on RHEL 9
and Debian 11, too old for the package).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from packaging.version import Version
from pulumi_command import local, remote

from components.remote import Script, node_command, script
from components.scripts import ScriptValue, render
from stacks import checks, encryption, gateway_api, hubble, load_balancer, preflight
from stacks.checks import PlannedCheck, Workloads
from stacks.config import ConfigError, Node, StackConfig
from stacks.digest import deployed_state, digest
from stacks.features import Resolved
from stacks.k3s_flags import CONFIG_PATH
from verification.parsers import SECTION_MARK, split_sections

COMPONENT_TYPE = "k3s-cilium:index:Verification"
# The ``--node`` of checks about the whole cluster, and their key in the output.
CLUSTER = "cluster"
# Where the assertion runs: relative, so the provider's working directory (the project directory).
ASSERT_DIR = "."
# The project's virtualenv (Pulumi.yaml runtime.options.virtualenv), relative to ASSERT_DIR.
PROJECT_PYTHON = ".venv/bin/python"
ASSERT_PROGRAM = f"{PROJECT_PYTHON} -m verification"

# The script that collects every check of one node in one session (verify-node.sh).
NODE_COLLECTOR = "verify-node"
SMOKE_NAME = "smoke"
SMOKE_LABELS = {"app.kubernetes.io/name": "k3s-cilium-smoke"}
# Pinned nginx (stable line); any 2xx on GET / will do.
SMOKE_IMAGE = "docker.io/library/nginx:1.28.0-alpine"
NETPERF_SERVER_LABELS = {"app.kubernetes.io/name": "k3s-cilium-netperf-server"}
NETPERF_CLIENT_LABELS = {"app.kubernetes.io/name": "k3s-cilium-netperf-client"}
# The image `cilium connectivity perf` uses (netperf 2.7 with netserver), pinned by digest.
NETPERF_IMAGE = (
    "quay.io/cilium/network-perf:a816f935930cb2b40ba43230643da4d5751a5711"
    "@sha256:679d3a370c696f63884da4557a4466f3b5569b4719bb4f86e8aac02fbe390eea"
)
BENCHMARK_DURATION_SECONDS = 10
CONNECTIVITY_TEST_TIMEOUT_SECONDS = 1800
# `cilium-dbg` is the agent's debug CLI from 1.15; before, it was `cilium`.
CILIUM_DBG_SINCE = Version("1.15")

HOSTNAME_KEY = "kubernetes.io/hostname"
# Checks collected together on the node itself (verify-node.sh); the others run on the first server.
NODE_CHECKS = (
    "agent-status",
    "no-kube-proxy-rules",
    "kpr-integrity",
    "service-list",
    "probes",
    "bgp-peers",
    "bgp-routes",
    "encryption-status",
    "hubble-server",
    "hubble-metrics",
)
# Checks about the cluster's objects, collected with kubectl on the first server (verify-object.sh).
OBJECT_CHECKS = ("loadbalancer-address", "l2-lease", "hubble-ui", "gatewayclass-accepted", "gateway-address")
# What verify-object.sh reads for each: namespace, object, and a jsonpath that prints something once it is ready.
OBJECTS = {
    "loadbalancer-address": (
        checks.VERIFY_NAMESPACE,
        f"service/{checks.LOADBALANCER_SERVICE}",
        "{.status.loadBalancer.ingress[*].ip}",
    ),
    "hubble-ui": (hubble.NAMESPACE, f"deployment/{hubble.UI_DEPLOYMENT}", "{.status.readyReplicas}"),
    # Cluster-scoped: kubectl ignores the namespace. Only a True condition ends the wait.
    "gatewayclass-accepted": (
        "default",
        f"gatewayclass/{gateway_api.GATEWAY_CLASS}",
        '{.status.conditions[?(@.status=="True")].type}',
    ),
    "gateway-address": (
        checks.VERIFY_NAMESPACE,
        f"gateway/{gateway_api.GATEWAY_NAME}",
        "{.status.addresses[*].value}",
    ),
}
# How long the LoadBalancer Service may take to get its address, and the lease its holder.
OBJECT_WAIT_SECONDS = 120
# How long Hubble Relay may take to reach every node and serve a flow.
HUBBLE_RELAY_WAIT_SECONDS = 180
RUNNER_PROBE_PROGRAM = f"{PROJECT_PYTHON} -m verification.http_probe"


@dataclass(frozen=True)
class VerificationArgs:
    cfg: StackConfig
    features: Resolved
    # SSH connection per node name (K3sCluster.connections).
    connections: Mapping[str, remote.ConnectionArgs]
    # The Cilium component's Kubernetes provider (CiliumRelease.provider).
    provider: k8s.Provider
    # What must be done first: the Cilium step (CiliumRelease.restart) and, with
    # kube-proxy replacement, the kube-proxy removal (KubeProxyRemoval.done, one
    # resource after every node's cleanup: a component here would add one
    # dependency per node to every resource of this component).
    depends_on: Sequence[pulumi.Resource] = ()
    # Per node: the NIC-dependent features preflight left off there (stacks.preflight.skipped_on_node
    # of that node's K3sCluster.node_facts); their expectations are not asserted on that node.
    node_skips: Mapping[str, pulumi.Input[Sequence[str]]] | None = None
    # Planned checks (by name, e.g. "kpr-integrity") not built at all: for a caller that knows they
    # cannot hold where it runs (the lab's namespace cluster has no K3s process to inspect) and says so.
    omit_checks: Sequence[str] = ()


# --- pure helpers -------------------------------------------------------------------------------


def agent_cli(cfg: StackConfig) -> str:
    return "cilium-dbg" if cfg.cilium.parsed_version >= CILIUM_DBG_SINCE else "cilium"


def node_label(check: PlannedCheck) -> str:
    return check.node or CLUSTER


def expect_json(check: PlannedCheck) -> str:
    return json.dumps(check.expect, sort_keys=True, separators=(",", ":"))


def skip_keys(check: PlannedCheck, skipped_features: Sequence[str]) -> list[str]:
    """The check's expectation keys of the features preflight left off on its node."""
    keys = {key for name in skipped_features for key in preflight.NIC_FEATURES.get(name, ())}
    return [key for key in check.skippable if key in keys]


def assert_command(check: PlannedCheck, skipped_features: Sequence[str] = ()) -> str:
    """``.venv/bin/python -m verification <check> --node <node> --expect '<json>' [--skip k,..]``."""
    command = (
        f"{ASSERT_PROGRAM} {check.check} --node {shlex.quote(node_label(check))} "
        f"--expect {shlex.quote(expect_json(check))}"
    )
    skip = skip_keys(check, skipped_features)
    return f"{command} --skip {shlex.quote(','.join(skip))}" if skip else command


def assertion(
    resource: str, create: pulumi.Input[str], stdin: pulumi.Input[str], parent: pulumi.Resource
) -> local.Command:
    """A check judged where Pulumi runs (``create``, an :func:`assert_command`) on a collector's output (``stdin``).

    Its one dependency is its collector, through stdin: a verdict is a function of the command and the collected
    output, and a change in either runs the assertion again. A failed one is not stored, so the next ``up`` judges
    again."""
    return local.Command(
        resource,
        create=create,
        stdin=stdin,
        dir=ASSERT_DIR,
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def check_trigger(state_digest: str, check: PlannedCheck) -> str:
    """A hash of what the check's result depends on (``state_digest``: of :func:`deployed_state`)."""
    check_state = {"check": check.check, "node": check.node, "expect": check.expect}
    return digest({"deployed": state_digest, "check": check_state})


def _fields(line: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def parse_smoke_pods(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """``verify-smoke-pods.sh`` output: InternalIP per node, and the smoke pods."""
    node_ips: dict[str, str] = {}
    pods: list[dict[str, str]] = []
    for line in text.splitlines():
        fields = _fields(line)
        if "pod" in fields:
            pods.append(fields)
        elif "node" in fields and fields.get("ip"):
            node_ips[fields["node"]] = fields["ip"]
    return node_ips, pods


def remote_pod_ip(text: str, node: str) -> str:
    """The IP of a ready smoke pod on a node other than ``node`` ("" when there is none); stable order."""
    _, pods = parse_smoke_pods(text)
    candidates = sorted(
        (pod.get("node", ""), pod.get("pod", ""), pod["ip"])
        for pod in pods
        if pod.get("ready") == "True" and pod.get("ip") and pod.get("node") not in (None, "", node)
    )
    return candidates[0][2] if candidates else ""


def _figure_total(figures: Mapping[str, Any]) -> int:
    return sum(int(section.get("entries", 0)) for section in figures.values() if isinstance(section, dict))


def headline(check: str, figures: Mapping[str, Any]) -> Any:
    """The one figure worth seeing first for each check."""
    if check == "agent-status":
        return figures.get("kubeProxyReplacement")
    if check == "no-kube-proxy-rules":
        return _figure_total(figures)
    if check == "kpr-integrity":
        api = figures.get("apiServer")
        return {
            "kubeProxyRunning": figures.get("kubeProxyRunning"),
            "healthzPort": figures.get("healthzPort"),
            "apiServer": api.get("result") if isinstance(api, dict) else None,
        }
    if check == "service-list":
        frontends = figures.get("frontends") or {}
        return {
            label: max((entry.get("usableBackends", 0) for entry in entries), default=0)
            for label, entries in frontends.items()
        }
    if check == "probes":
        return f"{figures.get('passed', 0)}/{figures.get('probes', 0)} ok"
    if check == "connectivity-test":
        return {"tests": figures.get("tests"), "failedTests": figures.get("failedTests")}
    if check == "benchmark":
        return {name: figures[name] for name in checks.BENCHMARK_FIGURES if name in figures}
    return None


def summarize(check: str, stdout: str) -> dict[str, Any]:
    """An assertion's JSON document as an entry of the ``verification`` output."""
    try:
        document = json.loads(stdout)
    except (TypeError, ValueError):
        document = None
    if not isinstance(document, dict):
        return {"status": "unknown", "seen": None, "figures": {}}
    raw = document.get("figures")
    figures: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {"status": document.get("status", "unknown"), "seen": headline(check, figures), "figures": figures}


def collect(checks_run: Sequence[PlannedCheck], outputs: Sequence[str]) -> dict[str, Any]:
    """``{"nodes": {node: {check: entry}}, "cluster": {check: entry}}``."""
    result: dict[str, Any] = {"nodes": {}, "cluster": {}}
    for check, stdout in zip(checks_run, outputs, strict=True):
        entry = summarize(check.check, stdout)
        if check.node is None:
            result["cluster"][check.check] = entry
        else:
            result["nodes"].setdefault(check.node, {})[check.check] = entry
    return result


def _ere_escape(text: str) -> str:
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def collector_script(
    cfg: StackConfig, check: PlannedCheck, discovered: str = "", placed: Workloads | None = None
) -> tuple[str, dict[str, ScriptValue]]:
    """The script template and parameters that collect ``check``'s raw output.

    ``discovered`` is what ``verify-smoke-pods.sh`` printed (for the probes: a
    pod on another node, and the node's InternalIP when the stack does not know it).
    """
    cli = agent_cli(cfg)
    if check.check == "agent-status":
        return _agent_exec(check, f"{cli} status --verbose", r"^Cilium:[[:space:]]+Ok")
    if check.check == "no-kube-proxy-rules":
        return "verify-iptables", {}
    if check.check == "kpr-integrity":
        params: dict[str, ScriptValue] = {"NODE_NAME": node_label(check), "CONFIG_PATH": CONFIG_PATH}
        target = check.expect.get("apiServer")
        if target:
            params.update({"API_TARGET": str(target), "API_URL": f"https://{target}/version"})
        return "verify-kpr-node", params
    if check.check == "connectivity-test":
        return "verify-connectivity-test", {"TIMEOUT_SECONDS": CONNECTIVITY_TEST_TIMEOUT_SECONDS}
    if check.check == "bgp-peers":
        return _agent_exec(check, f"{cli} bgp peers", "established")
    if check.check == "bgp-routes":
        prefixes = [str(prefix) for prefix in check.expect.get("prefixes", [])]
        wait_for = _ere_escape(prefixes[0]) if prefixes else ""
        return _agent_exec(check, f"{cli} bgp routes advertised ipv4 unicast", wait_for)
    if check.check == "encryption-status":
        wait_for = encryption.verify_wait_for(cfg.features.encryption, len(cfg.nodes))
        return _agent_exec(check, f"{cli} encrypt status", wait_for)
    if check.check == "hubble-server":
        return _agent_exec(check, f"{cli} status", r"^Hubble:[[:space:]]+Ok")
    if check.check == "hubble-metrics":
        return "verify-listening", {"PORT": hubble.METRICS_PORT, "WAIT_SECONDS": OBJECT_WAIT_SECONDS}
    if check.check == "hubble-relay":
        return "verify-hubble-relay", {"EXPECTED_NODES": len(cfg.nodes), "WAIT_SECONDS": HUBBLE_RELAY_WAIT_SECONDS}
    if check.check in OBJECTS:
        namespace, obj, ready = OBJECTS[check.check]
        return "verify-object", {
            "NAMESPACE": namespace,
            "OBJECT": obj,
            "READY_JSONPATH": ready,
            "WAIT_SECONDS": OBJECT_WAIT_SECONDS,
        }
    if check.check == "l2-lease":
        return "verify-object", {
            "NAMESPACE": "kube-system",
            "OBJECT": f"lease/{check.expect['lease']}",
            "READY_JSONPATH": "{.spec.holderIdentity}",
            "WAIT_SECONDS": OBJECT_WAIT_SECONDS,
        }
    placed = placed or checks.workloads(cfg)
    if check.check == "service-list":
        wait_for = f"{_ere_escape(placed.smoke_cluster_ip)}:{checks.SMOKE_PORT}"
        if "nodePort" in check.expect:
            wait_for = f":{placed.node_port}(/TCP)?[[:space:]]+NodePort"
        return _agent_exec(check, f"{cli} service list", wait_for)
    if check.check == "probes":
        node = next(n for n in cfg.nodes if n.name == check.node)
        node_ips, _ = parse_smoke_pods(discovered)
        probes = list(check.expect["probes"])
        node_ip = node.internal_ip or node_ips.get(node.name, "")
        params = {
            "PROBES": " ".join(probes),
            "NODE_PORT": placed.node_port,
            "NODE_IP": node_ip,
            "CLUSTER_IP": placed.smoke_cluster_ip,
            "SERVICE_PORT": checks.SMOKE_PORT,
            "REMOTE_POD_IP": remote_pod_ip(discovered, node.name) if "remote-pod" in probes else "",
        }
        if "loadbalancer" in probes:
            # Node IPAM hands the Service the nodes' own addresses.
            params["LB_ADDRESS"] = load_balancer.verify_address(cfg.load_balancer) or node_ip
        if "gateway" in probes:
            params["GATEWAY_TARGET"] = checks.gateway_target(cfg, node_ip)
        return "verify-probes", params
    if check.check == "benchmark":
        return "verify-benchmark", {
            "NAMESPACE": checks.VERIFY_NAMESPACE,
            "CLIENT_SELECTOR": _selector(NETPERF_CLIENT_LABELS),
            "SERVER_HOST": placed.benchmark_cluster_ip,
            "CONTROL_PORT": checks.BENCHMARK_CONTROL_PORT,
            "DATA_PORT": checks.BENCHMARK_DATA_PORT,
            "DURATION_SECONDS": BENCHMARK_DURATION_SECONDS,
        }
    raise ValueError(f"no collector for check {check.check!r}")


def _agent_exec(check: PlannedCheck, command: str, wait_for: str) -> tuple[str, dict[str, ScriptValue]]:
    """``verify-agent-exec.sh``: ``command`` in the node's Cilium agent, repeated until its output matches
    ``wait_for`` (an extended regex; empty: once)."""
    return "verify-agent-exec", {"NODE_NAME": node_label(check), "AGENT_COMMAND": command, "WAIT_FOR": wait_for}


def section(sections: pulumi.Output[dict[str, str]], check: str) -> pulumi.Output[str]:
    """One check's raw output out of its node collector's sections."""
    return sections.apply(lambda found: found.get(check, ""))


def node_collector_script(
    cfg: StackConfig,
    node: Node,
    node_checks: Sequence[PlannedCheck],
    discovered: str = "",
    placed: Workloads | None = None,
) -> tuple[str, dict[str, ScriptValue]]:
    """``verify-node.sh`` and its parameters: every check of ``node`` collected in one session."""
    params: dict[str, ScriptValue] = {
        "NODE_NAME": node.name,
        "CHECKS": " ".join(check.check for check in node_checks),
        "SECTION_MARK": SECTION_MARK,
    }
    for index, check in enumerate(node_checks):
        params[f"SCRIPT_{index}"] = render(*collector_script(cfg, check, discovered, placed))
    return NODE_COLLECTOR, params


def smoke_pods_params() -> dict[str, ScriptValue]:
    return {"NAMESPACE": checks.VERIFY_NAMESPACE, "DEPLOYMENT": SMOKE_NAME, "SELECTOR": _selector(SMOKE_LABELS)}


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


# --- the component -----------------------------------------------------------------------------


class Verification(pulumi.ComponentResource):
    """The planned checks as collector/assertion pairs, and the workloads they probe."""

    # {"nodes": {node: {check: {status, seen, figures}}}, "cluster": {check: {...}}}
    verification: pulumi.Output[dict[str, Any]]
    # The planned checks, in the order they were built.
    checks: list[PlannedCheck]
    # Per check key ("agent-status/agent-1", "benchmark"): the collector and the assertion.
    collectors: dict[str, remote.Command | local.Command]
    assertions: dict[str, local.Command]

    def __init__(self, name: str, args: VerificationArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(COMPONENT_TYPE, name, None, opts)
        self._name = name
        self._args = args
        cfg, features = args.cfg, args.features
        self._workloads: Workloads | None = None
        try:
            self.checks = [c for c in checks.planned_checks(cfg, features) if c.check not in args.omit_checks]
            if cfg.verify.smoke or cfg.verify.benchmark:
                self._workloads = checks.workloads(cfg)
        except ConfigError as problem:
            raise pulumi.RunError(str(problem)) from None
        self._first = cfg.servers[0]
        # Computed once: every check's trigger hashes it (per check it would cost a K3s config per node).
        self._state_digest = digest(deployed_state(cfg, features))
        self.collectors = {}
        self.assertions = {}

        namespace = self._namespace() if self._workloads else None
        smoke = self._smoke(namespace) if cfg.verify.smoke and namespace else []
        benchmark = self._benchmark_workload(namespace) if cfg.verify.benchmark and namespace else []
        smoke_pods = self._smoke_pods(smoke) if smoke else None

        by_node: dict[str, list[PlannedCheck]] = {}
        for check in self.checks:
            if check.node and check.check in NODE_CHECKS:
                by_node.setdefault(check.node, []).append(check)
        per_node: list[pulumi.Resource] = []
        for node in cfg.nodes:
            node_checks = by_node.get(node.name)
            if not node_checks:
                continue
            collector = self._node_collector(node, node_checks, smoke_pods)
            sections = pulumi.Output.unsecret(collector.stdout).apply(lambda out: split_sections(str(out or "")))
            for check in node_checks:
                self.collectors[check.key] = collector
                per_node.append(self._assertion(check, section(sections, check.check)))
        cluster_wide: list[pulumi.Resource] = []
        for check in self.checks:
            if check.check in OBJECT_CHECKS:
                cluster_wide.append(self._assertion(check, self._collector(check, smoke).stdout))
            elif check.check == "probes" and check.node is None:
                cluster_wide.append(self._assertion(check, self._runner_probe(check, smoke).stdout))
            elif check.check in ("connectivity-test", "hubble-relay"):
                # After the node checks: the smoke traffic gives the relay flows to serve.
                collector = self._collector(check, per_node)
                cluster_wide.append(self._assertion(check, collector.stdout))
            elif check.check == "benchmark":
                collector = self._collector(check, [*per_node, *cluster_wide, *benchmark])
                self._assertion(check, collector.stdout)

        ordered = [self.assertions[check.key] for check in self.checks]
        self.verification = pulumi.Output.all(*(pulumi.Output.unsecret(a.stdout) for a in ordered)).apply(
            lambda outs: collect(self.checks, [str(out or "") for out in outs])
        )
        self.register_outputs({"verification": self.verification})

    # --- resources ------------------------------------------------------------------------------

    def _k8s_opts(self, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(
            parent=self, depends_on=[*self._args.depends_on, *depends_on], provider=self._args.provider
        )

    def _remote_collector(
        self,
        resource: str,
        node: Node,
        collect: Script,
        triggers: list[str],
        depends_on: Sequence[pulumi.Resource],
    ) -> remote.Command:
        return node_command(
            resource,
            self._args.connections[node.name],
            self,
            user=self._args.cfg.ssh_user(node),
            create=collect,
            triggers=triggers,
            # The raw output goes to the assertions (and stays in the state); only problems are shown.
            logging=remote.Logging.STDERR,
            depends_on=depends_on,
        )

    def _node_collector(
        self,
        node: Node,
        node_checks: Sequence[PlannedCheck],
        smoke_pods: remote.Command | None,
    ) -> remote.Command:
        cfg, placed = self._args.cfg, self._workloads

        def body(discovered: str) -> str:
            return render(*node_collector_script(cfg, node, node_checks, discovered, placed))

        # One dependency each, because the SDK's cycle check walks everything upstream of every
        # dependency of every resource: the smoke pods' discovery comes after Cilium, the
        # kube-proxy cleanup and the smoke workload, so waiting for it waits for all of them.
        collect: pulumi.Input[str]
        waits_for: Sequence[pulumi.Resource]
        if smoke_pods is not None and any(check.check == "probes" for check in node_checks):
            # Pod and node addresses are not secret (the collector's outputs may be marked so).
            collect = pulumi.Output.unsecret(smoke_pods.stdout).apply(lambda out: body(str(out or "")))
            waits_for = []  # the script is made of the discovery's output: it already waits for it
        else:
            collect = body("")
            needs_smoke = any(check.check == "service-list" for check in node_checks)
            waits_for = [smoke_pods] if smoke_pods is not None and needs_smoke else self._args.depends_on
        return self._remote_collector(
            f"{self._name}-collect-{node.name}",
            node,
            Script(NODE_COLLECTOR, collect),
            [digest([check_trigger(self._state_digest, check) for check in node_checks])],
            waits_for,
        )

    def _collector(self, check: PlannedCheck, after: Sequence[pulumi.Resource]) -> remote.Command:
        """A cluster-wide check's collector on the first server (connectivity test, benchmark)."""
        cfg, first = self._args.cfg, self._first
        collector = self._remote_collector(
            f"{self._name}-{check.check}-{node_label(check)}",
            first,
            script(*collector_script(cfg, check)),
            [check_trigger(self._state_digest, check)],
            [*self._args.depends_on, *after],
        )
        self.collectors[check.key] = collector
        return collector

    def _runner_probe(self, check: PlannedCheck, after: Sequence[pulumi.Resource]) -> local.Command:
        """The LoadBalancer address probed from where Pulumi runs (verify.fromRunner)."""
        address = load_balancer.verify_address(self._args.cfg.load_balancer)
        target = f"{address}:{checks.SMOKE_PORT}"
        collector = local.Command(
            f"{self._name}-{check.check}-runner",
            create=f"{RUNNER_PROBE_PROGRAM} --name {checks.RUNNER_PROBE} --target {shlex.quote(target)}",
            dir=ASSERT_DIR,
            triggers=[check_trigger(self._state_digest, check)],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._args.depends_on, *after]),
        )
        self.collectors[check.key] = collector
        return collector

    def _assertion(self, check: PlannedCheck, stdin: pulumi.Input[str]) -> local.Command:
        create: pulumi.Input[str] = assert_command(check)
        node_skips = self._args.node_skips
        if check.skippable and check.node and node_skips is not None and check.node in node_skips:
            create = pulumi.Output.from_input(node_skips[check.node]).apply(
                lambda skipped: assert_command(check, list(skipped))
            )
        judged = assertion(f"{self._name}-{check.check}-assert-{node_label(check)}", create, stdin, self)
        self.assertions[check.key] = judged
        return judged

    def _namespace(self) -> k8s.core.v1.Namespace:
        return k8s.core.v1.Namespace(
            f"{self._name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=checks.VERIFY_NAMESPACE, labels={"app.kubernetes.io/part-of": "k3s-cilium"}
            ),
            opts=self._k8s_opts(),
        )

    def _deployment(
        self,
        role: str,
        name: str,
        namespace: k8s.core.v1.Namespace,
        labels: dict[str, str],
        *,
        replicas: int,
        pod: k8s.core.v1.PodSpecArgs,
    ) -> k8s.apps.v1.Deployment:
        """A Deployment ``name`` of ``replicas`` pods labelled ``labels`` in the verification namespace."""
        return k8s.apps.v1.Deployment(
            f"{self._name}-{role}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace.metadata.name),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels), spec=pod),
            ),
            opts=self._k8s_opts(),
        )

    def _smoke(self, namespace: k8s.core.v1.Namespace) -> list[pulumi.Resource]:
        placed = self._workloads
        assert placed is not None
        spread = (
            [
                k8s.core.v1.TopologySpreadConstraintArgs(
                    max_skew=1,
                    topology_key=HOSTNAME_KEY,
                    when_unsatisfiable="DoNotSchedule",
                    # Tainted nodes are not domains the pods could spread to.
                    node_taints_policy="Honor",
                    label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=SMOKE_LABELS),
                )
            ]
            if placed.spread
            else None
        )
        deployment = self._deployment(
            "smoke",
            SMOKE_NAME,
            namespace,
            SMOKE_LABELS,
            replicas=placed.replicas,
            pod=k8s.core.v1.PodSpecArgs(
                automount_service_account_token=False,
                topology_spread_constraints=spread,
                containers=[
                    k8s.core.v1.ContainerArgs(
                        name="nginx",
                        image=SMOKE_IMAGE,
                        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=checks.SMOKE_PORT)],
                        readiness_probe=k8s.core.v1.ProbeArgs(
                            http_get=k8s.core.v1.HTTPGetActionArgs(path="/", port="http"),
                            period_seconds=2,
                        ),
                        resources=k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": "10m", "memory": "16Mi"}),
                    )
                ],
            ),
        )
        service = k8s.core.v1.Service(
            f"{self._name}-smoke-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SMOKE_NAME, namespace=namespace.metadata.name),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="NodePort",
                cluster_ip=placed.smoke_cluster_ip,
                selector=SMOKE_LABELS,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="http",
                        protocol="TCP",
                        port=checks.SMOKE_PORT,
                        target_port="http",
                        node_port=placed.node_port,
                    )
                ],
            ),
            opts=self._k8s_opts(),
        )
        return [deployment, service, *self._smoke_loadbalancer(namespace), *self._smoke_gateway(namespace)]

    def _smoke_loadbalancer(self, namespace: k8s.core.v1.Namespace) -> list[pulumi.Resource]:
        """A LoadBalancer Service on the smoke pods, asking the first pool for a known address (node IPAM:
        class io.cilium/node); with the first pool's service selector as labels, so the pool serves it."""
        cfg = self._args.cfg
        lb = cfg.load_balancer
        if lb.mode == "none":
            return []
        address = load_balancer.verify_address(lb)
        # Pulumi's await of a LoadBalancer Service waits (10 min) for an address and then fails saying
        # only that; the loadbalancer-address check says what LB-IPAM answered instead.
        annotations = {"pulumi.com/skipAwait": "true"}
        if address:
            annotations[load_balancer.ip_annotation(cfg.cilium.parsed_version)] = address
        labels = dict(lb.pools[0].service_selector or {}) if lb.pools else {}
        service = k8s.core.v1.Service(
            f"{self._name}-smoke-loadbalancer",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=checks.LOADBALANCER_SERVICE,
                namespace=namespace.metadata.name,
                annotations=annotations,
                labels=labels or None,
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="LoadBalancer",
                load_balancer_class=load_balancer.NODE_IPAM_CLASS if lb.mode == "nodeipam" else None,
                external_traffic_policy="Cluster",
                selector=SMOKE_LABELS,
                ports=[
                    k8s.core.v1.ServicePortArgs(name="http", protocol="TCP", port=checks.SMOKE_PORT, target_port="http")
                ],
            ),
            # Pulumi's await for a LoadBalancer Service waits for an address; the verification judges that.
            opts=self._k8s_opts(),
        )
        return [service]

    def _smoke_gateway(self, namespace: k8s.core.v1.Namespace) -> list[pulumi.Resource]:
        """With Gateway API: a Gateway of class cilium and an HTTPRoute to the smoke Service (stacks/gateway_api.py),
        asking the pool for a known address where the release can."""
        cfg = self._args.cfg
        if "gatewayApi" not in self._args.features:
            return []
        version = cfg.cilium.parsed_version
        documents = [
            gateway_api.gateway(cfg.gateway_api, version, checks.VERIFY_NAMESPACE, address=checks.gateway_address(cfg)),
            gateway_api.http_route(version, checks.VERIFY_NAMESPACE, SMOKE_NAME, checks.SMOKE_PORT),
        ]
        return [
            k8s.apiextensions.CustomResource(
                f"{self._name}-smoke-{document['kind'].lower()}",
                api_version=document["apiVersion"],
                kind=document["kind"],
                metadata={**document["metadata"], "namespace": namespace.metadata.name},
                spec=document["spec"],
                opts=self._k8s_opts(),
            )
            for document in documents
        ]

    def _benchmark_workload(self, namespace: k8s.core.v1.Namespace) -> list[pulumi.Resource]:
        placed = self._workloads
        assert placed is not None
        ports = [
            k8s.core.v1.ContainerPortArgs(name="control", container_port=checks.BENCHMARK_CONTROL_PORT),
            k8s.core.v1.ContainerPortArgs(name="data", container_port=checks.BENCHMARK_DATA_PORT),
        ]

        def deployment(role: str, labels: dict[str, str], affinity: k8s.core.v1.AffinityArgs | None) -> Any:
            return self._deployment(
                f"netperf-{role}",
                f"netperf-{role}",
                namespace,
                labels,
                replicas=1,
                pod=k8s.core.v1.PodSpecArgs(
                    automount_service_account_token=False,
                    affinity=affinity,
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name="netperf",
                            image=NETPERF_IMAGE,
                            # The client runs netserver only to stay up; netperf is exec'd in it.
                            command=["netserver", "-D", "-p", str(checks.BENCHMARK_CONTROL_PORT)],
                            ports=ports,
                            readiness_probe=k8s.core.v1.ProbeArgs(
                                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="control"),
                                period_seconds=2,
                            ),
                        )
                    ],
                ),
            )

        server = deployment("server", NETPERF_SERVER_LABELS, None)
        # Across nodes when two can take pods: the benchmark measures the node-to-node datapath.
        away = (
            k8s.core.v1.AffinityArgs(
                pod_anti_affinity=k8s.core.v1.PodAntiAffinityArgs(
                    required_during_scheduling_ignored_during_execution=[
                        k8s.core.v1.PodAffinityTermArgs(
                            topology_key=HOSTNAME_KEY,
                            namespaces=[checks.VERIFY_NAMESPACE],
                            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=NETPERF_SERVER_LABELS),
                        )
                    ]
                )
            )
            if placed.spread
            else None
        )
        client = deployment("client", NETPERF_CLIENT_LABELS, away)
        service = k8s.core.v1.Service(
            f"{self._name}-netperf-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="netperf", namespace=namespace.metadata.name),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                cluster_ip=placed.benchmark_cluster_ip,
                selector=NETPERF_SERVER_LABELS,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="control", protocol="TCP", port=checks.BENCHMARK_CONTROL_PORT, target_port="control"
                    ),
                    k8s.core.v1.ServicePortArgs(
                        name="data", protocol="TCP", port=checks.BENCHMARK_DATA_PORT, target_port="data"
                    ),
                ],
            ),
            opts=self._k8s_opts([server]),
        )
        return [server, client, service]

    def _smoke_pods(self, smoke: Sequence[pulumi.Resource]) -> remote.Command:
        cfg = self._args.cfg
        params = smoke_pods_params()
        # Runs when the probes do: its trigger is the hash of every probes check.
        probes = [check for check in self.checks if check.check == "probes"]
        trigger = digest([check_trigger(self._state_digest, check) for check in probes])
        return node_command(
            f"{self._name}-smoke-pods",
            self._args.connections[self._first.name],
            self,
            user=cfg.ssh_user(self._first),
            create=script("verify-smoke-pods", params),
            triggers=[trigger],
            depends_on=[*self._args.depends_on, *smoke],
        )
