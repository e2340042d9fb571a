"""K3sCluster: K3s on every node of the stack over SSH, ready for Cilium.

What it creates, per node, as children of the component:

- ``<name>-preflight-<node>``: checks kernel (against the stack's features),
  architecture, systemd and required commands before anything is installed;
  its stdout becomes the ``node_info`` output.
- ``<name>-server-<node>`` / ``<name>-agent-<node>``: installs K3s pinned to
  ``k3s.version`` with the node's ``config.yaml``; update = the same converge
  script (rewrite config, restart or upgrade in place); delete = uninstall
  K3s and Cilium's leftovers.
- on the first server: ``<name>-token-<node>`` (only when no ``k3sToken`` is
  configured) and ``<name>-kubeconfig-<node>``, both secret and unlogged.
  The kubeconfig's client certificate expires a year after K3s issued it:
  its expiry is an output, ``pulumi up`` warns 30 days ahead, and replacing
  the kubeconfig command renews it (K3s restarted on the first server).
- on the first server, for every other node: ``<name>-deregister-<node>``,
  whose delete removes the node's Node object and node-password secret after
  the node was uninstalled (a node removed from the stack, or moved to a new
  host under the same name, would otherwise be stale or rejected), and
  ``<name>-retire-<node>``, whose delete cordons and drains the node before
  its uninstall (skipped when the whole cluster is destroyed).

A node's commands carry its SSH address as trigger: a node moved to another
host is a replacement, uninstalled on the old host before the new one is set
up (pulumi-command would otherwise run ``update`` on the new host and leave
the old one running K3s).

Ordering: every install waits for every preflight (through the first
server), the upgrade gate and the snapshot (``<name>-upgrade-gate-*``,
``<name>-snapshot-<first>``); then one node at a time for the servers (etcd
membership changes are serialized) and batches of
``k3s.upgrade.maxUnavailable`` agents, each node framed by
``<name>-drain-<node>`` (cordon and drain before a version change) and
``<name>-ready-<node>`` (its release, Ready, its Cilium agent, the smoke
Service on its NodePort, etcd; then uncordon) on the first server, then the
node's own checks, ``<name>-node-checks-<node>`` on the node and
``<name>-node-checks-assert-<node>`` (:mod:`verification.rollout`); the next
node or batch starts after that verdict.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import yaml
from pulumi_command import local, remote

from components import remote as ssh
from components import scripts
from components.airgap import AirgapNodes, AirgapNodesArgs
from components.verify import ASSERT_DIR, SMOKE_NAME, assert_command, assertion, node_collector_script, skip_keys
from stacks import airgap, checks, k3s_flags, preflight, upgrade
from stacks.checks import PlannedCheck
from stacks.config import Node, StackConfig
from stacks.digest import digest
from stacks.features import Resolved
from stacks.k3s_flags import API_READY_TIMEOUT_SECONDS, K3S_BIN_DIR
from stacks.kubeconfig import client_certificate_expiry, expiry_warning
from verification import rollout

COMPONENT_TYPE = "k3s-cilium:index:K3sCluster"

API_PORT = 6443
KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"
K3S_DATA_DIR = "/var/lib/rancher/k3s"
# The admin client certificate in it; K3s renews certificates within 90 days of expiry when it starts.
ADMIN_CLIENT_CERT = f"{K3S_DATA_DIR}/server/tls/client-admin.crt"
CERTIFICATE_RENEW_AFTER_DAYS = 365 - 90
SERVER_TOKEN_PATH = f"{K3S_DATA_DIR}/server/token"
# The cluster CA a server generates when the cluster is created; its fingerprint is in the install's stdout.
SERVER_CA = f"{K3S_DATA_DIR}/server/tls/server-ca.crt"
# Where the official install script puts things (its defaults on a writable /usr/local).
INSTALLER_URL = "https://get.k3s.io"
SYSTEMD_DIR = "/etc/systemd/system"
# What Cilium leaves on a host: devices, pinned BPF maps, its CNI config.
CILIUM_LINKS = ("cilium_host", "cilium_net", "cilium_vxlan", "cilium_geneve")
BPF_TC_GLOBALS = "/sys/fs/bpf/tc/globals"
BPF_CILIUM_DIR = "/sys/fs/bpf/cilium"
CILIUM_CNI_CONFIG = "/etc/cni/net.d/05-cilium.conflist"
# Where an agent records the servers' config digest it last started with.
SERVERS_CONFIG_MARKER = "/etc/rancher/k3s/servers-config.sha256"
# Which install resource manages K3s on the host: a renamed node's old resource must not uninstall it.
OWNER_MARKER = "/etc/rancher/k3s/pulumi-owner"

ROLE_PREFLIGHT = "preflight"
ROLE_TOKEN = "token"
ROLE_KUBECONFIG = "kubeconfig"
ROLE_DEREGISTER = "deregister"
ROLE_UPGRADE_GATE = "upgrade-gate"
ROLE_SNAPSHOT = "snapshot"
ROLE_DRAIN = "drain"
ROLE_READY = "ready"
ROLE_NODE_CHECKS = "node-checks"
ROLE_RETIRE = "retire"
# How long a node may take, after its install or upgrade, to run the target release and be Ready.
NODE_READY_TIMEOUT_SECONDS = 600


@dataclass
class K3sClusterArgs:
    config: StackConfig
    features: Resolved
    ssh_private_key: pulumi.Input[str]
    # None: the first server generates the token and it is read back as a secret.
    token: pulumi.Input[str] | None = None
    # None: the private key has no passphrase.
    ssh_private_key_password: pulumi.Input[str] | None = None
    # The secret registryCredentials for the airgap block's registries.yaml; None: none.
    registry_credentials: pulumi.Input[str] | None = None


# --- pure helpers (no Pulumi engine needed) ---------------------------------------------------


def render_node_config(cfg: StackConfig, features: Resolved, node: Node, token_configured: bool) -> str:
    """The node's ``/etc/rancher/k3s/config.yaml``, byte-identical for the same inputs."""
    return yaml.safe_dump(
        k3s_flags.node_config(cfg, features, node, token_configured), sort_keys=True, default_flow_style=False
    )


