"""The namespace cluster (issue 22), as far as it goes today.

    python -m lab.cluster up [--nodes N] [--cilium STACK] [--out DIR] [--keep]

starts upstream Kubernetes (built by ``lab/datapath/build.sh``) on N nodes
(default 3: one server, the others agents), each a set of Linux namespaces on a
bridge in a namespace of its own: the control plane in the server's network
namespace, containerd and kubelet on every node. It checks that the control
plane serves, every node registers and runs a host-network pod; with
``--cilium`` it installs the official Cilium chart with the values this
program renders for STACK (images built by ``lab/datapath/build-runtime.sh``)
and runs the program's agent-status check on every agent. It writes
``report.json`` into ``--out`` and removes everything it made. Needs root and
Debian's containerd, runc and containernetworking-plugins.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from . import images
from . import node as nodes
from .control_plane import API_PORT, ControlPlane

KUBERNETES_VERSION = "v1.33.13"
REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO.parent / "shared" / "cilium-chart"
CHART, CHART_VALUES = CHARTS / "archives" / "cilium-1.19.6.tgz", CHARTS / "1.19.6" / "values.yaml"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DNS = "10.96.0.10"
BRIDGE, GATEWAY, PREFIX = "lab0", "10.99.0.1", 24
# Kubelet sets these host-wide on start (protectKernelDefaults: false); the lab puts them back at teardown.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops")


def node_address(index: int) -> str:
    return f"10.99.0.{10 + index}"


def cache_root() -> Path:
    """``${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}``, shared with lab/datapath/build.sh; never in git."""
    return Path(os.environ.get("K3S_CILIUM_CACHE") or Path.home() / ".cache" / "k3s-cilium")


def binaries_dir() -> Path:
    return cache_root() / "datapath" / "bin"


def up(out: Path, node_count: int, keep: bool, cilium_stack: Path | None) -> int:
    binaries = binaries_dir()
    missing = [name for name in COMPONENTS if not (binaries / name).is_file()]
    if missing:
        print(f"not built: {', '.join(missing)} in {binaries}; run lab/datapath/build.sh build", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    tag = os.getpid()
    lab_netns = f"k3s-cilium-lab-net-{tag}"
    run_dir = Path(tempfile.mkdtemp(prefix="k3s-cilium-cluster-"))
    (run_dir / "logs").mkdir()
    names = ["server-1"] + [f"agent-{i}" for i in range(1, node_count)]
    members = [
        nodes.Node(name, f"k3s-cilium-lab-{name}-{tag}", node_address(i), run_dir / "nodes" / name)
        for i, name in enumerate(names)
    ]
    server = members[0]
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": f"upstream Kubernetes {KUBERNETES_VERSION} built here from Go modules: control plane (etcd, "
        "kube-apiserver, kube-controller-manager, kube-scheduler) in server-1's network namespace; on every node "
        "Debian's containerd and our kubelet in the node's own network, mount, PID, UTS, IPC and cgroup namespaces. "
        "K3s did not run (it cannot be had here): no k3s command, no agent load balancer on 127.0.0.1:6444. "
        + (
            f"Cilium: the official 1.19.6 chart with the values this program renders for {cilium_stack}, plus the "
            "lab overlay in ciliumValues; its images (lab.local/cilium/*) are built here from Cilium's Go module, "
            "not the released images; no Envoy."
            if cilium_stack
            else "No CNI: nodes stay NotReady."
        ),
        "nodes": [
            {"name": m.name, "address": m.address, "netns": m.netns, "cgroups": [str(c) for c in m.cgroups()]}
            for m in members
        ],
        "steps": [],
        "ok": False,
    }
    plane = ControlPlane(netns=server.netns, address=server.address, directory=run_dir, binaries=binaries)
    sysctls = {name: Path("/proc/sys", name).read_text() for name in KUBELET_SYSCTLS}

    def step(name: str, started: float, **details: Any) -> None:
        report["steps"].append({"name": name, "seconds": round(time.monotonic() - started, 1), **details})

    try:
        started = time.monotonic()
        for command in (
            ["ip", "netns", "add", lab_netns],
            ["ip", "-n", lab_netns, "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "-n", lab_netns, "addr", "add", f"{GATEWAY}/{PREFIX}", "dev", BRIDGE],
            ["ip", "-n", lab_netns, "link", "set", BRIDGE, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        for member in members:
            nodes.attach(member, lab_netns, BRIDGE, GATEWAY, PREFIX)
        step("network", started, labNetns=lab_netns, bridge=BRIDGE)

        started = time.monotonic()
        ready = plane.start(SERVICE_CIDR, CLUSTER_CIDR, timeout=180)
        step("control-plane", started, secondsUntilReady=round(ready, 1))

        started = time.monotonic()
        version = json.loads(plane.kubectl("version", "-o", "json").stdout)
        server_version = version["serverVersion"]["gitVersion"]
        if server_version != KUBERNETES_VERSION:
            raise RuntimeError(f"the API server reports {server_version}, not {KUBERNETES_VERSION}")
        step("version", started, server=server_version, client=version["clientVersion"]["gitVersion"])

        started = time.monotonic()
        # The controller manager gives every namespace its default service account.
        created = plane.kubectl("create", "namespace", "lab-smoke")
        if created.returncode != 0:
            raise RuntimeError(f"kubectl create namespace: {created.stderr.strip()}")
        wait_for(
            lambda: plane.kubectl("get", "serviceaccount", "default", "-n", "lab-smoke").returncode == 0,
            60,
            "the controller manager made no default service account",
        )
        step("controllers", started)

        started = time.monotonic()
        image_dir = run_dir / "images"
        built = [images.build_pause(binaries, image_dir)]
        cilium_values, plan = None, {}
        if cilium_stack:
            plan = program_plan(cilium_stack, node_count)
            cilium_values = run_dir / "program-values.json"
            cilium_values.write_text(json.dumps(plan["ciliumValues"]))
            overlay = run_dir / "lab-values.json"
            overlay.write_text(json.dumps(lab_values()))
            report["ciliumValues"] = {"stack": str(cilium_stack), "labOverlay": lab_values()}
            rendered = render_chart([cilium_values, overlay])
            built.append(
                images.build_cilium(
                    cache_root() / "datapath" / "rootfs" / "cilium-runtime", image_dir, chart_images(rendered)
                )
            )
        step("images", started, archives={a.name: a.stat().st_size for a in built})

        started = time.monotonic()
        client_key = run_dir / "ssh" / "id_ed25519"
        client_key.parent.mkdir()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "k3s-cilium-lab", "-f", str(client_key)],
            check=True,
            capture_output=True,
        )
        known_hosts = run_dir / "ssh" / "known_hosts"
        for member in members:
            member.directory.mkdir(parents=True, exist_ok=True)
            host_key = nodes.configure_ssh(member, client_key.with_suffix(".pub").read_text())
            with known_hosts.open("a") as pinned:
                pinned.write(f"{member.address} {host_key}\n")
        for member in members:
            nodes.make_cgroups(member)
            nodes.configure(member, plane.authority, f"https://{server.address}:{API_PORT}", CLUSTER_DNS)
            nodes.start(member, binaries, image_dir)

        def registered() -> set[str]:
            listed = plane.kubectl("get", "nodes", "-o", "json")
            return {item["metadata"]["name"] for item in json.loads(listed.stdout or "{}").get("items", [])}

        def all_registered() -> bool:
            exited = [m.name for m in members if m.process is not None and m.process.poll() is not None]
            if exited:
                raise RuntimeError(f"node stopped: {', '.join(exited)} (logs in {run_dir / 'nodes'})")
            return registered() == set(names)

        wait_for(all_registered, 600, "not every node registered")
        listed = json.loads(plane.kubectl("get", "nodes", "-o", "json").stdout)
        step(
            "nodes",
            started,
            registered=[
                {
                    "name": item["metadata"]["name"],
                    "kubelet": item["status"]["nodeInfo"]["kubeletVersion"],
                    "containerRuntime": item["status"]["nodeInfo"]["containerRuntimeVersion"],
                    "addresses": [a["address"] for a in item["status"].get("addresses", [])],
                    "ready": next(
                        (c["status"] for c in item["status"].get("conditions", []) if c["type"] == "Ready"), None
                    ),
                }
                for item in listed["items"]
            ],
        )

        started = time.monotonic()
        answers = {}
        for member in members:
            answered = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    lab_netns,
                    "ssh",
                    "-i",
                    str(client_key),
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    f"UserKnownHostsFile={known_hosts}",
                    "-o",
                    "ConnectTimeout=5",
                    f"root@{member.address}",
                    "hostname",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            answers[member.name] = answered.stdout.strip() or answered.stderr.strip()
            if answers[member.name] != member.name:
                raise RuntimeError(f"ssh to {member.name} ({member.address}): {answers[member.name]}")
        step("ssh", started, hostnames=answers, hostKeys="pinned, one per node (Debian's openssh-server)")

        started = time.monotonic()
        # Host-network pods run before any CNI: a sandbox and a container in every node's own containerd.
        for member in members:
            applied = plane.kubectl("apply", "-f", "-", stdin=json.dumps(sandbox_pod(member.name)))
            if applied.returncode != 0:
                raise RuntimeError(f"kubectl apply sandbox pod on {member.name}: {applied.stderr.strip()}")
        waited = plane.kubectl(
            "wait",
            "--for=condition=Ready",
            "pod",
            "-n",
            "default",
            "-l",
            "app=lab-sandbox",
            "--timeout=120s",
            timeout=130,
        )
        if waited.returncode != 0:
            raise RuntimeError(f"sandbox pods not ready: {waited.stderr.strip() or waited.stdout.strip()}")
        step("host-network-pods", started, ready=waited.stdout.strip().splitlines())
        if cilium_values:
            install_cilium(plane, [cilium_values, run_dir / "lab-values.json"], step)
            if not agent_status_checks(plane, plan["checks"], step):
                raise RuntimeError("the program's agent-status check failed on a real agent (step agent-status)")
        report["peakRssBytes"] = plane.peak_rss_bytes()
        report["ok"] = True
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError, KeyError, json.JSONDecodeError) as error:
        report["error"] = str(error)
    finally:
        if not keep:
            for member in reversed(members):
                nodes.stop(member)
            plane.stop()
            for member in members:
                nodes.remove_cgroups(member)
            subprocess.run(["ip", "netns", "delete", lab_netns], capture_output=True)
            for name, value in sysctls.items():
                Path("/proc/sys", name).write_text(value)
        shutil.copytree(run_dir / "logs", out / "logs", dirs_exist_ok=True)
        for member in members:
            if (member.directory / "logs").is_dir():
                shutil.copytree(member.directory / "logs", out / "logs" / member.name, dirs_exist_ok=True)
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def program_plan(stack: Path, node_count: int) -> dict[str, Any]:
    """This program's offline plan of ``stack``: the Helm values it deploys and the checks it runs."""
    planned = subprocess.run(
        [sys.executable, "-m", "stacks", "plan", str(stack), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    plan = json.loads(planned.stdout)
    if len(plan["nodes"]) != node_count:
        raise RuntimeError(f"{stack} has {len(plan['nodes'])} nodes, the cluster {node_count}: use --nodes")
    return dict(plan)


def agent_status_checks(plane: ControlPlane, checks: list[dict[str, Any]], step: Callable[..., None]) -> bool:
    """The program's own agent-status check (python -m verification) on each real agent's
    ``cilium-dbg status --verbose`` (kept in the report), with the expectations the plan gives that node."""
    started = time.monotonic()
    pods = json.loads(plane.kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=cilium", "-o", "json").stdout)
    agents = {pod["spec"]["nodeName"]: pod["metadata"]["name"] for pod in pods["items"]}
    results, statuses = {}, {}
    for check in (c for c in checks if c["check"] == "agent-status"):
        status = plane.kubectl(
            "-n",
            "kube-system",
            "exec",
            agents[check["node"]],
            "-c",
            "cilium-agent",
            "--",
            "cilium-dbg",
            "status",
            "--verbose",
        )
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


def sandbox_pod(node: str) -> dict[str, Any]:
    """A host-network pod on ``node`` running pause itself, tolerating the NotReady node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"lab-sandbox-{node}", "namespace": "default", "labels": {"app": "lab-sandbox"}},
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "pause", "image": images.PAUSE, "imagePullPolicy": "Never"}],
        },
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.cluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the cluster, check it, remove it")
    start.add_argument("--nodes", type=int, default=3, help="nodes, the first a server (default 3)")
    start.add_argument("--out", type=Path, default=None, help="where report.json and the logs go")
    start.add_argument("--keep", action="store_true", help="leave the processes and namespaces running")
    start.add_argument(
        "--cilium",
        type=Path,
        metavar="STACK",
        help="install Cilium 1.19.6's chart with the values this program "
        "renders for STACK (lab/cluster/stacks/kpr.yaml)",
    )
    args = parser.parse_args()
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    out = args.out or cache_root() / "lab" / "reports" / datetime.now(UTC).strftime("cluster-%Y%m%dT%H%M%S")
    return up(out, args.nodes, args.keep, args.cilium)


if __name__ == "__main__":
    sys.exit(main())
