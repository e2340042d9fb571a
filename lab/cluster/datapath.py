"""``lab/run datapath``: the program's Cilium half through the real engine on the namespace cluster.

The cluster (cluster.py) starts; then the lab program (lab/programs/datapath: the product's
CiliumRelease, KubeProxyRemoval and Verification) runs with the real Pulumi CLI and engine, the
Kubernetes provider and the lab's command provider, all inside the lab's network namespace where the
nodes are reached, through these phases:

1. ``baseline``: upstream kube-proxy (iptables mode) on every node, Cilium as CNI only;
2. ``kpr``: kube-proxy stopped first, as a K3s restart with ``disable-kube-proxy`` stops the one it
   embeds (its rules stay for the program's removal to clean);
3. ``l2``: ``kpr`` with ``loadBalancer.mode: l2`` (a pool on the nodes' segment, announced by the agents,
   which the lab labels first) and ``verify.fromRunner``; then the failover of the announcing node,
   measured from the bridge namespace (l2_failover.py);
4. ``hubble``: ``kpr`` with ``features.hubble`` and ``hubble: {relay: true, metrics: [drop, tcp, flow]}``
   (chart.HUBBLE; the TLS certificates the lab's, chart.hubble_tls): the program's Hubble checks, and the
   lab's own reads of the relay, the flows and the metrics;
5. ``performance``, without ``loadBalancer`` and ``hubble`` again: the pool and the policy, the relay and
   every Hubble object must be gone, the agents' Hubble off;
6. ``extreme`` without the features this kernel cannot give (BIG TCP, XDP on veth, map sizing are
   tried: their outcome is reported, and the sequence goes on whatever it was);
7. back to ``kpr``, then ``baseline`` (kube-proxy started again first, as K3s would).

While each ``up`` after the first runs, probers send requests to every node's NodePort of the smoke
Service and the lab reports what failed (traffic.py): the disruption of a Cilium release change (of values,
at 1.19.6 only) and, at the baseline ends, of kube-proxy stopped or started by the lab.

After each ``up`` a second ``up`` must change nothing (``--expect-no-changes``), and the lab reads
for itself what the program claims: KUBE-* chains in both iptables backends, the agents' own
kube-proxy replacement status, and the smoke Service's ClusterIP and every node's NodePort from
inside a smoke pod of each node. Then ``destroy`` (after a failed phase too), what it leaves on the
nodes, and the teardown.
Features this kernel cannot give are listed as not testable, never as passed.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from components.verify import SMOKE_LABELS, SMOKE_NAME
from stacks import hubble as product_hubble
from stacks.checks import LOADBALANCER_SERVICE, SMOKE_PORT, VERIFY_NAMESPACE
from stacks.load_balancer import L2_LEASE_PREFIX, lease_name, seconds

from ..engine import COMMAND_PROVIDER, PulumiRun, passed_or_raise, toolchain_env
from ..report import KIND_LAB, KIND_PULUMI, PASSED, Report, Step, StepFailed
from . import coredns, l2_failover, traffic
from .chart import (
    CHART,
    CHART_SUMS,
    CLUSTER_NAME,
    HUBBLE,
    L2_ANNOUNCE_LABEL,
    REPO,
    agent_statuses,
    chart_images,
    hubble_tls,
    program_plan,
    render_chart,
    stack_config,
    write_stack,
)
from .cluster import KUBERNETES_VERSION, Cluster, missing_binaries, named_netns, run_dir

STACK = "datapath"
PROGRAM = REPO / "lab" / "programs" / "datapath"
PRODUCT_LINKS = ("components", "stacks", "verification", "requirements.txt", ".venv")


@dataclass(frozen=True)
class Phase:
    name: str
    tier: str
    # A phase that is not required is tried and its outcome reported, and the sequence goes on (the
    # next phase must converge from whatever it left).
    required: bool = True
    # loadBalancer.mode l2 and verify.fromRunner (chart.l2_config), then the failover measurement.
    l2: bool = False
    # features.hubble and the hubble section (chart.HUBBLE), then the lab's reads of Hubble.
    hubble: bool = False

    @property
    def key(self) -> tuple[str, bool, bool]:
        """What decides the phase's stack (and its plan): tier, l2, hubble."""
        return self.tier, self.l2, self.hubble

    @property
    def label(self) -> str:
        return self.tier + ("-l2" if self.l2 else "") + ("-hubble" if self.hubble else "")


