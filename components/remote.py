"""SSH connections and remote script commands shared by the components."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
from pulumi_command import remote

from components import scripts
from stacks.config import Node, StackConfig

# Fail over a dead host in about a minute instead of pulumi-command's ten.
DIAL_ERROR_LIMIT = 6
PER_DIAL_TIMEOUT = 10


def connection(
    cfg: StackConfig,
    node: Node,
    private_key: pulumi.Input[str],
    private_key_password: pulumi.Input[str] | None = None,
) -> remote.ConnectionArgs:
    """How Pulumi reaches ``node``: its own port/user or the stack's, through the bastion if any."""
    bastion = cfg.ssh.bastion
    proxy: remote.ProxyConnectionArgs | None = None
    if bastion:
        proxy = remote.ProxyConnectionArgs(
            host=bastion.host,
            port=bastion.port,
            user=bastion.user,
            private_key=private_key,
            private_key_password=private_key_password,
            host_key=bastion.host_key,
        )
    return remote.ConnectionArgs(
        host=node.host,
        port=cfg.ssh_port(node),
        user=cfg.ssh_user(node),
        private_key=private_key,
        private_key_password=private_key_password,
        host_key=node.host_key,
        proxy=proxy,
        dial_error_limit=DIAL_ERROR_LIMIT,
        per_dial_timeout=PER_DIAL_TIMEOUT,
    )


def host_identity(cfg: StackConfig, node: Node) -> list[str | int]:
    """Triggers of a node's own commands: pulumi-command treats a new host in ``connection`` as an
    update (run on the new host), so only a trigger makes a move a replacement, whose delete runs
    on the old host first."""
    return [node.host, cfg.ssh_port(node)]


def node_command(
    resource: str,
    connection: remote.ConnectionArgs,
    parent: pulumi.Resource,
    *,
    create: pulumi.Input[str] | None,
    update: str | None = None,
    delete: str | None = None,
    stdin: pulumi.Input[str] | None = None,
    triggers: Sequence[Any] | None = None,
    secret_stdout: bool = False,
    logging: remote.Logging | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> remote.Command:
    """A command on one node, with the options every such command needs.

    ``secret_stdout``: stdout is a secret output and neither logged nor shown (a
    failure still reports the exit status); otherwise ``logging`` applies.
    """
    return remote.Command(
        resource,
        connection=connection,
        create=create,
        update=update,
        delete=delete,
        stdin=stdin,
        triggers=list(triggers) if triggers else None,
        logging=remote.Logging.NONE if secret_stdout else logging,
        # No script reads PULUMI_COMMAND_STDOUT, and sshd's default AcceptEnv refuses it with a warning.
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            additional_secret_outputs=["stdout"] if secret_stdout else None,
            # A delete undoes the create on the host: when replaced, the old one must go first.
            delete_before_replace=True if delete else None,
        ),
    )


def as_root(user: str, script: str) -> str:
    """A command line that runs ``script`` with bash as root; ``sudo -n`` never waits for a password."""
    runner = "bash -c" if user == "root" else "sudo -n bash -c"
    return f"{runner} {shlex.quote(script)}"


def script_command(
    cfg: StackConfig, node: Node, name: str, params: dict[str, scripts.ScriptValue] | None = None
) -> str:
    """The command line that runs script template ``name`` on ``node`` as root."""
    return as_root(cfg.ssh_user(node), scripts.render(name, params))


def stdout_by_node(commands: Mapping[str, remote.Command]) -> pulumi.Output[dict[str, str]]:
    """Each command's stdout, stripped, under its node name."""
    names = list(commands)
    return pulumi.Output.all(*(commands[name].stdout for name in names)).apply(
        lambda outputs: {name: out.strip() for name, out in zip(names, outputs, strict=True)}
    )
