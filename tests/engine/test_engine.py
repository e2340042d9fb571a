"""The program under the real Pulumi engine: README's commands on a copy of the project.

What runs: the Pulumi CLI and plugins built by ``lab/toolchain.sh build`` (see conftest.py): the
real engine and Kubernetes provider, our language host (lab/langhost) and the lab's implementation
of the command provider (lab/command-provider; the real one is not served by the Go proxy). Every
preview here plans the whole program; nothing reaches a host (previews run no command).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.engine import comparable
from tests.engine.conftest import COMMAND_PROVIDER_LINE, ROOT, TOKEN_SENTINEL, Project, Result
from tests.engine.sshd import SSHServer, sshd

pytestmark = pytest.mark.engine

EXAMPLES = sorted((ROOT / "stacks" / "examples").glob("*.yaml"))
# Every stack the project ships, under the stack name README uses for it.
SHIPPED = {"dev": ROOT / "Pulumi.dev.yaml", **{path.stem: path for path in EXAMPLES}}
COMPONENTS = {
    "k3s-cilium:index:K3sCluster",
    "k3s-cilium:index:CiliumRelease",
    "k3s-cilium:index:KubeProxyRemoval",
    "k3s-cilium:index:HostTuning",
}
RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"


def preview(project: Project, stack: str, *args: str) -> Result:
    result = project.pulumi("preview", "--stack", stack, *args, check=False)
    assert result.returncode == 0, result.output[-6000:]
    return result


def steps(preview_json: dict[str, Any]) -> list[dict[str, Any]]:
    return list(preview_json.get("steps") or [])


def resource_name(step: dict[str, Any]) -> str:
    return str(step["urn"]).rsplit("::", 1)[-1]


def resource_type(step: dict[str, Any]) -> str:
    return str(step["urn"]).split("::")[-2].rsplit("$", 1)[-1]


def offline_plan(stack: str, project: Project) -> dict[str, Any]:
    result = project.run(f".venv/bin/python -m stacks plan {stack} --json")
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


# --- the engine accepts every shipped stack and runs the program -------------------------------------


@pytest.mark.parametrize("stack", sorted(SHIPPED))
def test_preview_plans_every_component_per_node(project, stack):
    """README "First real deploy" 4-6 (or "Example stacks"), then `pulumi preview --diff` and `--json`.

    The engine's config validation accepts the shipped stack file with only the secrets set by
    `pulumi config set --secret`, our language host runs the program, and the whole plan is there:
    every component, each node's commands, and the Helm release with the offline plan's values.
    """
    project.init_stack(stack, SHIPPED[stack])
    shown = preview(project, stack, "--diff")
    assert "error:" not in shown.output, shown.output[-4000:]
    assert "KeyboardInterrupt" not in shown.output
    # The run says which command provider it used.
    assert COMMAND_PROVIDER_LINE in shown.output
    planned = preview(project, stack, "--json").json()
    plan = offline_plan(stack, project)
    all_steps = steps(planned)
    assert {step["op"] for step in all_steps} == {"create"}
    types = {resource_type(step) for step in all_steps}
    assert types >= {"pulumi:pulumi:Stack", *COMPONENTS, "command:remote:Command", RELEASE_TYPE}
    assert "pulumi:providers:kubernetes" in types

    # Every node gets its install command, and nodes of one role get the same number of commands.
    commands = [resource_name(s) for s in all_steps if resource_type(s) == "command:remote:Command"]
    per_node: dict[str, int] = {}
    for node in plan["nodes"]:
        assert f"k3s-{node['role']}-{node['name']}" in commands, (node, commands)
        per_node[node["name"]] = sum(1 for name in commands if name.endswith(f"-{node['name']}"))
    for role in ("server", "agent"):
        counts = {per_node[n["name"]] for n in plan["nodes"] if n["role"] == role and n != plan["nodes"][0]}
        assert len(counts) <= 1, (role, per_node)

    # The Helm release carries exactly the values of the offline plan, for the pinned chart.
    (release,) = [s for s in all_steps if resource_type(s) == RELEASE_TYPE]
    inputs = release["newState"]["inputs"]
    assert inputs["chart"] == "cilium"
    assert inputs["version"] == plan["ciliumVersion"]
    assert inputs["values"] == plan["ciliumValues"]


@pytest.mark.parametrize("stack", ["dev"])
def test_two_previews_give_the_same_plan(project, stack):
    project.init_stack(stack, SHIPPED[stack])
    first = _stable(preview(project, stack, "--json").json())
    second = _stable(preview(project, stack, "--json").json())
    assert first == second


def _stable(preview_json: dict[str, Any]) -> str:
    """The plan without what differs between two runs by design: timings, the order in which the
    engine reports steps and plugin warnings (the program registers resources concurrently, the
    engine loads plugins concurrently), and the order of a resource's dependencies (the Python SDK
    collects them in a set; the engine treats them as one)."""
    preview_json = dict(preview_json)
    preview_json.pop("duration", None)
    preview_json["steps"] = sorted(preview_json.get("steps") or [], key=lambda step: str(step["urn"]))
    for step in preview_json["steps"]:
        state = step.get("newState") or {}
        state["dependencies"] = sorted(state.get("dependencies") or [])
        state["propertyDependencies"] = {
            key: sorted(urns) for key, urns in (state.get("propertyDependencies") or {}).items()
        }
    for diagnostic in preview_json.get("diagnostics") or []:
        diagnostic.pop("timestamp", None)
    preview_json["diagnostics"] = sorted(preview_json.get("diagnostics") or [], key=lambda d: json.dumps(d))
    return json.dumps(preview_json, sort_keys=True, indent=1)


# --- a failed `up`: what the user reads -----------------------------------------------------------


def _stack_on(project: Project, name: str, server: SSHServer) -> None:
    """`dev` with its one server at the test's sshd (127.0.0.1), its host key pinned."""
    node = {"name": "server-1", "host": "127.0.0.1", "port": server.port, "role": "server", "hostKey": server.host_key}
    _dev_with(project, name, {"k3s-cilium:nodes": [node]})
    project.run(f"pulumi config set --stack {name} --secret sshPrivateKey < {project.key}")