PHASES = (
    Phase("baseline", "baseline"),
    Phase("kpr", "kpr"),
    Phase("l2", "kpr", l2=True),
    Phase("hubble", "kpr", hubble=True),
    Phase("performance", "performance"),
    Phase("extreme", "extreme", required=False),
    Phase("rollback-kpr", "kpr"),
    Phase("rollback-baseline", "baseline"),
)
# The LoadBalancer objects the program makes with loadBalancer.mode l2, by their CRDs.
LOAD_BALANCER_KINDS = "ciliumloadbalancerippools.cilium.io,ciliuml2announcementpolicies.cilium.io"
SAMPLES_FILE = "l2-failover-samples.jsonl"
KIND_TRIED = "pulumi, tried: the outcome is reported, not required"
NODE_COUNT = 3
# What this kernel (no loadable modules) lacks, so the lab cannot show it, with the missing piece.
NOT_TESTABLE = {
    "bandwidthManager": "no sch_fq qdisc in this kernel (off in the lab's extreme stack)",
    "bbr": "needs the bandwidth manager (sch_fq) (off in the lab's extreme stack)",
    "netkit": "no netkit device in this kernel",
    "tunnel (geneve)": "no geneve in this kernel",
    "encryption (WireGuard)": "no WireGuard in this kernel",
    "encryption (IPsec)": "no ESP (xfrm) in this kernel",
    "hostTuning": "tunes hosts (tuned, CPU governor, IRQs), not namespace nodes: the lab program has no HostTuning",
    "kpr-integrity check": "reads K3s' own process and config files; K3s does not run here",
    "l7Proxy (Envoy)": "Envoy cannot be built here",
    "hubble.ui": "hubble-ui and its backend are a project of their own (JavaScript and Go) that the Go proxy does "
    "not serve: their images cannot be built here (hubble.ui stays false in the hubble phase)",
    "hubble.tls.auto (certgen CronJob)": "github.com/cilium/certgen is not served by the Go proxy (403), so the "
    "certgen image cannot be built: in the hubble phase the lab gives the chart certificates of its own "
    "(hubble.tls.auto.enabled false; TLS itself stays on)",
}
# Hubble's objects in kube-system the chart makes (hubble phase), by kind.
HUBBLE_KINDS = "deployments,services,configmaps,secrets,serviceaccounts"
# What a hubble phase's chart gives the lab to read: the relay's Service and pods.
RELAY_LABEL = "k8s-app=hubble-relay"
# Every KUBE-* chain, as "<save command> <table> <chain>" lines, in both backends and families.
KUBE_CHAINS = r"""
for save in iptables-legacy-save iptables-nft-save ip6tables-legacy-save ip6tables-nft-save; do
  "$save" 2>/dev/null |
    awk -v save="$save" '/^\*/ { table = substr($0, 2) } /^:KUBE-/ { print save, table, substr($1, 2) }'
done
"""
# KUBE-* chains kubelet owns and keeps while it runs (the program's cleanup keeps them too, as it must).
KUBELET_CHAINS = {("filter", "KUBE-FIREWALL"), ("*", "KUBE-KUBELET-CANARY"), ("*", "KUBE-IPTABLES-HINT")}


def run(out: Path, keep: bool) -> int:
    missing = missing_binaries()
    if missing:
        print(f"not built: {', '.join(missing)}; run lab/datapath/build.sh build", flush=True)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    directory = run_dir()
    cluster = Cluster(NODE_COUNT, directory)
    report = Report(out / "report.json")
    report.lab = {
        "what": (
            f"upstream Kubernetes {KUBERNETES_VERSION} and Cilium 1.19.6 built here from Go modules, on "
            f"{NODE_COUNT} nodes that are Linux namespaces of this machine (kernel shared, no VMs); K3s did not run. "
            "Stand-ins for K3s, and nothing more: a `k3s` shim per node (kubectl, crictl, ctr handed to upstream "
            "tools), a forward of 127.0.0.1:6444 to the API server per node, upstream kube-proxy (iptables mode) "
            "started and stopped by the lab where K3s would start and stop its embedded one, CoreDNS deployed by "
            "the lab as K3s deploys it. Cilium's images (lab.local/cilium/*: agent, operator, Hubble Relay), "
            "CoreDNS' and the smoke image (our test server under the nginx name the program deploys) are built "
            "here; the chart is the official cilium-1.19.6.tgz through the program's air-gap settings. Hubble's "
            "certificates are the lab's (certgen cannot be built here): see notTestableHere."
        ),
        "engine": "the Pulumi CLI and engine built here (lab/toolchain.sh), our language host (lab/langhost), the "
        f"Kubernetes provider built here, command provider: {COMMAND_PROVIDER}",
        "program": "lab/programs/datapath: the product's CiliumRelease, KubeProxyRemoval and Verification",
        "nodes": cluster.describe(),
        "notTestableHere": NOT_TESTABLE,
    }
    report.write()
    with resource_peaks() as peaks:
        try:
            drive(cluster, report, directory, out)
        # The step it broke is marked failed with its message; the trace goes beside the report.
        except Exception:
            (out / "traceback.txt").write_text(traceback.format_exc())
        finally:
            with report.step("teardown", KIND_LAB) as step:
                if keep:
                    step.details["kept"] = {"runDir": str(directory), "labNetns": cluster.lab_netns}
                else:
                    cluster.stop()
                    step.details["left"] = leftovers(cluster)
                    if step.details["left"]:
                        raise StepFailed(f"left behind: {step.details['left']}")
            cluster.keep_logs(out)
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)
    report.lab["peaks"] = peaks
    report.finished = datetime.now(UTC).isoformat(timespec="seconds")
    failed = [s for s in report.steps if s.status != PASSED and s.kind != KIND_TRIED]
    report.ok = not failed
    if failed:
        report.stopped_at, report.stop_reason = failed[0].name, failed[0].first_error
    report.write()
    text = summary(report)
    (out / "summary.txt").write_text(text)
    print(text, end="")
    return 0 if report.ok else 1


