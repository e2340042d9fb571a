"""SSH connections and remote script commands shared by the components."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
            # The same bound as the nodes' (pulumi-command's own default is 10 tries of 15 s).
            dial_error_limit=DIAL_ERROR_LIMIT,
            per_dial_timeout=PER_DIAL_TIMEOUT,
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


@dataclass(frozen=True)
class Script:
    """A script run as root on one node: ``name`` is what its command line says, ``body`` the script."""

    name: str
    body: pulumi.Input[str]


def script(name: str, params: Mapping[str, scripts.ScriptValue] | None = None) -> Script:
    """Script template ``components/scripts/<name>.sh`` rendered with ``params``."""
    return Script(name, scripts.render(name, params))


_SCRIPT_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def command_line(user: str, name: str) -> str:
    """The command a node runs for script ``name`` of the bundle on its stdin (see ``bundle``)."""
    if not _SCRIPT_NAME.match(name):
        raise ValueError(f"script name {name!r}: lowercase letters, digits and '-' only")
    runner = "bash" if user == "root" else "sudo -n bash"
    return f"{runner} -s -- {name}"


# The bundle is read by `bash -s -- <name>`. bash reads a script from a pipe one byte at a time, so
# when the dispatch line runs, the rest of stdin (a token, a registries.yaml) is left to the script.
BUNDLE_HEADER = "# k3s-cilium: one function per script; the command line's argument picks the one that runs."
BUNDLE_DISPATCH = '"k3s_cilium_${1//-/_}"; exit'


def _bundle_text(named: Sequence[tuple[str, str]]) -> str:
    parts = [BUNDLE_HEADER + "\n"]
    for name, body in named:
        parts.append(f"k3s_cilium_{name.replace('-', '_')}() {{\n{body}")
        parts.append("}\n" if body.endswith("\n") else "\n}\n")
    parts.append(BUNDLE_DISPATCH + "\n")
    return "".join(parts)


def bundle(*node_scripts: Script) -> pulumi.Input[str]:
    """The text on a command's stdin: each distinct script of the command as a function, and a last
    line that runs the one the command line names. A name must not stand for two different scripts."""
    distinct: dict[str, pulumi.Input[str]] = {}
    for item in node_scripts:
        command_line("root", item.name)  # the name's check
        known = distinct.setdefault(item.name, item.body)
        if isinstance(known, str) and isinstance(item.body, str) and known != item.body:
            raise ValueError(f"two different scripts are both named {item.name!r}")
    names = list(distinct)
    bodies = list(distinct.values())
    if all(isinstance(body, str) for body in bodies):
        return _bundle_text([(name, str(body)) for name, body in zip(names, bodies, strict=True)])
    return pulumi.Output.all(*bodies).apply(
        lambda texts: _bundle_text([(name, str(body)) for name, body in zip(names, texts, strict=True)])
    )


def node_command(
    resource: str,
    connection: remote.ConnectionArgs,
    parent: pulumi.Resource,
    *,
    user: str,
    create: Script | None,
    update: Script | None = None,
    delete: Script | None = None,
    stdin: pulumi.Input[str] | None = None,
    triggers: Sequence[Any] | None = None,
    secret_stdout: bool = False,
    logging: remote.Logging | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
    deleted_with: pulumi.Resource | None = None,
) -> remote.Command:
    """A command on one node, with the options every such command needs.

    The scripts travel on stdin (``bundle``); ``create``/``update``/``delete`` are command lines
    that only name the script to run (``bash -s -- k3s-install``). pulumi-command's error message
    starts with the command line, so a failure reads as the script's name and then what went
    wrong, not hundreds of lines of script first. ``stdin`` (a token, a file) follows the bundle;
    when it is a secret, all of stdin is.

    ``secret_stdout``: stdout is a secret output and not logged (``logging`` none);
    otherwise ``logging`` applies. pulumi-command's error after a failure holds
    the command's combined output whatever ``logging`` says, so a script whose
    stdout is a secret prints it last, once nothing can fail any more.
    """
    bundled = bundle(*(item for item in (create, update, delete) if item is not None))
    return remote.Command(
        resource,
        connection=connection,
        create=command_line(user, create.name) if create else None,
        update=command_line(user, update.name) if update else None,
        delete=command_line(user, delete.name) if delete else None,
        stdin=pulumi.Output.concat(bundled, stdin) if stdin is not None else bundled,
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
            deleted_with=deleted_with,
        ),
    )


def stdout_by_node(commands: Mapping[str, remote.Command]) -> pulumi.Output[dict[str, str]]:
    """Each command's stdout, stripped, under its node name."""
    names = list(commands)
    return pulumi.Output.all(*(commands[name].stdout for name in names)).apply(
        lambda outputs: {name: out.strip() for name, out in zip(names, outputs, strict=True)}
    )
