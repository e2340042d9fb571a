"""The Pulumi part of the run: the real CLI and engine against the lab's hosts.

The CLI, our language host (lab/langhost) and the lab's own command provider (lab/command-provider,
written here because pulumi-command's provider is not served by the Go proxy) come from
``lab/toolchain.sh env``; the report names each. Without them the steps are recorded as not run,
with the reason. The program runs in a project directory inside the run directory (symlinks to the
repository's program, its own copy of Pulumi.yaml and the lab stack file), with its state in a
file backend there, so nothing of the run is written into the repository or into
~/.pulumi-k3s-cilium.

The lab stack is air-gapped with artifacts the lab made (lab/hosts/artifacts.py), and its K3s
binary is not K3s, so ``up`` stops where the program checks the staged binary's version, on every
node. What the steps assert:

- ``pulumi-up``: it stopped there on every node with a message naming the versions, after
  preflight, host tuning and the uploads (each file once, its sha256 right on every host), and
  nothing was placed on any host;
- ``pulumi-preview-after-partial-up``: every resource the failed ``up`` created previews as
  unchanged; only what does not exist yet is to be created;
- ``pulumi-up-again``: with one upload corrupted on one host, a second ``up`` tries again only what
  failed: the corrupted file is refused with both digests there, the binary elsewhere, and the
  state is as it was;
- ``pulumi-destroy`` completes, ``secrets`` finds no secret in any output, log or state file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..engine import COMMAND_PROVIDER, PulumiRun, diagnostics, passed_or_raise, toolchain_env
from ..report import KIND_LAB, KIND_PULUMI, PASSED, Report, Step, StepFailed, first_line
from . import paths
from .artifacts import Secrets
from .vms import Host, LabState, ssh_run

STACK = "lab"
PROGRAM_FILES = ("__main__.py", "components", "stacks", "verification", "requirements.txt", ".venv")
# Without it the engine starts nothing new once a step failed: a node whose staging had not started
# yet when another node's failed would never say whether it stops there too.
EVERY_NODE = ("--continue-on-error",)
NAMES = ["pulumi-preview", "pulumi-up", "pulumi-preview-after-partial-up", "pulumi-up-again", "pulumi-destroy"]

def project_dir(state: LabState, stack_file: Path) -> Path:
    project = Path(state.run_dir) / "project"
    project.mkdir(parents=True, exist_ok=True)
    for name in PROGRAM_FILES:
        link = project / name
        if not link.exists():
            link.symlink_to(paths.REPO / name)
    shutil.copy(paths.REPO / "Pulumi.yaml", project / "Pulumi.yaml")
    shutil.copy(stack_file, project / f"Pulumi.{STACK}.yaml")
    return project


def names_of(resources: dict[str, dict[str, Any]]) -> set[str]:
    return {urn.rsplit("::", 1)[1] for urn in resources}


class Expectations:
    """What the lab stack's run must show, from the program's own view of the stack."""

    def __init__(self, program: Any) -> None:
        from stacks import airgap

        self.cfg = program.cfg
        self.nodes = [node.name for node in self.cfg.nodes]
        self.version = self.cfg.k3s.version
        self.uploads = [a for a in airgap.artifacts(self.cfg.airgap, self.cfg.cilium.version) if a.source == "file"]
        self.binary = next(a for a in self.uploads if a.role == "binary")
        self.tuned = "hostTuning" in program.features.enabled

    def created_before_the_install(self, node: str) -> set[str]:
        made = {f"k3s-preflight-{node}", f"k3s-airgap-upload-dir-{node}"}
        made |= {f"k3s-airgap-upload-{node}-{a.name}" for a in self.uploads}
        if self.tuned:
            made.add(f"host-tuning-{node}")
        return made

    def refused_binary(self, text: str) -> bool:
        return f"k3s.version {self.version}" in text and "nothing was placed" in text


# What must be on a host after the failed `up`: each upload with its digest; nothing placed.
HOST_FACTS = r"""
set -u
for file in "$@"; do
  if [ -f "$file" ]; then echo "upload $file $(sha256sum "$file" | cut -d' ' -f1)"; else echo "upload $file missing"; fi
done
for path in /var/lib/k3s-cilium/airgap /var/lib/rancher /etc/rancher /usr/local/bin/k3s; do
  [ -e "$path" ] && echo "placed $path"