def drive(cluster: Cluster, report: Report, directory: Path, out: Path) -> None:
    nodes = [(m.name, m.address) for m in cluster.members]
    with report.step("cluster", KIND_LAB) as step:
        plans = {
            phase.key: program_plan(
                write_stack(
                    directory / f"plan-{phase.label}.yaml",
                    stack_config(
                        phase.tier, nodes, l2=phase.l2, hubble=hubble_tls(directory) if phase.hubble else None
                    ),
                )
            )
            for phase in {phase.key: phase for phase in PHASES}.values()
        }
        images: set[str] = set()
        for phase in {phase.key: phase for phase in PHASES}.values():
            values = directory / f"values-{phase.label}.json"
            values.write_text(json.dumps(plans[phase.key]["ciliumValues"]))
            images |= set(chart_images(render_chart([values])))

        def record(name: str, started: float, **details: Any) -> None:
            step.details.setdefault("steps", []).append(
                {"name": name, "seconds": round(time.monotonic() - started, 1), **details}
            )

        cluster.start(record, sorted(images))
        step.details["ciliumImages"] = sorted(images)
    if report.steps[-1].status != PASSED:
        return

    env, why = toolchain_env()
    if env is None:
        for phase in PHASES:
            report.not_run(phase.name, KIND_PULUMI, why)
        return
    logs = out / "pulumi"
    logs.mkdir(parents=True, exist_ok=True)
    project = project_dir(directory)
    pulumi = PulumiRun(directory, env, project, logs, STACK, prefix=["ip", "netns", "exec", cluster.lab_netns])
    with report.step("stack-init", KIND_PULUMI) as step:
        passed_or_raise(step, pulumi.run(step, "stack", "init", "--secrets-provider", "passphrase"))
        stack_file = project / f"Pulumi.{STACK}.yaml"
        key = cluster.client_key.read_text()
        passed_or_raise(step, pulumi.run(step, "config", "set", "--secret", "k3s-cilium:sshPrivateKey", stdin=key))
        passed_or_raise(
            step, pulumi.run(step, "config", "set", "--secret", "kubeconfig", stdin=cluster.program_kubeconfig())
        )
    if report.steps[-1].status != PASSED:
        return

    l2_ran = hubble_ran = False
    for phase in PHASES:
        tier = phase.tier
        with report.step(phase.name, KIND_PULUMI if phase.required else KIND_TRIED) as step:
            if tier == "baseline":
                cluster.start_kube_proxy()
                step.details["kubeProxy"] = "started by the lab on every node before `up` (K3s would run it)"
            else:
                cluster.stop_kube_proxy()
                step.details["kubeProxy"] = "stopped by the lab before `up` (K3s restarted with disable-kube-proxy)"
            if phase.l2:
                step.details["l2AnnounceLabel"] = label_announcers(cluster)
            set_stack_config(stack_file, phase, cluster, directory)
            with traffic.measured(cluster, out, phase.name, step.details.setdefault("traffic", {})):
                result = pulumi.run(step, "up", "--yes", "--skip-preview")
            passed_or_raise(step, result)
            counts = step.resource_counts
            outputs = pulumi_outputs(pulumi, step)
            step.resource_counts = counts
            step.details["verification"] = verdicts(outputs.get("verification") or {})
            step.details["features"] = outputs.get("features")
            step.details["skippedFeatures"] = outputs.get("skippedFeatures")
            step.details["loadBalancer"] = outputs.get("loadBalancer")
            observe(cluster, tier, step)
            plan = plans[phase.key]
            if phase.l2:
                l2_ran = True
                observe_l2(cluster, plan, step, outputs.get("verification") or {})
                # Which nodes the backends run on: one on the failing holder cannot answer meanwhile.
                failover = step.details["failover"] = {"backendNodes": smoke_pods(cluster)}
                l2_failover.measure(cluster, l2_target(plan), lease_timings(plan), out / SAMPLES_FILE, failover)
            elif l2_ran:
                step.details["lab"]["loadBalancerDropped"] = dropped = load_balancer_objects(cluster)
                if dropped["objects"] or dropped["service"]:
                    raise StepFailed(f"loadBalancer dropped, but the `up` left {dropped}")
            if phase.hubble:
                hubble_ran = True
                step.details["hubble"] = observe_hubble(cluster, plan, outputs.get("verification") or {})
            elif hubble_ran:
                step.details["lab"]["hubbleDropped"] = gone = hubble_dropped(cluster)
                if gone["problems"]:
                    raise StepFailed("hubble dropped, but: " + "; ".join(gone["problems"]))
        if report.steps[-1].status != PASSED:
            if phase.required:
                break
            continue
        with report.step(f"{phase.name}-no-op", KIND_PULUMI) as step:
            passed_or_raise(step, pulumi.run(step, "up", "--yes", "--skip-preview", "--expect-no-changes"))
            changed = {k: v for k, v in (step.resource_counts or {}).items() if k != "unchanged" and v}
            if changed:
                raise StepFailed(f"the second `up` at {phase.name} changed resources: {changed}")
        if report.steps[-1].status != PASSED:
            break

    # After a failed phase too: what a user does next, and the state a failed `up` leaves must go.
    with report.step("destroy", KIND_PULUMI) as step:
        passed_or_raise(step, pulumi.run(step, "destroy", "--yes", "--skip-preview"))
        step.details["leftOnNodes"] = after_destroy(cluster)


def project_dir(directory: Path) -> Path:
    """The lab program's project: its Pulumi.yaml and __main__.py, links to the product's packages."""
    project = directory / "project"
    project.mkdir()
    for name in PRODUCT_LINKS:
        (project / name).symlink_to(REPO / name)
    shutil.copy(PROGRAM / "Pulumi.yaml", project / "Pulumi.yaml")
    (project / "__main__.py").symlink_to(PROGRAM / "__main__.py")
    return project


