"""The Pulumi part of the run: the real CLI and engine against the lab's hosts.

The CLI comes from ``lab/toolchain.sh env`` (built from Go modules by another
part of the lab). Without it, or without a step's prerequisites, the steps are
recorded as not run, with the reason. The program runs in a project directory
inside the run directory (symlinks to the repository's program, its own copy of
Pulumi.yaml and the lab stack file), with its state in a file backend there, so
nothing of the run is written into the repository or into ~/.pulumi-k3s-cilium.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import paths
from .report import FAILED, KIND_PULUMI, PASSED, Report, Step, first_line
from .vms import LabState

STACK = "lab"
PASSPHRASE = "k3s-cilium-lab"  # protects nothing of value: the lab's throwaway key, in a throwaway state
STEP_TIMEOUT_SECONDS = 1800
PROGRAM_FILES = ("__main__.py", "components", "stacks", "verification", "requirements.txt", ".venv")

_COUNT = re.compile(
    r"^\s*(?:[-+~]|\+-)?\s*(\d+) (to create|created|to update|updated|to delete|deleted|to replace|replaced|"
    r"unchanged|failed)\b",
    re.M,
)


def resource_counts(output: str) -> dict[str, int] | None:
    """The "Resources:" summary at the end of preview/up/destroy output."""
    tail = output.rsplit("Resources:", 1)
    if len(tail) < 2:
        return None
    counts = {kind.replace("to ", "").replace(" ", "_"): int(n) for n, kind in _COUNT.findall(tail[1])}
    return counts or None


def first_error(output: str) -> str | None:
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("error:") or " error: " in text or text.startswith("Error:"):
            return text[:500]
    return None


def toolchain_env() -> tuple[dict[str, str] | None, str]:
    """The environment ``lab/toolchain.sh env`` sets up, or why there is none."""
    if not paths.TOOLCHAIN.exists():
        return None, f"{paths.TOOLCHAIN.relative_to(paths.REPO)} does not exist (the Pulumi CLI is not built here)"
    result = subprocess.run(
        ["bash", "-c", 'eval "$("$0" env)" && env -0', str(paths.TOOLCHAIN)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode:
        return None, f"lab/toolchain.sh env failed: {first_line(result.stderr) or result.returncode}"
    env = dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    # `env` makes an empty state directory for its own backend; the lab uses one in its run directory.
    backend = env.pop("PULUMI_BACKEND_URL", "")
    if backend.startswith("file://"):
        with contextlib.suppress(OSError):
            Path(backend.removeprefix("file://")).rmdir()
    if not shutil.which("pulumi", path=env.get("PATH", "")):
        return None, "lab/toolchain.sh env gives no `pulumi` on PATH"
    return env, ""


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


class PulumiRun:
    def __init__(self, state: LabState, report: Report, env: dict[str, str], project: Path, logs: Path):
        self.state, self.report, self.project, self.logs = state, report, project, logs
        self.env = {
            **env,
            "PULUMI_BACKEND_URL": f"file://{Path(state.run_dir) / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            # Offline: a plugin that is not installed is an error, not a download.
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "NO_COLOR": "1",
        }
        (Path(state.run_dir) / "state").mkdir(exist_ok=True)

    def run(self, step: Step, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["pulumi", *args, "--stack", STACK, "--non-interactive", "--color", "never"]
        step.details["command"] = " ".join(argv)
        start = time.monotonic()
        try:
            result = subprocess.run(
                argv,
                cwd=self.project,
                env=self.env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as expired:
            out = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else ""
            result = subprocess.CompletedProcess(argv, 124, out, f"error: timed out after {STEP_TIMEOUT_SECONDS} s")
        log = self.logs / f"{step.name}.log"
        log.write_text(f"$ {' '.join(argv)}\n{result.stdout}\n--- stderr ---\n{result.stderr}")
        step.details["log"] = str(log)
        step.details["commandSeconds"] = round(time.monotonic() - start, 1)
        step.exit_status = result.returncode
        step.resource_counts = resource_counts(result.stdout)
        if result.returncode:
            step.status = FAILED
            step.first_error = first_error(result.stdout + "\n" + result.stderr) or first_line(result.stderr)
        else:
            step.status = PASSED
        return result

    def created_urns(self) -> list[str]:
        result = subprocess.run(
            ["pulumi", "stack", "export", "--stack", STACK],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode:
            return []
        deployment: dict[str, Any] = json.loads(result.stdout).get("deployment", {})
        return [
            r["urn"]
            for r in deployment.get("resources", [])
            if not r["type"].startswith("pulumi:providers:") and r["type"] != "pulumi:pulumi:Stack"
        ]


def run_pulumi_steps(state: LabState, report: Report, stack_file: Path, logs: Path) -> bool:
    """preview → up → preview --expect-no-changes → up (no changes) → destroy; True when all passed."""
    names = ["pulumi-preview", "pulumi-up", "pulumi-preview-no-changes", "pulumi-up-again", "pulumi-destroy"]
    env, why = toolchain_env()
    if env is None:
        for name in names:
            report.not_run(name, KIND_PULUMI, why)
        report.stopped_at = report.stopped_at or names[0]
        report.stop_reason = report.stop_reason or why
        return False
    pulumi = PulumiRun(state, report, env, project_dir(state, stack_file), logs)
    key = paths.lab_key().read_text()

    with report.step("pulumi-stack-init", KIND_PULUMI) as step:
        init = pulumi.run(step, "stack", "init", "--secrets-provider", "passphrase")
        if init.returncode == 0:
            pulumi.run(step, "config", "set", "--secret", "sshPrivateKey", stdin=key)
    if step.status != PASSED:
        for name in names:
            report.not_run(name, KIND_PULUMI, "pulumi-stack-init failed")
        report.stopped_at, report.stop_reason = step.name, step.first_error
        return False

    with report.step("pulumi-preview", KIND_PULUMI) as step:
        pulumi.run(step, "preview", "--diff")
    preview_ok = step.status == PASSED
    if not preview_ok:
        report.stopped_at, report.stop_reason = step.name, step.first_error
        for name in names[1:]:
            report.not_run(name, KIND_PULUMI, "pulumi-preview failed")
        return False

    with report.step("pulumi-up", KIND_PULUMI) as step:
        pulumi.run(step, "up", "--yes", "--skip-preview")
    up_ok = step.status == PASSED
    if not up_ok:
        report.stopped_at, report.stop_reason = step.name, step.first_error
    # After a partial up, the no-change checks cover exactly the resources that were created.
    targets: list[str] = []
    if not up_ok:
        targets = [arg for urn in pulumi.created_urns() for arg in ("--target", urn)]
    if up_ok or targets:
        with report.step("pulumi-preview-no-changes", KIND_PULUMI) as step:
            step.details["targets"] = targets[1::2]
            pulumi.run(step, "preview", "--expect-no-changes", "--diff", *targets)
        with report.step("pulumi-up-again", KIND_PULUMI) as step:
            step.details["targets"] = targets[1::2]
            pulumi.run(step, "up", "--yes", "--skip-preview", "--expect-no-changes", *targets)
    else:
        for name in ("pulumi-preview-no-changes", "pulumi-up-again"):
            report.not_run(name, KIND_PULUMI, "pulumi-up created nothing")
    with report.step("pulumi-destroy", KIND_PULUMI) as step:
        pulumi.run(step, "destroy", "--yes", "--skip-preview")
    return all(s.status == PASSED for s in report.steps if s.kind == KIND_PULUMI)