done
[ -d /var/lib/k3s-cilium/host-tuning ] && echo "tuned"
true
"""


def host_facts(state: LabState, host: Host, files: list[str]) -> list[str]:
    quoted = " ".join(f"'{file}'" for file in files)
    result = ssh_run(state, host, f"bash -s -- {quoted}", stdin=HOST_FACTS)
    if result.returncode:
        raise StepFailed(f"{host.name}: reading what is on the host failed: {result.stderr.strip()}")
    return result.stdout.splitlines()


def check_stopped_at_the_binary(
    step: Step, result: subprocess.CompletedProcess[str], expect: Expectations, pulumi: PulumiRun, state: LabState
) -> dict[str, dict[str, Any]]:
    """The failed `up`: where it stopped, what it created, and what is on the hosts."""
    if result.returncode == 0:
        raise StepFailed("`pulumi up` passed: the lab's binary is not K3s, so the staging must have refused it")
    said = diagnostics(result.stdout)
    step.details["errors"] = said
    problems = [
        f"{node}: k3s-airgap-stage-{node} did not refuse the binary naming k3s.version {expect.version}"
        f" (it said: {first_line(said.get(f'k3s-airgap-stage-{node}', '')) or 'nothing'})"
        for node in expect.nodes
        if not expect.refused_binary(said.get(f"k3s-airgap-stage-{node}", ""))
    ]
    # Besides the stages, only the Stack says something ("update failed").
    unexpected = [name for name in said if not name.startswith(("k3s-airgap-stage-", "k3s-cilium-"))]
    problems += [f"{name} failed too: {first_line(said[name])}" for name in unexpected]
    resources = pulumi.resources()
    created = names_of(resources)
    for node in expect.nodes:
        missing = sorted(expect.created_before_the_install(node) - created)
        if missing:
            problems.append(f"{node}: not created: {', '.join(missing)}")
        if {f"k3s-airgap-stage-{node}", f"k3s-server-{node}", f"k3s-agent-{node}"} & created:
            problems.append(f"{node}: its staging or install is in the state")
    files = [a.upload_path for a in expect.uploads]
    for host in state.hosts:
        facts = host_facts(state, host, files)
        step.details.setdefault("hosts", {})[host.name] = facts
        for artifact in expect.uploads:
            if f"upload {artifact.upload_path} {artifact.sha256}" not in facts:
                problems.append(f"{host.name}: {artifact.upload_path} is not the uploaded file")
        problems += [f"{host.name}: {line}" for line in facts if line.startswith("placed ")]
        if expect.tuned and "tuned" not in facts:
            problems.append(f"{host.name}: host tuning did not run")
    step.details["created"] = sorted(created)
    if problems:
        raise StepFailed("; ".join(problems))
    return resources


def check_preview_after_partial_up(step: Step, preview: dict[str, Any], created: dict[str, dict[str, Any]]) -> None:
    ops = {s["urn"]: s["op"] for s in preview.get("steps") or []}
    # Provider instances are no steps of their own.
    changed = {urn: ops.get(urn) for urn in created if "::pulumi:providers:" not in urn and ops.get(urn) != "same"}
    creates = sorted(urn.rsplit("::", 1)[1] for urn, op in ops.items() if urn not in created and op == "create")
    others = {urn: op for urn, op in ops.items() if urn not in created and op != "create"}
    step.details["toCreate"] = creates
    if changed or others:
        raise StepFailed(f"not unchanged: {changed}; not creates of what is missing: {others}")


CORRUPT = "printf 'corrupted by the lab' >>"


def corrupt_one_upload(state: LabState, expect: Expectations) -> tuple[Host, str]:
    host = state.hosts[0]
    result = ssh_run(state, host, f"{CORRUPT} '{expect.binary.upload_path}' && sha256sum '{expect.binary.upload_path}'")
    if result.returncode:
        raise StepFailed(f"{host.name}: could not corrupt {expect.binary.upload_path}: {result.stderr.strip()}")
    return host, result.stdout.split()[0]


def check_retried_only_what_failed(
    step: Step,
    result: subprocess.CompletedProcess[str],
    expect: Expectations,
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    corrupted: tuple[Host, str],
) -> None:
    said = diagnostics(result.stdout)
    step.details["errors"] = said
    host, found = corrupted
    problems = []
    mismatch = said.get(f"k3s-airgap-stage-{host.name}", "")
    if not all(part in mismatch for part in (f"sha256 mismatch for {expect.binary.name}", expect.binary.sha256, found)):
        problems.append(f"{host.name}: the corrupted upload was not refused with both digests: {first_line(mismatch)}")
    if "nothing was placed" not in mismatch:
        problems.append(f"{host.name}: the refusal does not say that nothing was placed")
    problems += [
        f"{node}: the binary was not refused again"
        for node in expect.nodes
        if node != host.name and not expect.refused_binary(said.get(f"k3s-airgap-stage-{node}", ""))
    ]
    if result.returncode == 0:
        problems.append("the second `pulumi up` passed")
    counts = step.resource_counts or {}
    if any(counts.get(kind) for kind in ("updated", "replaced", "deleted", "created")):
        problems.append(f"it changed what exists: {counts}")
    changed = state_changes(before, after)
    if changed:
        step.details["stateChanges"] = changed
        problems.append(f"the state changed: {changed}")
    if problems:
        raise StepFailed("; ".join(problems))


def state_changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Resource name -> what differs (``added``, ``removed`` or the keys whose values changed)."""
    changes: dict[str, list[str]] = {}
    for urn in sorted(set(before) | set(after)):
        name = urn.rsplit("::", 1)[1]
        if urn not in before or urn not in after:
            changes[name] = ["added" if urn in after else "removed"]
        elif before[urn] != after[urn]:
            old, new = before[urn], after[urn]
            changes[name] = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    return changes


