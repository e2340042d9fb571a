"""Traffic through every node's NodePort while a phase's ``pulumi up`` changes the Cilium release.

Each phase of ``lab/run datapath`` after the first is a Helm upgrade of the Cilium release (other values:
the next tier, L2 announcements, Hubble), which rolls the agents node by node, and at the baseline ends the
lab stops or starts kube-proxy first. How much traffic does that drop? While the phase's ``up`` runs, one
prober per node (``python -m lab.cluster.l2_failover probe``, in the lab's bridge namespace, where a client
on the nodes' segment would be) sends ``GET http://<node>:<smoke NodePort>/`` every 0.2 s with a 1 s
timeout; the verification's smoke Service, left by the phase before, answers from its pods. The figures
(:func:`figures`): requests, failures, the longest outage (from the start of the first failed request of
a run of failures to the start of the next answered one), and which agents were replaced during the ``up``.

What this is not: a Cilium *version* upgrade. Only Cilium 1.19.6 can be built here (the Go proxy refuses
github.com/cilium/cilium at 1.18.x), so every phase's release change is a change of values at 1.19.6.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.verify import SMOKE_NAME
from stacks.checks import VERIFY_NAMESPACE

from .l2_failover import INTERVAL_SECONDS, REQUEST_TIMEOUT_SECONDS, Prober, Sample

if TYPE_CHECKING:
    from .cluster import Cluster

def _seconds(value: float) -> float:
    return round(value, 2)


def figures(samples: Sequence[Sample]) -> dict[str, Any]:
    """What one prober's samples say: requests, failures, the longest outage and when failures happened
    (seconds after the first request)."""
    if not samples:
        return {"requests": 0, "failed": 0, "longestOutageSeconds": None, "failures": []}
    start = samples[0].started
    longest = 0.0
    outage_start: float | None = None
    for sample in samples:
        if not sample.ok and outage_start is None:
            outage_start = sample.started
        elif sample.ok and outage_start is not None:
            longest = max(longest, sample.started - outage_start)
            outage_start = None
    failing_at_end = outage_start is not None
    if outage_start is not None:
        longest = max(longest, samples[-1].ended - outage_start)
    failed = [sample for sample in samples if not sample.ok]
    return {
        "requests": len(samples),
        "failed": len(failed),
        "failedRatio": round(len(failed) / len(samples), 4),
        "longestOutageSeconds": _seconds(longest),
        # Still failing when the `up` ended: the outage runs on past the measurement.
        "failingAtEnd": failing_at_end,
        "failures": [
            {"at": _seconds(sample.started - start), "detail": sample.detail} for sample in failed[:20]
        ],
        "seconds": _seconds(samples[-1].ended - start),
    }


def summary(measured: dict[str, Any]) -> str:
    """One line of summary.txt: failed requests and the longest outage per node, and the agents replaced."""
    nodes = ", ".join(
        f"{node} {found['failed']}/{found['requests']} failed, longest {found['longestOutageSeconds']} s"
        + (" (still failing at the end)" if found.get("failingAtEnd") else "")
        for node, found in measured["byNode"].items()
    )
    replaced = ", ".join(measured.get("agentsReplaced") or []) or "none"
    return f"traffic through the NodePorts during `up`: {nodes}; agents replaced: {replaced}"


def node_port(cluster: Cluster) -> int | None:
    """The smoke Service's NodePort, or None while there is no smoke Service (before the first ``up``)."""
    got = cluster.plane.kubectl(
        "-n", VERIFY_NAMESPACE, "get", "service", SMOKE_NAME, "-o", "jsonpath={.spec.ports[0].nodePort}"
    )
    return int(got.stdout) if got.returncode == 0 and got.stdout.strip().isdigit() else None


def agent_pods(cluster: Cluster) -> dict[str, str]:
    """Node -> its Cilium agent pod's name."""
    got = cluster.plane.kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=cilium", "-o", "json")
    if got.returncode:
        return {}
    items = json.loads(got.stdout).get("items") or []
    return {item["spec"].get("nodeName", ""): item["metadata"]["name"] for item in items}


@contextmanager
def measured(cluster: Cluster, out: Path, label: str, details: dict[str, Any]) -> Iterator[None]:
    """Probe every node's NodePort while the body runs (a phase's ``up``); the figures go into ``details``."""
    port = node_port(cluster)
    if port is None:
        details["skipped"] = "no smoke Service yet: the first phase's `up` makes it"
        yield
        return
    before = agent_pods(cluster)
    probers = {
        member.name: Prober(cluster.lab_netns, f"{member.address}:{port}", out / f"traffic-{label}-{member.name}.jsonl")
        for member in cluster.members
    }
    try:
        yield
    finally:
        details.update(
            {
                "what": f"GET http://<node>:{port}/ every {INTERVAL_SECONDS} s ({REQUEST_TIMEOUT_SECONDS} s timeout) "
                "from the lab's bridge namespace to each node's NodePort of the smoke Service, while the `up` ran",
                "byNode": {name: figures(prober.stop()) for name, prober in probers.items()},
            }
        )
        after = agent_pods(cluster)
        details["agentsReplaced"] = sorted(node for node, pod in after.items() if before.get(node) != pod)
