"""A node of the namespace cluster: a network namespace on the lab's bridge, and node-init.sh inside it.

Each node has its own network, mount, PID, UTS, IPC and cgroup namespaces,
its own containerd and kubelet, and cgroups under the cgroup this process
runs in (its cgroup namespace's root).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .control_plane import write_kubeconfig
from .processes import group_alive, stop_group

NODE_INIT = Path(__file__).with_name("node-init.sh")
K3S_SHIM = Path(__file__).with_name("k3s-shim.sh")
API_FORWARD = Path(__file__).with_name("api_forward.py")
CNI_PLUGINS = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
LAB_CGROUP = "k3s-cilium-lab"
MOUNT_OPTIONS = ("rw", "ro", "relatime", "nosuid", "nodev", "noexec")


@dataclass
class Node:
    name: str
    netns: str
    address: str
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    kube_proxy: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def cgroups(self) -> list[Path]:
        """The node's cgroup in every hierarchy, below the cgroup this process runs in there."""
        return [CGROUP_ROOT / mount / own.lstrip("/") / LAB_CGROUP / self.name for mount, own in own_cgroups().items()]


def lab_cgroups() -> list[Path]:
    """The lab's parent cgroup (of every node's) in every hierarchy, where it exists."""
    found = [CGROUP_ROOT / mount / own.lstrip("/") / LAB_CGROUP for mount, own in own_cgroups().items()]
    return [cgroup for cgroup in found if cgroup.is_dir()]


def cgroup_hierarchies() -> list[str]:
    """The machine's cgroup v1 mounts below /sys/fs/cgroup as ``<controllers>:<directory>`` (``cpu:cpu``)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, target, kind, options, *_ = line.split()
        if kind == "cgroup" and target.startswith(f"{CGROUP_ROOT}/"):
            controllers = [o for o in options.split(",") if o not in MOUNT_OPTIONS]
            found.append(f"{','.join(controllers)}:{target.removeprefix(f'{CGROUP_ROOT}/')}")
    return found


def own_cgroups() -> dict[str, str]:
    """Directory below /sys/fs/cgroup -> the cgroup this process runs in there (``memory`` -> ``/a/b``)."""
    mounts = {frozenset(entry.split(":")[0].split(",")): entry.split(":")[1] for entry in cgroup_hierarchies()}
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers:
            own["unified"] = path
        elif frozenset(controllers.split(",")) in mounts:
            own[mounts[frozenset(controllers.split(","))]] = path
    return own


def attach(node: Node, lab_netns: str, bridge: str, gateway: str, prefix: int) -> None:
    """The node's namespace and a veth pair: ``eth0`` inside, its peer on the lab's bridge, and a default
    route through the bridge's address as a host has one (Cilium picks its devices by their routes)."""
    outside = f"veth-{node.name}"[:15]
    for command in (
        ["ip", "netns", "add", node.netns],
        ["ip", "-n", node.netns, "link", "set", "lo", "up"],
        ["ip", "-n", lab_netns, "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", node.netns],
        ["ip", "-n", lab_netns, "link", "set", outside, "master", bridge, "up"],
        ["ip", "-n", node.netns, "addr", "add", f"{node.address}/{prefix}", "dev", "eth0"],
        ["ip", "-n", node.netns, "link", "set", "eth0", "up"],
        ["ip", "-n", node.netns, "route", "add", "default", "via", gateway],
    ):
        subprocess.run(command, check=True, capture_output=True)


def make_cgroups(node: Node) -> None:
    """The node's cgroups; a cpuset cgroup takes its parent's cpus and mems (v1 leaves them empty)."""
    for cgroup in node.cgroups():
        for path in (cgroup.parent, cgroup):
            path.mkdir(exist_ok=True)
            for key in ("cpuset.cpus", "cpuset.mems"):
                if (path / key).exists() and not (path / key).read_text().strip():
                    (path / key).write_text((path.parent / key).read_text())


def remove_cgroup_tree(cgroup: Path) -> None:
    """``cgroup`` and every cgroup below it, children first: a cgroup is removed only once it holds none."""
    for path in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        path.rmdir()
    cgroup.rmdir()