def scan_for_secrets(secrets: Secrets, places: list[Path]) -> list[str]:
    """Every file under ``places`` that holds a secret's plaintext, named with the secret."""
    found = []
    for place in places:
        for path in [place] if place.is_file() else sorted(p for p in place.rglob("*") if p.is_file()):
            text = path.read_text(errors="replace")
            found += [f"{path}: {name}" for name, plain in secrets.plaintexts.items() if plain in text]
    return found


def run_pulumi_steps(
    state: LabState, report: Report, stack_file: Path, logs: Path, program: Any, secrets: Secrets
) -> bool:
    """The steps the module docstring lists; True when all ran and passed."""
    env, why = toolchain_env()
    if env is None:
        for name in NAMES:
            report.not_run(name, KIND_PULUMI, why)
        report.stopped_at = report.stopped_at or NAMES[0]
        report.stop_reason = report.stop_reason or why
        return False
    pulumi = PulumiRun(Path(state.run_dir), env, project_dir(state, stack_file), logs, STACK)
    report.lab["pulumi"] = {
        "cli": subprocess.run(["pulumi", "version"], env=pulumi.env, capture_output=True, text=True).stdout.strip(),
        "languageHost": "lab/langhost (ours; upstream's is not served by the Go proxy)",
        "commandProvider": COMMAND_PROVIDER,
        "stack": "air-gapped, artifacts from this machine; its k3s binary is NOT K3s (lab/hosts/artifacts.py)",
    }
    expect = Expectations(program)

    with report.step("pulumi-stack-init", KIND_PULUMI) as step:
        passed_or_raise(step, pulumi.run(step, "stack", "init", "--secrets-provider", "passphrase"))
        for key, value in (
            ("sshPrivateKey", secrets.private_key),
            ("sshPrivateKeyPassword", secrets.key_passphrase),
            ("k3sToken", secrets.token),
        ):
            # From stdin, as README tells users: a value on the command line would show in `ps`.
            passed_or_raise(step, pulumi.run(step, "config", "set", "--secret", key, stdin=value))
    if step.status != PASSED:
        return _stop(report, step, NAMES)

    with report.step("pulumi-preview", KIND_PULUMI) as step:
        passed_or_raise(step, pulumi.run(step, "preview", "--diff"))
    if step.status != PASSED:
        return _stop(report, step, NAMES[1:])

    created: dict[str, dict[str, Any]] = {}
    with report.step("pulumi-up", KIND_PULUMI) as step:
        step.details["expected"] = "stops at every node's staging, which refuses the binary (not K3s)"
        result = pulumi.run(step, "up", "--yes", "--skip-preview", *EVERY_NODE)
        created = check_stopped_at_the_binary(step, result, expect, pulumi, state)
    if step.status == PASSED:
        with report.step("pulumi-preview-after-partial-up", KIND_PULUMI) as step:
            result = pulumi.run(step, "preview", "--json", "--show-sames")
            passed_or_raise(step, result)
            check_preview_after_partial_up(step, json.loads(result.stdout), created)
        with report.step("pulumi-up-again", KIND_PULUMI) as step:
            corrupted = corrupt_one_upload(state, expect)
            step.details["corrupted"] = {"host": corrupted[0].name, "file": expect.binary.upload_path}
            result = pulumi.run(step, "up", "--yes", "--skip-preview", *EVERY_NODE)
            check_retried_only_what_failed(step, result, expect, created, pulumi.resources(), corrupted)
    else:
        for name in NAMES[2:4]:
            report.not_run(name, KIND_PULUMI, "pulumi-up did not stop where expected")
    with report.step("pulumi-destroy", KIND_PULUMI) as step:
        passed_or_raise(step, pulumi.run(step, "destroy", "--yes", "--skip-preview"))
    with report.step("secrets", KIND_LAB) as step:
        # The report's directory holds every Pulumi log and the lab stack file.
        places = [report.path.parent, pulumi.backend, pulumi.project / f"Pulumi.{STACK}.yaml"]
        step.details["scanned"] = [str(place) for place in places]
        leaks = scan_for_secrets(secrets, places)
        if leaks:
            raise StepFailed("secrets in plaintext: " + "; ".join(leaks))
    return all(s.status == PASSED for s in report.steps if s.kind == KIND_PULUMI)


def _stop(report: Report, step: Step, rest: list[str]) -> bool:
    report.stopped_at, report.stop_reason = step.name, step.first_error
    for name in rest:
        report.not_run(name, KIND_PULUMI, f"{step.name} failed")
    return False

