"""AirgapNodes: the air-gap artifacts and registries.yaml on every node, verified before K3s uses them.

Per node, as children of the component (all only when the stack's ``airgap``
block asks for them):

- ``<name>-upload-dir-<node>``: the upload directory, owned by the SSH user
  (only when an artifact is a local file). Its delete removes the directory
  with the uploads in it (``CopyToRemote`` deletes nothing on the host), and
  ``/var/lib/k3s-cilium`` when nothing else is left there; the uploads depend
  on it, so they are deleted first;
- ``<name>-upload-<node>-<file>``: ``remote.CopyToRemote`` of each local file
  (``pulumi.FileAsset``). Its triggers are the node's SSH address and the
  file's sha256: an unchanged file is not uploaded again on a no-op ``up``, a
  changed one is uploaded again;
- ``<name>-stage-<node>``: verifies every artifact's sha256 on the host
  (uploaded or downloaded from the mirror), and that the binary is the
  ``k3s.version`` release, before placing any, then puts the binary and
  install script in the staging directory and the image archives into K3s'
  images directory; a failure while placing puts back what was there. Its
  script carries the digests, so a changed artifact re-runs it (update = the
  same idempotent script); its delete removes what it placed;
- ``<name>-registries-<node>``: ``registries.yaml`` from stdin (the credentials
  are secret and never on a command line); restarts K3s when it changed, and
  puts the previous file back when K3s does not come back with the new one.
  Its delete removes the file and the directories left empty.

The node's K3s install depends on its stage and registries commands, and its
parameters carry the artifacts' digest (``stacks.airgap.install_params``): a
changed artifact re-runs exactly the stage and the install of each node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import remote

from components import remote as ssh
from components.scripts import ScriptValue
from stacks import airgap, k3s_flags
from stacks.config import Node, StackConfig

COMPONENT_TYPE = "k3s-cilium:index:AirgapNodes"


@dataclass
class AirgapNodesArgs:
    cfg: StackConfig
    connections: Mapping[str, remote.ConnectionArgs]
    # The secret registryCredentials, already validated (YAML/JSON text); None: no credentials.
    registry_credentials: pulumi.Input[str] | None = None
    # What runs before anything is staged (e.g. the preflight commands).
    depends_on: Sequence[pulumi.Resource] = ()


def stage_params(cfg: StackConfig, resolved: list[airgap.Resolved]) -> dict[str, ScriptValue]:
    return {
        "ARTIFACTS": airgap.stage_lines(resolved),
        # The stage refuses a binary that is not the pinned release before it places anything.
        "BINARY_NAME": next((a.name for a in resolved if a.role == "binary"), ""),
        "K3S_VERSION": cfg.k3s.version,
        "AIRGAP_DIR": airgap.AIRGAP_DIR,
        "IMAGES_MANIFEST": airgap.IMAGES_MANIFEST,
        "IMAGES_DIR": airgap.IMAGES_DIR,
    }


def unstage_params() -> dict[str, ScriptValue]:
    return {
        "AIRGAP_DIR": airgap.AIRGAP_DIR,
        "IMAGES_MANIFEST": airgap.IMAGES_MANIFEST,
        "IMAGES_DIR": airgap.IMAGES_DIR,
        "UPLOAD_DIR": airgap.UPLOAD_DIR,
    }


def upload_dir_remove_params() -> dict[str, ScriptValue]:
    return {"UPLOAD_DIR": airgap.UPLOAD_DIR}


def registries_params(node: Node) -> dict[str, ScriptValue]:
    return {
        "REGISTRIES_PATH": airgap.REGISTRIES_PATH,
        "ROLE": node.role,
        "K3S_BIN": f"{k3s_flags.K3S_BIN_DIR}/k3s",
        "API_READY_TIMEOUT": k3s_flags.API_READY_TIMEOUT_SECONDS,
    }


class AirgapNodes(pulumi.ComponentResource):
    """Uploads, on-host verification and placement of the air-gap artifacts; registries.yaml."""

    ready: dict[str, list[pulumi.Resource]]
    """Node name -> what its K3s install must wait for."""

    def __init__(self, name: str, args: AirgapNodesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        cfg = args.cfg
        resolved = airgap.artifacts(cfg.airgap, cfg.cilium.version)
        registries = cfg.airgap.registries
        self.ready = {}
        for node in cfg.nodes:
            ready: list[pulumi.Resource] = []
            if resolved:
                ready.append(self._stage(name, cfg, node, resolved, args))
            if registries is not None:
                ready.append(self._registries(name, cfg, node, registries, args))
            self.ready[node.name] = ready
        self.register_outputs({})

    def _command(
        self,
        resource: str,
        node: Node,
        args: AirgapNodesArgs,
        *,
        create: ssh.Script,
        update: ssh.Script | None = None,
        delete: ssh.Script | None = None,
        stdin: pulumi.Input[str] | None = None,
        depends_on: Sequence[pulumi.Resource] = (),
    ) -> remote.Command:
        return ssh.node_command(
            resource,
            args.connections[node.name],
            self,
            user=args.cfg.ssh_user(node),
            create=create,
            update=update,
            delete=delete,
            stdin=stdin,
            triggers=ssh.host_identity(args.cfg, node),
            depends_on=depends_on,
        )

    def _stage(
        self, name: str, cfg: StackConfig, node: Node, resolved: list[airgap.Resolved], args: AirgapNodesArgs
    ) -> remote.Command:
        uploads: list[pulumi.Resource] = []
        local = [a for a in resolved if a.source == "file"]
        if local:
            upload_dir = self._command(
                f"{name}-upload-dir-{node.name}",
                node,
                args,
                create=ssh.script("airgap-upload-dir", {"UPLOAD_DIR": airgap.UPLOAD_DIR, "OWNER": cfg.ssh_user(node)}),
                # After a failed stage (never in the state, so its delete never runs) the uploads would stay.
                delete=ssh.script("airgap-upload-dir-remove", upload_dir_remove_params()),
                depends_on=args.depends_on,
            )
            for artifact in local:
                uploads.append(
                    remote.CopyToRemote(
                        f"{name}-upload-{node.name}-{artifact.name}",
                        connection=args.connections[node.name],
                        source=pulumi.FileAsset(artifact.location),
                        remote_path=artifact.upload_path,
                        # A changed file (new digest) is uploaded again; an unchanged one never is.
                        triggers=[*ssh.host_identity(cfg, node), artifact.sha256],
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[upload_dir]),
                    )
                )
        stage = ssh.script("airgap-stage", stage_params(cfg, resolved))
        return self._command(
            f"{name}-stage-{node.name}",
            node,
            args,
            create=stage,
            update=stage,
            delete=ssh.script("airgap-unstage", unstage_params()),
            depends_on=[*args.depends_on, *uploads],
        )

    def _registries(
        self, name: str, cfg: StackConfig, node: Node, registries: airgap.Registries, args: AirgapNodesArgs
    ) -> remote.Command:
        # The document is rendered inside an apply from the secret credentials: it stays secret.
        credentials = pulumi.Output.secret(args.registry_credentials if args.registry_credentials is not None else "")
        document = credentials.apply(
            lambda text: airgap.registries_yaml(registries, airgap.parse_credentials(text))
        )
        write = ssh.script("airgap-registries", registries_params(node))
        return self._command(
            f"{name}-registries-{node.name}",
            node,
            args,
            create=write,
            update=write,
            # K3s' uninstall removes /etc/rancher/k3s anyway; this covers a stack that drops the block, and a
            # node whose install never succeeded (not in the state: no uninstall ever runs for it).
            delete=ssh.script("airgap-registries-remove", registries_params(node)),
            stdin=pulumi.Output.secret(document),
            depends_on=args.depends_on,
        )


def release_chart_args(cfg: StackConfig, default_repository: str, default_chart: str) -> dict[str, Any]:
    """``chart``, ``version``, ``repository_opts`` and ``description`` of the Cilium Helm release.

    helm.cilium.io unless ``airgap.cilium`` names a mirror repository, an OCI
    reference or a local chart. A local chart is given as a path (Helm reads
    its version from it; the config checked that it is ``cilium.version``) and
    its content digest goes into the release description: a changed chart
    upgrades the release even when the values stayed the same.
    """
    source = airgap.chart(cfg.airgap, cfg.cilium.version)
    if source is None:
        return {
            "chart": default_chart,
            "version": cfg.cilium.version,
            "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=default_repository),
        }
    if source.kind == "mirror":
        return {
            "chart": source.chart,
            "version": source.version,
            "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=source.repository),
        }
    if source.kind == "oci":
        return {"chart": source.chart, "version": source.version}
    return {"chart": source.chart, "description": f"k3s-cilium chart {source.kind} sha256:{source.sha256}"}