def remove_cgroups(node: Node) -> None:
    """The node's cgroups and what kubelet made below them; the lab's parent once it is empty."""
    for cgroup in node.cgroups():
        if not cgroup.is_dir():
            continue
        remove_cgroup_tree(cgroup)
        if not any(p.is_dir() for p in cgroup.parent.iterdir()):
            cgroup.parent.rmdir()


def configure(node: Node, authority: pki.Pair, server: str, cluster_dns: str) -> None:
    """Certificates, kubeconfig, kubelet and containerd configuration for the node."""
    certs = node.directory / "pki"
    certs.mkdir(parents=True, exist_ok=True)
    client = pki.signed(authority, certs, "kubelet-client", f"/CN=system:node:{node.name}/O=system:nodes")
    serving = pki.signed(
        authority, certs, "kubelet", f"/CN={node.name}", server=True, sans=[f"IP:{node.address}", f"DNS:{node.name}"]
    )
    write_kubeconfig(node.directory / "kubelet.kubeconfig", server, authority.cert, client)
    (node.directory / "kubelet.yaml").write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\n"
        "kind: KubeletConfiguration\n"
        # The node's cgroup namespace starts at its own cgroup: kubelet's kubepods goes below it.
        "cgroupDriver: cgroupfs\n"
        "failSwapOn: false\n"
        "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n"
        "authentication:\n  anonymous: {enabled: false}\n  webhook: {enabled: true}\n"
        f"  x509: {{clientCAFile: {authority.cert}}}\n"
        "authorization: {mode: Webhook}\n"
        f"tlsCertFile: {serving.cert}\n"
        f"tlsPrivateKeyFile: {serving.key}\n"
        f"clusterDNS: [{cluster_dns}]\n"
        "clusterDomain: cluster.local\n"
        "resolvConf: /etc/resolv.conf\n"
        # The node shares the machine's disk: eviction thresholds would judge the machine, not the node.
        "evictionHard: {}\n"
        "imageGCHighThresholdPercent: 100\n"
        "localStorageCapacityIsolation: false\n"
    )
    (node.directory / "containerd.toml").write_text(
        "version = 2\n"
        'root = "/var/lib/containerd"\n'
        'state = "/run/containerd"\n'
        "[grpc]\n"
        '  address = "/run/containerd/containerd.sock"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        '  sandbox_image = "registry.k8s.io/pause:3.10"\n'
        # This machine withholds CAP_SYS_RESOURCE: runc cannot lower a container's oom_score_adj
        # below the lab's own (kubelet asks -998 for sandboxes), so containerd caps it there.
        "  restrict_oom_score_adj = true\n"
        '[plugins."io.containerd.grpc.v1.cri".containerd]\n'
        '  snapshotter = "overlayfs"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  runtime_type = "io.containerd.runc.v2"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "  SystemdCgroup = false\n"
        '[plugins."io.containerd.grpc.v1.cri".cni]\n'
        '  bin_dir = "/opt/cni/bin"\n'
        '  conf_dir = "/etc/cni/net.d"\n'
    )


def configure_ssh(node: Node, authorized_key: str) -> str:
    """The node's own sshd (Debian's openssh-server) on its address: a host key of its own, only the lab's key
    let in. Returns the host key's public line, for the client to pin."""
    host_key = node.directory / "ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node.name, "-f", str(host_key)],
        check=True,
        capture_output=True,
    )
    (node.directory / "authorized_keys").write_text(authorized_key)
    (node.directory / "sshd_config").write_text(
        f"ListenAddress {node.address}\n"
        f"HostKey {host_key}\n"
        f"AuthorizedKeysFile {node.directory / 'authorized_keys'}\n"
        f"PidFile {node.directory / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        # The files live in the lab's run directory (mode 0700, root's) below /tmp, whose sticky
        # world-writable mode StrictModes refuses.
        "StrictModes no\n"
    )
    return host_key.with_suffix(".pub").read_text().strip()