def test_a_failed_up_shows_the_failing_step_and_why_and_no_crash(project: Project, tmp_path: Path) -> None:
    """The preflight runs for real over SSH and fails (the test's sshd hides systemd from it): the
    engine cancels the run and the language host interrupts the program, as upstream's does."""
    with sshd(tmp_path / "sshd", project.key.with_suffix(".pub"), ["bash -s -- preflight"]) as server:
        _stack_on(project, "failing", server)
        result = project.pulumi("up", "--yes", "--skip-preview", "--stack", "failing", check=False, timeout=600)
    assert result.returncode != 0
    # The failing resource's message: which script, then why it failed...
    assert 'error: Process exited with status 1: running "bash -s -- preflight":' in result.output, result.output
    assert "systemd is not running" in result.output
    # ...not the script itself,
    assert "set -euo pipefail" not in result.output
    # and nothing that looks like a crash of the program.
    assert "Traceback" not in result.output and "KeyboardInterrupt" not in result.output
    created = [r["type"] for r in project.resources("failing")]
    assert "command:remote:Command" not in created


def _state(project: Project, stack: str) -> dict[str, dict[str, Any]]:
    """Each resource of the state by URN, as the lab compares them (lab/engine.comparable)."""
    exported = project.pulumi("stack", "export", "--stack", stack, "--show-secrets").json()
    return {r["urn"]: comparable(r) for r in exported["deployment"]["resources"]}


def test_after_a_partial_up_what_exists_is_unchanged_and_only_what_failed_is_retried(
    project: Project, tmp_path: Path
) -> None:
    """The preflight passes (the test's sshd shows it a systemd), and so do the upgrade gate, the
    snapshot and the first server's drain (no K3s runs: a first install); the K3s install is refused:
    what a first `up` created must read as unchanged, and a second `up` must try again only what is
    missing."""
    allowed = ["bash -s -- preflight", "bash -s -- upgrade-gate", "bash -s -- k3s-snapshot", "bash -s -- k3s-drain"]
    with sshd(tmp_path / "sshd", project.key.with_suffix(".pub"), allowed, systemd=True) as server:
        _stack_on(project, "partial", server)
        first = project.pulumi("up", "--yes", "--skip-preview", "--stack", "partial", check=False, timeout=600)
        assert first.returncode != 0
        assert 'error: Process exited with status 97: running "bash -s -- k3s-install":' in first.output, first.output
        created = _state(project, "partial")
        names = {urn.rsplit("::", 1)[1] for urn in created}
        assert {"k3s-preflight-server-1", "k3s-preflight-passed"} <= names and "k3s-server-server-1" not in names

        planned = preview(project, "partial", "--json", "--show-sames").json()
        ops = {step["urn"]: step["op"] for step in steps(planned)}
        # Provider instances are no steps of their own.
        resources = [urn for urn in created if "::pulumi:providers:" not in urn]
        assert {ops[urn] for urn in resources} == {"same"}, {urn: ops[urn] for urn in resources if ops[urn] != "same"}
        assert {op for urn, op in ops.items() if urn not in created} == {"create"}

        again = project.pulumi("up", "--yes", "--skip-preview", "--stack", "partial", check=False, timeout=600)
        assert again.returncode != 0
        assert again.output.count('running "bash -s -- k3s-install"') >= 1
        assert "updated" not in again.output and "replaced" not in again.output and "deleted" not in again.output
        assert _state(project, "partial") == created


# --- secrets ----------------------------------------------------------------------------------------


