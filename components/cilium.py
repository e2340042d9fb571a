"""The Cilium Helm release, and the workload restart that makes a datapath change real.

``CiliumRelease`` installs the official ``cilium`` chart with the values
:func:`stacks.cilium_values.render` produces, through a Kubernetes provider made
from the cluster's kubeconfig, and waits until the agents and the operator are
rolled out. A change of those values restarts the agents (the chart's
``rollOutCiliumPods``), which is enough for most features; before it is
installed or changes, ``<name>-prepull-<node>`` puts the target agent image on
every node (``cilium-prepull.sh``); the features whose
catalogue entry says ``restart="pods"`` (and the MTU) change what Cilium sets up
when it creates a pod's network device, so running pods keep the old datapath
until they are recreated. For those a remote command on the first server rolls
every pod-networked workload (``components/scripts/restart-datapath-pods.sh``);
it is replaced, and so runs again, exactly when their on/off state or the MTU
changes. Features that need a node reboot (``restart="nodes"``: jumbo MTU) are
only announced with a warning.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_command import local, remote

from components.airgap import release_chart_args
from components.remote import Script, host_identity, node_command, script
from components.scripts import ScriptValue
from components.verify import ASSERT_DIR, PROJECT_PYTHON, assert_command, assertion
from stacks import airgap, cilium_values, encryption, upgrade
from stacks.checks import PlannedCheck
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
# Bound on each node's pull of the agent image before the release changes.
PULL_TIMEOUT_SECONDS = 600
MAX_HISTORY = 10

# The API check (verification/api_reachable.py), run where Pulumi runs like the verification assertions.
API_CHECK_PROGRAM = f"{PROJECT_PYTHON} -m verification.api_reachable"
API_PORT = 6443
# Address of a server as seen from the server itself: the end of the forward when there is no bastion.
LOOPBACK = "127.0.0.1"

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
    # Per node, what its image pre-pull waits for (K3sCluster.nodes_ready); else ``depends_on``.
    nodes_ready: Mapping[str, pulumi.Resource] = field(default_factory=dict)
    # The IPsec pre-shared key (config secret ipsecKey) with features.encryption ipsec; treated as secret.
    ipsec_key: pulumi.Input[str] | None = None
    # The Gateway API CRDs the release needs first (stacks.gateway_api.program_crds): verified manifests.
    gateway_api_crds: Sequence[Mapping[str, Any]] = ()
    # What the cluster must show of them first (stacks.gateway_api.crds_check_expect); None without Gateway API.
    gateway_api_crds_check: Mapping[str, Any] | None = None
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


def api_check_command(cfg: StackConfig) -> str:
    """``.venv/bin/python -m verification.api_reachable --endpoint <apiEndpoint> ...`` (no absolute path).

    ``--target``/``--via`` describe the fix its error message prints: an SSH
    local forward through the bastion to the first server, or without a
    bastion through the first server to its own 6443.
    """
    first = cfg.servers[0]
    bastion = cfg.ssh.bastion
    if bastion:
        target, via = first.host, f"{bastion.user}@{bastion.host}:{bastion.port}"
    else:
        target, via = LOOPBACK, f"{cfg.ssh_user(first)}@{first.host}:{cfg.ssh_port(first)}"
    words = [*shlex.split(API_CHECK_PROGRAM), "--endpoint", cfg.api_endpoint, "--port", str(API_PORT)]
    return shlex.join([*words, "--target", target, "--via", via])


def cluster_ca(kubeconfig: str) -> str:
    """The CA certificate (PEM) of the kubeconfig's first cluster, or "" when it holds none."""
    try:
        doc = yaml.safe_load(kubeconfig) or {}
        data = ((doc.get("clusters") or [{}])[0].get("cluster") or {}).get("certificate-authority-data") or ""
        return base64.b64decode(data, validate=True).decode().strip()
    except (yaml.YAMLError, AttributeError, IndexError, binascii.Error, UnicodeDecodeError):
        return ""