def engine_config(
    tier: str,
    nodes: list[tuple[str, str]],
    host_keys: dict[str, str],
    l2: bool = False,
    hubble: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The lab program's ``k3s-cilium:*`` config at ``tier`` (with ``l2``: chart.l2_config; with ``hubble``,
    the TLS overlay of chart.hubble_tls: Hubble on): the lab's stack with the host keys pinned and the
    official chart archive, checked against the SHA256SUMS published with it (the air-gap path)."""
    config = stack_config(tier, nodes, host_keys, l2=l2, hubble=hubble)
    config["k3s-cilium:airgap"]["sumsFile"] = str(CHART_SUMS)
    config["k3s-cilium:airgap"]["cilium"]["chart"] = str(CHART)
    return config


def set_stack_config(stack_file: Path, phase: Phase, cluster: Cluster, directory: Path) -> None:
    """The phase's config in the stack file, keeping what `pulumi config set --secret` wrote."""
    stack = yaml.safe_load(stack_file.read_text()) or {}
    kept = {k: v for k, v in (stack.get("config") or {}).items() if isinstance(v, dict) and "secure" in v}
    config = engine_config(
        phase.tier,
        [(m.name, m.address) for m in cluster.members],
        cluster.host_keys,
        phase.l2,
        hubble_tls(directory) if phase.hubble else None,
    )
    stack["config"] = {**config, **kept}
    stack_file.write_text(yaml.safe_dump(stack, sort_keys=False))


def pulumi_outputs(pulumi: PulumiRun, step: Step) -> dict[str, Any]:
    result = pulumi.run(step, "stack", "output", "--json")
    passed_or_raise(step, result)
    return dict(json.loads(result.stdout or "{}"))


def verdicts(verification: dict[str, Any]) -> dict[str, Any]:
    """The program's own verdicts, check by check: {node: {check: status}}, {check: status}."""
    nodes = {
        node: {check: result.get("status") for check, result in checks.items()}
        for node, checks in (verification.get("nodes") or {}).items()
    }
    cluster = {check: result.get("status") for check, result in (verification.get("cluster") or {}).items()}
    failed = [f"{node}/{check}" for node, checks in nodes.items() for check, s in checks.items() if s != "pass"]
    failed += [f"cluster/{check}" for check, status in cluster.items() if status != "pass"]
    if failed or not nodes:
        raise StepFailed(f"the program's verification did not pass everywhere: {failed or 'no node checked'}")
    return {"nodes": nodes, "cluster": cluster}


def observe(cluster: Cluster, tier: str, step: Step) -> None:
    """What the lab reads for itself after an ``up``, independent of the program's checks, into the step."""
    kpr = tier != "baseline"
    problems: list[str] = []
    observed: dict[str, Any] = step.details.setdefault("lab", {})
    observed["kubeProxyChains"] = chains = {}
    for member in cluster.members:
        listed = cluster.ssh(member, KUBE_CHAINS).stdout.split("\n")
        found = [line.split() for line in listed if len(line.split()) == 3]
        chains[member.name] = sorted(
            f"{save} {table} {chain}"
            for save, table, chain in found
            if (table, chain) not in KUBELET_CHAINS and ("*", chain) not in KUBELET_CHAINS
        )
        if kpr and chains[member.name]:
            problems.append(
                f"{member.name}: kube-proxy's chains left with kube-proxy replacement: {chains[member.name]}"
            )
        if not kpr and not any(c.endswith(" nat KUBE-SERVICES") for c in chains[member.name]):
            problems.append(f"{member.name}: no KUBE-SERVICES chain at baseline, where kube-proxy runs")
    observed["agentKubeProxyReplacement"] = agents = agent_kpr(cluster)
    for node, line in agents.items():
        if kpr != line.startswith("True"):
            problems.append(f"{node}: agent says KubeProxyReplacement {line!r} at {tier}")
    observed["fromPods"] = from_pods = pod_probes(cluster)
    problems += [
        f"{pod}: {target} failed: {said}"
        for pod, results in from_pods.items()
        for target, said in results.items()
        if not said.startswith("200 ")
    ]
    if problems:
        raise StepFailed("; ".join(problems))


def label_announcers(cluster: Cluster) -> dict[str, Any]:
    """The label the l2 phase's nodeSelector names, on every node but the server (kubectl, as an operator
    would): the announcing node can then fail while the API server goes on."""
    key, value = L2_ANNOUNCE_LABEL
    agents = [m.name for m in cluster.members if m is not cluster.server]
    labelled = cluster.plane.kubectl("label", "node", *agents, f"{key}={value}", "--overwrite")
    if labelled.returncode:
        raise StepFailed(f"kubectl label node {' '.join(agents)} {key}={value}: {labelled.stderr.strip()}")
    return {"label": f"{key}={value}", "nodes": agents}


def l2_target(plan: dict[str, Any]) -> l2_failover.Target:
    """The test Service's address and its lease, as the program's plan of the l2 stack names them."""
    expect = {check["check"]: check["expect"] for check in plan["checks"] if check["node"] is None}
    return l2_failover.Target(
        address=expect["loadbalancer-address"]["address"], port=SMOKE_PORT, lease=expect["l2-lease"]["lease"]
    )


def lease_timings(plan: dict[str, Any]) -> tuple[float, float]:
    """The lease duration and renew deadline the plan configures, in seconds."""
    leases = plan["loadBalancer"]["leases"]
    return seconds(leases["duration"]), seconds(leases["renewDeadline"])


def load_balancer_objects(cluster: Cluster) -> dict[str, Any]:
    """The program's LoadBalancer objects in the cluster (pools, L2 policies), the test Service and its lease."""
    kubectl = cluster.plane.kubectl
    listed = kubectl("get", LOAD_BALANCER_KINDS, "-o", "name")
    service = kubectl(
        "-n", VERIFY_NAMESPACE, "get", "service", LOADBALANCER_SERVICE, "-o", "name", "--ignore-not-found"
    )
    lease = lease_name(VERIFY_NAMESPACE, LOADBALANCER_SERVICE)
    leased = kubectl("-n", "kube-system", "get", "lease", lease, "-o", "name", "--ignore-not-found")
    found: dict[str, Any] = {
        "objects": listed.stdout.split(),
        "service": service.stdout.strip() or None,
        # Cilium's lease is Cilium's, not the program's: reported, not judged.
        "lease": leased.stdout.strip() or None,
    }
    if listed.returncode:
        found["error"] = listed.stderr.strip()
    return found