def servers_config_digest(cfg: StackConfig, features: Resolved, token_configured: bool) -> str:
    """A digest of every server's config: agents restart when it changes, as they read settings from servers."""
    digest = hashlib.sha256()
    for server in cfg.servers:
        digest.update(f"--- {server.name}\n".encode())
        digest.update(render_node_config(cfg, features, server, token_configured).encode())
    return digest.hexdigest()


def preflight_params(cfg: StackConfig, features: Resolved, node: Node) -> dict[str, scripts.ScriptValue]:
    # Kernel floor of the pinned Cilium minor, commands, firewalld, NIC: stacks/preflight.py.
    return dict(preflight.params(cfg, features, node))


def resource_name(component: str, role: str, node: Node) -> str:
    """``<component>-<role>-<node>``; the install resource's role is the node's role (server/agent)."""
    return f"{component}-{role}-{node.name}"


def install_resource_name(component: str, node: Node) -> str:
    return resource_name(component, node.role, node)


def install_params(
    cfg: StackConfig,
    features: Resolved,
    node: Node,
    token_configured: bool,
    owner: str,
    servers_digest: str | None = None,
) -> dict[str, scripts.ScriptValue]:
    """``servers_digest``: :func:`servers_config_digest`, when the caller computed it once for every agent."""
    # The first server without a configured token generates it: nothing on stdin.
    token_on_stdin = token_configured or node != cfg.servers[0]
    return {
        "ROLE": node.role,
        "K3S_VERSION": cfg.k3s.version,
        "CONFIG_PATH": k3s_flags.CONFIG_PATH,
        "CONFIG_YAML": render_node_config(cfg, features, node, token_configured),
        "TOKEN_PATH": k3s_flags.TOKEN_PATH,
        "TOKEN_FROM_STDIN": token_on_stdin,
        "SERVERS_CONFIG_SHA256": (servers_digest or servers_config_digest(cfg, features, token_configured))
        if node.role == "agent"
        else "",
        "SERVERS_CONFIG_MARKER": SERVERS_CONFIG_MARKER,
        "API_READY_TIMEOUT": API_READY_TIMEOUT_SECONDS,
        "INSTALLER_URL": INSTALLER_URL,
        "K3S_BIN": f"{K3S_BIN_DIR}/k3s",
        "SYSTEMD_DIR": SYSTEMD_DIR,
        "OWNER": owner,
        "OWNER_MARKER": OWNER_MARKER,
        "SERVER_CA": SERVER_CA,
        "K3S_DATA_DIR": K3S_DATA_DIR,
        # Air-gapped: install from the staged, verified artifacts; their digest re-runs this converge.
        **airgap.install_params(cfg.airgap, cfg.cilium.version),
    }


