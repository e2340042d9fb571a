"""The real Pulumi CLI and engine as the lab drives them: the toolchain's environment, one stack run
in a project directory with a file backend, and what its output says (counts, errors, diagnostics).

The CLI, our language host (lab/langhost) and the lab's own command provider (lab/command-provider,
written here because pulumi-command's provider is not served by the Go proxy) come from
``lab/toolchain.sh env``; each lab names them in its report.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import Step, StepFailed, first_line

TOOLCHAIN = Path(__file__).with_name("toolchain.sh")
PASSPHRASE = "k3s-cilium-lab"  # protects nothing of value: a throwaway state of throwaway hosts
STEP_TIMEOUT_SECONDS = 1800
COMMAND_PROVIDER = "lab implementation, lab/command-provider"

_COUNT = re.compile(
    r"^\s*(?:[-+~]|\+-)?\s*(\d+) (to create|created|to update|updated|to delete|deleted|to replace|replaced|"
    r"unchanged|failed|errored)\b",
    re.M,
)
_DIAGNOSTIC_HEADER = re.compile(r"^  (\S+) \((.+)\):$")


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


def diagnostics(output: str) -> dict[str, str]:
    """The "Diagnostics:" section of the engine's output: what it says under each resource, by name."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    section = output.rsplit("Diagnostics:", 1)
    if len(section) < 2:
        return {}
    for line in section[1].splitlines():
        if line and not line.startswith(" "):
            break  # "Resources:", "Outputs:", ...
        header = _DIAGNOSTIC_HEADER.match(line)
        if header:
            current = found.setdefault(header[2], [])
        elif current is not None:
            current.append(line.strip())
    return {name: "\n".join(lines) for name, lines in found.items()}


def toolchain_env() -> tuple[dict[str, str] | None, str]:
    """The environment ``lab/toolchain.sh env`` sets up, or why there is none."""
    if not TOOLCHAIN.exists():
        return None, f"{TOOLCHAIN} does not exist (the Pulumi CLI is not built here)"
    result = subprocess.run(
        ["bash", "-c", 'eval "$("$0" env)" && env -0', str(TOOLCHAIN)],
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


class PulumiRun:
    """``pulumi <args> --stack <stack>`` in ``project``, its state in ``<run_dir>/state``; ``prefix`` runs the
    CLI (and so the engine, the providers and the program) through another command, e.g. ``ip netns exec``."""

    def __init__(
        self, run_dir: Path, env: dict[str, str], project: Path, logs: Path, stack: str, prefix: Sequence[str] = ()
    ):
        self.project, self.logs, self.stack, self.prefix = project, logs, stack, list(prefix)
        self.backend = run_dir / "state"
        self.env = {
            **env,
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            # Offline: a plugin that is not installed is an error, not a download.
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "NO_COLOR": "1",
        }
        self.backend.mkdir(exist_ok=True)

    def run(self, step: Step, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = ["pulumi", *args, "--stack", self.stack, "--non-interactive", "--color", "never"]
        step.details.setdefault("commands", []).append(" ".join(argv))
        argv = [*self.prefix, *argv]
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
        log = self.logs / f"{step.name}-{len(step.details['commands'])}.log"
        log.write_text(f"$ {' '.join(argv)}\n{result.stdout}\n--- stderr ---\n{result.stderr}")
        step.details.setdefault("logs", []).append(str(log))
        step.details["commandSeconds"] = round(time.monotonic() - start, 1)
        step.exit_status = result.returncode
        step.resource_counts = resource_counts(result.stdout)
        return result

    def resources(self) -> dict[str, dict[str, Any]]:
        """The state's resources by URN, as comparable: secrets decrypted (their ciphertext changes on
        every write), without the times the engine stamps them with, dependencies sorted (the Python
        SDK sends them in the order of a set)."""
        result = subprocess.run(
            [*self.prefix, "pulumi", "stack", "export", "--stack", self.stack, "--show-secrets"],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode:
            raise StepFailed(f"pulumi stack export failed: {first_line(result.stderr)}")
        deployment: dict[str, Any] = json.loads(result.stdout).get("deployment", {})
        return {r["urn"]: comparable(r) for r in deployment.get("resources") or []}


def comparable(resource: dict[str, Any]) -> dict[str, Any]:
    kept = {key: value for key, value in resource.items() if key not in ("created", "modified")}
    kept["dependencies"] = sorted(kept.get("dependencies") or [])
    kept["propertyDependencies"] = {
        key: sorted(urns) for key, urns in (kept.get("propertyDependencies") or {}).items()
    }
    return kept


def passed_or_raise(step: Step, result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode:
        step.first_error = first_error(result.stdout + "\n" + result.stderr) or first_line(result.stderr)
        raise StepFailed(step.first_error or f"exit {result.returncode}")


