"""The official Cilium chart as the namespace cluster uses it: the program's plan of a stack (its values and
checks), the lab's overlay on those values, and the images a rendering runs."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import pki
from .cluster import KUBERNETES_VERSION, cache_root
from .control_plane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO.parent / "shared" / "cilium-chart"
CHART, CHART_VALUES = CHARTS / "archives" / "cilium-1.19.6.tgz", CHARTS / "1.19.6" / "values.yaml"
CHART_SUMS = CHARTS / "archives" / "SHA256SUMS"
STACK = Path(__file__).with_name("stack.yaml")
TIERS = ("baseline", "kpr", "performance", "extreme")
# Off in the lab, through the program's own per-feature overrides: this kernel has no sch_fq qdisc.
WITHOUT_SCH_FQ = {"bandwidthManager": False, "bbr": False}
# The label the lab puts on the nodes that may announce LoadBalancer addresses (the agents, with kubectl,
# before a phase with ``l2``): the announcing node can then fail without taking the API server with it.
L2_ANNOUNCE_LABEL = ("k3s-cilium-lab/l2-announce", "yes")
# The pool of the ``l2`` phase: on the nodes' segment (10.99.0.0/24), clear of the nodes' addresses.
L2_POOL = ("lab", "10.99.0.200/29")

# The hubble phase's stack: the Hubble server in every agent, Hubble Relay and three metrics. The UI stays
# off: hubble-ui and its backend are a project of their own (JavaScript and Go, not in Cilium's module), and
# the Go proxy does not serve them, so their images cannot be built here.
HUBBLE: dict[str, Any] = {"relay": True, "ui": False, "metrics": ["drop", "tcp", "flow"]}
# The chart's cluster.name, which the program leaves at its default: part of the agents' TLS server names.
CLUSTER_NAME = "default"


def hubble_tls(directory: Path) -> dict[str, Any]:
    """The lab's one deviation for Hubble, a values overlay: the program renders ``hubble.tls.auto`` with
    ``method: cronJob``, which runs Cilium's certgen image, and ``github.com/cilium/certgen`` is not served by
    the Go proxy (403), so that image cannot be built here. TLS stays on (the agents' Hubble servers on 4244
    with mutual TLS, the relay a TLS client, the peer Service on 443), with certificates the lab makes with
    openssl (a CA of its own, made once per run in ``directory``) and hands the chart the way it takes
    provided ones (``hubble.tls.auto.enabled: false``, ``hubble.tls.server``, ``hubble.relay.tls.client``,
    ``tls.ca.cert``; templates/hubble/tls-provided). Names as certgen gives them: the agents'
    ``*.<cluster>.hubble-grpc.cilium.io`` (the relay asks for ``<node>.<cluster>.hubble-grpc.cilium.io``),
    the relay's ``*.hubble-relay.cilium.io``."""
    certs = directory / "hubble-pki"
    if not (certs / "ca.crt").is_file():
        authority = pki.ca(certs)
        server_name = f"*.{CLUSTER_NAME}.hubble-grpc.cilium.io"
        pki.signed(authority, certs, "hubble-server", f"/CN={server_name}", sans=[f"DNS:{server_name}"], server=True)
        pki.signed(authority, certs, "hubble-relay-client", "/CN=*.hubble-relay.cilium.io")

    def b64(name: str) -> str:
        return base64.b64encode((certs / name).read_bytes()).decode()

    return {
        "hubble": {
            "tls": {
                "auto": {"enabled": False},
                "server": {"cert": b64("hubble-server.crt"), "key": b64("hubble-server.key")},
            },
            "relay": {
                "tls": {"client": {"cert": b64("hubble-relay-client.crt"), "key": b64("hubble-relay-client.key")}}
            },
        },
        "tls": {"ca": {"cert": b64("ca.crt")}},
    }


def l2_config() -> dict[str, Any]:
    """What a phase with ``l2`` adds to the stack: L2 announcements of a pool on the nodes' segment, short
    leases (so that a failover is measured in seconds), and the probe of the address from the lab's
    bridge namespace, where the engine runs (``verify.fromRunner``)."""
    key, value = L2_ANNOUNCE_LABEL
    name, block = L2_POOL
    return {
        "k3s-cilium:loadBalancer": {
            "mode": "l2",
            "pools": [{"name": name, "blocks": [block]}],
            "l2": {
                "interfaces": ["^eth0$"],
                "nodeSelector": {key: value},
                "leaseDuration": "5s",
                "leaseRenewDeadline": "3s",
                "leaseRetryPeriod": "1s",
            },
        },
        "k3s-cilium:verify": {"fromRunner": True},
    }


