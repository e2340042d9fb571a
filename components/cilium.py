"""The Cilium Helm release, and the workload restart that makes a datapath change real.

``CiliumRelease`` installs the official ``cilium`` chart with the values
:func:`stacks.cilium_values.render` produces, through a Kubernetes provider made
from the cluster's kubeconfig, and waits until the agents and the operator are
rolled out. A change of those values restarts the agents (the chart's
``rollOutCiliumPods``), which is enough for most features; the features whose
catalogue entry says ``restart="pods"`` (and the MTU) change what Cilium sets up
when it creates a pod's network device, so running pods keep the old datapath
until they are recreated. For those a remote command on the first server rolls
every pod-networked workload (``components/scripts/restart-datapath-pods.sh``);
it is replaced, and so runs again, exactly when their on/off state or the MTU
changes. Features that need a node reboot (``restart="nodes"``: jumbo MTU) are
only announced with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import remote

from components.airgap import release_chart_args
from components.remote import script_command
from stacks import cilium_values
from stacks.config import StackConfig
from stacks.digest import digest
from stacks.features import CATALOGUE, Resolved

CHART = "cilium"
CHART_REPOSITORY = "https://helm.cilium.io/"
NAMESPACE = "kube-system"
# The Helm release name: fixed (no Pulumi suffix) so that the cilium CLI, which
# looks for release "cilium" in kube-system, and `helm -n kube-system ...` find it.
RELEASE_NAME = "cilium"
# An agent rollout goes node by node (two at a time by the chart's default);
# this bounds the whole install or upgrade.
DEFAULT_TIMEOUT_SECONDS = 900
# Bound on each workload's rollout in the restart after a datapath change.
DEFAULT_RESTART_TIMEOUT_SECONDS = 300
MAX_HISTORY = 10

# Features whose change only reaches running pods when the pods are recreated.
POD_RESTART_FEATURES = tuple(name for name, feature in CATALOGUE.items() if feature.restart == "pods")
# Features whose change needs the nodes rebooted.
NODE_REBOOT_FEATURES = tuple(name for name, feature in CATALOGUE.items() if feature.restart == "nodes")


@dataclass(frozen=True)
class CiliumReleaseArgs:
    cfg: StackConfig
    features: Resolved
    # The cluster's admin kubeconfig (K3sCluster.kubeconfig); treated as secret.
    kubeconfig: pulumi.Input[str]
    # SSH connection per node name (K3sCluster.connections); the first server's is used.
    connections: Mapping[str, remote.ConnectionArgs]
    # What must exist before the release is installed (K3sCluster.nodes_ready values).
    depends_on: Sequence[pulumi.Resource] = ()
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    restart_timeout_seconds: int = DEFAULT_RESTART_TIMEOUT_SECONDS
    # Namespaces whose workloads are never restarted after a datapath change.
    restart_skip_namespaces: Sequence[str] = ()
    # Replaces the Kubernetes provider (and so every resource made with it) only
    # when it changes; defaults to "k3s-cilium/<stack>/<first server>".
    cluster_identifier: str | None = None


def datapath_fingerprint(cfg: StackConfig, features: Resolved) -> str:
    """A hash of what only reaches running pods when they are recreated.

    The on/off state of every ``restart="pods"`` feature and the MTU the values
    set (``cilium.mtu``, jumbo MTU or a raw ``cilium.values`` override), and
    nothing else: a change of, say, Hubble restarts the agents only.
    """
    state = {
        "features": {name: name in features for name in POD_RESTART_FEATURES},
        "mtu": cilium_values.render(cfg, features).get("MTU"),
    }
    return digest(state)


def default_cluster_identifier(cfg: StackConfig) -> str:
    return f"k3s-cilium/{pulumi.get_stack()}/{cfg.servers[0].name}"


class CiliumRelease(pulumi.ComponentResource):
    """The Cilium Helm release in kube-system, and the restarts a datapath change needs."""

    provider: k8s.Provider
    release: k8s.helm.v3.Release
    release_status: pulumi.Output[str]
    revision: pulumi.Output[int]
    values: pulumi.Output[dict[str, Any]]
    restart: remote.Command
    restart_trigger: str

    def __init__(self, name: str, args: CiliumReleaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("k3s-cilium:index:CiliumRelease", name, None, opts)
        cfg, features = args.cfg, args.features
        values = cilium_values.render(cfg, features)

        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=pulumi.Output.secret(args.kubeconfig),
            cluster_identifier=args.cluster_identifier or default_cluster_identifier(cfg),
            opts=pulumi.ResourceOptions(parent=self),
        )

        # atomic is off on purpose: a rollback would restart every agent a second
        # time, a failed first install would uninstall the cluster's only CNI, and
        # it would put the cluster back on the old values behind Pulumi's back.
        # A failed upgrade stays visible (pods, events) and the next `pulumi up`
        # retries it; going back is explicit: the previous tier and `pulumi up`.
        # cleanup_on_fail still removes what a failed upgrade newly created.
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            k8s.helm.v3.ReleaseArgs(
                name=RELEASE_NAME,
                # helm.cilium.io, or the airgap block's mirror, OCI reference or local chart.
                **release_chart_args(cfg, CHART_REPOSITORY, CHART),
                namespace=NAMESPACE,
                values=values,
                timeout=args.timeout_seconds,
                atomic=False,
                cleanup_on_fail=True,
                max_history=MAX_HISTORY,
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=list(args.depends_on)),
        )
        status = self.release.status
        self.release_status = status.apply(lambda s: str(s.status) if s and s.status else "")
        self.revision = status.apply(lambda s: int(s.revision) if s and s.revision is not None else 0)
        self.values = pulumi.Output.from_input(values)

        first = cfg.servers[0]
        self.restart_trigger = datapath_fingerprint(cfg, features)
        restart_command = script_command(
            cfg,
            first,
            "restart-datapath-pods",
            {
                "TIMEOUT_SECONDS": args.restart_timeout_seconds,
                "SKIP_NAMESPACES": " ".join(args.restart_skip_namespaces),
            },
        )
        # Replaced (and so run) only when the trigger changes: the `update`
        # command keeps an edit of the script or its timeout from restarting
        # every workload. It also runs once on the first deploy, when only the
        # cluster's own workloads exist.
        self.restart = remote.Command(
            f"{name}-restart-pods",
            connection=args.connections[first.name],
            create=restart_command,
            update="true",
            triggers=[self.restart_trigger],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
        )

        for feature in NODE_REBOOT_FEATURES:
            if feature in features:
                pulumi.log.warn(
                    f"feature {feature} is on (Cilium MTU {values.get('MTU')}): Pulumi cannot apply or undo an MTU "
                    "change safely. Set the MTU on every node's NICs and switches yourself, then reboot the nodes "
                    "one at a time (drain first) so that every pod and Cilium device is recreated with it; "
                    "turning it off needs the same.",
                    resource=self,
                )

        # The provider is a public attribute for later components; it is not
        # registered as an output (a resource reference says nothing in the stack's state).
        self.register_outputs(
            {
                "release_status": self.release_status,
                "revision": self.revision,
                "values": self.values,
                "restart_trigger": self.restart_trigger,
            }
        )
