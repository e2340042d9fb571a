"""LoadBalancer Services through Cilium: the LB-IPAM pools, the L2 announcement policy or the BGP objects.

The objects of :func:`stacks.load_balancer.objects` become Kubernetes resources
made through the Cilium release's provider, after the release, so a change of a
pool or policy is a diff in the preview and removing ``loadBalancer`` deletes
them. Their CRDs are registered by the Cilium operator when it starts with the
feature on, so a command on the first server waits until they are served
(``loadbalancer-crds.sh``) before the first object is made. A BGP peer's
password becomes a Secret in kube-system, marked secret in Pulumi's state;
only its name appears in the peer's config.

Node IPAM needs no object: its Helm switch is all (``stacks/cilium_values.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import remote

from components.remote import node_command, script
from stacks import load_balancer
from stacks.config import StackConfig
from stacks.digest import digest

COMPONENT_TYPE = "k3s-cilium:index:LoadBalancing"
CRD_TIMEOUT_SECONDS = 300
# The role of each kind in the Pulumi resource name, e.g. "lb-pool-lan".
ROLES = {
    "CiliumLoadBalancerIPPool": "pool",
    "CiliumL2AnnouncementPolicy": "l2-policy",
    "CiliumBGPClusterConfig": "bgp-cluster-config",
    "CiliumBGPPeerConfig": "bgp-peer-config",
    "CiliumBGPAdvertisement": "bgp-advertisement",
}
# The API versions an object of ours may have had under an older Cilium minor: the resource type
# Pulumi records holds the API version, so without the alias an upgrade would replace the object
# (and LB-IPAM would hand out every address again).
EARLIER_API_VERSIONS = ("cilium.io/v2alpha1",)


@dataclass(frozen=True)
class LoadBalancingArgs:
    cfg: StackConfig
    # The Cilium component's Kubernetes provider (CiliumRelease.provider).
    provider: k8s.Provider
    # SSH connection per node name (K3sCluster.connections); the first server's waits for the CRDs.
    connections: Mapping[str, remote.ConnectionArgs]
    # The Cilium release: its operator registers the CRDs.
    depends_on: Sequence[pulumi.Resource] = ()


class LoadBalancing(pulumi.ComponentResource):
    """The Cilium objects that give LoadBalancer Services an address and make it reachable."""

    # Kind/name of each object made, e.g. "CiliumLoadBalancerIPPool/lan".
    object_names: list[str]
    objects: dict[str, k8s.apiextensions.CustomResource]
    secrets: dict[str, k8s.core.v1.Secret]
    crds_ready: remote.Command | None

    def __init__(self, name: str, args: LoadBalancingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(COMPONENT_TYPE, name, None, opts)
        cfg = args.cfg
        lb, cilium = cfg.load_balancer, cfg.cilium.parsed_version
        self.objects, self.secrets, self.crds_ready = {}, {}, None

        crds = load_balancer.crd_names(lb)
        if crds:
            first = cfg.servers[0]
            self.crds_ready = node_command(
                f"{name}-crds",
                args.connections[first.name],
                self,
                user=cfg.ssh_user(first),
                create=script(
                    "loadbalancer-crds", {"CRD_NAMES": " ".join(crds), "TIMEOUT_SECONDS": CRD_TIMEOUT_SECONDS}
                ),
                triggers=[digest(crds)],
                depends_on=args.depends_on,
            )

        def k8s_opts(depends_on: Sequence[pulumi.Resource], **extra: Any) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=list(depends_on), **extra)

        for peer in lb.bgp.peers if lb.bgp else []:
            if peer.password is None:
                continue
            self.secrets[peer.name] = k8s.core.v1.Secret(
                f"{name}-bgp-password-{peer.name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=load_balancer.peer_secret_name(peer),
                    namespace=load_balancer.BGP_SECRETS_NAMESPACE,
                    labels=load_balancer.PART_OF,
                ),
                string_data={"password": pulumi.Output.secret(peer.password.get_secret_value())},
                opts=k8s_opts(args.depends_on, additional_secret_outputs=["stringData", "data"]),
            )

        after = [self.crds_ready] if self.crds_ready else list(args.depends_on)
        for obj in load_balancer.objects(lb, cilium):
            kind, object_name = obj["kind"], obj["metadata"]["name"]
            aliases = [
                pulumi.Alias(type_=f"kubernetes:{earlier}:{kind}")
                for earlier in EARLIER_API_VERSIONS
                if earlier != obj["apiVersion"]
            ]
            self.objects[f"{kind}/{object_name}"] = k8s.apiextensions.CustomResource(
                f"{name}-{ROLES[kind]}-{object_name}",
                api_version=obj["apiVersion"],
                kind=kind,
                metadata=obj["metadata"],
                spec=obj["spec"],
                opts=k8s_opts([*after, *self.secrets.values()], aliases=aliases),
            )
        self.object_names = list(self.objects)
        self.register_outputs({"object_names": self.object_names})


def load_balancing(name: str, args: LoadBalancingArgs) -> LoadBalancing | None:
    """The component for ``loadBalancer.mode``; None for ``none``, so such a stack gets no new resource."""
    return LoadBalancing(name, args) if args.cfg.load_balancer.mode != "none" else None


def exported(cfg: StackConfig, component: LoadBalancing | None) -> dict[str, Any]:
    """The stack output ``loadBalancer``: the mode and the objects made for it."""
    return {"mode": cfg.load_balancer.mode, "objects": component.object_names if component else []}