def uninstall_params(node: Node, owner: str) -> dict[str, scripts.ScriptValue]:
    return {
        "ROLE": node.role,
        "BIN_DIR": K3S_BIN_DIR,
        "CILIUM_LINKS": " ".join(CILIUM_LINKS),
        "BPF_TC_GLOBALS": BPF_TC_GLOBALS,
        "BPF_CILIUM_DIR": BPF_CILIUM_DIR,
        "CILIUM_CNI_CONFIG": CILIUM_CNI_CONFIG,
        "OWNER": owner,
        "OWNER_MARKER": OWNER_MARKER,
    }


def kubeconfig_params() -> dict[str, scripts.ScriptValue]:
    return {
        "KUBECONFIG_PATH": KUBECONFIG_PATH,
        "CLIENT_CERT": ADMIN_CLIENT_CERT,
        "RENEW_AFTER_DAYS": CERTIFICATE_RENEW_AFTER_DAYS,
        "SERVICE": "k3s",
        "K3S_BIN": f"{K3S_BIN_DIR}/k3s",
        "API_READY_TIMEOUT": API_READY_TIMEOUT_SECONDS,
    }


def parse_facts(stdout: str) -> dict[str, str]:
    """``kernel=6.8.0 os=ubuntu-24.04 arch=x86_64 k3s=absent`` (the last such line) as a dict."""
    for line in reversed(stdout.strip().splitlines()):
        pairs = [word.split("=", 1) for word in line.split()]
        if pairs and all(len(pair) == 2 for pair in pairs):
            return {key: value for key, value in pairs}
    return {}


def cluster_ca(install_stdout: str) -> str:
    """The cluster CA fingerprint a server's install printed (``ca=sha256:...``); "" if none."""
    return parse_facts(install_stdout).get("ca", "")


def api_server_url(endpoint: str) -> str:
    try:
        if ipaddress.ip_address(endpoint).version == 6:
            return f"https://[{endpoint}]:{API_PORT}"
    except ValueError:
        pass
    return f"https://{endpoint}:{API_PORT}"