def test_no_plaintext_secret_in_stack_file_output_or_state(project):
    stack = "dev"
    project.init_stack(stack, SHIPPED[stack])
    stack_file = yaml.safe_load((project.dir / "Pulumi.dev.yaml").read_text())["config"]
    assert set(stack_file["k3s-cilium:sshPrivateKey"]) == {"secure"}
    assert set(stack_file["k3s-cilium:k3sToken"]) == {"secure"}

    outputs = [
        project.pulumi("preview", "--diff", "--stack", stack, check=False),
        project.pulumi("preview", "--json", "--stack", stack, check=False),
        project.pulumi("up", "--yes", "--skip-preview", "--stack", stack, check=False),
        project.pulumi("stack", "export", "--stack", stack),
        project.pulumi("config", "--stack", stack),
    ]
    # The state and the stack file as they are on disk, too.
    files = [*project.backend.rglob("*.json"), project.dir / "Pulumi.dev.yaml"]
    texts = [r.output for r in outputs] + [f.read_text() for f in files]
    secrets = {"sshPrivateKey": project.key_body(), "k3sToken": TOKEN_SENTINEL}
    for name, secret in secrets.items():
        leaks = [text[:200] for text in texts if secret in text]
        assert not leaks, f"{name} in plaintext: {leaks}"
    # ...while they are really there: the engine decrypts them for whoever has the passphrase.
    shown = project.pulumi("config", "get", "k3sToken", "--stack", stack).stdout.strip()
    assert shown == TOKEN_SENTINEL


# --- bad stacks: refused through the engine, with the program's message, nothing created ------------


def _dev_with(project: Project, name: str, change: dict[str, Any]) -> None:
    """`dev` under another stack name, its stack file edited as a user would."""
    document = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    document["config"].update(change)
    (project.dir / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    project.run(f"pulumi stack init {name} --secrets-provider passphrase")


PLAIN_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nplain\n-----END OPENSSH PRIVATE KEY-----\n"
RSA_KEY = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7engineTestPlaceholderKeyMaterialOnlyForValidation"
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)


@pytest.mark.parametrize(
    ("name", "change", "secret", "expected"),
    [
        pytest.param(
            "unknown-tier",
            {"k3s-cilium:tier": "turbo"},
            True,
            ["k3s-cilium:tier: 'turbo'"],
            id="unknown-tier",
        ),
        pytest.param(
            "no-nodes",
            {"k3s-cilium:nodes": []},
            True,
            ["k3s-cilium:nodes: at least one node needs role 'server'"],
            id="empty-node-list",
        ),
        pytest.param(
            "rsa-host-key",
            {
                "k3s-cilium:nodes": [
                    {"name": "server-1", "host": "192.168.56.10", "role": "server", "hostKey": RSA_KEY},
                ]
            },
            True,
            ["k3s-cilium:nodes[0].hostKey", "is an ssh-rsa key, which cannot be pinned"],
            id="ssh-rsa-host-key",
        ),
        pytest.param(
            "misspelt-key",
            {"k3s-cilium:featurs": {"dsr": True}},
            True,
            ["k3s-cilium:featurs: unknown config key; allowed: tier, nodes"],
            id="misspelt-key",
        ),
        pytest.param(
            "plain-token",
            {"k3s-cilium:k3sToken": TOKEN_SENTINEL},
            True,
            ["k3s-cilium:k3sToken is stored in plaintext in the stack file"],
            id="k3sToken-in-plaintext",
        ),
        pytest.param(
            "plain-key",
            {"k3s-cilium:sshPrivateKey": PLAIN_KEY},
            False,
            # Pulumi.yaml declares sshPrivateKey `secret: true`: the engine refuses before the program.
            ["validating stack config: Stack 'plain-key' with configuration key 'sshPrivateKey' must be encrypted"],
            id="sshPrivateKey-in-plaintext",
        ),
    ],
)
def test_bad_stack_is_refused_and_nothing_is_created(project, name, change, secret, expected):
    _dev_with(project, name, change)
    if secret:
        project.run(f"pulumi config set --stack {name} --secret sshPrivateKey < {project.key}")
    refused = project.pulumi("preview", "--stack", name, check=False)
    assert refused.returncode != 0
    for message in expected:
        assert message in refused.output, refused.output[-4000:]
    # A real update is refused the same way, before any resource exists.
    update = project.pulumi("up", "--yes", "--skip-preview", "--stack", name, check=False)
    assert update.returncode != 0
    for message in expected:
        assert message in update.output, update.output[-4000:]
    created = [r["type"] for r in project.resources(name) if r["type"] != "pulumi:pulumi:Stack"]
    assert created == []


def test_the_environment_backend_wins_over_pulumi_yaml(project):
    """PULUMI_BACKEND_URL (lab/toolchain.sh env) redirects state; Pulumi.yaml's backend.url is not used."""
    assert "file://~/.pulumi-k3s-cilium" in (project.dir / "Pulumi.yaml").read_text()
    project.init_stack("dev", SHIPPED["dev"])
    assert (project.backend / ".pulumi" / "stacks" / "k3s-cilium" / "dev.json").is_file()
    assert not (project.home / ".pulumi-k3s-cilium").exists()
    assert project.pulumi("whoami", "--verbose").output.count(f"file://{project.backend}") == 1