def install_k3s_shim(node: Node, binaries: Path, admin_kubeconfig: Path | None) -> None:
    """The node's ``/usr/local/bin/k3s`` (k3s-shim.sh): kubectl (servers), crictl, ctr handed to upstream tools."""
    settings = f"DATAPATH_BIN={shlex.quote(str(binaries))}\n"
    if admin_kubeconfig is not None:
        # Where K3s keeps it on a server; the file itself stays in the node's directory.
        settings += f"ADMIN_KUBECONFIG={shlex.quote(str(admin_kubeconfig))}\n"
    shim = node.directory / "root" / "usr" / "local" / "bin" / "k3s"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(K3S_SHIM.read_text().replace("# @settings\n", settings, 1))
    shim.chmod(0o755)


def start(node: Node, binaries: Path, images: Path, api_server: str) -> None:
    (node.directory / "logs").mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "NODE_NAME": node.name,
        "NODE_DIR": str(node.directory),
        "NODE_IP": node.address,
        "DATAPATH_BIN": str(binaries),
        "IMAGES_DIR": str(images),
        "CNI_PLUGINS": str(CNI_PLUGINS),
        "CGROUP_HIERARCHIES": " ".join(cgroup_hierarchies()),
        "API_FORWARD": str(API_FORWARD),
        "API_SERVER": api_server,
        "PATH": f"{binaries}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
    }
    log = (node.directory / "logs" / "node-init.log").open("ab")
    cgroups = node.cgroups()

    def enter_cgroups() -> None:
        # Before unshare: the cgroup namespace it makes starts at the node's cgroups.
        for cgroup in cgroups:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    namespaces = [
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--cgroup",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
    ]
    node.process = subprocess.Popen(
        ["ip", "netns", "exec", node.netns, "unshare", *namespaces, "--", "bash", str(NODE_INIT)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=enter_cgroups,
    )


def init_pid(node: Node) -> int:
    """The node's PID 1 (node-init.sh) as this machine sees it: the child unshare forked."""
    if node.process is None or node.process.poll() is not None:
        raise RuntimeError(f"node {node.name} is not running")
    children = Path(f"/proc/{node.process.pid}/task/{node.process.pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"node {node.name}: unshare has {len(children)} children, not one")
    return int(children[0])


def write_kube_proxy_config(node: Node, kubeconfig: Path, cluster_cidr: str) -> Path:
    """kube-proxy in iptables mode as K3s runs it embedded: the node's name, the cluster CIDR, and the
    conntrack sizes left alone (0), as K3s does, since nf_conntrack_max is the machine's, not the node's."""
    config = node.directory / "kube-proxy.yaml"
    config.write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
        "kind: KubeProxyConfiguration\n"
        "mode: iptables\n"
        f"clientConnection: {{kubeconfig: {kubeconfig}}}\n"
        f"hostnameOverride: {node.name}\n"
        f"clusterCIDR: {cluster_cidr}\n"
        "conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}\n"
    )
    return config


def start_kube_proxy(node: Node, binaries: Path, config: Path) -> None:
    """Upstream kube-proxy inside the node's namespaces, standing in for the one K3s embeds."""
    if node.kube_proxy is not None and node.kube_proxy.poll() is None:
        return
    log = (node.directory / "logs" / "kube-proxy.log").open("ab")
    node.kube_proxy = subprocess.Popen(
        [
            "nsenter",
            "-t",
            str(init_pid(node)),
            "-n",
            "-m",
            "-u",
            "-i",
            "-p",
            "--",
            str(binaries / "kube-proxy"),
            f"--config={config}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_kube_proxy(node: Node) -> None:
    """kube-proxy stopped as a K3s restart with disable-kube-proxy stops it: its rules stay behind.
    The signal goes to the process group: nsenter forks kube-proxy into the node's PID namespace and
    does not pass signals on."""
    process = node.kube_proxy
    if process is not None:
        stop_group(process, 15)
        # nsenter may exit before kube-proxy does: wait until nothing of the group is left.
        deadline = time.monotonic() + 15
        while group_alive(process.pid):
            if time.monotonic() > deadline + 15:
                raise RuntimeError(f"kube-proxy on {node.name} (process group {process.pid}) does not stop")
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.1)
    node.kube_proxy = None


def stop(node: Node) -> None:
    """Stop the node: its PID namespace's init (unshare's child) takes every process of the node with it."""
    stop_group(node.process, 15)
    # The bind mounts lived in the node's mount namespace and went with it.
    subprocess.run(["ip", "netns", "delete", node.netns], capture_output=True)