def rewrite_kubeconfig(text: str, endpoint: str) -> str:
    """Point every cluster of K3s's admin kubeconfig (``https://127.0.0.1:6443``) at the API endpoint."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not doc.get("clusters"):
        raise ValueError(f"{KUBECONFIG_PATH} on the first server is not a kubeconfig with clusters")
    for entry in doc["clusters"]:
        entry["cluster"]["server"] = api_server_url(endpoint)
    return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def unpinned_hosts(cfg: StackConfig) -> list[str]:
    """Nodes (and the bastion) without a pinned SSH host key, in config order."""
    names = [node.name for node in cfg.nodes if not node.host_key]
    bastion = cfg.ssh.bastion
    if bastion and not bastion.host_key:
        names.append(f"bastion {bastion.host}")
    return names


def unpinned_warning(names: Sequence[str]) -> str:
    return (
        f"SSH host keys are not pinned for {', '.join(names)}: their host keys are accepted unchecked. "
        "Pin each with hostKey (ssh-keyscan -t ed25519 <host>, without the host name)."
    )


# --- the component ------------------------------------------------------------------------------


class K3sCluster(pulumi.ComponentResource):
    """K3s servers and agents without a CNI: the nodes stay NotReady until Cilium is installed."""

    kubeconfig: pulumi.Output[str]
    """Admin kubeconfig (secret) pointing at ``https://<api endpoint>:6443``."""
    kubeconfig_expires: pulumi.Output[str]
    """When the kubeconfig's client certificate expires (ISO 8601, UTC)."""
    node_info: pulumi.Output[dict[str, dict[str, str]]]
    """Per node: kernel, os, arch and the K3s found before install (from preflight)."""
    node_facts: dict[str, pulumi.Output[dict[str, str]]]
    """Node name -> that node's preflight facts alone (what depends on one node depends on one preflight)."""
    nodes_ready: dict[str, pulumi.Resource]
    """Node name -> the resource after which K3s on that node is installed and running, and its checks pass."""
    preflight_passed: pulumi.Resource
    """Done once every node passed preflight (it runs nothing)."""
    upgrade_gate: local.Command
    """The verdict on the version change (stacks/upgrade.py rules); every placement and install waits for it."""
    snapshot: pulumi.Output[dict[str, str]]
    """The etcd snapshot saved before the last K3s version change (``snapshot``, ``name``, ``from``, ``to``),
    or why none was (``snapshot: none``, ``reason``)."""
    connections: dict[str, remote.ConnectionArgs]
    """Node name -> SSH connection (host key pin, bastion) for further commands."""
    token: pulumi.Output[str]
    """The cluster join token (secret)."""

    def __init__(self, name: str, args: K3sClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        cfg, features = args.config, args.features
        private_key = pulumi.Output.secret(args.ssh_private_key)
        key_password = (
            pulumi.Output.secret(args.ssh_private_key_password) if args.ssh_private_key_password is not None else None
        )
        # An empty k3sToken means "not configured", as Pulumi.yaml documents.
        configured_token = None if isinstance(args.token, str) and not args.token else args.token
        secret_token = pulumi.Output.secret(configured_token) if configured_token is not None else None
        token_configured = secret_token is not None

        unpinned = unpinned_hosts(cfg)
        if unpinned:
            pulumi.log.warn(unpinned_warning(unpinned), resource=self)

        self.connections = {node.name: ssh.connection(cfg, node, private_key, key_password) for node in cfg.nodes}
        self._users = {node.name: cfg.ssh_user(node) for node in cfg.nodes}
        # Once for all agents: it renders every server's config.
        self._servers_digest = servers_config_digest(cfg, features, token_configured)
        self._kpr = "kubeProxyReplacement" in features

        preflights = {node.name: self._preflight(name, cfg, features, node) for node in cfg.nodes}
        self.node_facts = {node: command.stdout.apply(parse_facts) for node, command in preflights.items()}
        # Runs nothing (no create, no SSH): what must wait for every preflight depends on it alone,
        # one dependency instead of one per node for each of the nodes' resources.
        self.preflight_passed = preflights_passed = local.Command(
            f"{name}-{ROLE_PREFLIGHT}-passed",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(preflights.values())),
        )
        first = cfg.servers[0]
        # Before anything is placed or changes: may the running cluster move to these versions?
        self.upgrade_gate = self._upgrade_gate(name, cfg, features, first, preflights_passed)
        # Then an etcd snapshot named after both releases, before any node is touched.
        snapshot = self._command(
            resource_name(name, ROLE_SNAPSHOT, first),
            first,
            create=ssh.script("k3s-snapshot", {"TARGET_VERSION": cfg.k3s.version, "K3S_DATA_DIR": K3S_DATA_DIR}),
            triggers=[*ssh.host_identity(cfg, first), cfg.k3s.version],
            depends_on=[self.upgrade_gate],
        )
        self.snapshot = snapshot.stdout.apply(parse_facts)
        # k3s.upgrade.snapshotTo: a copy where Pulumi runs, before any node is touched.
        saved: list[pulumi.Resource] = [snapshot]
        if cfg.k3s.upgrade.snapshot_to:
            copy = self._snapshot_copy(name, cfg, first, snapshot, private_key, key_password)
            saved.append(copy)
            copied = copy.stdout.apply(parse_facts)
            self.snapshot = pulumi.Output.all(self.snapshot, copied).apply(lambda both: {**both[0], "copy": both[1]})
        # Air-gapped: artifacts verified and placed, registries.yaml written, before each install.
        self.airgap: AirgapNodes | None = None
        if cfg.airgap.k3s or cfg.airgap.registries:
            self.airgap = AirgapNodes(
                f"{name}-airgap",
                AirgapNodesArgs(cfg, self.connections, args.registry_credentials, saved),
                opts=pulumi.ResourceOptions(parent=self),
            )

        first_install = self._install(
            name,
            cfg,
            features,
            first,
            token_configured,
            stdin=secret_token,
            # Nothing is installed anywhere until every node passed preflight, the upgrade gate passed and
            # the snapshot is saved.
            depends_on=[self._drain(name, cfg, first, saved)],
        )

        if secret_token is not None:
            self.token = secret_token
        else:
            self.token = self._read_token(name, cfg, first, first_install)

        # One node at a time for servers (etcd membership changes one at a time), then the agents in
        # batches of k3s.upgrade.maxUnavailable; each node drained before its install or upgrade, waited
        # for (its release, Ready, its Cilium agent, etcd) after it and its own checks passed again,
        # before the next one starts.
        self._between_nodes = [
            check for check in checks.planned_checks(cfg, features) if check.check in rollout.NODE_CHECKS
        ]
        self.nodes_ready = {first.name: self._ready(name, cfg, first, first_install)}
        size = cfg.k3s.upgrade.max_unavailable
        batches = [[server] for server in cfg.servers[1:]]
        batches += [cfg.agents[start : start + size] for start in range(0, len(cfg.agents), size)]
        previous: list[pulumi.Resource] = [self.nodes_ready[first.name]]
        for batch in batches:
            for node in batch:
                install = self._install(
                    name,
                    cfg,
                    features,
                    node,
                    token_configured,
                    stdin=self.token,
                    depends_on=[
                        self._drain(name, cfg, node, previous),
                        self._deregistration(name, cfg, first, node, first_install),
                    ],
                )
                self.nodes_ready[node.name] = self._ready(name, cfg, node, install)
                self._retirement(name, cfg, node, install, first_install)
            previous = [self.nodes_ready[node.name] for node in batch]

        self.kubeconfig, self.kubeconfig_expires = self._fetch_kubeconfig(name, cfg, first, first_install)
        self.node_info = pulumi.Output.all(**self.node_facts)

        self.register_outputs(
            {
                "kubeconfig": self.kubeconfig,
                "kubeconfigExpires": self.kubeconfig_expires,
                "nodeInfo": self.node_info,
                "token": self.token,
                "snapshot": self.snapshot,
            }
        )

    def _command(
        self,
        resource: str,
        node: Node,
        *,
        create: ssh.Script | None,
        update: ssh.Script | None = None,
        delete: ssh.Script | None = None,
        stdin: pulumi.Input[str] | None = None,
        triggers: Sequence[Any] | None = None,
        secret_stdout: bool = False,
        depends_on: Sequence[pulumi.Resource] | None = None,
        deleted_with: pulumi.Resource | None = None,
    ) -> remote.Command:
        return ssh.node_command(
            resource,
            self.connections[node.name],
            self,
            user=self._users[node.name],
            create=create,
            update=update,
            delete=delete,
            stdin=stdin,
            triggers=triggers,
            secret_stdout=secret_stdout,
            depends_on=depends_on or (),
            deleted_with=deleted_with,
        )

    def _upgrade_gate(
        self, name: str, cfg: StackConfig, features: Resolved, first: Node, after: pulumi.Resource
    ) -> local.Command:
        """What runs, read on the first server (``upgrade-gate.sh``), judged against the stack's versions by
        ``python -m verification upgrade-gate`` where Pulumi runs (stacks/upgrade.py has the rules).

        Both run again exactly when a target (a version, Cilium's values, allowDowngrade) changes: the reader's
        trigger.
        A failed verdict is not stored, so the next `up` judges again (on the output read before, until
        the target changes)."""
        check = PlannedCheck(ROLE_UPGRADE_GATE, first.name, upgrade.gate_expect(cfg, features))
        reader = self._command(
            resource_name(name, ROLE_UPGRADE_GATE, first),
            first,
            create=ssh.script(
                "upgrade-gate", {"RELEASE_STAMP": upgrade.RELEASE_STAMP, **upgrade.removal_params(cfg)}
            ),
            triggers=[*ssh.host_identity(cfg, first), digest(check.expect)],
            depends_on=[after],
        )
        return assertion(f"{name}-{ROLE_UPGRADE_GATE}-assert", assert_command(check), reader.stdout, self)

    def _snapshot_copy(
        self,
        name: str,
        cfg: StackConfig,
        first: Node,
        snapshot: remote.Command,
        private_key: pulumi.Output[str],
        key_password: pulumi.Output[str] | None,
    ) -> local.Command:
        """The snapshot copied into ``k3s.upgrade.snapshotTo`` where Pulumi runs (``snapshot-fetch.sh``): over SSH
        with the stack's key (and passphrase) on stdin and its pinned host keys, checked against the server's
        sha256. It runs when the snapshot does (a K3s version change); the first drain waits for it."""
        bastion = cfg.ssh.bastion
        reach: dict[str, scripts.ScriptValue] = {
            "DEST_DIR": str(cfg.k3s.upgrade.snapshot_to),
            "HOST": first.host,
            "PORT": cfg.ssh_port(first),
            "REMOTE_USER": cfg.ssh_user(first),
            "HOST_KEY": first.host_key or "",
        }
        if bastion:
            reach |= {
                "BASTION_HOST": bastion.host,
                "BASTION_PORT": bastion.port,
                "BASTION_USER": bastion.user,
                "BASTION_HOST_KEY": bastion.host_key or "",
            }

        def body(facts: dict[str, str]) -> str:
            saved = facts.get("snapshot", "none")
            where = {"SNAPSHOT": "" if saved == "none" else saved, "SKIP_REASON": facts.get("reason", "")}
            return scripts.render("snapshot-fetch", {**where, **reach})

        fetch = ssh.Script("snapshot-fetch", snapshot.stdout.apply(lambda out: body(parse_facts(out))))
        return local.Command(
            f"{name}-{ROLE_SNAPSHOT}-copy",
            create=ssh.command_line("root", fetch.name),
            # The passphrase line, then the key: both secret, so all of stdin is.
            stdin=pulumi.Output.concat(ssh.bundle(fetch), key_password or "", "\n", private_key),
            dir=ASSERT_DIR,
            triggers=[*ssh.host_identity(cfg, first), cfg.k3s.version, str(cfg.k3s.upgrade.snapshot_to)],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[snapshot]),
        )

    def _preflight(self, name: str, cfg: StackConfig, features: Resolved, node: Node) -> remote.Command:
        return self._command(
            resource_name(name, ROLE_PREFLIGHT, node),
            node,
            create=ssh.script("preflight", preflight_params(cfg, features, node)),
            triggers=ssh.host_identity(cfg, node),
        )

    def _install(
        self,
        name: str,
        cfg: StackConfig,
        features: Resolved,
        node: Node,
        token_configured: bool,
        *,
        stdin: pulumi.Input[str] | None,
        depends_on: Sequence[pulumi.Resource],
    ) -> remote.Command:
        # create and update are the same converge script: a config change rewrites config.yaml and
        # restarts K3s, a version change upgrades in place; neither reinstalls. The only trigger is
        # the node's SSH address: in pulumi-command 1.x a trigger change replaces, and replacing runs
        # the uninstall, which is wanted exactly when the node moved to another host.
        owner = install_resource_name(name, node)
        params = install_params(cfg, features, node, token_configured, owner, self._servers_digest)
        converge = ssh.script("k3s-install", params)
        return self._command(
            owner,
            node,
            create=converge,
            update=converge,
            delete=ssh.script("k3s-uninstall", uninstall_params(node, owner)),
            stdin=stdin,
            triggers=ssh.host_identity(cfg, node),
            depends_on=[*depends_on, *(self.airgap.ready[node.name] if self.airgap else [])],
        )

    def _rollout_triggers(self, cfg: StackConfig, node: Node) -> list[Any]:
        """A node's drain and wait run again when its host or the K3s release changes (its upgrade)."""
        return [*ssh.host_identity(cfg, node), cfg.k3s.version]

    def _drain_params(self, cfg: StackConfig, node: Node, purpose: str) -> dict[str, scripts.ScriptValue]:
        drain = cfg.k3s.upgrade.drain
        return {
            "NODE_NAME": node.name,
            "PURPOSE": purpose,
            "TARGET_VERSION": cfg.k3s.version,
            "DRAIN_TIMEOUT_SECONDS": drain.timeout,
            "DELETE_EMPTYDIR_DATA": str(drain.delete_empty_dir_data).lower(),
            "IGNORE_DAEMONSETS": str(drain.ignore_daemon_sets).lower(),
        }

    def _drain(
        self, name: str, cfg: StackConfig, node: Node, after: Sequence[pulumi.Resource]
    ) -> remote.Command:
        """Cordon and drain ``node`` before its upgrade (``k3s-drain.sh``; a no-op on a first install)."""
        params = self._drain_params(cfg, node, "upgrade")
        return self._command(
            resource_name(name, ROLE_DRAIN, node),
            cfg.servers[0],
            create=ssh.script("k3s-drain", params),
            triggers=[*self._rollout_triggers(cfg, node), digest(params)],
            depends_on=after,
        )

    def _retirement(
        self, name: str, cfg: StackConfig, node: Node, install: remote.Command, first_install: remote.Command
    ) -> remote.Command:
        """Cordon and drain ``node`` when it leaves the stack, before its uninstall (``k3s-drain.sh``).

        It depends on the node's install, so Pulumi deletes it (runs the drain) before the
        uninstall, and the deregistration after that. Nothing runs on create. When the whole
        cluster goes (the first server's install is deleted too), the drain is skipped:
        ``deleted_with`` the first server's install. Its trigger is the node's SSH address, so a
        node moved to another host is drained before the old host is uninstalled.
        """
        return self._command(
            resource_name(name, ROLE_RETIRE, node),
            cfg.servers[0],
            create=None,
            delete=ssh.script("k3s-drain", self._drain_params(cfg, node, "removal")),
            triggers=ssh.host_identity(cfg, node),
            depends_on=[install],
            deleted_with=first_install,
        )

    def _ready(self, name: str, cfg: StackConfig, node: Node, install: remote.Command) -> pulumi.Resource:
        """Wait until ``node`` runs the release and is Ready, then uncordon it (``k3s-node-ready.sh``), and
        judge its own checks again (:meth:`_node_checks`): the next node's drain waits for that verdict."""
        first = cfg.servers[0]
        params: dict[str, scripts.ScriptValue] = {
            "NODE_NAME": node.name,
            "TARGET_VERSION": cfg.k3s.version,
            "ROLE": node.role,
            "TIMEOUT_SECONDS": NODE_READY_TIMEOUT_SECONDS,
        }
        if cfg.verify.smoke and self._kpr:
            # The verification's smoke Service must answer on the node's own NodePort before the next node goes.
            # Only where Cilium serves NodePorts (in eBPF, ahead of the host's firewall): kube-proxy's go through
            # the host's INPUT rules, which may close the NodePort range to the first server.
            params |= {
                "SMOKE_NAMESPACE": checks.VERIFY_NAMESPACE,
                "SMOKE_SERVICE": SMOKE_NAME,
                "NODE_PORT": checks.static_node_port(cfg),
            }
        ready = self._command(
            resource_name(name, ROLE_READY, node),
            first,
            create=ssh.script("k3s-node-ready", params),
            triggers=self._rollout_triggers(cfg, node),
            depends_on=[install],
        )
        return self._node_checks(name, cfg, node, ready)

    def _node_checks(self, name: str, cfg: StackConfig, node: Node, ready: remote.Command) -> local.Command:
        """The node's agent-status and, with kube-proxy replacement, no-kube-proxy-rules and kpr-integrity,
        collected on the node itself (``verify-node.sh``) and judged where Pulumi runs by ``python -m
        verification node-checks``, with the expectations of the full verification (less the features
        preflight left off there). The wait's stdout is the collector's stdin: its ``cilium=absent`` (the
        cluster's first install, before Cilium) collects nothing and passes. Both run when the wait does."""
        planned = [check for check in self._between_nodes if check.node == node.name]
        script_name, params = node_collector_script(cfg, node, planned)
        collector = self._command(
            resource_name(name, ROLE_NODE_CHECKS, node),
            node,
            create=ssh.script(script_name, {**params, "SKIP_WHEN": rollout.NO_CILIUM}),
            stdin=ready.stdout,
            triggers=[*self._rollout_triggers(cfg, node), digest([(check.check, check.expect) for check in planned])],
            depends_on=[ready],
        )

        def verdict(skipped: list[str]) -> str:
            expect = {
                check.check: {key: value for key, value in check.expect.items() if key not in skip_keys(check, skipped)}
                for check in planned
            }
            judged = PlannedCheck(rollout.NODE_CHECKS_CHECK.name, node.name, expect)
            return assert_command(judged)

        create = self.node_facts[node.name].apply(lambda facts: verdict(preflight.skipped_on_node(facts)))
        return assertion(resource_name(name, f"{ROLE_NODE_CHECKS}-assert", node), create, collector.stdout, self)

    def _deregistration(
        self, name: str, cfg: StackConfig, first: Node, node: Node, first_install: remote.Command
    ) -> remote.Command:
        """Removes ``node`` from the cluster when it goes away; runs on the first server.

        The node's install depends on it, so Pulumi deletes it only after the node
        was uninstalled. Its trigger is the node's SSH address: a node moved to
        another host replaces it too (old registration removed before the new
        host joins, hence delete-before-replace). It depends on the first
        server, which is still there when it runs. It has no create: creating
        it opens no SSH session on the first server (one per node otherwise).
        """
        return self._command(
            resource_name(name, ROLE_DEREGISTER, node),
            first,
            create=None,
            delete=ssh.script("k3s-node-deregister", {"NODE_NAME": node.name, "K3S_BIN": f"{K3S_BIN_DIR}/k3s"}),
            triggers=ssh.host_identity(cfg, node),
            depends_on=[first_install],
        )

    def _read_secret(
        self,
        name: str,
        role: str,
        cfg: StackConfig,
        first: Node,
        install: remote.Command,
        script: str,
        params: dict[str, scripts.ScriptValue],
    ) -> pulumi.Output[str]:
        """The stdout of ``script`` on the first server, as an unlogged secret."""
        command = self._command(
            resource_name(name, role, first),
            first,
            create=ssh.script(script, params),
            # A first server installed anew has a new token, CA and admin credentials: read them again
            # when its CA changes. Not the install's id: a real provider gives a new random one in
            # every preview of a new stack, and the plan must be the same each time.
            triggers=[install.stdout.apply(cluster_ca)],
            secret_stdout=True,
            depends_on=[install],
        )
        return pulumi.Output.secret(command.stdout)

    def _read_token(self, name: str, cfg: StackConfig, first: Node, install: remote.Command) -> pulumi.Output[str]:
        token = self._read_secret(
            name, ROLE_TOKEN, cfg, first, install, "k3s-token", {"SERVER_TOKEN_PATH": SERVER_TOKEN_PATH}
        )
        return token.apply(lambda text: text.strip())

    def _fetch_kubeconfig(
        self, name: str, cfg: StackConfig, first: Node, install: remote.Command
    ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """The kubeconfig (secret) and its client certificate's expiry, with a warning 30 days ahead."""
        kubeconfig = self._read_secret(name, ROLE_KUBECONFIG, cfg, first, install, "kubeconfig", kubeconfig_params())
        endpoint = cfg.api_endpoint
        renew_hint = (
            f"renew it with `pulumi up --replace '{self._child_urn(resource_name(name, ROLE_KUBECONFIG, first))}'`, "
            f"which restarts K3s on {first.name} so that it renews its certificates"
        )

        def expiry(text: str) -> str:
            expires = client_certificate_expiry(text)
            warning = expiry_warning(expires, dt.datetime.now(dt.UTC), renew_hint)
            if warning:
                pulumi.log.warn(warning, resource=self)
            return expires.isoformat()

        # Not secret: a date says nothing about the credentials.
        expires = pulumi.Output.unsecret(kubeconfig.apply(expiry))
        return kubeconfig.apply(lambda text: rewrite_kubeconfig(text, endpoint)), expires

    def _child_urn(self, child: str) -> str:
        """The URN a child command gets (for messages that tell the user what to replace)."""
        parents = f"{COMPONENT_TYPE}$command:remote:Command"
        return f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::{parents}::{child}"

