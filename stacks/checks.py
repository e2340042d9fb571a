"""The verification checks a stack runs after deploying, and the exact ``--expect`` each gets.

Every :class:`PlannedCheck` is one ``python3 -m verification <check> --node
<node> --expect '<json>'`` call (``verification/__main__.py`` documents the
keys): ``expect`` is that JSON document, computed here offline, so the plan
(``python -m stacks plan``) shows exactly what ``pulumi up`` will assert and a
pull request that changes the tier shows which assertions change.

Expectations follow what the pinned Cilium release prints: lines a release
does not print are not asserted (``Routing: Network:`` and ``Device Mode``
from 1.16, ``DSR Dispatch Mode`` from 1.15, IPv4 BIG TCP from 1.14), nor are
the lines that exist only with kube-proxy replacement (Mode, Backend
Selection, XDP, Socket LB) on a tier without it. KPR on 1.13 prints
``Strict``; the CLI reads ``kubeProxyReplacement: true`` accordingly.

The smoke and benchmark workloads have fixed addresses so that the
expectations are known before anything exists: a NodePort and ClusterIPs from
the *static* sub-ranges that Kubernetes keeps for explicitly requested values
(KEP-3070 for Service IPs, KEP-3668 for NodePorts), where dynamic
allocation does not hand them out first.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version

from stacks import cilium_values, encryption, gateway_api, hubble, load_balancer, preflight
from stacks.config import ConfigError, Node, StackConfig
from stacks.features import Resolved

# Namespace of the smoke and benchmark workloads.
VERIFY_NAMESPACE = "k3s-cilium-verify"
SMOKE_PORT = 80
# Taint effects that keep the smoke and benchmark pods (which tolerate nothing) off a node.
BLOCKING_TAINT_EFFECTS = ("NoSchedule", "NoExecute")
# The probes the probes check runs from every node, in this order.
PROBES = ("localhost-nodeport", "nodeip-nodeport", "clusterip", "remote-pod", "loadbalancer", "gateway")
# The LoadBalancer Service on the smoke pods (loadBalancer.mode other than none), and the probe of it
# from where Pulumi runs (verify.fromRunner).
LOADBALANCER_SERVICE = "smoke-lb"
RUNNER_PROBE = "loadbalancer-from-runner"
BENCHMARK_CONTROL_PORT = 12865
BENCHMARK_DATA_PORT = 12866
# Figures the benchmark must yield (TCP_RR latencies and rate, TCP_STREAM throughput); never thresholds.
BENCHMARK_FIGURES = ("meanLatencyUs", "p99LatencyUs", "transactionsPerSec", "throughputMbps")
# kube-proxy's health check port (its --healthz-bind-address, 0.0.0.0:10256 by default; K3s' embedded
# kube-proxy binds 127.0.0.1:10256): with kube-proxy replacement only the Cilium agent may listen there.
KUBE_PROXY_HEALTHZ_PORT = 10256

V1_14, V1_15, V1_16 = Version("1.14"), Version("1.15"), Version("1.16")


@dataclass(frozen=True)
class PlannedCheck:
    check: str
    # The node the check is about; None for a check of the whole cluster.
    node: str | None
    expect: dict[str, Any] = field(default_factory=dict)
    # Expectation keys of a feature that preflight may leave off on this node
    # (its NIC cannot carry it): then they are not asserted there (``--skip``).
    skippable: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.check}/{self.node}" if self.node else self.check


@dataclass(frozen=True)
class Workloads:
    """Fixed facts about the smoke and benchmark workloads, known offline."""

    node_port: int
    smoke_cluster_ip: str
    benchmark_cluster_ip: str
    # Nodes the workloads can land on (no NoSchedule/NoExecute taint), in stack order.
    schedulable: tuple[str, ...]

    @property
    def replicas(self) -> int:
        """Smoke replicas: two on two different nodes where possible."""
        return min(2, len(self.schedulable))

    @property
    def spread(self) -> bool:
        """Whether the smoke pods (and the benchmark client and server) must be on different nodes."""
        return len(self.schedulable) >= 2


def schedulable_nodes(cfg: StackConfig) -> tuple[str, ...]:
    return tuple(
        node.name
        for node in cfg.nodes
        if not any(taint.rsplit(":", 1)[-1] in BLOCKING_TAINT_EFFECTS for taint in node.taints)
    )


def static_node_port(cfg: StackConfig) -> int:
    """The last port of the NodePort range's static band: ``min(max(16, size/32), 128)`` ports from the bottom."""
    low, high = (int(part) for part in cfg.cilium.node_port_range.split("-"))
    size = high - low + 1
    band = min(max(16, size // 32), 128, size)
    return low + band - 1


def static_service_ips(cfg: StackConfig) -> tuple[str, str]:
    """Two ClusterIPs at the top of the service CIDR's static band (``min(max(16, size/16), 256)`` addresses).

    The band's bottom holds the ``kubernetes`` Service (first address) and K3s's
    cluster DNS (tenth address); these are the band's third- and second-last.
    """
    network = ipaddress.ip_network(cfg.k3s.service_cidr)
    band = min(max(16, network.num_addresses // 16), 256)
    first, second = band - 3, band - 2
    if second >= network.num_addresses - 1:
        raise ConfigError(
            [
                f"k3s-cilium:k3s.serviceCidr: {cfg.k3s.service_cidr} is too small for the verification services; "
                "use a /28 or larger"
            ]
        )
    return str(network[first]), str(network[second])


def workloads(cfg: StackConfig) -> Workloads:
    smoke_ip, benchmark_ip = static_service_ips(cfg)
    return Workloads(
        node_port=static_node_port(cfg),
        smoke_cluster_ip=smoke_ip,
        benchmark_cluster_ip=benchmark_ip,
        schedulable=schedulable_nodes(cfg),
    )


def agent_status_expect(cfg: StackConfig, features: Resolved) -> dict[str, Any]:
    """What every agent's ``cilium-dbg status --verbose`` must report, for this release and tier."""
    version = cfg.cilium.parsed_version
    kpr = "kubeProxyReplacement" in features
    expect: dict[str, Any] = {
        "version": cfg.cilium.version,
        "healthy": True,
        "kubeProxyReplacement": kpr,
        "bpfHostRouting": "bpfHostRouting" in features,
        "bpfMasquerade": "bpfMasquerade" in features,
        "bandwidthManager": "bandwidthManager" in features,
    }
    if "bandwidthManager" in features:
        expect["bbr"] = "bbr" in features
    if version >= V1_14:
        expect["bigTcp"] = ["ipv4"] if "bigTcp" in features else False
    if version >= V1_16:
        expect["nativeRouting"] = "nativeRouting" in features
        expect["netkit"] = "netkit" in features
    if kpr:
        expect["socketLB"] = True
        expect["dsr"] = "dsr" in features
        if features.dsr_dispatch and version >= V1_15:
            expect["dsrDispatch"] = features.dsr_dispatch
        expect["maglev"] = cfg.cilium.maglev_table_size if "maglev" in features else False
        expect["xdp"] = features.xdp_mode or "disabled"
    return expect


def service_list_expect(cfg: StackConfig, features: Resolved, node: Node) -> dict[str, Any]:
    """The smoke Service in the node's agent service table: ClusterIP always, NodePort frontends with KPR.

    Without kube-proxy replacement kube-proxy serves NodePorts and Cilium lists
    only the ClusterIP. The node's own IP is asserted when the stack knows it.
    """
    placed = workloads(cfg)
    expect: dict[str, Any] = {
        "clusterIP": placed.smoke_cluster_ip,
        "clusterPort": SMOKE_PORT,
        "protocol": "TCP",
        "minBackends": placed.replicas,
    }
    if "kubeProxyReplacement" in features:
        expect["nodePort"] = placed.node_port
        if node.internal_ip:
            expect["nodeIPs"] = [node.internal_ip]
    return expect


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:6444``; an IPv6 address in brackets, ``[fd00::1]:6443``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def kpr_integrity_expect(node: Node, values: dict[str, Any]) -> dict[str, Any]:
    """What a node with kube-proxy replacement must show, from the Helm values the release really gets.

    K3s must run there as the node's role with kube-proxy disabled (a server
    by its own config, an agent by its servers'), nothing but the Cilium agent
    may listen on kube-proxy's health port (the agent does only when
    ``kubeProxyReplacementHealthzBindAddr`` is set, which the program leaves
    empty), and the API server the agent uses (``k8sServiceHost``/``Port``;
    by default K3s' load balancer on 127.0.0.1:6444) must answer from the node.
    ``k8sServiceHost: auto`` (read from the cluster at run time) is not probed.
    """
    expect: dict[str, Any] = {"role": node.role, "kubeProxyHealthzPort": KUBE_PROXY_HEALTHZ_PORT}
    bind = values.get("kubeProxyReplacementHealthzBindAddr")
    if bind:
        expect["ciliumHealthz"] = str(bind)
    host, port = str(values.get("k8sServiceHost") or ""), str(values.get("k8sServicePort") or "")
    if host and host != "auto" and port.isdigit():
        expect["apiServer"] = host_port(host, int(port))
        default = (cilium_values.K3S_API_LB_HOST, cilium_values.K3S_API_LB_PORT)
        expect["apiServerIsK3s"] = (host, int(port)) == default
    return expect


def gateway_address(cfg: StackConfig) -> str | None:
    """The address the test Gateway asks LB-IPAM for (LoadBalancer pools, Cilium 1.15+), else None."""
    lb = cfg.load_balancer
    if cfg.gateway_api.host_network or lb.mode == "nodeipam" or cfg.cilium.parsed_version < V1_15:
        return None
    return gateway_api.gateway_address(lb, avoid=load_balancer.verify_address(lb))


def gateway_probed(cfg: StackConfig, features: Resolved) -> bool:
    """Whether the nodes probe the test Gateway: there is one, and its address is known before it exists (the
    node's own in host network mode or with node IPAM, else the one it asks the pool for; Cilium 1.13/1.14
    cannot ask for one)."""
    if not (cfg.verify.smoke and "gatewayApi" in features):
        return False
    on_nodes = cfg.gateway_api.host_network or cfg.load_balancer.mode == "nodeipam"
    return on_nodes or gateway_address(cfg) is not None


def gateway_target(cfg: StackConfig, node_ip: str) -> str:
    """``address:port`` of the test Gateway as a node probes it (see :func:`gateway_probed`)."""
    address = gateway_address(cfg) or node_ip
    return gateway_api.probe_target(cfg.gateway_api, address)


def probe_names(cfg: StackConfig, features: Resolved, node: Node) -> list[str]:
    """The probes run from ``node``; ``remote-pod`` only when a smoke pod is sure to run on another node,
    ``loadbalancer`` only with a LoadBalancer mode, ``gateway`` only with a test Gateway whose address is known
    (from the node's own address when the stack does not give it, as the node probes do)."""
    placed = workloads(cfg)
    skipped = set()
    if not (placed.spread or any(name != node.name for name in placed.schedulable)):
        skipped.add("remote-pod")
    if cfg.load_balancer.mode == "none":
        skipped.add("loadbalancer")
    if not gateway_probed(cfg, features):
        skipped.add("gateway")
    return [name for name in PROBES if name not in skipped]


def loadbalancer_address_expect(cfg: StackConfig) -> dict[str, Any]:
    """The test Service's address: the one it asks the pool for, or (node IPAM) the nodes' addresses."""
    lb = cfg.load_balancer
    expect: dict[str, Any] = {"service": f"{VERIFY_NAMESPACE}/{LOADBALANCER_SERVICE}"}
    address = load_balancer.verify_address(lb)
    if address:
        expect["address"] = address
        expect["within"] = [text for _, _, text in lb.pools[0].ranges()]
    elif all(node.internal_ip for node in cfg.nodes):
        expect["nodeAddresses"] = [node.internal_ip for node in cfg.nodes]
    return expect


def loadbalancer_checks(cfg: StackConfig) -> tuple[list[PlannedCheck], dict[str, list[PlannedCheck]]]:
    """The cluster-wide and the per-node checks of the LoadBalancer mode (none without smoke workload)."""
    lb = cfg.load_balancer
    if lb.mode == "none" or not cfg.verify.smoke:
        return [], {}
    cluster = [PlannedCheck("loadbalancer-address", None, loadbalancer_address_expect(cfg))]
    if lb.mode == "l2":
        lease = load_balancer.lease_name(VERIFY_NAMESPACE, LOADBALANCER_SERVICE)
        cluster.append(PlannedCheck("l2-lease", None, {"lease": lease, "holders": [n.name for n in cfg.nodes]}))
    address = load_balancer.verify_address(lb)
    if cfg.verify.from_runner and address:
        cluster.append(PlannedCheck("probes", None, {"probes": [RUNNER_PROBE], "minProbes": 1}))
    per_node: dict[str, list[PlannedCheck]] = {}
    if lb.bgp is not None:
        peers = [{"address": peer.address, "asn": peer.asn} for peer in lb.bgp.peers]
        for node in cfg.nodes:
            node_checks = [PlannedCheck("bgp-peers", node.name, {"localASN": lb.bgp.local_asn, "peers": peers})]
            if "loadBalancerIPs" in lb.bgp.advertise and address:
                routes = {"prefixes": [f"{address}/32"], "peers": [peer.address for peer in lb.bgp.peers]}
                node_checks.append(PlannedCheck("bgp-routes", node.name, routes))
            per_node[node.name] = node_checks
    return cluster, per_node


def day_two_checks(cfg: StackConfig, features: Resolved) -> tuple[list[PlannedCheck], dict[str, list[PlannedCheck]]]:
    """The cluster-wide and per-node checks of encryption, Hubble and Gateway API (none when they are off)."""
    names = [node.name for node in cfg.nodes]
    version = cfg.cilium.parsed_version
    per_node: dict[str, list[PlannedCheck]] = {name: [] for name in names}
    cluster: list[PlannedCheck] = []
    mode = cfg.features.encryption
    if mode != "none":
        expect = encryption.verify_expectations(mode, cfg.encryption, len(names))
        for name in names:
            per_node[name].append(PlannedCheck("encryption-status", name, expect))
    for expected in hubble.verify_expectations(cfg.hubble, "hubble" in features, version, names):
        check = PlannedCheck(expected.check, expected.node, expected.expect)
        if expected.node is None:
            cluster.append(check)
        else:
            per_node[expected.node].append(check)
    if "gatewayApi" in features:
        expects = gateway_api.verify_expectations(
            cfg.gateway_api,
            version,
            cfg.load_balancer,
            VERIFY_NAMESPACE,
            node_addresses=[node.internal_ip for node in cfg.nodes if node.internal_ip],
            address=gateway_address(cfg),
        )
        cluster.append(PlannedCheck("gatewayclass-accepted", None, expects["gatewayclass-accepted"]))
        if cfg.verify.smoke:
            cluster.append(PlannedCheck("gateway-address", None, expects["gateway-address"]))
    return cluster, per_node


def probes_expect(cfg: StackConfig, features: Resolved, node: Node) -> dict[str, Any]:
    names = probe_names(cfg, features, node)
    return {"probes": names, "minProbes": len(names)}


def _require_schedulable(cfg: StackConfig) -> None:
    if (cfg.verify.smoke or cfg.verify.benchmark) and not schedulable_nodes(cfg):
        switched_on = [key for key, on in (("smoke", cfg.verify.smoke), ("benchmark", cfg.verify.benchmark)) if on]
        raise ConfigError(
            [
                f"k3s-cilium:verify.{key}: every node has a NoSchedule or NoExecute taint, so its pods (which "
                f"tolerate nothing) cannot run; leave one node untainted or set verify.{key}: false"
                for key in switched_on
            ]
        )


def planned_checks(cfg: StackConfig, features: Resolved) -> list[PlannedCheck]:
    """Every check ``pulumi up`` runs, in order: per node, then the cluster-wide ones."""
    _require_schedulable(cfg)
    agent = agent_status_expect(cfg, features)
    checks: list[PlannedCheck] = []
    skippable = tuple(
        key
        for name, mode in preflight.nic_feature_modes(cfg, features).items()
        if mode == "skip"
        for key in preflight.NIC_FEATURES[name]
        if key in agent
    )
    kpr = "kubeProxyReplacement" in features
    values = cilium_values.render(cfg, features) if kpr else {}
    lb_cluster, lb_per_node = loadbalancer_checks(cfg)
    day_two_cluster, day_two_per_node = day_two_checks(cfg, features)
    for node in cfg.nodes:
        checks.append(PlannedCheck("agent-status", node.name, agent, skippable))
        if kpr:
            checks.append(PlannedCheck("no-kube-proxy-rules", node.name, {}))
            checks.append(PlannedCheck("kpr-integrity", node.name, kpr_integrity_expect(node, values)))
        if cfg.verify.smoke:
            checks.append(PlannedCheck("service-list", node.name, service_list_expect(cfg, features, node)))
            checks.append(PlannedCheck("probes", node.name, probes_expect(cfg, features, node)))
        checks += lb_per_node.get(node.name, [])
        checks += day_two_per_node.get(node.name, [])
    checks += lb_cluster
    checks += day_two_cluster
    if cfg.verify.connectivity_test:
        checks.append(PlannedCheck("connectivity-test", cfg.servers[0].name, {"minTests": 1}))
    if cfg.verify.benchmark:
        checks.append(PlannedCheck("benchmark", None, {"figures": list(BENCHMARK_FIGURES)}))
    return checks
