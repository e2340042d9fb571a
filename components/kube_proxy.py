"""What is left of kube-proxy once Cilium's kube-proxy replacement serves the services.

On K3s kube-proxy runs inside the k3s/k3s-agent process: the servers'
``disable-kube-proxy`` flag (``stacks.k3s_flags``) stops it, and K3sCluster
restarts the nodes when that flag changes. What it leaves behind is removed
here, after Cilium is ready (``depends_on`` the Cilium release):

1. on the first server, ``kubectl`` deletes a ``kube-system/kube-proxy``
   DaemonSet and ConfigMap if the cluster ever ran a kubeadm-style kube-proxy
   (not found is fine), and waits until its pods are gone, so that none of them
   rewrites its rules after step 2;
2. on every node, in parallel, ``components/scripts/kube-proxy-cleanup.sh``
   removes kube-proxy's iptables chains and rules (IPv4 and IPv6, legacy and
   nft backends).

Both re-run when the Cilium values or any node's K3s configuration change, and
not on a no-op ``pulumi up``. Without kube-proxy replacement (the ``baseline``
tier, or ``features.kubeProxyReplacement: false``) the component is still built
but has no children, so going back to baseline deletes the cleanup commands:
their delete does nothing (they have no ``delete`` command), and kube-proxy
comes back because the servers drop ``disable-kube-proxy`` and K3s restarts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
from pulumi_command import local, remote

from components.remote import Script, node_command, script, stdout_by_node
from stacks.config import StackConfig
from stacks.digest import deployed_state, digest
from stacks.features import Resolved

# kubectl's own wait for the kube-proxy pods to go, bounded.
K8S_DELETE_TIMEOUT_SECONDS = 120
# K3s installs itself in /usr/local/bin, which sudo's secure_path lacks on some distributions.
K8S_CLEANUP = (
    'PATH="$PATH:/usr/local/bin" k3s kubectl -n kube-system delete daemonset,configmap kube-proxy --ignore-not-found '
    "--cascade=foreground --wait=true "
    f"--timeout={K8S_DELETE_TIMEOUT_SECONDS}s"
)


@dataclass(frozen=True)
class KubeProxyRemovalArgs:
    cfg: StackConfig
    features: Resolved
    # SSH connection per node name (K3sCluster.connections).
    connections: Mapping[str, remote.ConnectionArgs]
    # What must be ready first: the Cilium release (CiliumRelease.release).
    depends_on: Sequence[pulumi.Resource] = ()


def cleanup_trigger(cfg: StackConfig, features: Resolved) -> str:
    """A hash of the nodes, their K3s configuration and the Cilium release."""
    return digest(deployed_state(cfg, features))


class KubeProxyRemoval(pulumi.ComponentResource):
    """Removes kube-proxy's leftovers after Cilium took the services over; nothing without KPR."""

    enabled: bool
    # Node name -> what the cleanup script printed (one line per iptables backend and family).
    summaries: pulumi.Output[dict[str, str]]
    # Output of the Kubernetes-side cleanup on the first server ("" without KPR).
    kubernetes_cleanup: pulumi.Output[str]
    # Done after every node's cleanup (None without KPR): one dependency for what must come after
    # all of them, where the component would add one per node to each dependent.
    done: pulumi.Resource | None

    def __init__(self, name: str, args: KubeProxyRemovalArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("k3s-cilium:index:KubeProxyRemoval", name, None, opts)
        cfg, features = args.cfg, args.features
        self.enabled = "kubeProxyReplacement" in features

        self.done = None
        if not self.enabled:
            self.summaries = pulumi.Output.from_input({})
            self.kubernetes_cleanup = pulumi.Output.from_input("")
        else:
            trigger = cleanup_trigger(cfg, features)
            first = cfg.servers[0]
            objects = node_command(
                f"{name}-kubernetes",
                args.connections[first.name],
                self,
                user=cfg.ssh_user(first),
                create=Script("kube-proxy-kubernetes-cleanup", K8S_CLEANUP),
                triggers=[trigger],
                depends_on=args.depends_on,
            )
            commands = {
                node.name: node_command(
                    f"{name}-cleanup-{node.name}",
                    args.connections[node.name],
                    self,
                    user=cfg.ssh_user(node),
                    create=script("kube-proxy-cleanup"),
                    triggers=[trigger],
                    # The objects' cleanup waits for Cilium: one dependency, one walk of the SDK's cycle check.
                    depends_on=[objects],
                )
                for node in cfg.nodes
            }
            self.kubernetes_cleanup = objects.stdout
            self.summaries = stdout_by_node(commands)
            # Runs nothing (no create): a local barrier, no SSH session.
            self.done = local.Command(
                f"{name}-done", opts=pulumi.ResourceOptions(parent=self, depends_on=list(commands.values()))
            )

        self.register_outputs({"summaries": self.summaries, "kubernetes_cleanup": self.kubernetes_cleanup})
