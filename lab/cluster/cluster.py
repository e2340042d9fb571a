"""The namespace cluster: upstream Kubernetes on N nodes, each a set of Linux namespaces on a bridge in a
namespace of its own, reached over SSH like hosts. ``Cluster.start`` brings it up step by step (each
recorded through ``step``); ``Cluster.stop`` removes everything it made, whatever happened.

What stands in for K3s, which cannot be had here, and nothing more: on every node a ``k3s`` command
handing kubectl, crictl and ctr to upstream tools (k3s-shim.sh) and a forward of 127.0.0.1:6444 to
the API server (api_forward.py); kube-proxy, which K3s embeds, runs as upstream kube-proxy when asked;
CoreDNS, which K3s deploys by default, from a manifest of the lab's (coredns.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.verify import SMOKE_IMAGE

from . import coredns, images, pki
from . import node as nodes
from .control_plane import API_PORT, ControlPlane, kubeconfig_text, write_kubeconfig

KUBERNETES_VERSION = "v1.33.13"
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
    "crictl",
    "testserver",
    "hubble-relay",
    "coredns",
)
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DNS = "10.96.0.10"
BRIDGE, GATEWAY, PREFIX = "lab0", "10.99.0.1", 24
# Kubelet sets these host-wide on start (protectKernelDefaults: false); the lab puts them back at teardown.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops")
# K3s writes the admin kubeconfig here on servers; `k3s kubectl` reads it.
K3S_ADMIN_KUBECONFIG = "etc/rancher/k3s/k3s.yaml"

Step = Callable[..., None]


def node_address(index: int) -> str:
    return f"10.99.0.{10 + index}"


def cache_root() -> Path:
    """``${K3S_CILIUM_CACHE:-$HOME/.cache/k3s-cilium}``, shared with lab/datapath/build.sh; never in git."""
    return Path(os.environ.get("K3S_CILIUM_CACHE") or Path.home() / ".cache" / "k3s-cilium")


def binaries_dir() -> Path:
    return cache_root() / "datapath" / "bin"


def missing_binaries() -> list[str]:
    return [name for name in COMPONENTS if not (binaries_dir() / name).is_file()]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(1)


def named_netns() -> set[str]:
    """The network namespaces ``ip netns`` names (its files in /run/netns)."""
    directory = Path("/run/netns")
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


class Cluster:
    """One server (the control plane in its network namespace) and agents; see the module's docstring."""

    def __init__(self, node_count: int, run_dir: Path) -> None:
        tag = os.getpid()
        self.run_dir = run_dir
        self.binaries = binaries_dir()
        self.lab_netns = f"{NETNS_PREFIX}net-{tag}"
        names = ["server-1"] + [f"agent-{i}" for i in range(1, node_count)]
        self.members = [
            nodes.Node(name, f"{NETNS_PREFIX}{name}-{tag}", node_address(i), run_dir / "nodes" / name)
            for i, name in enumerate(names)
        ]
        self.server = self.members[0]
        self.plane = ControlPlane(
            netns=self.server.netns, address=self.server.address, directory=run_dir, binaries=self.binaries
        )
        self.image_dir = run_dir / "images"
        self.client_key = run_dir / "ssh" / "id_ed25519"
        self.known_hosts = run_dir / "ssh" / "known_hosts"
        self.host_keys: dict[str, str] = {}
        # What ip netns named before the cluster started: the teardown must leave exactly these.
        self.netns_before = named_netns()
        self._sysctls = {name: Path("/proc/sys", name).read_text() for name in KUBELET_SYSCTLS}
        self._kube_proxy_configs: dict[str, Path] = {}
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def api_url(self) -> str:
        return f"https://{self.server.address}:{API_PORT}"

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": m.name, "address": m.address, "netns": m.netns, "cgroups": [str(c) for c in m.cgroups()]}
            for m in self.members
        ]

    # --- bring-up ---------------------------------------------------------------------------------

    def start(self, step: Step, cilium_images: list[str] | None = None) -> None:
        """Network, control plane, images, nodes, SSH and host-network pods, each checked; ``step(name,
        started, **details)`` records each. ``cilium_images``: the names the lab's Cilium image carries."""
        started = time.monotonic()
        for command in (
            ["ip", "netns", "add", self.lab_netns],
            # The engine and its plugins talk to each other over loopback (the lab's runs go on in here).
            ["ip", "-n", self.lab_netns, "link", "set", "lo", "up"],
            ["ip", "-n", self.lab_netns, "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "-n", self.lab_netns, "addr", "add", f"{GATEWAY}/{PREFIX}", "dev", BRIDGE],
            ["ip", "-n", self.lab_netns, "link", "set", BRIDGE, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        for member in self.members:
            nodes.attach(member, self.lab_netns, BRIDGE, GATEWAY, PREFIX)
        step("network", started, labNetns=self.lab_netns, bridge=BRIDGE)

        started = time.monotonic()
        ready = self.plane.start(SERVICE_CIDR, CLUSTER_CIDR, timeout=180)
        step("control-plane", started, secondsUntilReady=round(ready, 1))

        started = time.monotonic()
        version = json.loads(self.plane.kubectl("version", "-o", "json").stdout)
        server_version = version["serverVersion"]["gitVersion"]
        if server_version != KUBERNETES_VERSION:
            raise RuntimeError(f"the API server reports {server_version}, not {KUBERNETES_VERSION}")
        step("version", started, server=server_version, client=version["clientVersion"]["gitVersion"])

        started = time.monotonic()
        # The controller manager gives every namespace its default service account.
        wait_for(
            lambda: self.plane.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0,
            60,
            "the controller manager made no default service account",
        )
        step("controllers", started)

        started = time.monotonic()
        built = [images.build_pause(self.binaries, self.image_dir)]
        built.append(images.build_smoke(self.binaries, self.image_dir, SMOKE_IMAGE))
        built.append(images.build_coredns(self.binaries, self.image_dir, coredns.IMAGE))
        relay = [name for name in cilium_images or [] if is_relay_image(name)]
        if relay:
            built.append(images.build_relay(self.binaries, self.image_dir, relay))
        agent = [name for name in cilium_images or [] if not is_relay_image(name)]
        if agent:
            runtime = cache_root() / "datapath" / "rootfs" / "cilium-runtime"
            built.append(images.build_cilium(runtime, self.image_dir, agent))
        step("images", started, archives={a.name: a.stat().st_size for a in built})

        started = time.monotonic()
        self._start_nodes()
        step("nodes", started, registered=self._registered_nodes())

        started = time.monotonic()
        answers = {m.name: self.ssh(m, "hostname").stdout.strip() for m in self.members}
        wrong = {name: said for name, said in answers.items() if said != name}
        if wrong:
            raise RuntimeError(f"ssh answered from the wrong host or not at all: {wrong}")
        step("ssh", started, hostnames=answers, hostKeys="pinned, one per node (Debian's openssh-server)")

        started = time.monotonic()
        self._host_network_pods()
        step("host-network-pods", started)

        started = time.monotonic()
        applied = self.plane.kubectl("apply", "-f", "-", stdin=json.dumps(as_list(coredns.manifests(CLUSTER_DNS))))
        if applied.returncode != 0:
            raise RuntimeError(f"kubectl apply CoreDNS: {applied.stderr.strip()}")
        # Its pod waits for a CNI, as on K3s before Cilium is installed.
        step("coredns", started, applied=applied.stdout.split("\n")[:-1], image=coredns.IMAGE, clusterDns=CLUSTER_DNS)

    def _start_nodes(self) -> None:
        self.client_key.parent.mkdir()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "k3s-cilium-lab", "-f", str(self.client_key)],
            check=True,
            capture_output=True,
        )
        authority = self.plane.authority
        proxy_client = pki.signed(authority, self.run_dir / "pki", "kube-proxy", "/CN=system:kube-proxy")
        proxy_kubeconfig = self.run_dir / "kube-proxy.kubeconfig"
        write_kubeconfig(proxy_kubeconfig, self.api_url, authority.cert, proxy_client)
        for member in self.members:
            member.directory.mkdir(parents=True, exist_ok=True)
            self.host_keys[member.name] = nodes.configure_ssh(member, self.client_key.with_suffix(".pub").read_text())
            with self.known_hosts.open("a") as pinned:
                pinned.write(f"{member.address} {self.host_keys[member.name]}\n")
            admin = None
            if member is self.server:
                admin = member.directory / "root" / K3S_ADMIN_KUBECONFIG
                admin.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(self.plane.admin_kubeconfig, admin)
            nodes.install_k3s_shim(member, self.binaries, admin)
            self._kube_proxy_configs[member.name] = nodes.write_kube_proxy_config(
                member, proxy_kubeconfig, CLUSTER_CIDR
            )
        for member in self.members:
            nodes.make_cgroups(member)
            nodes.configure(member, authority, self.api_url, CLUSTER_DNS)
            nodes.start(member, self.binaries, self.image_dir, f"{self.server.address}:{API_PORT}")

        def all_registered() -> bool:
            exited = [m.name for m in self.members if m.process is not None and m.process.poll() is not None]
            if exited:
                raise RuntimeError(f"node stopped: {', '.join(exited)} (logs in {self.run_dir / 'nodes'})")
            return {n["name"] for n in self._registered_nodes()} == {m.name for m in self.members}

        wait_for(all_registered, 600, "not every node registered")

    def _registered_nodes(self) -> list[dict[str, Any]]:
        listed = json.loads(self.plane.kubectl("get", "nodes", "-o", "json").stdout or "{}")
        return [
            {
                "name": item["metadata"]["name"],
                "kubelet": item["status"]["nodeInfo"]["kubeletVersion"],
                "containerRuntime": item["status"]["nodeInfo"]["containerRuntimeVersion"],
                "addresses": [a["address"] for a in item["status"].get("addresses", [])],
                "ready": next(
                    (c["status"] for c in item["status"].get("conditions", []) if c["type"] == "Ready"), None
                ),
            }
            for item in listed.get("items", [])
        ]

    def _host_network_pods(self) -> None:
        """Before any CNI, a host-network pod (pause itself) runs on every node: sandbox and container."""
        for member in self.members:
            applied = self.plane.kubectl("apply", "-f", "-", stdin=json.dumps(sandbox_pod(member.name)))
            if applied.returncode != 0:
                raise RuntimeError(f"kubectl apply sandbox pod on {member.name}: {applied.stderr.strip()}")
        waited = self.plane.kubectl(
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
        deleted = self.plane.kubectl("delete", "pod", "-n", "default", "-l", "app=lab-sandbox", "--wait=false")
        if deleted.returncode != 0:
            raise RuntimeError(f"kubectl delete sandbox pods: {deleted.stderr.strip()}")

    # --- use --------------------------------------------------------------------------------------

    def ssh(self, member: nodes.Node, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``command`` on ``member`` over SSH from the lab's namespace, its host key pinned."""
        return subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.lab_netns,
                "ssh",
                "-i",
                str(self.client_key),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "ConnectTimeout=5",
                f"root@{member.address}",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def program_kubeconfig(self) -> str:
        """The admin credentials with the certificates inside, pointing at the API server's address."""
        return kubeconfig_text(self.api_url, self.plane.authority.cert, self.plane.admin, embedded=True)

    def start_kube_proxy(self) -> None:
        for member in self.members:
            nodes.start_kube_proxy(member, self.binaries, self._kube_proxy_configs[member.name])

    def stop_kube_proxy(self) -> None:
        for member in self.members:
            nodes.stop_kube_proxy(member)

    # --- teardown ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Every process, namespace, cgroup and the bridge; the host-wide sysctls kubelet changed."""
        for member in reversed(self.members):
            nodes.stop_kube_proxy(member)
            nodes.stop(member)
        self.plane.stop()
        for member in self.members:
            nodes.remove_cgroups(member)
        subprocess.run(["ip", "netns", "delete", self.lab_netns], capture_output=True)
        for name, value in self._sysctls.items():
            Path("/proc/sys", name).write_text(value)

    def keep_logs(self, out: Path) -> None:
        shutil.copytree(self.run_dir / "logs", out / "logs", dirs_exist_ok=True)
        for member in self.members:
            if (member.directory / "logs").is_dir():
                shutil.copytree(member.directory / "logs", out / "logs" / member.name, dirs_exist_ok=True)


def is_relay_image(name: str) -> bool:
    """Whether a chart image is Hubble Relay's (``lab.local/cilium/hubble-relay:v1.19.6``): an image of its own."""
    return name.rpartition("/")[2].split(":")[0].split("@")[0] == "hubble-relay"


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


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


RUN_DIR_PREFIX = "k3s-cilium-cluster-"
NETNS_PREFIX = "k3s-cilium-lab-"


def run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))


def netns_pids(name: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(pid) for pid in listed.split()]


def down() -> list[str]:
    """What a ``--keep`` run left, removed: every process in the lab's network namespaces (a node's PID 1
    takes its node with it), the namespaces, the lab's cgroups and run directories. For when no lab
    run is going on: it cannot tell a kept cluster from a running one. Returns what it removed."""
    removed = []
    for name in sorted(n for n in named_netns() if n.startswith(NETNS_PREFIX)):
        pids = netns_pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        def exited(name: str = name) -> bool:
            return not netns_pids(name)

        wait_for(exited, 30, f"the processes of {name} did not exit")
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        removed.append(f"netns {name} ({len(pids)} processes)")
    for cgroup in nodes.lab_cgroups():
        nodes.remove_cgroup_tree(cgroup)
        removed.append(f"cgroup {cgroup}")
    for directory in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(f"run directory {directory}")
    return removed