def api_check_trigger(cfg: StackConfig, features: Resolved, cluster_identifier: str) -> str:
    """What the Kubernetes provider creates or changes: the release (chart source and version, values),
    the verification workloads (``verify``) and the cluster it talks to. Nothing else re-runs the check.

    A local chart counts by its content digest, not its path: the same chart on another machine
    (a CI runner) is no reason to run the check again.
    """
    source = airgap.chart(cfg.airgap, cfg.cilium.version)
    chart = None
    if source is not None:
        chart = {"kind": source.kind, "repository": source.repository, "version": source.version}
        chart.update({"sha256": source.sha256} if source.sha256 else {"chart": source.chart})
    state = {
        "cluster": cluster_identifier,
        "chart": {"version": cfg.cilium.version, "source": chart},
        "values": cilium_values.render(cfg, features),
        "verify": cfg.verify.model_dump(mode="json"),
    }
    return digest(state)


class CiliumRelease(pulumi.ComponentResource):
    """The Cilium Helm release in kube-system, and the restarts a datapath change needs."""

    provider: k8s.Provider
    release: k8s.helm.v3.Release
    release_status: pulumi.Output[str]
    revision: pulumi.Output[int]
    values: pulumi.Output[dict[str, Any]]
    restart: remote.Command
    restart_trigger: str
    # kube-system/k3s-cilium-release: the deployed Cilium version and values digest, which the upgrade gate reads.
    stamp: k8s.core.v1.ConfigMap
    api_check: local.Command
    prepulls: dict[str, remote.Command]
    # What the release needs in the cluster first: the IPsec key Secret, the Gateway API CRDs.
    prerequisites: list[pulumi.Resource]

    def __init__(self, name: str, args: CiliumReleaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("k3s-cilium:index:CiliumRelease", name, None, opts)
        cfg, features = args.cfg, args.features
        values = cilium_values.render(cfg, features)
        kubeconfig = pulumi.Output.secret(args.kubeconfig)
        cluster_identifier = args.cluster_identifier or default_cluster_identifier(cfg)

        # Before any Kubernetes resource: does https://<apiEndpoint>:6443 answer from where Pulumi runs?
        # (ssh.bastion carries only the SSH commands.) A bounded TLS handshake verified against the
        # cluster CA; its failure names the endpoint and the fix (an SSH local forward, 127.0.0.1).
        # When it runs again: a failed check is not stored, so the next `up` runs it again. Otherwise
        # a no-op `up` must change nothing, so it is replaced (and runs) only on a trigger change: what
        # the provider is about to create or change (the release's chart version and values, the
        # verification workloads, the cluster). Those are exactly the `up`s that need the API; an `up`
        # that touches only SSH commands does not. A new endpoint (the command) or a reinstalled first
        # server (a new CA on stdin) updates it, which runs it again too.
        self.api_check = local.Command(
            f"{name}-api-reachable",
            create=api_check_command(cfg),
            stdin=kubeconfig.apply(cluster_ca),
            dir=ASSERT_DIR,
            triggers=[api_check_trigger(cfg, features, cluster_identifier)],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )

        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=kubeconfig,
            cluster_identifier=cluster_identifier,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.api_check]),
        )

        self.prerequisites = [*self._ipsec_secret(name, args), *self._gateway_api_crds(name, args)]

        # The target release's agent image on every node before the release changes, so that no
        # agent waits for a pull while its node's datapath restarts (``cilium-prepull.sh``).
        # Runs again when the image or the node's host changes, and only then.
        image = cilium_values.agent_image(values, cfg.cilium.version)
        self.prepulls = {
            node.name: node_command(
                f"{name}-prepull-{node.name}",
                args.connections[node.name],
                self,
                user=cfg.ssh_user(node),
                create=script("cilium-prepull", {"IMAGE": image, "PULL_TIMEOUT_SECONDS": PULL_TIMEOUT_SECONDS}),
                triggers=[*host_identity(cfg, node), image],
                # Its own node only: one edge per node, not one per pair of nodes.
                depends_on=[args.nodes_ready[node.name]] if node.name in args.nodes_ready else args.depends_on,
            )
            for node in cfg.nodes
        }

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
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=self.provider,
                depends_on=[*args.depends_on, self.api_check, *self.prepulls.values(), *self.prerequisites],
            ),
        )
        status = self.release.status
        self.release_status = status.apply(lambda s: str(s.status) if s and s.status else "")
        self.revision = status.apply(lambda s: int(s.revision) if s and s.revision is not None else 0)
        self.values = pulumi.Output.from_input(values)

        first = cfg.servers[0]
        self.restart_trigger = datapath_fingerprint(cfg, features)
        restart_command = script(
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
        self.restart = node_command(
            f"{name}-restart-pods",
            args.connections[first.name],
            self,
            user=cfg.ssh_user(first),
            create=restart_command,
            update=Script("restart-only-on-trigger", "true"),
            triggers=[self.restart_trigger],
            depends_on=[self.release],
        )

        # What runs now, for the next upgrade gate (stacks/upgrade.py): written once the release and its restart
        # are done, so a K3s rollout is never judged against Cilium settings that are not deployed yet.
        self.stamp = k8s.core.v1.ConfigMap(
            f"{name}-stamp",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=upgrade.RELEASE_STAMP, namespace=NAMESPACE),
            data=upgrade.release_stamp(cfg, features),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[self.restart]),
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

    def _ipsec_secret(self, name: str, args: CiliumReleaseArgs) -> list[pulumi.Resource]:
        """The Secret the chart mounts into the agents (``encryption.ipsec.secretName``), made from the secret
        ``ipsecKey``: never on a command line, in no output. A new key (with a new key id) is the rotation."""
        if args.cfg.features.encryption != "ipsec" or args.ipsec_key is None:
            return []
        manifest = encryption.ipsec_secret("")
        key = pulumi.Output.secret(args.ipsec_key).apply(lambda text: text.strip())
        return [
            k8s.core.v1.Secret(
                f"{name}-ipsec-keys",
                metadata=manifest["metadata"],
                type=manifest["type"],
                string_data={encryption.IPSEC_SECRET_KEY: key},
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=self.provider,
                    additional_secret_outputs=["data", "stringData"],
                ),
            )
        ]

    def _gateway_api_crds(self, name: str, args: CiliumReleaseArgs) -> list[pulumi.Resource]:
        """The Gateway API CRDs, before the release (the operator needs them when it starts), after a check of
        what the cluster has (``gateway-api-crds``: no other owner's CRDs taken over; K3s' or another tool's
        there and serving what Cilium needs). Kept when the stack stops wanting them or is destroyed: deleting
        a CRD deletes every Gateway and route of it."""
        if args.gateway_api_crds_check is None:
            return []
        cfg, first = args.cfg, args.cfg.servers[0]
        check = PlannedCheck("gateway-api-crds", first.name, dict(args.gateway_api_crds_check))
        params: dict[str, ScriptValue] = {
            "CRD_NAMES": " ".join(check.expect["required"]),
            "WAIT_FOR_ALL": str(bool(check.expect["existing"])).lower(),
        }
        reader = node_command(
            f"{name}-gateway-api-crds-{first.name}",
            args.connections[first.name],
            self,
            user=cfg.ssh_user(first),
            create=script("gateway-api-crds", params),
            # Read again only when what is asked changes; a failed verdict is not stored and judged again.
            triggers=[*host_identity(cfg, first), digest(check.expect)],
            depends_on=[self.api_check],
        )
        checked = assertion(f"{name}-gateway-api-crds-assert", assert_command(check), reader.stdout, self)
        return [
            checked,
            *(
                k8s.apiextensions.v1.CustomResourceDefinition(
                    f"{name}-crd-{crd['metadata']['name']}",
                    metadata=crd["metadata"],
                    spec=crd["spec"],
                    opts=pulumi.ResourceOptions(
                        parent=self, provider=self.provider, retain_on_delete=True, depends_on=[checked]
                    ),
                )
                for crd in args.gateway_api_crds
            ),
        ]
