"""Upstream Kubernetes' control plane (etcd, API server, controller manager, scheduler) in a network namespace.

The binaries come from ``lab/datapath/build.sh`` (built from the Go modules the
proxy serves). Each process runs through ``ip netns exec`` in the namespace the
caller made, listens where the nodes of that namespace reach it, and logs into
the run directory. Nothing of K3s is here: K3s cannot be had on these machines.
"""

from __future__ import annotations

import base64
import ipaddress
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .processes import stop_group

API_PORT = 6443
ETCD_CLIENT = "http://127.0.0.1:2379"
# Port and path of each component's own health endpoint (``/healthz`` needs no credentials).
HEALTH = {"kube-controller-manager": 10257, "kube-scheduler": 10259}


@dataclass
class ControlPlane:
    netns: str
    address: str
    directory: Path
    binaries: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    authority: pki.Pair = field(init=False)
    # The cluster admin's client certificate (group system:masters).
    admin: pki.Pair = field(init=False)

    @property
    def admin_kubeconfig(self) -> Path:
        return self.directory / "admin.kubeconfig"

    def run(self, *args: str, timeout: float = 30, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command inside the namespace, its output captured."""
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *args], capture_output=True, text=True, timeout=timeout, input=stdin
        )

    def kubectl(self, *args: str, timeout: float = 30, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        kubectl = str(self.binaries / "kubectl")
        return self.run(kubectl, "--kubeconfig", str(self.admin_kubeconfig), *args, timeout=timeout, stdin=stdin)

    def start(self, service_cidr: str, cluster_cidr: str, timeout: float) -> float:
        """Start everything; seconds until the API server and then the controllers answer.

        The controllers start once the API server is ready: before its RBAC
        bootstrap ends, the controller manager is refused what it reads at start and exits.
        """
        start = time.monotonic()
        certs = self.directory / "pki"
        authority = self.authority = pki.ca(certs)
        serving = pki.signed(
            authority,
            certs,
            "apiserver",
            "/CN=kube-apiserver",
            server=True,
            sans=[
                f"IP:{self.address}",
                "IP:127.0.0.1",
                f"IP:{_first_address(service_cidr)}",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:localhost",
            ],
        )
        admin = self.admin = pki.signed(authority, certs, "admin", "/CN=lab-admin/O=system:masters")
        kubelet_client = pki.signed(
            authority, certs, "apiserver-kubelet-client", "/CN=kube-apiserver-kubelet-client/O=system:masters"
        )
        manager = pki.signed(authority, certs, "controller-manager", "/CN=system:kube-controller-manager")
        scheduler = pki.signed(authority, certs, "scheduler", "/CN=system:kube-scheduler")
        accounts = pki.service_account_keys(certs)
        server = f"https://127.0.0.1:{API_PORT}"
        write_kubeconfig(self.admin_kubeconfig, server, authority.cert, admin)
        write_kubeconfig(self.directory / "controller-manager.kubeconfig", server, authority.cert, manager)
        write_kubeconfig(self.directory / "scheduler.kubeconfig", server, authority.cert, scheduler)

        self._spawn(
            "etcd",
            "--name=lab",
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={ETCD_CLIENT}",
            f"--advertise-client-urls={ETCD_CLIENT}",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=lab=http://127.0.0.1:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
        )
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers={ETCD_CLIENT}",
            f"--advertise-address={self.address}",
            "--bind-address=0.0.0.0",
            f"--secure-port={API_PORT}",
            f"--service-cluster-ip-range={service_cidr}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={authority.cert}",
            f"--kubelet-certificate-authority={authority.cert}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            # The nodes' names are not in any DNS the namespaces reach.
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={accounts.cert}",
            f"--service-account-signing-key-file={accounts.key}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--enable-bootstrap-token-auth=true",
        )
        self.wait_ready(timeout)
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={authority.cert}",
            f"--cluster-signing-key-file={authority.key}",
            f"--root-ca-file={authority.cert}",
            f"--service-account-private-key-file={accounts.key}",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={cluster_cidr}",
            f"--service-cluster-ip-range={service_cidr}",
            "--controllers=*,bootstrapsigner,tokencleaner",
        )
        self._spawn(
            "kube-scheduler",
            f"--kubeconfig={self.directory / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.directory / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.directory / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        )
        self.wait_ready(timeout)
        return time.monotonic() - start

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.directory / "logs" / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, str(self.binaries / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> float:
        """Seconds until the API server's /readyz and the started controllers' /healthz answer ok."""
        start = time.monotonic()
        while True:
            dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"control plane process exited: {dead} (logs in {self.directory / 'logs'})")
            if self._ready():
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"control plane not ready after {timeout:.0f} s (logs in {self.directory / 'logs'})")
            time.sleep(1)

    def _ready(self) -> bool:
        if self.kubectl("get", "--raw", "/readyz").stdout.strip() != "ok":
            return False
        for port in (port for name, port in HEALTH.items() if name in self.processes):
            answer = self.run("curl", "-sk", "--max-time", "2", f"https://127.0.0.1:{port}/healthz")
            if answer.stdout.strip() != "ok":
                return False
        return True

    def peak_rss_bytes(self) -> dict[str, int]:
        """Each component's peak resident memory (VmHWM) so far; the process ``ip netns exec`` became."""
        peaks = {}
        for name, process in self.processes.items():
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[name] = int(line.split()[1]) * 1024
        return peaks

    def stop(self) -> None:
        """Stop every process (scheduler first, etcd last), killing what does not stop within 10 s."""
        for process in reversed(list(self.processes.values())):
            stop_group(process, 10)


def kubeconfig_text(server: str, authority: Path, client: pki.Pair, *, embedded: bool = False) -> str:
    """A kubeconfig naming the certificate files, or with ``embedded`` holding them (as K3s' k3s.yaml
    does), for a program that does not share this machine's files."""

    def entry(name: str, path: Path) -> str:
        return f"{name}-data: {base64.b64encode(path.read_bytes()).decode()}" if embedded else f"{name}: {path}"

    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: lab\n  cluster:\n    server: {server}\n    {entry('certificate-authority', authority)}\n"
        f"users:\n- name: lab\n  user:\n    {entry('client-certificate', client.cert)}\n"
        f"    {entry('client-key', client.key)}\n"
        "contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\n"
    )


def write_kubeconfig(path: Path, server: str, authority: Path, client: pki.Pair) -> None:
    path.write_text(kubeconfig_text(server, authority, client))


def _first_address(cidr: str) -> str:
    """The ``kubernetes`` Service's ClusterIP: the first address of the service range."""
    return str(next(ipaddress.ip_network(cidr).hosts()))