def observe_l2(cluster: Cluster, plan: dict[str, Any], step: Step, verification: dict[str, Any]) -> None:
    """After the l2 phase's ``up``: the pool and policy exist, the test Service has the address it asked for,
    and a node holds its lease (what the program's own checks asserted, read by the lab). The program's
    probes of the address, from every node and from the runner (the bridge namespace), go in the report."""
    target = l2_target(plan)
    observed = step.details.setdefault("lab", {})
    probed = {
        node: checks.get("probes", {}).get("figures", {}).get("results", {}).get("loadbalancer")
        for node, checks in (verification.get("nodes") or {}).items()
    }
    runner = (verification.get("cluster") or {}).get("probes", {}).get("figures", {}).get("results", {})
    probed["runner (bridge namespace)"] = runner.get("loadbalancer-from-runner")
    observed["loadBalancerProbes"] = probed
    observed["loadBalancerObjects"] = found = load_balancer_objects(cluster)
    service = cluster.plane.kubectl(
        "-n", VERIFY_NAMESPACE, "get", "service", LOADBALANCER_SERVICE, "-o", "jsonpath={.status.loadBalancer}"
    )
    observed["serviceStatus"] = json.loads(service.stdout or "{}")
    ingress = [entry.get("ip") for entry in observed["serviceStatus"].get("ingress", [])]
    holder = l2_failover.lease(cluster, target).get("holderIdentity")
    observed["leaseHolder"] = holder
    problems = []
    if len(found["objects"]) != len(plan["loadBalancer"]["objects"]):
        problems.append(f"objects {found['objects']}, planned {plan['loadBalancer']['objects']}")
    if ingress != [target.address]:
        problems.append(f"{LOADBALANCER_SERVICE} has {ingress}, not [{target.address}]")
    if holder not in {m.name for m in cluster.members if m is not cluster.server}:
        problems.append(f"lease {target.lease} held by {holder!r}, not by a labelled node")
    if problems:
        raise StepFailed("l2: " + "; ".join(problems))


def program_hubble_verdicts(verification: dict[str, Any]) -> dict[str, Any]:
    """The program's Hubble checks from its verification output: status and figures, per node and cluster."""
    picked: dict[str, Any] = {"nodes": {}, "cluster": {}}
    for node, checks in (verification.get("nodes") or {}).items():
        for check, entry in checks.items():
            if check.startswith("hubble-"):
                picked["nodes"].setdefault(node, {})[check] = {k: entry.get(k) for k in ("status", "figures")}
    for check, entry in (verification.get("cluster") or {}).items():
        if check.startswith("hubble-"):
            picked["cluster"][check] = {k: entry.get(k) for k in ("status", "figures")}
    return picked


def agent_pod(cluster: Cluster, node: str) -> str:
    pods = cluster.plane.kubectl(
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "k8s-app=cilium",
        "--field-selector",
        f"spec.nodeName={node}",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    )
    return pods.stdout.strip()