def stack_config(
    tier: str,
    nodes: list[tuple[str, str]],
    host_keys: dict[str, str] | None = None,
    l2: bool = False,
    hubble: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The lab's stack (stack.yaml) at ``tier`` for ``nodes`` (name, address; the first a server), the lab
    overlay in ``cilium.values``, each node's host key pinned when ``host_keys`` gives them, with ``l2``
    the LoadBalancer config of :func:`l2_config`, and with ``hubble`` (the TLS overlay of :func:`hubble_tls`)
    ``features.hubble`` and the ``hubble`` section :data:`HUBBLE`."""
    config: dict[str, Any] = yaml.safe_load(STACK.read_text())["config"]
    config["k3s-cilium:tier"] = tier
    config["k3s-cilium:nodes"] = [
        {
            "name": name,
            "host": address,
            "role": "agent" if index else "server",
            # The public key's type and data, as ssh-keyscan prints them, without the comment.
            **({"hostKey": " ".join(host_keys[name].split()[:2])} if host_keys else {}),
        }
        for index, (name, address) in enumerate(nodes)
    ]
    config["k3s-cilium:cilium"]["values"] |= lab_values()
    if tier == "extreme":
        config["k3s-cilium:features"] = dict(WITHOUT_SCH_FQ)
    if hubble is not None:
        config["k3s-cilium:features"] = {**(config.get("k3s-cilium:features") or {}), "hubble": True}
        config["k3s-cilium:hubble"] = dict(HUBBLE)
        config["k3s-cilium:cilium"]["values"] |= hubble
    if l2:
        extra = l2_config()
        # The verify settings the lab's stack has, and the runner's probe.
        verify = {**(config.get("k3s-cilium:verify") or {}), **extra.pop("k3s-cilium:verify")}
        config |= {**extra, "k3s-cilium:verify": verify}
    return config


def write_stack(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return path


def program_plan(stack: Path) -> dict[str, Any]:
    """This program's offline plan of ``stack``: the Helm values it deploys and the checks it runs."""
    planned = subprocess.run(
        [sys.executable, "-m", "stacks", "plan", str(stack), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if planned.returncode:
        raise RuntimeError(f"python -m stacks plan {stack}: {planned.stderr.strip() or planned.stdout.strip()}")
    return dict(json.loads(planned.stdout))


def lab_values() -> dict[str, Any]:
    """What the lab changes in the program's values, and only that: this machine withholds CAP_SYS_RESOURCE,
    so runc refuses any container asking for it; the chart's capability lists go without it."""
    chart_values = yaml.safe_load((CHART_VALUES).read_text())
    lists = chart_values["securityContext"]["capabilities"]
    return {
        "securityContext": {
            "capabilities": {
                name: [c for c in caps if c != "SYS_RESOURCE"]
                for name, caps in lists.items()
                if isinstance(caps, list) and "SYS_RESOURCE" in caps
            }
        }
    }


def helm(action: str, values: list[Path]) -> list[str]:
    """``helm <action>`` of release cilium from the chart archive with ``values``, in kube-system."""
    files = [arg for path in values for arg in ("-f", str(path))]
    return [str(cache_root() / "toolchain" / "bin" / "helm"), action, "cilium", str(CHART), "-n", "kube-system", *files]


def render_chart(values: list[Path]) -> str:
    command = [*helm("template", values), "--kube-version", KUBERNETES_VERSION]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def chart_images(rendered: str) -> list[str]:
    """Every image the rendered chart runs: the names the lab's images must carry."""
    return sorted(set(re.findall(r'^\s+image:\s+"?([^"\s]+)"?\s*$', rendered, flags=re.MULTILINE)))


def agent_statuses(plane: ControlPlane, *flags: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """``cilium-dbg status [flags]`` of every Cilium agent, by node."""
    listed = plane.kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=cilium", "-o", "json")
    return {
        pod["spec"]["nodeName"]: plane.kubectl(
            "-n",
            "kube-system",
            "exec",
            pod["metadata"]["name"],
            "-c",
            "cilium-agent",
            "--",
            "cilium-dbg",
            "status",
            *flags,
        )
        for pod in json.loads(listed.stdout or "{}").get("items", [])
    }


def agent_status_checks(plane: ControlPlane, checks: list[dict[str, Any]], step: Callable[..., None]) -> bool:
    """The program's own agent-status check (python -m verification) on each real agent's
    ``cilium-dbg status --verbose`` (kept in the report), with the expectations the plan gives that node."""
    started = time.monotonic()
    agents = agent_statuses(plane, "--verbose")
    results, statuses = {}, {}
    for check in (c for c in checks if c["check"] == "agent-status"):
        status = agents[check["node"]]
        verdict = subprocess.run(
            [
                sys.executable,
                "-m",
                "verification",
                "agent-status",
                "--node",
                check["node"],
                "--expect",
                json.dumps(check["expect"]),
            ],
            cwd=REPO,
            input=status.stdout,
            capture_output=True,
            text=True,
        )
        results[check["node"]] = json.loads(verdict.stdout)
        statuses[check["node"]] = (status.stdout or status.stderr).strip().splitlines()
    step("agent-status", started, verdicts=results, agentStatus=statuses)
    return all(r["status"] == "pass" for r in results.values())


def install_cilium(plane: ControlPlane, values: list[Path], step: Callable[..., None]) -> None:
    """The official chart with the program's values, from the server's namespace; then every node Ready."""
    started = time.monotonic()
    installed = plane.run(*helm("install", values), "--kubeconfig", str(plane.admin_kubeconfig), timeout=120)
    if installed.returncode != 0:
        raise RuntimeError(f"helm install: {installed.stderr.strip()}")
    rolled = plane.kubectl("-n", "kube-system", "rollout", "status", "daemonset/cilium", "--timeout=300s", timeout=310)
    if rolled.returncode != 0:
        raise RuntimeError(f"cilium DaemonSet not ready: {rolled.stderr.strip() or rolled.stdout.strip()}")
    ready = plane.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s", timeout=190)
    if ready.returncode != 0:
        raise RuntimeError(f"nodes not Ready with Cilium: {ready.stderr.strip()}")
    step("cilium", started, nodes=ready.stdout.strip().splitlines())