def hubble_in_agent(cluster: Cluster, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The hubble CLI in an agent container (as the program's relay check runs it)."""
    return cluster.plane.kubectl(
        "-n", "kube-system", "exec", pod, "-c", "cilium-agent", "--", "hubble", *args, timeout=60
    )


def flows_of(text: str) -> list[dict[str, Any]]:
    """``hubble observe -o json``: one JSON object a line, the flow in ``flow`` (or the line itself)."""
    found = []
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            document = json.loads(line)
            if isinstance(document, dict):
                found.append(document.get("flow", document))
    return found


def metric_families(text: str, prefix: str = "hubble_") -> dict[str, dict[str, float]]:
    """Prometheus text: per ``hubble_*`` family, its sample count and the sum of its values."""
    families: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        with contextlib.suppress(ValueError, IndexError):
            value = float(line.rsplit(" ", 1)[1])
            family = families.setdefault(name, {"samples": 0, "sum": 0.0})
            family["samples"] += 1
            family["sum"] += value
    return families


def observe_hubble(cluster: Cluster, plan: dict[str, Any], verification: dict[str, Any]) -> dict[str, Any]:
    """After the hubble phase's ``up``: the program's Hubble verdicts and figures, and what the lab reads
    itself: the relay's Deployment and pod, the relay's view (``hubble status``, ``hubble list nodes``, the
    last flows) from the server's agent container, every node's Hubble server (TLS certificate on 4244) and
    metrics (port 9965, the families of the metrics the stack asks for)."""
    kubectl = cluster.plane.kubectl
    problems: list[str] = []
    seen: dict[str, Any] = {
        "stack": HUBBLE,
        "planned": plan.get("hubble"),
        "program": program_hubble_verdicts(verification),
    }
    deployment = json.loads(
        kubectl("-n", "kube-system", "get", "deployment", product_hubble.RELAY_DEPLOYMENT, "-o", "json").stdout or "{}"
    )
    status = deployment.get("status", {})
    seen["relayDeployment"] = {
        "replicas": status.get("replicas"),
        "ready": status.get("readyReplicas"),
        "image": (deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}])[0].get(
            "image"
        ),
    }
    pods = json.loads(kubectl("-n", "kube-system", "get", "pods", "-l", RELAY_LABEL, "-o", "json").stdout or "{}")
    seen["relayPods"] = {
        pod["metadata"]["name"]: {
            "node": pod["spec"].get("nodeName"),
            "phase": pod.get("status", {}).get("phase"),
            "restarts": sum(c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses", [])),
        }
        for pod in pods.get("items", [])
    }
    if not status.get("readyReplicas"):
        problems.append(f"hubble-relay not ready: {seen['relayDeployment']}")
    relay_ip = kubectl(
        "-n", "kube-system", "get", "service", product_hubble.RELAY_SERVICE, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout.strip()
    peer = json.loads(kubectl("-n", "kube-system", "get", "service", "hubble-peer", "-o", "json").stdout or "{}")
    seen["services"] = {
        "hubble-relay": f"{relay_ip}:{product_hubble.RELAY_PORT}",
        "hubble-peer": [f"{p.get('port')}->{p.get('targetPort')}" for p in peer.get("spec", {}).get("ports", [])],
    }
    server = f"{relay_ip}:{product_hubble.RELAY_PORT}"
    pod = agent_pod(cluster, cluster.server.name)
    relay_status = hubble_in_agent(cluster, pod, "status", "--server", server)
    seen["relayStatus"] = (relay_status.stdout or relay_status.stderr).strip().splitlines()
    listed = hubble_in_agent(cluster, pod, "list", "nodes", "--server", server)
    seen["relayNodes"] = (listed.stdout or listed.stderr).strip().splitlines()
    observed = hubble_in_agent(cluster, pod, "observe", "--server", server, "--last", "200", "-o", "json")
    flows = flows_of(observed.stdout)
    seen["flows"] = {
        "read": len(flows),
        "byNode": dict(sorted(Counter(f.get("node_name") for f in flows).items(), key=str)),
        "byVerdict": dict(Counter(f.get("verdict") for f in flows)),
        "dropReasons": dict(Counter(f.get("drop_reason_desc") for f in flows if f.get("verdict") == "DROPPED")),
        "toSmoke": sum(1 for f in flows if (f.get("destination") or {}).get("namespace") == VERIFY_NAMESPACE),
    }
    if not any(line.strip().startswith("Healthcheck") and line.strip().endswith("Ok") for line in seen["relayStatus"]):
        problems.append(f"the relay's health check is not Ok: {seen['relayStatus']}")
    connected = f"{len(cluster.members)}/{len(cluster.members)}"
    if not any(line.split(":")[-1].strip() == connected for line in seen["relayStatus"] if "Connected Nodes" in line):
        problems.append(f"the relay is not connected to {connected} nodes: {seen['relayStatus']}")
    if not flows:
        problems.append(f"no flow through the relay: {(observed.stderr or observed.stdout).strip()[:300]}")
    seen["nodes"] = {}
    wanted = [m.split(":")[0] for m in HUBBLE["metrics"]]
    families = {"drop": "hubble_drop_total", "tcp": "hubble_tcp_flags_total", "flow": "hubble_flows_processed_total"}
    for member in cluster.members:
        name = f"{member.name}.{CLUSTER_NAME}.hubble-grpc.cilium.io"
        certificate = cluster.ssh(
            member,
            f"timeout 10 openssl s_client -connect {member.address}:{product_hubble.HUBBLE_PORT} -servername {name} "
            "</dev/null 2>/dev/null | openssl x509 -noout -subject -issuer",
        )
        metrics = cluster.ssh(member, f"curl -sS --max-time 10 http://127.0.0.1:{product_hubble.METRICS_PORT}/metrics")
        found = metric_families(metrics.stdout)
        seen["nodes"][member.name] = {
            "hubbleServerCertificate": certificate.stdout.strip().splitlines() or certificate.stderr.strip(),
            "metrics": {family: found.get(family) for family in (families[m] for m in wanted if m in families)},
            "metricFamilies": sorted(found),
        }
        if "hubble-grpc.cilium.io" not in certificate.stdout:
            problems.append(
                f"{member.name}: no TLS certificate on {product_hubble.HUBBLE_PORT}: {certificate.stdout!r}"
            )
        missing = [family for family in (families[m] for m in wanted if m in families) if family not in found]
        # hubble_drop_total appears only once something was dropped: reported, not required.
        missing = [family for family in missing if family != families["drop"]]
        if missing:
            problems.append(f"{member.name}: metrics without {missing} (curl: {metrics.stderr.strip()[:200]})")
    seen["problems"] = problems
    if problems:
        raise StepFailed("hubble: " + "; ".join(problems))
    return seen


def hubble_dropped(cluster: Cluster, timeout: float = 90) -> dict[str, Any]:
    """After a phase without Hubble that follows the hubble phase: no Hubble object of the chart's left in
    kube-system, no relay pod, every agent's Hubble disabled, nothing listening on the metrics port. Read
    again (2 s apart, at most ``timeout``) while the relay's pod terminates."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        listed = cluster.plane.kubectl("-n", "kube-system", "get", HUBBLE_KINDS, "-o", "name")
        objects = [name for name in listed.stdout.split() if "hubble" in name.rpartition("/")[2]]
        pods = cluster.plane.kubectl("-n", "kube-system", "get", "pods", "-l", RELAY_LABEL, "-o", "name")
        agents = {
            node: next((x for x in status.stdout.splitlines() if x.startswith("Hubble:")), status.stderr.strip())
            for node, status in agent_statuses(cluster.plane).items()
        }
        listening = {
            m.name: bool(cluster.ssh(m, f"ss -Hltn 'sport = :{product_hubble.METRICS_PORT}'").stdout.strip())
            for m in cluster.members
        }
        problems = []
        if objects:
            problems.append(f"objects left: {objects}")
        if pods.stdout.split():
            problems.append(f"relay pods left: {pods.stdout.split()}")
        problems += [f"{node}: {line!r}" for node, line in agents.items() if "Disabled" not in line]
        problems += [
            f"{node}: port {product_hubble.METRICS_PORT} still listening" for node, on in listening.items() if on
        ]
        if not problems or time.monotonic() > deadline:
            return {
                "objects": objects,
                "relayPods": pods.stdout.split(),
                "agentHubble": agents,
                "metricsListening": listening,
                "problems": problems,
                "secondsUntilGone": None if problems else round(time.monotonic() - started, 1),
            }
        time.sleep(2)


def agent_kpr(cluster: Cluster) -> dict[str, str]:
    """Each agent's ``KubeProxyReplacement:`` line of ``cilium-dbg status``, by node."""
    found = {}
    for node, status in agent_statuses(cluster.plane).items():
        line = next((x for x in status.stdout.splitlines() if x.startswith("KubeProxyReplacement:")), "")
        found[node] = line.removeprefix("KubeProxyReplacement:").strip() or status.stderr.strip()
    return found


def smoke_pods(cluster: Cluster) -> dict[str, str]:
    """The smoke pods (the test Services' backends) and their nodes."""
    selector = ",".join(f"{key}={value}" for key, value in SMOKE_LABELS.items())
    pods = cluster.plane.kubectl("-n", VERIFY_NAMESPACE, "get", "pods", "-l", selector, "-o", "json")
    items = json.loads(pods.stdout or "{}").get("items", [])
    return {pod["metadata"]["name"]: pod["spec"].get("nodeName") for pod in items}


def pod_probes(cluster: Cluster) -> dict[str, dict[str, str]]:
    """From one smoke pod per node (the test server's ``get``): the Service's ClusterIP and each node's NodePort."""
    kubectl = cluster.plane.kubectl
    service = json.loads(kubectl("-n", VERIFY_NAMESPACE, "get", "service", SMOKE_NAME, "-o", "json").stdout)
    port = service["spec"]["ports"][0]
    targets = [f"http://{service['spec']['clusterIP']}:{port['port']}/"]
    targets += [f"http://{m.address}:{port['nodePort']}/" for m in cluster.members]
    one_per_node = {node: pod for pod, node in smoke_pods(cluster).items()}
    results: dict[str, dict[str, str]] = {}
    for node, pod in sorted(one_per_node.items()):
        answers = results[f"{pod} ({node})"] = {}
        for target in targets:
            answered = kubectl("-n", VERIFY_NAMESPACE, "exec", pod, "--", "/testserver", "get", target)
            answers[target] = (answered.stdout or answered.stderr).strip()
    return results


def after_destroy(cluster: Cluster) -> dict[str, Any]:
    """What remains once the program's resources are destroyed: Kubernetes objects and, per node, what
    Cilium's agent left in the kernel (K3s' uninstall, not run here, removes it on real hosts)."""
    left: dict[str, Any] = {}
    pods = cluster.plane.kubectl("get", "pods", "-A", "-o", "json")
    items = json.loads(pods.stdout or "{}").get("items", [])
    # CoreDNS is K3s' own (the lab deploys it as K3s does), not the program's: reported, not judged.
    k3s_own = [
        pod
        for pod in items
        if pod["metadata"]["namespace"] == coredns.NAMESPACE
        and all(pod["metadata"].get("labels", {}).get(k) == v for k, v in coredns.LABELS.items())
    ]
    left["coredns"] = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in k3s_own]
    left["pods"] = [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in items if p not in k3s_own]
    namespaces = cluster.plane.kubectl("get", "namespace", VERIFY_NAMESPACE, "-o", "name")
    left["verifyNamespace"] = namespaces.stdout.strip() or None
    # The L2 announcement leases are Cilium's (its agents make them), not the program's: reported, not judged.
    leases = cluster.plane.kubectl("-n", "kube-system", "get", "leases", "-o", "name")
    left["ciliumL2Leases"] = [name for name in leases.stdout.split() if "/" + L2_LEASE_PREFIX in name]
    for member in cluster.members:
        links = cluster.ssh(member, "ip -o link show | awk -F': ' '{print $2}' | grep -E '^(cilium|lxc)' || true")
        left[member.name] = {"ciliumLinks": links.stdout.split()}
    if left["pods"] or left["verifyNamespace"]:
        raise StepFailed(f"`destroy` left Kubernetes objects: {left['pods']} {left['verifyNamespace'] or ''}")
    return left


def leftovers(cluster: Cluster) -> list[str]:
    """What the teardown should have removed and did not: namespaces, cgroups, processes."""
    left = [f"netns {name}" for name in sorted(named_netns() - cluster.netns_before)]
    for member in cluster.members:
        left += [f"cgroup {c}" for c in member.cgroups() if c.exists()]
    for process in [*cluster.plane.processes.values(), *(m.process for m in cluster.members if m.process)]:
        if process.poll() is None:
            left.append(f"process {process.pid}")
    return left


@contextmanager
def resource_peaks() -> Iterator[dict[str, Any]]:
    """The machine's peak memory in use and the peak growth of disk use while the body runs (sampled
    every 2 s): the lab shares the machine, so these bound what it needs."""
    peaks: dict[str, Any] = {"memoryUsedBytes": 0, "diskGrowthBytes": 0, "sampleSeconds": 2}
    disk_before = shutil.disk_usage("/").used
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(2):
            meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
            used = (int(meminfo["MemTotal"].split()[0]) - int(meminfo["MemAvailable"].split()[0])) * 1024
            peaks["memoryUsedBytes"] = max(peaks["memoryUsedBytes"], used)
            peaks["diskGrowthBytes"] = max(peaks["diskGrowthBytes"], shutil.disk_usage("/").used - disk_before)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peaks
    finally:
        stop.set()
        thread.join()


def summary(report: Report) -> str:
    lines = [f"lab/run datapath: {'passed' if report.ok else 'FAILED at ' + str(report.stopped_at)}"]
    for step in report.steps:
        counts = ", ".join(f"{k} {v}" for k, v in (step.resource_counts or {}).items())
        lines.append(f"  {step.status:7} {step.name:24} {step.seconds or 0:7.1f} s  {counts}")
        if step.status != PASSED:
            tried = " (tried, not required)" if step.kind == KIND_TRIED else ""
            lines.append(f"          {step.first_error or step.reason}{tried}")
        if step.details.get("traffic", {}).get("byNode"):
            lines.append(f"          {traffic.summary(step.details['traffic'])}")
        if "failover" in step.details:
            lines += failover_summary(step.details["failover"])
        if "hubble" in step.details:
            lines += hubble_summary(step.details["hubble"])
        gone = step.details.get("lab", {}).get("hubbleDropped")
        if gone is not None:
            lines.append(
                f"          hubble dropped: objects left {gone['objects'] or 'none'}, relay pods "
                f"{gone['relayPods'] or 'gone'}, agents {sorted(set(gone['agentHubble'].values()))}, "
                f"metrics port listening on {[n for n, on in gone['metricsListening'].items() if on] or 'no node'}"
            )
        dropped = step.details.get("lab", {}).get("loadBalancerDropped")
        if dropped is not None:
            lines.append(
                f"          loadBalancer dropped: pools/policies left {dropped['objects'] or 'none'}, "
                f"service {dropped['service'] or 'gone'}, Cilium's lease {dropped['lease'] or 'gone'}"
            )
    peaks = report.lab.get("peaks", {})
    lines.append(
        f"  peak memory in use {peaks.get('memoryUsedBytes', 0) / 2**30:.1f} GiB, "
        f"disk growth {peaks.get('diskGrowthBytes', 0) / 2**30:.1f} GiB"
    )
    lines += [f"  not testable here: {name} ({why})" for name, why in NOT_TESTABLE.items()]
    return "\n".join(lines) + "\n"


def hubble_summary(seen: dict[str, Any]) -> list[str]:
    """The hubble phase's figures, a few lines in summary.txt."""
    program = seen.get("program") or {}
    verdicts = [
        f"{node}/{check} {entry.get('status')}"
        for node, checks in program.get("nodes", {}).items()
        for check, entry in checks.items()
    ]
    verdicts += [f"cluster/{check} {entry.get('status')}" for check, entry in program.get("cluster", {}).items()]
    relay = [line.strip() for line in seen.get("relayStatus") or [] if line.strip()]
    flows = seen.get("flows") or {}
    metrics = {
        node: {family: (figures or {}).get("sum") for family, figures in (entry.get("metrics") or {}).items()}
        for node, entry in (seen.get("nodes") or {}).items()
    }
    return [
        f"          hubble, the program's checks: {', '.join(verdicts)}",
        f"          relay {seen.get('relayDeployment')} pods {seen.get('relayPods')}; {'; '.join(relay)}",
        f"          flows through the relay: {flows.get('read')} read, by node {flows.get('byNode')}, "
        f"by verdict {flows.get('byVerdict')} (drops: {flows.get('dropReasons')}), to the smoke namespace "
        f"{flows.get('toSmoke')}",
        f"          metrics (sums) per node: {metrics}",
    ]


def failover_summary(failover: dict[str, Any]) -> list[str]:
    """The failover figures, a few lines under the l2 phase in summary.txt."""
    if not failover.get("holderBefore"):
        return []
    after = failover.get("afterRecovery") or {}
    during = failover.get("duringOutage") or {}
    restore = failover.get("restore") or {}
    bound = failover.get("docsBoundSeconds") or ["?", "?"]
    return [
        f"          failover of {failover.get('address')}: holder {failover.get('holderBefore')} -> "
        f"{failover.get('holderAfter')}, MAC {failover.get('macBefore')} -> {failover.get('macAfter')}",
        f"          lease moved {failover.get('leaseMovedSeconds')} s after the failure (acquireTime; seen by "
        f"polling {failover.get('leaseSeenMovedSeconds')} s; docs: {bound[0]}-{bound[1]} s), first answer "
        f"{failover.get('firstAnswerSeconds')} s, outage {failover.get('outageSeconds')} s "
        f"(longest gap {failover.get('longestGapSeconds')} s)",
        f"          meanwhile {during.get('answered')}/{during.get('requests')} answered with the old MAC in the "
        f"neighbour entry, answers' source MACs {during.get('sources')}; failures {during.get('failures')}",
        f"          the {after.get('windowSeconds')} s after it: {after.get('answered')}/{after.get('requests')} "
        f"answered (ratio {after.get('ratio')}); failures {after.get('failures')}; backends on "
        f"{sorted(set((failover.get('backendNodes') or {}).values()))}",
        f"          {restore.get('node')} back: node lease renewed {restore.get('nodeLeaseRenewedSeconds')} s, "
        f"Ready {restore.get('nodeReadySeconds')} s, agent healthy {restore.get('agentHealthySeconds')} s",
    ]
